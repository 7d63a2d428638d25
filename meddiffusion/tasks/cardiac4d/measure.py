"""Clinical figures and validity of a cine's label maps (ACDC labels: 0 background, 1 RV, 2 MYO, 3 LV).

Labels are (F, S, H, W) = frames × short-axis slices × rows × cols, or one frame (S, H, W);
``spacing`` is (x, y, z) in mm as in :class:`meddiffusion.io.Volume`. Volumes are voxel counts ×
voxel volume (the summation-of-discs method of cine MR reading). End-diastole (ED) is the frame
of largest LV cavity, end-systole (ES) that of the smallest; the RV is measured at the same two
frames, as a reader does with one ED and one ES phase.

Validity (:func:`check_sample`)
-------------------------------
The generator's rejection rules: the LV cavity and the myocardium each have at least
``min_voxels`` voxels at ED (so does the RV: a cine of this data set always shows one), and in
every frame the slices that hold LV cavity are one unbroken run. Then anatomical plausibility,
in every frame:

- **The myocardium encloses the LV cavity.** In each slice, at least 85 % of the LV's border
  (the pixels 4-connected to the cavity that are not cavity; beyond the image edge counts as
  background) is myocardium. The first and last slices of the run need only 50 %: at the base
  the cavity opens into the outflow tract and the mitral annulus where no muscle surrounds it,
  and at the apex a 10 mm slice cuts the cavity's tip obliquely, so a sliver of cavity may show
  beside a partial-volume rim.
- **The RV lies beside the LV.** The RV cavity touches the myocardium (4-adjacent) in at least
  one slice, and no RV pixel lies inside the LV's epicardial border (the LV cavity and
  myocardium with their holes filled, per slice).
- **The myocardium keeps its volume.** Muscle is incompressible, so its true volume is the
  same in every frame; what varies on a 10 mm stack is partial volume, and the base moving
  through the slices by long-axis shortening (10-15 mm, about one slice) adds or removes a ring
  of muscle. The phantom's NOR patient on the 1.75 × 1.75 × 10 mm grid varies by 12 % (max/min)
  over the cycle; a max/min ratio up to 1.25 leaves room for that and for thicker-walled
  hearts, while a myocardium that appears, vanishes or swells with the cavity fails.

Reading convention (:func:`exclude_open_end_slices`)
----------------------------------------------------
Labels decoded from a generated cine are read as a cardiologist traces a short-axis stack
(SCMR post-processing recommendations): a slice at either end of the LV run counts as LV only
if myocardium surrounds at least 50 % of its blood pool; otherwise it is left atrium or
outflow tract at the base (or a partial-volume sliver at the apex) and its cavity is
background. At 10 mm the basal slice is a partial-volume blend while the base moves through
it in systole, and a segmentation decoder labels it inconsistently there; the phantom's own
labels already follow the convention, so applying it changes only such slices. Every rule
above still applies to what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["LABELS", "MYO_DENSITY_G_PER_ML", "volumes_ml", "clinical_values", "Validity", "check_sample",
           "exclude_open_end_slices",
           "ENCLOSED_FRACTION", "END_SLICE_ENCLOSED_FRACTION", "MAX_MYO_RATIO"]

LABELS = {"background": 0, "rv": 1, "myo": 2, "lv": 3}
#: myocardial density (g/ml) for mass: the CMR convention (SCMR post-processing recommendations)
MYO_DENSITY_G_PER_ML = 1.05
ENCLOSED_FRACTION = 0.85
END_SLICE_ENCLOSED_FRACTION = 0.50
MAX_MYO_RATIO = 1.25

#: 4-connectivity within a slice, none across slices or frames
_IN_PLANE = np.zeros((1, 1, 3, 3), dtype=bool)
_IN_PLANE[0, 0] = ndimage.generate_binary_structure(2, 1)
_NAMES = {"lv": "LV cavity", "rv": "RV cavity", "myo": "myocardium"}


def volumes_ml(labels, spacing) -> dict[str, np.ndarray]:
    """Per-frame volumes in ml of ``"lv"``, ``"rv"`` (cavities) and ``"myo"``; arrays of length F (1 for one frame)."""
    voxel_ml = _voxel_ml(spacing)
    return {name: count * voxel_ml for name, count in _counts(_as_cine(labels)).items()}


def clinical_values(labels, spacing) -> dict:
    """LV and RV EDV/ESV (ml) and EF (%), their frames, LV stroke volume, myocardial volume (ml) and mass (g) at ED.

    An EF is NaN when its EDV is 0 (no cavity).
    """
    return _clinical(volumes_ml(labels, spacing))


def _clinical(v: dict[str, np.ndarray]) -> dict:
    ed, es = int(np.argmax(v["lv"])), int(np.argmin(v["lv"]))
    out = {"ed_frame": ed, "es_frame": es}
    for name in ("lv", "rv"):
        edv, esv = float(v[name][ed]), float(v[name][es])
        out[f"{name}_edv_ml"] = edv
        out[f"{name}_esv_ml"] = esv
        out[f"{name}_ef_percent"] = 100.0 * (edv - esv) / edv if edv > 0 else float("nan")
    out["lv_sv_ml"] = out["lv_edv_ml"] - out["lv_esv_ml"]
    out["myo_volume_ml"] = float(v["myo"][ed])
    out["myo_mass_g"] = MYO_DENSITY_G_PER_ML * out["myo_volume_ml"]
    return out


@dataclass
class Validity:
    """Whether a generated cine is kept, why not (one sentence per failed rule), and the figures measured."""

    valid: bool
    reasons: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


def check_sample(labels, spacing, *, min_voxels: int = 100) -> Validity:
    """Apply the rejection and plausibility rules of the module docstring to a cine's labels."""
    labels = _as_cine(labels)
    single = labels.shape[0] == 1
    counts = _counts(labels)
    myo_ml = counts["myo"] * _voxel_ml(spacing)
    figures = _clinical({name: count * _voxel_ml(spacing) for name, count in counts.items()})
    ed = figures["ed_frame"]
    reasons = []

    for name in ("lv", "myo", "rv"):
        if counts[name][ed] < min_voxels:
            reasons.append(f"{_NAMES[name]} has {int(counts[name][ed])} voxels at end-diastolic frame {ed}; "
                           f"at least {min_voxels} are needed")

    lv, myo, rv = labels == LABELS["lv"], labels == LABELS["myo"], labels == LABELS["rv"]
    has_lv = lv.any(axis=(2, 3))                                   # (F, S)
    runs = [ndimage.label(row)[1] for row in has_lv]
    broken = [f for f, n in enumerate(runs) if n > 1]
    figures["lv_slices_ed"] = int(has_lv[ed].sum())
    if broken:
        f = broken[0]
        where = ", ".join(_spans(np.flatnonzero(has_lv[f])))
        reasons.append(f"the slices holding LV cavity are not one run{_in_frame(f, single)} (slices {where})"
                       + _others(len(broken) - 1, "frame"))

    reasons += _enclosure(labels, lv, has_lv, single, figures)
    reasons += _rv_placement(lv, myo, rv, single)

    if len(myo_ml) > 1 and myo_ml.max() > 0:
        ratio = float(myo_ml.max() / myo_ml.min()) if myo_ml.min() > 0 else float("inf")
        figures["myo_volume_ratio"] = ratio
        if ratio > MAX_MYO_RATIO:
            change = (f"changes by a factor {ratio:.2f} over the cycle ({myo_ml.min():.0f}-{myo_ml.max():.0f} ml)"
                      if np.isfinite(ratio) else f"vanishes in frame {int(np.argmin(myo_ml))}")
            reasons.append(f"myocardial volume {change}; muscle is incompressible, so at most a factor "
                           f"{MAX_MYO_RATIO} is expected")
    return Validity(not reasons, reasons, figures)


