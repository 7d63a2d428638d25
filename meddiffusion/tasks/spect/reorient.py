"""Automatic left-ventricular reorientation of a myocardial perfusion SPECT.

A nuclear cardiologist reads MPI in the heart's own frame: short-axis (SA) slices from apex
to base, vertical and horizontal long-axis slices, and the polar map sampled from them.
:func:`fit_lv` finds that frame without a user:

1. **Find the LV.**  Tc-99m sestamibi is also taken up by the liver and bowel, which can be
   hotter than the myocardium, so the hottest blob is not the answer.  The volume is
   thresholded at a ladder of levels; every connected component of plausible size is scored
   as a *cup*: its centroid must fall in a cold cavity, and rays cast from the centroid
   must hit the component in most directions (a shell encloses its centre; the liver is
   solid and a bowel loop is a tube).  The hottest cup wins.
2. **Fit the shape.**  From the cavity centre, rays in 400 directions find the first
   myocardial count peak (the mid-wall; the first peak so that the liver behind the
   inferior wall is never taken).  A prolate spheroid (centre, axis, two semi-axes) is
   fitted to those points by robust least squares and the rays are cast again from its
   centre.  Directions through the open valve plane find no peak and drop out, and the
   spheroid fit weights the wall by its counts, so defects and attenuation artefacts
   (NAC's depressed inferior and anterior walls) move it little.
3. **Extents.**  The apex is the spheroid's pole (the apical mid-wall, even where an apical
   defect leaves no peak there) moved out by the wall's median half-maximum half-width; the
   base is the height where the median count of the SA ring drops below half its
   maximum (the valve plane).
4. **Septum.**  The direction in the SA plane toward the patient's right-anterior side
   (LPS −x −y), where the RV and the septum lie in the standard anatomy; the anterior wall is
   then the SA direction toward the chest wall and head.

Geometry is in LPS millimetres throughout; volumes are sampled with trilinear interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from meddiffusion.io import Volume

__all__ = ["LVFrame", "fit_lv", "short_axis_volume", "long_axis_volumes", "anterior_of", "Sampler"]

#: the apex points to the patient's left, anterior and inferior (LPS +x, −y, −z)
APEX_PRIOR = np.array([1.0, -1.0, -0.8]) / np.linalg.norm([1.0, -1.0, -0.8])
#: the septum and RV face the patient's right and front (LPS −x, −y)
SEPTAL_HINT = np.array([-0.5, -1.0, 0.0])
#: the anterior wall faces the chest wall and the head (LPS −y, +z)
ANTERIOR_HINT = np.array([0.0, -1.0, 0.5])

_NOT_FOUND = "no left-ventricular myocardium found: {}; expected a myocardial perfusion SPECT"
_LEVELS = np.arange(0.85, 0.17, -0.025)    # fractions of the volume's peak tried for the LV
_MYOCARDIUM_ML = (8.0, 900.0)              # plausible component volume at a threshold
_SOLID_MM = 20.0                           # thicker than any blurred wall: liver, spleen, bowel
_MIN_ENCLOSURE = 0.5                       # share of directions in which a cup surrounds its centre
_MAX_CAVITY = 0.6                          # counts at the centre / the component's median, at most
_MIN_CONTRAST = 3.0                        # myocardium / the body's median counts, at least (MPI: ~10)


@dataclass(frozen=True)
class LVFrame:
    """The LV's own frame in LPS mm: what SA slices and the polar map are sampled in."""

    centre: np.ndarray      # on the long axis, half-way from apex to base (inside the cavity)
    long_axis: np.ndarray   # unit vector, base -> apex
    septal: np.ndarray      # unit vector ⟂ long_axis toward the septum (RV side): 0° of the polar map
    apex: np.ndarray        # epicardial apex on the axis
    base: np.ndarray        # valve plane on the axis
    radius_mm: float        # mean mid-wall radius of the mid-ventricle

    @property
    def anterior(self) -> np.ndarray:
        return anterior_of(self.long_axis, self.septal)

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.base - self.apex))

    def to_dict(self) -> dict:
        return {"centre_mm": _rounded(self.centre), "long_axis": _rounded(self.long_axis, 5),
                "septal": _rounded(self.septal, 5), "anterior": _rounded(self.anterior, 5),
                "apex_mm": _rounded(self.apex), "base_mm": _rounded(self.base),
                "radius_mm": round(float(self.radius_mm), 2), "length_mm": round(self.length_mm, 2)}

    @classmethod
    def from_dict(cls, d: dict) -> "LVFrame":
        return cls(np.asarray(d["centre_mm"], float), np.asarray(d["long_axis"], float),
                   np.asarray(d["septal"], float), np.asarray(d["apex_mm"], float), np.asarray(d["base_mm"], float),
                   float(d["radius_mm"]))


