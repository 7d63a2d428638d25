"""The 17-segment polar map (bull's-eye) of a myocardial perfusion SPECT.

Sampling follows the usual max-count circumferential profiles (Garcia et al., J Nucl Med
26:17, 1985; the hybrid apex of Cedars QPS and Emory CEqual): the apical cap is sampled with
rays fanning out from a point on the long axis inside the apex (spherical sampling), the rest
of the ventricle with rays perpendicular to the axis on short-axis slices (cylindrical
sampling).  Each ray keeps the highest count within a band around the ring's median
mid-wall radius, which makes the samples insensitive to partial-volume thinning and keeps
the liver and the RV wall out.

Rows of ``PolarMap.image`` run from the apex (centre of the bull's-eye) to the base
(periphery); columns are anatomical angles ψ counter-clockwise from the septum: 0° septal,
90° anterior, 180° lateral, 270° inferior.  Segments follow the AHA 17-segment model
(Cerqueira et al., Circulation 105:539, 2002): the apical cap is segment 17, and the rest
of the LV is cut into basal, mid and apical thirds of its length, the basal and mid thirds
into six 60° sectors and the apical third into four 90° sectors, with the coronary
territories of the same statement.

Segment uptake is reported as a percentage of the map's peak (its 97th percentile, so a
single noisy sample does not set the scale).  The categories use fixed relative-uptake
cut-offs rather than a gender-matched normal database, which this package does not have:
≥ 70 % of peak normal, 50-70 % mildly reduced, < 50 % severely reduced.  70 % is the usual
lower limit of normal for count-normalised relative uptake and 50 % the usual mark of a
severe (mostly non-viable) defect in relative-uptake polar maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from meddiffusion.io import Volume
from meddiffusion.tasks.spect.reorient import LVFrame, Sampler

__all__ = ["SEGMENTS", "TERRITORY", "CATEGORIES", "NORMAL_PERCENT", "SEVERE_PERCENT", "PolarMap", "polar_map",
           "categories", "compare", "segment_of"]

SEGMENTS = (
    "basal anterior", "basal anteroseptal", "basal inferoseptal", "basal inferior", "basal inferolateral",
    "basal anterolateral",
    "mid anterior", "mid anteroseptal", "mid inferoseptal", "mid inferior", "mid inferolateral", "mid anterolateral",
    "apical anterior", "apical septal", "apical inferior", "apical lateral",
    "apex",
)

#: AHA assignment of segments to coronary territories (Cerqueira et al. 2002, figure 4)
TERRITORY = {**{n: "LAD" for n in (1, 2, 7, 8, 13, 14, 17)}, **{n: "RCA" for n in (3, 4, 9, 10, 15)},
             **{n: "LCX" for n in (5, 6, 11, 12, 16)}}

NORMAL_PERCENT = 70.0
SEVERE_PERCENT = 50.0
#: (name, lowest % of peak) from best to worst
CATEGORIES = (("normal", NORMAL_PERCENT), ("mildly reduced", SEVERE_PERCENT), ("severely reduced", -np.inf))

_CAP_RINGS = 6            # rings sampled spherically (0-90° from the apex direction)
_CAP_DEG = 45.0           # the cap rays within this angle of the apex are segment 17
_BAND_MM = 9.0            # half-width of the max-count search around the ring's mid-wall radius
_PEAK_PERCENTILE = 97.0


@dataclass
class PolarMap:
    """Segment uptake and the sampled map of one reconstruction in one LV frame."""

    percent: np.ndarray           # (17,) segment uptake, % of the map's peak
    mean: np.ndarray              # (17,) segment mean of the max counts, in the volume's units
    image: np.ndarray             # (rings, sectors) max counts: rows apex -> base, columns ψ from the septum
    frame: LVFrame
    segments: np.ndarray = field(default=None)     # (rings, sectors) AHA segment number of each sample
    peak: float = 0.0                              # the counts that are 100 %
    units: str = ""

    def table(self) -> list[dict]:
        cats = categories(self.percent)
        return [{"segment": n + 1, "name": SEGMENTS[n], "territory": TERRITORY[n + 1],
                 "percent": round(float(self.percent[n]), 1), "mean": float(self.mean[n]), "category": cats[n]}
                for n in range(17)]


def segment_of(height_fraction: np.ndarray, psi_deg: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """AHA segment numbers of wall samples: ``height_fraction`` 0 at the end of the cap, 1 at the
    base; ψ from the septum toward anterior; ``cap`` marks samples of the apical cap."""
    psi = np.mod(np.asarray(psi_deg, float), 360.0)
    f = np.asarray(height_fraction, float)
    # basal/mid: six 60° sectors starting at the septum: 0-60 anteroseptal, 60-120 anterior, ...
    six = np.array([2, 1, 6, 5, 4, 3])[np.minimum((psi // 60).astype(int), 5)]
    # apical: four 90° sectors centred on septal (0°), anterior, lateral, inferior
    four = np.array([14, 13, 16, 15])[np.mod(np.floor((psi + 45.0) / 90.0).astype(int), 4)]
    seg = np.where(f < 1 / 3, four, np.where(f < 2 / 3, six + 6, six))
    return np.where(cap, 17, seg)


def _rays(frame: LVFrame, rings: int, sectors: int):
    """Origins and unit directions (rings, sectors, 3) of the sampling rays, the cap flags
    (rings,), the cap's origin distance from the apex and the sector angles ψ (degrees)."""
    u, sep, ant = frame.long_axis, frame.septal, frame.anterior
    psi = (np.arange(sectors) + 0.5) * 360.0 / sectors
    radial = np.cos(np.radians(psi))[:, None] * sep + np.sin(np.radians(psi))[:, None] * ant   # (S, 3)
    length = frame.length_mm
    cap_depth = min(frame.radius_mm, 0.35 * length)           # cap origin, mm below the epicardial apex
    cap_origin = frame.apex - cap_depth * u
    n_cap = min(_CAP_RINGS, rings - 3)
    theta = np.radians((np.arange(n_cap) + 0.5) * 90.0 / n_cap)
    cap_dirs = np.cos(theta)[:, None, None] * u + np.sin(theta)[:, None, None] * radial[None]
    heights = cap_depth + (np.arange(rings - n_cap) + 0.5) * (length - cap_depth) / (rings - n_cap)
    sa_origins = frame.apex[None, :] - heights[:, None] * u                                    # (R_sa, 3)
    origins = np.concatenate([np.broadcast_to(cap_origin, (n_cap, sectors, 3)),
                              np.broadcast_to(sa_origins[:, None, :], (rings - n_cap, sectors, 3))])
    directions = np.concatenate([cap_dirs, np.broadcast_to(radial, (rings - n_cap, sectors, 3))])
    cap = np.concatenate([np.degrees(theta) < _CAP_DEG, np.zeros(rings - n_cap, bool)])
    return origins, directions, cap, psi