def exclude_open_end_slices(labels, fraction: float = END_SLICE_ENCLOSED_FRACTION) -> tuple[np.ndarray, int]:
    """The labels read by the convention of the module docstring, and how many end slices' cavities were removed.

    Per frame, while the first or last slice of the LV run has less than ``fraction`` of its
    cavity border in myocardium, its LV cavity becomes background (the next slice is then the
    end). The input is not modified; a cine (F, S, H, W) or one frame (S, H, W) comes back as given.
    """
    array = np.asarray(labels)
    cine = _as_cine(array).copy()
    removed = 0
    for frame in cine:
        while True:
            lv = frame == LABELS["lv"]
            slices = np.flatnonzero(lv.any(axis=(1, 2)))
            if len(slices) == 0:
                break
            ends = sorted({int(slices[0]), int(slices[-1])})
            _, _, share = _border_shares(frame[ends][None], lv[ends][None])
            open_ends = [s for s, value in zip(ends, share[0]) if value < fraction]
            if not open_ends:
                break
            for s in open_ends:
                frame[s][lv[s]] = LABELS["background"]
            removed += len(open_ends)
    return (cine if array.ndim == 4 else cine[0]).astype(array.dtype, copy=False), removed


# -- rules ---------------------------------------------------------------------------------------
def _border_shares(labels, lv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LV border (pixels 4-adjacent to the cavity, outside it; beyond the image is background) of each
    (frame, slice) and the labels it indexes, both padded by one pixel, and the share of the border that is
    myocardium (0 where there is no cavity)."""
    pad = ((0, 0), (0, 0), (1, 1), (1, 1))
    lv, labels = np.pad(lv, pad), np.pad(labels, pad)
    border = ndimage.binary_dilation(lv, _IN_PLANE) & ~lv
    total = border.sum(axis=(2, 3))
    muscle = (border & (labels == LABELS["myo"])).sum(axis=(2, 3))
    return border, labels, np.where(total > 0, muscle / np.maximum(total, 1), 0.0)


def _enclosure(labels, lv, has_lv, single, figures) -> list[str]:
    """The share of each LV slice's border that is myocardium, against the limit of its place in the run."""
    border, labels, shares = _border_shares(labels, lv)
    failures = []
    worst = 1.0
    for f in range(lv.shape[0]):
        slices = np.flatnonzero(has_lv[f])
        for s in slices:
            share = float(shares[f, s])
            worst = min(worst, share)
            need = END_SLICE_ENCLOSED_FRACTION if s in (slices[0], slices[-1]) else ENCLOSED_FRACTION
            if share < need:
                touched = labels[f, s][border[f, s]]
                rest = [name for name, value in (("the RV cavity", LABELS["rv"]), ("background", 0))
                        if (touched == value).any()]
                failures.append((share, f, s, need, rest))
    figures["lv_enclosed_min_percent"] = float(100.0 * worst)
    if not failures:
        return []
    share, f, s, need, rest = min(failures)
    return [f"LV cavity is not enclosed by myocardium in slice {s}{_of_frame(f, single)} ({100 * share:.0f} % of "
            f"its border; at least {100 * need:.0f} % expected, the rest touches {' and '.join(rest)})"
            + _others(len(failures) - 1, "slice")]


def _rv_placement(lv, myo, rv, single) -> list[str]:
    """The RV touches the myocardium in every frame that has one, and never lies inside the LV's epicardium."""
    reasons = []
    touches = (ndimage.binary_dilation(rv, _IN_PLANE) & myo).any(axis=(1, 2, 3))
    apart = [f for f in range(rv.shape[0]) if rv[f].any() and not touches[f]]
    if apart:
        reasons.append(f"RV cavity does not touch the myocardium in any slice{_of_frame(apart[0], single)}: "
                       "the ventricles are apart" + _others(len(apart) - 1, "frame"))
    inside = (rv & ndimage.binary_fill_holes(lv | myo, _IN_PLANE)).sum(axis=(2, 3))
    where = np.argwhere(inside)
    if len(where):
        f, s = where[np.argmax(inside[tuple(where.T)])]
        reasons.append(f"RV cavity lies inside the LV (within its epicardial border) in slice {s}"
                       f"{_of_frame(f, single)} ({int(inside[f, s])} pixels)" + _others(len(where) - 1, "slice"))
    return reasons


# -- helpers -------------------------------------------------------------------------------------
def _as_cine(labels) -> np.ndarray:
    """(F, S, H, W) integer labels from a cine or one frame; refuses other shapes and unknown values."""
    array = np.asarray(labels)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or 0 in array.shape:
        raise ValueError(f"labels have shape {np.shape(labels)}; a cine (frames, slices, rows, cols) or one frame "
                         "(slices, rows, cols) is needed")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise ValueError("labels must be whole numbers (an ACDC label map), found fractional or NaN values")
        array = array.astype(np.int64)
    found = np.unique(array)
    unknown = found[~np.isin(found, list(LABELS.values()))]
    if len(unknown):
        raise ValueError(f"labels contain values {', '.join(str(int(u)) for u in unknown[:8])}; ACDC label maps "
                         "hold 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity")
    return array


def _counts(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Voxels of each structure per frame."""
    return {name: (labels == value).sum(axis=(1, 2, 3)) for name, value in LABELS.items() if name != "background"}


def _voxel_ml(spacing) -> float:
    values = np.asarray(spacing, dtype=float).ravel()
    if values.shape != (3,) or not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"spacing must be three positive voxel sizes (x, y, z) in mm, got {spacing!r}")
    return float(np.prod(values)) / 1000.0


def _spans(indices) -> list[str]:
    groups = np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)
    return [f"{g[0]}" if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in groups]


def _in_frame(frame: int, single: bool) -> str:
    return "" if single else f" in frame {frame}"


def _of_frame(frame: int, single: bool) -> str:
    return "" if single else f" of frame {frame}"


def _others(count: int, what: str) -> str:
    return f"; also {count} other {what}{'s' if count > 1 else ''}" if count > 0 else ""