def _rounded(v: np.ndarray, digits: int = 2) -> list[float]:
    return [round(float(x), digits) for x in v]


def anterior_of(long_axis: np.ndarray, septal: np.ndarray) -> np.ndarray:
    """The SA direction 90° from the septum on the chest-wall side (+90° of the polar map)."""
    a = np.cross(long_axis, septal)
    return a if a @ ANTERIOR_HINT >= 0 else -a


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, float) / np.linalg.norm(v)


def _perpendicular(v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    return _unit(v - (v @ axis) * axis)


# -- sampling ------------------------------------------------------------------------------
class Sampler:
    """Trilinear samples of a volume at LPS points (0 outside the field of view)."""

    def __init__(self, volume: Volume, array: np.ndarray | None = None):
        self.array = np.asarray(volume.array if array is None else array, dtype=np.float32)
        self.origin = np.asarray(volume.origin, float)
        matrix = np.asarray(volume.direction, float).reshape(3, 3) * np.asarray(volume.spacing, float)
        self.matrix = matrix
        self.inverse = np.linalg.inv(matrix)

    def index_of(self, points: np.ndarray) -> np.ndarray:
        """Continuous (z, y, x) index of LPS points (..., 3)."""
        ijk = (np.asarray(points, float) - self.origin) @ self.inverse.T
        return ijk[..., ::-1]

    def world_of(self, zyx: np.ndarray) -> np.ndarray:
        return self.origin + np.asarray(zyx, float)[..., ::-1] @ self.matrix.T

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, float)
        zyx = self.index_of(points.reshape(-1, 3)).T
        values = ndimage.map_coordinates(self.array, zyx, order=1, mode="constant", cval=0.0, prefilter=False)
        return values.reshape(points.shape[:-1])


def _directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (Fibonacci sphere)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5 ** 0.5) * k
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_RAYS = _directions(400)
_PROBES = _directions(64)


# -- 1. finding the LV -----------------------------------------------------------------------
@dataclass
class _Cup:
    centroid: np.ndarray     # LPS mm
    reach_mm: float          # farthest component voxel from the centroid
    level: float             # counts: its threshold
    peak: float              # counts: its 95th percentile
    score: float
    mask: np.ndarray         # its voxels


def _prepared(volume: Volume) -> np.ndarray:
    """The counts, smoothed over ~1 voxel so a noisy voxel neither makes nor breaks a blob."""
    array = np.nan_to_num(np.asarray(volume.array, np.float32))
    sigma = [max(0.0, 4.0 / s) for s in volume.spacing_zyx]
    return ndimage.gaussian_filter(np.clip(array, 0, None), sigma)


def _cup(sampler: Sampler, image: np.ndarray, mask: np.ndarray, level: float) -> _Cup | None:
    """The component ``mask`` scored as an LV cup, or None if it is not one."""
    zyx = np.argwhere(mask)
    values = image[mask]
    world = sampler.world_of(zyx)
    centroid = (world * values[:, None]).sum(0) / values.sum()
    median = float(np.median(values))
    if float(sampler(centroid)) > _MAX_CAVITY * median:
        return None                                       # solid: liver, spleen, a kidney
    reach = float(np.linalg.norm(world - centroid, axis=1).max())
    step = 0.5 * min(abs(np.diag(sampler.matrix)).min(), 4.0)
    radii = np.arange(step, reach + step, step)
    probe_idx = sampler.index_of(centroid + radii[:, None, None] * _PROBES[None])
    probe_idx = np.rint(probe_idx).astype(int)
    inside = np.all((probe_idx >= 0) & (probe_idx < np.array(mask.shape)), axis=-1)
    probe_idx = np.where(inside[..., None], probe_idx, 0)
    hits = mask[probe_idx[..., 0], probe_idx[..., 1], probe_idx[..., 2]] & inside
    enclosure = float(hits.any(axis=0).mean())
    if enclosure < _MIN_ENCLOSURE:
        return None                                       # open: a bowel loop, a vessel, noise
    peak = float(np.percentile(values, 95))
    return _Cup(centroid, reach, level, peak, peak * enclosure, mask)


