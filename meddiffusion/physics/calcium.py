"""Coronary calcium in a non-contrast CT: find it, and take it out (inpainting).

The motion simulator moves the calcium and leaves the rest of the CT in place. For that it
needs the calcium as a mask, and the CT as it would look without the calcium.

**Detection** (``detect_calcium``) follows Agatston's lesion rule (``metrics.agatston``): at
least 130 HU, at least 1 mm² on some slice, grouped in 3D. It keeps the lesions inside a heart
region and drops anything that is bone, or touches it.

- *Bone* (``bone_mask``) is every connected >= 130 HU structure larger than 2 cm³, grown by
  2 mm: spine, sternum and ribs inside the field of view. A coronary lesion is far smaller,
  typically 1-500 mm³.
- *Heart region*: pass one when you have it, for example a coronary or heart label map on the
  CT's grid. Without labels, ``heart_region`` finds one geometrically. It takes water-like
  tissue (-30 to 150 HU, median-filtered, bone removed) and erodes it by 12 mm, which cuts the
  chest wall, great vessels and muscles away. It keeps the largest blob that lies almost wholly
  (>= 80 %) on slices where the lungs are wide, has its centre within 80 mm of the spine's
  midline, and lies anterior to the spine (where bone piles up most along the slices): the
  heart. The liver lies mostly below the lungs;
  paraspinal muscles lie behind the spine; breast and shoulder lie lateral. The blob is grown
  back by 12 mm, inside the same tissue (an opening), and then by another 12 mm, which reaches
  the coronaries in the epicardial fat.

Limits of the heuristic: the region also takes in the aortic root, the atria, the pericardium
and, where it touches the heart, the liver dome and the chest wall. Calcium there (aortic-wall
or valve calcium, calcified costal cartilage behind the sternum) is kept as if it were
coronary. If no solid water-density mass 24 mm across is found on lung slices (a field of view
smaller than the heart, or a contrast-enhanced CT where the blood is far above 150 HU), a
``ValueError`` asks for a region. For clinical scoring, give a region.

**Inpainting** (``inpaint_calcium``) replaces masked voxels by normalized convolution of their
surroundings on the same slice: a Gaussian-weighted mean of the unmasked voxels below 130 HU,
at the smallest scale (1, 2, 4... pixels) where they carry at least a fifth of the weight. The
result is smooth local soft tissue, always below 130 HU. Other voxels are left unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from meddiffusion.io import Volume
from meddiffusion.metrics.agatston import CALCIUM_THRESHOLD_HU, agatston

__all__ = ["detect_calcium", "heart_region", "bone_mask", "inpaint_calcium", "CALCIUM_THRESHOLD_HU"]

BONE_MIN_VOLUME_MM3 = 2000.0
BONE_MARGIN_MM = 2.0
TISSUE_HU = (-30.0, 150.0)
OPENING_RADIUS_MM = 12.0
HEART_MARGIN_MM = 12.0
LUNG_HU_RANGE = (-980.0, -400.0)
LUNG_MIN_VOLUME_MM3 = 50_000.0
#: a slice is a lung slice when its lung area is at least this fraction of the largest one
LUNG_SLICE_FRACTION = 0.25
_MIN_WEIGHT = 0.2
#: the heart blob lies (almost) wholly on lung slices, its centre near the midline
HEART_LUNG_SHARE = 0.8
HEART_MAX_OFFSET_MM = 80.0
SPINE_SMOOTH_MM = 10.0


def detect_calcium(volume: Volume, region: np.ndarray | None = None, *,
                   threshold_hu: float = CALCIUM_THRESHOLD_HU) -> np.ndarray:
    """Boolean (z, y, x) mask of calcified lesions inside ``region`` (found if None), bone excluded.

    ``region`` is a mask or label map on the CT's grid (voxels > 0 count).
    """
    hu = _hu(volume)
    bone = bone_mask(volume, threshold_hu=threshold_hu)
    region = _heart_region(volume, bone) if region is None else _mask_like(region, hu, "heart region")
    allowed = region & ~bone
    result = agatston(hu, volume.spacing, mask=allowed, threshold_hu=threshold_hu)
    return result.label_map > 0


def bone_mask(volume: Volume, *, threshold_hu: float = CALCIUM_THRESHOLD_HU,
              min_volume_mm3: float = BONE_MIN_VOLUME_MM3, margin_mm: float = BONE_MARGIN_MM) -> np.ndarray:
    """Connected >= ``threshold_hu`` structures of at least ``min_volume_mm3``, grown by ``margin_mm``."""
    hu = _hu(volume)
    dense = hu >= threshold_hu
    labels, count = ndimage.label(dense, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros(hu.shape, bool)
    voxel_mm3 = float(np.prod(volume.spacing))
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * voxel_mm3
    sizes[0] = 0
    bone = (sizes >= min_volume_mm3)[labels]
    return _grow(bone, margin_mm, volume.spacing_zyx)


def heart_region(volume: Volume, *, margin_mm: float = HEART_MARGIN_MM) -> np.ndarray:
    """A boolean region around the heart, found without labels (see the module docstring)."""
    return _heart_region(volume, bone_mask(volume), margin_mm)


def _heart_region(volume: Volume, bone: np.ndarray, margin_mm: float = HEART_MARGIN_MM) -> np.ndarray:
    hu = _hu(volume)
    spacing = volume.spacing_zyx
    smooth = ndimage.median_filter(hu, size=(1, 3, 3))
    tissue = (smooth >= TISSUE_HU[0]) & (smooth <= TISSUE_HU[1]) & ~bone
    solid = _shrink(tissue, OPENING_RADIUS_MM, spacing)
    labels, count = ndimage.label(solid, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        raise ValueError(f"no solid soft-tissue mass {2 * OPENING_RADIUS_MM:g} mm across was found to locate "
                         "the heart; pass a heart region (a label map on the CT's grid)")
    ids = np.arange(1, count + 1)
    sizes = ndimage.sum(np.ones(hu.shape, np.float32), labels, ids)
    on_lung_slices = ndimage.sum(np.broadcast_to(_lung_slices(smooth, spacing)[:, None, None], hu.shape), labels, ids)
    centres = np.array([volume.index_to_physical(c) for c in ndimage.center_of_mass(labels > 0, labels, ids)])
    spine_xy = _spine_centre_xy(volume, bone)
    midline_x = spine_xy[0] if spine_xy is not None else volume.index_to_physical(np.array(hu.shape) / 2 - 0.5)[0]
    near_midline = np.abs(centres[:, 0] - midline_x) <= HEART_MAX_OFFSET_MM
    candidates = (on_lung_slices >= HEART_LUNG_SHARE * sizes) & near_midline
    if spine_xy is not None:
        candidates &= centres[:, 1] < spine_xy[1]  # anterior: smaller LPS y
    if not candidates.any():
        raise ValueError("no solid soft-tissue mass at the level of the lungs, near the midline and anterior to the "
                         "spine was found to locate the heart; pass a heart region (a label map on the CT's grid)")
    heart = _grow(labels == ids[int(np.argmax(np.where(candidates, sizes, -1)))], OPENING_RADIUS_MM, spacing) & tissue
    return _grow(heart, margin_mm, spacing)


def inpaint_calcium(hu: np.ndarray, mask: np.ndarray, *, threshold_hu: float = CALCIUM_THRESHOLD_HU) -> np.ndarray:
    """``hu`` (z, y, x) with the ``mask`` voxels replaced by their local soft-tissue background."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3D array (z, y, x), got shape {hu.shape}")
    mask = _mask_like(mask, hu, "calcium mask")
    out = hu.copy()
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        out[z][mask[z]] = _fill_slice(hu[z], mask[z], threshold_hu)
    return out