def _max_counts(sampler: Sampler, origins: np.ndarray, directions: np.ndarray, reach: float):
    """Per ray: the highest count within ±band of its ring's median peak radius, and where."""
    r = np.arange(1.0, reach, 1.0)
    profiles = sampler(origins[..., None, :] + r[:, None] * directions[..., None, :])      # (R, S, n)
    wide = r[np.argmax(profiles, axis=-1)]                                               # (R, S)
    centre = np.median(wide, axis=1, keepdims=True)
    band = np.abs(r[None, None, :] - centre[..., None]) <= _BAND_MM
    masked = np.where(band, profiles, -np.inf)
    k = np.argmax(masked, axis=-1)
    counts = np.take_along_axis(profiles, k[..., None], axis=-1)[..., 0]
    return counts, r[k]


def polar_map(volume: Volume, frame: LVFrame, *, rings: int = 24, sectors: int = 60) -> PolarMap:
    """Sample ``volume`` in ``frame`` (fitted on this or a matching reconstruction) into a polar
    map and its 17 segment values."""
    if rings < 8 or sectors < 12 or sectors % 12:
        raise ValueError(f"a polar map needs at least 8 rings and a multiple of 12 sectors (≥ 12), "
                         f"got {rings} rings and {sectors} sectors")
    sampler = Sampler(volume)
    origins, directions, cap, psi = _rays(frame, rings, sectors)
    image, radius = _max_counts(sampler, origins, directions, reach=2.0 * frame.radius_mm + 10.0)
    wall = origins + radius[..., None] * directions
    height = (frame.apex - wall) @ frame.long_axis                            # mm from the apex toward the base
    ring_height = np.median(height, axis=1)
    start = ring_height[cap].max() if cap.any() else 0.0
    fraction = np.clip((ring_height - start) / max(frame.length_mm - start, 1.0), 0.0, 1.0)
    segments = segment_of(fraction[:, None], psi[None, :], np.broadcast_to(cap[:, None], image.shape))
    mean = np.array([image[segments == n].mean() if (segments == n).any() else np.nan for n in range(1, 18)])
    peak = float(np.percentile(image, _PEAK_PERCENTILE))
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("the polar map has no counts: the LV frame does not lie on this volume's myocardium")
    return PolarMap(percent=100.0 * mean / peak, mean=mean, image=image.astype(np.float32), frame=frame,
                    segments=segments.astype(np.int16), peak=peak, units=volume.units)


def categories(percent: np.ndarray) -> list[str]:
    """The category of each segment's % of peak (see ``CATEGORIES``)."""
    out = []
    for p in np.asarray(percent, float):
        out.append(next(name for name, low in CATEGORIES if p >= low) if np.isfinite(p) else "not sampled")
    return out


def compare(before: PolarMap, after: PolarMap, names: tuple[str, str] = ("NAC", "AC")) -> list[dict]:
    """One row per segment: its uptake and category in both maps and whether the category changed
    (e.g. an inferior 'defect' on NAC that attenuation correction shows to be normal)."""
    first, second = names
    cats_b, cats_a = categories(before.percent), categories(after.percent)
    return [{"segment": n + 1, "name": SEGMENTS[n], "territory": TERRITORY[n + 1],
             f"{first} %": round(float(before.percent[n]), 1), f"{second} %": round(float(after.percent[n]), 1),
             f"{first} category": cats_b[n], f"{second} category": cats_a[n], "changed": cats_b[n] != cats_a[n]}
            for n in range(17)]