def _ball(spacing_zyx, radius_mm: float) -> np.ndarray:
    half = [max(1, int(radius_mm // s)) for s in spacing_zyx]
    z, y, x = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dz, dy, dx = (np.asarray(spacing_zyx) / radius_mm)
    return (z * dz) ** 2 + (y * dy) ** 2 + (x * dx) ** 2 <= 1.0


def _without_solid(mask: np.ndarray, ball: np.ndarray) -> np.ndarray:
    """``mask`` less the parts a ball thicker than the myocardium fits in (and a voxel around
    them), which cuts the LV free of the liver where the inferior wall touches it."""
    solid = ndimage.binary_opening(mask, ball)
    if not solid.any():
        return mask
    return mask & ~ndimage.binary_dilation(solid, np.ones((3, 3, 3), bool))


def _find_cup(volume: Volume, image: np.ndarray, sampler: Sampler, near_mm: np.ndarray | None) -> _Cup:
    top = float(np.percentile(image, 99.95))
    if not np.isfinite(top) or top <= 0:
        raise ValueError(_NOT_FOUND.format("the volume has no counts"))
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    structure = np.ones((3, 3, 3), bool)
    ball = _ball(volume.spacing_zyx, _SOLID_MM)
    cups: list[_Cup] = []
    for fraction in _LEVELS:
        level = fraction * top
        labels, n = ndimage.label(_without_solid(image >= level, ball), structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if not _MYOCARDIUM_ML[0] <= sizes[label - 1] <= _MYOCARDIUM_ML[1]:
                continue
            mask = np.zeros_like(labels, dtype=bool)
            mask[box] = labels[box] == label
            cup = _cup(sampler, image, mask, level)
            if cup is not None:
                cups.append(cup)
    body = float(np.median(image[image > 0.02 * top]))
    cups = [c for c in cups if c.peak >= _MIN_CONTRAST * body]
    if not cups:
        raise ValueError(_NOT_FOUND.format(
            "no hot shell around a cold cavity stands out from the body (only solid, open or faint "
            "structures at every threshold)"))
    if near_mm is not None:
        near = np.asarray(near_mm, float)
        return min(cups, key=lambda c: np.linalg.norm(c.centroid - near) / 10.0 - c.score / max(c.score for c in cups))
    return max(cups, key=lambda c: c.score)


def _surroundings(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    """Where the wall is searched: the cup and 10 mm around it, so that where the inferior wall
    is scarred or depressed a ray finds nothing rather than the liver behind it."""
    return ndimage.binary_dilation(mask, _ball(spacing_zyx, 10.0)).astype(np.float32)


# -- 2. mid-wall points and the spheroid --------------------------------------------------------
def _wall_points(sampler: Sampler, centre: np.ndarray, reach: float, level: float):
    """First count peak above ``level`` along rays from ``centre``: the points, their counts and
    the median distance from the peak outward to half its counts (the blurred half-wall)."""
    radii = np.arange(2.0, reach, 1.0)
    profiles = sampler(centre + radii[:, None, None] * _RAYS[None])          # (r, rays)
    rising = np.zeros_like(profiles, bool)
    rising[1:-1] = (profiles[1:-1] >= profiles[:-2]) & (profiles[1:-1] >= profiles[2:])
    peaks = rising & (profiles >= level)
    found = peaks.any(axis=0)
    first = np.argmax(peaks, axis=0)
    cols = np.arange(_RAYS.shape[0])
    k = np.clip(first, 1, len(radii) - 2)
    y0, y1, y2 = profiles[k - 1, cols], profiles[k, cols], profiles[k + 1, cols]
    curvature = y0 - 2 * y1 + y2
    shift = np.where(curvature < 0, 0.5 * (y0 - y2) / np.where(curvature < 0, curvature, -1.0), 0.0)
    r = radii[k] + np.clip(shift, -0.5, 0.5)
    points = centre + r[:, None] * _RAYS
    outside = (profiles < 0.5 * y1) & (np.arange(len(radii))[:, None] > k)
    half = np.where(outside.any(axis=0), radii[np.argmax(outside, axis=0)] - r, np.nan)[found]
    return points[found], y1[found], float(np.nanmedian(half)) if np.isfinite(half).any() else 6.0


def _spheroid_residuals(params: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    centre, axis = params[:3], _axis_from_angles(params[3:5])
    a, c = np.exp(params[5:7])
    d = points - centre
    h = d @ axis
    rho2 = np.maximum((d * d).sum(1) - h * h, 0.0)
    radial = np.sqrt(rho2 / (a * a) + h * h / (c * c))
    return weights * (radial - 1.0) * np.sqrt(a * c)


def _axis_from_angles(angles: np.ndarray) -> np.ndarray:
    theta, phi = angles
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def _angles_of(axis: np.ndarray) -> np.ndarray:
    return np.array([np.arccos(np.clip(axis[2], -1, 1)), np.arctan2(axis[1], axis[0])])


def _fit_spheroid(points: np.ndarray, weights: np.ndarray, centre: np.ndarray, axis: np.ndarray):
    """A prolate spheroid (centre, unit axis, equatorial and polar semi-axes) through the points."""
    d = np.linalg.norm(points - centre, axis=1)
    start = np.concatenate([centre, _angles_of(axis), np.log([np.median(d), 1.3 * np.median(d)])])
    fit = optimize.least_squares(_spheroid_residuals, start, args=(points, weights), loss="soft_l1",
                                 f_scale=3.0, max_nfev=400)
    a, c = np.exp(fit.x[5:7])
    return fit.x[:3], _axis_from_angles(fit.x[3:5]), float(a), float(c)


def _long_axis(centre: np.ndarray, axis: np.ndarray, a: float, c: float, points: np.ndarray) -> np.ndarray:
    """The spheroid's symmetry axis, or the principal axis of the wall when it is nearly a sphere,
    signed to point to the apex: by anatomy, or by the closed end of the cup when the axis is
    far from the usual orientation (an apical infarct opens that end too)."""
    if c < 1.08 * a:
        d = points - points.mean(0)
        _, vectors = np.linalg.eigh(d.T @ d)
        axis = vectors[:, -1]
    prior = axis @ APEX_PRIOR                 # the apex points left-anterior-inferior ...
    closed = (points - centre).mean(0) @ axis  # ... and the open base pulls the wall's mean apexward
    sign = np.sign(prior) if abs(prior) > 0.3 or abs(closed) < 2.0 else np.sign(closed)
    return _unit(sign * axis)


# -- 3. extents -------------------------------------------------------------------------------
def _base_point(sampler: Sampler, centre: np.ndarray, axis: np.ndarray, septal: np.ndarray, radius: float,
                apex: np.ndarray) -> np.ndarray:
    """The valve plane: where the median over angles of the SA ring's peak counts falls to half."""
    anterior = np.cross(axis, septal)
    psi = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    radial = np.cos(psi)[:, None] * septal + np.sin(psi)[:, None] * anterior          # (36, 3)
    r = np.linspace(0.3 * radius, 1.8 * radius, 24)
    length = float((apex - centre) @ axis)
    heights = np.arange(length, length - 200.0, -2.0)            # from the apex toward the base
    pts = centre + heights[:, None, None, None] * axis + r[None, None, :, None] * radial[None, :, None, :]
    ring = np.median(sampler(pts).max(axis=2), axis=1)
    peak = int(np.argmax(ring))
    below = np.nonzero(ring[peak:] < 0.5 * ring[peak])[0]
    h = heights[peak + below[0]] if below.size else heights[-1]
    return centre + h * axis


def _septal_direction(axis: np.ndarray) -> np.ndarray:
    hint = SEPTAL_HINT if abs(_unit(SEPTAL_HINT) @ axis) < 0.95 else ANTERIOR_HINT
    return _perpendicular(hint, axis)


def fit_lv(volume: Volume, *, near_mm: np.ndarray | None = None) -> LVFrame:
    """The LV frame of a myocardial perfusion SPECT (see the module docstring for the method).

    ``near_mm`` (LPS) picks, among cup-shaped hot structures, the one nearest that point.
    Fit on one reconstruction (e.g. the attenuation-corrected one) and sample the others in
    the same frame so that their segments correspond.
    """
    image = _prepared(volume)
    cup = _find_cup(volume, image, Sampler(volume, image), near_mm)
    sampler = Sampler(volume, image * _surroundings(cup.mask, volume.spacing_zyx))
    level = 0.4 * cup.peak
    reach = cup.reach_mm + 15.0
    centre, axis = cup.centroid, APEX_PRIOR
    for _ in range(3):
        points, counts, half_wall = _wall_points(sampler, centre, reach, level)
        if len(points) < 40:
            raise ValueError(_NOT_FOUND.format(f"the candidate at {np.round(centre).tolist()} mm has no wall "
                                               "around its cavity"))
        weights = np.clip(counts / cup.peak, 0.2, 1.0)
        centre, axis, a, c = _fit_spheroid(points, weights, centre, axis)
        axis = _long_axis(centre, axis, a, c, points)
    septal = _septal_direction(axis)
    apex = centre + (c + half_wall) * axis      # the spheroid's pole is the apical mid-wall
    base = _base_point(sampler, centre, axis, septal, a, apex)
    return LVFrame(centre=0.5 * (apex + base), long_axis=axis, septal=septal, apex=apex, base=base,
                   radius_mm=float(a))


# -- reoriented volumes ------------------------------------------------------------------------
def _resampled(volume: Volume, columns: np.ndarray, origin: np.ndarray, shape_zyx: tuple[int, int, int],
               spacing_xyz: tuple[float, float, float]) -> Volume:
    """``volume`` on a new grid whose index axes (x, y, z) run along ``columns`` (3×3, unit)."""
    nz, ny, nx = shape_zyx
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * np.asarray(spacing_xyz)
    points = origin + ijk @ columns.T
    array = Sampler(volume)(points).astype(np.float32)
    return Volume(array, tuple(spacing_xyz), tuple(origin), tuple(columns.ravel()), modality=volume.modality,
                  units=volume.units, metadata=dict(volume.metadata))


def _sa_columns(frame: LVFrame) -> np.ndarray:
    """Grid axes of the SA stack: x toward the septum, y toward the inferior wall, z apex -> base.

    x × y = z keeps the matrix a proper rotation, and with z running apex -> base the stack is
    displayed apex first, as SA slices are read.
    """
    z = -frame.long_axis
    x = frame.septal
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def short_axis_volume(volume: Volume, frame: LVFrame, *, spacing_mm: float | None = None,
                      size_mm: float = 160.0) -> Volume:
    """SA slices from just beyond the apex to just beyond the base, on a rotated grid that
    viewers show in world space (its direction matrix is the LV frame)."""
    step = float(spacing_mm or min(volume.spacing))
    columns = _sa_columns(frame)
    n_xy = max(1, int(round(size_mm / step)))
    apex_h, base_h = -8.0, frame.length_mm + 8.0
    n_z = max(1, int(np.ceil((base_h - apex_h) / step)) + 1)
    half = 0.5 * (n_xy - 1) * step
    origin = frame.apex + apex_h * -frame.long_axis - half * columns[:, 0] - half * columns[:, 1]
    return _resampled(volume, columns, origin, (n_z, n_xy, n_xy), (step, step, step))


def long_axis_volumes(volume: Volume, frame: LVFrame, *, spacing_mm: float | None = None,
                      size_mm: float = 160.0, slices: int = 3) -> dict[str, Volume]:
    """Vertical (septum-normal plane: anterior/inferior walls) and horizontal (anterior-normal
    plane: septum/lateral wall) long-axis slabs through the LV centre, ``slices`` thick."""
    step = float(spacing_mm or min(volume.spacing))
    n = max(1, int(round(size_mm / step)))
    half = 0.5 * (n - 1) * step
    depth = 0.5 * (slices - 1) * step
    base_dir = -frame.long_axis
    out = {}
    for name, across in (("vla", frame.anterior), ("hla", frame.septal)):
        normal = np.cross(across, base_dir)
        columns = np.stack([base_dir, across, normal], axis=1)
        if np.linalg.det(columns) < 0:
            columns[:, 2] = -normal
        origin = frame.centre - half * columns[:, 0] - half * columns[:, 1] - depth * columns[:, 2]
        out[name] = _resampled(volume, columns, origin, (slices, n, n), (step, step, step))
    return out