# -- helpers ----------------------------------------------------------------------------------
def _fill_slice(image: np.ndarray, hole: np.ndarray, threshold_hu: float) -> np.ndarray:
    """Values for the ``hole`` pixels of one slice by multiscale normalized convolution."""
    valid = (~hole & (image < threshold_hu)).astype(np.float64)
    if not valid.any():
        raise ValueError("cannot inpaint: a slice has no voxel below "
                         f"{threshold_hu:g} HU outside the calcium mask")
    weighted = image * valid
    values = np.full(int(hole.sum()), np.nan)
    sigma = 1.0
    while np.isnan(values).any():
        weight = ndimage.gaussian_filter(valid, sigma, mode="constant")[hole]
        estimate = ndimage.gaussian_filter(weighted, sigma, mode="constant")[hole] / np.maximum(weight, 1e-12)
        # the widest scale takes whatever is left, however little weight it has
        take = np.isnan(values) & ((weight >= _MIN_WEIGHT) | (sigma > max(image.shape)))
        values[take] = estimate[take]
        sigma *= 2
    return values.astype(np.float32)


def _lung_slices(smooth_hu: np.ndarray, spacing_zyx) -> np.ndarray:
    """Slices where the lungs are wide (bool per slice); all True when no lung is in view.

    Lung is aerated tissue (-980 to -400 HU after the median filter; air outside the body and
    in the airways is darker) in structures of at least 50 ml, so partial-volume rims at the
    skin do not count.
    """
    aerated = (smooth_hu > LUNG_HU_RANGE[0]) & (smooth_hu < LUNG_HU_RANGE[1])
    labels, count = ndimage.label(aerated)
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * float(np.prod(spacing_zyx))
    sizes[0] = 0
    lung_area = (sizes >= LUNG_MIN_VOLUME_MM3)[labels].sum(axis=(1, 2))
    if not lung_area.any():
        return np.ones(smooth_hu.shape[0], bool)
    return lung_area >= LUNG_SLICE_FRACTION * lung_area.max()


def _spine_centre_xy(volume: Volume, bone: np.ndarray) -> np.ndarray | None:
    """LPS (x, y) of the spine: where the most bone lies along the slices, within ~1 cm.

    The vertebral bodies stack at one place through every slice, while ribs sweep across and
    the sternum is thinner. Counting the voxels per axial column finds the spine even where
    ribs touch it. None without bone.
    """
    column = bone.sum(axis=0).astype(float)
    if not column.any():
        return None
    spacing_y, spacing_x = volume.spacing_zyx[1:]
    column = ndimage.gaussian_filter(column, (SPINE_SMOOTH_MM / spacing_y, SPINE_SMOOTH_MM / spacing_x))
    y, x = np.unravel_index(int(np.argmax(column)), column.shape)
    return volume.index_to_physical((0, y, x))[:2]


def _shrink_or_grow(mask: np.ndarray, radius_mm: float, spacing_zyx, grow: bool) -> np.ndarray:
    """Erosion or dilation by a ball of ``radius_mm`` via the Euclidean distance transform."""
    if radius_mm <= 0:
        return mask.copy()
    if grow:
        if not mask.any():
            return mask.copy()
        return ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) <= radius_mm
    return ndimage.distance_transform_edt(mask, sampling=spacing_zyx) > radius_mm


def _grow(mask: np.ndarray, radius_mm: float, spacing_zyx) -> np.ndarray:
    return _shrink_or_grow(mask, radius_mm, spacing_zyx, grow=True)


def _shrink(mask: np.ndarray, radius_mm: float, spacing_zyx) -> np.ndarray:
    return _shrink_or_grow(mask, radius_mm, spacing_zyx, grow=False)


def _hu(volume: Volume) -> np.ndarray:
    if not isinstance(volume, Volume):
        raise ValueError(f"expected a meddiffusion.io.Volume (CT in HU), got {type(volume).__name__}")
    return np.asarray(volume.array, dtype=np.float32)


def _mask_like(mask, hu: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != hu.shape:
        raise ValueError(f"{name} has shape {mask.shape} but the CT has {hu.shape}; it must be on the CT's grid")
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a boolean mask or a label map, got dtype {mask.dtype}")
    return mask > 0
