"""Where the motion task works: the calcium in the heart of a whole non-gated chest CT.

Calcium candidates (>= 130 HU, Agatston's 1 mm² rule) inside the heart region with bone
excluded (``physics.calcium``), or a user box. The heart region is found on a copy of the body
reduced to about 2 × 2 × 3 mm voxels (on a 512² × 200 CT this takes a few seconds instead of
about 15), the bone and the calcium at full resolution inside the heart's bounding box. Each
calcium component gets a box grown by 16 pixels in-plane (motion smears calcium by a few
millimetres) and by one slice above and below; overlapping boxes merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from meddiffusion.geometry import Box
from meddiffusion.io import Volume
from meddiffusion.metrics.agatston import agatston
from meddiffusion.tasks.motion.model import PATCH_SIZE

__all__ = ["MOTION_MARGIN_PX", "SMEARED_HU", "SLICE_MARGIN", "Box", "MotionRegion", "check_roi", "find_region",
           "bone_near"]

#: in-plane margin around a calcium component: motion smears calcium by a few mm (16 px ≈ 11 mm at 0.7 mm)
MOTION_MARGIN_PX = 16
#: smoothed HU above which a voxel may be calcium smeared by motion (boxes only, never scored)
SMEARED_HU = 100.0
#: slices added above and below a calcium component
SLICE_MARGIN = 1
#: overlap of neighbouring windows; the Gaussian blend hides the seams
#: voxel size of the reduced copy on which the heart region and the large bones are found
_REDUCED_MM = (2.0, 2.0, 3.0)
#: a voxel is body above this HU (air -1000, lung about -850 but inside the body box)
_BODY_HU = -500.0


@dataclass
class MotionRegion:
    """Where to correct and where to score.

    ``boxes`` are corrected (disjoint); ``scoring`` (bool, z, y, x) is where calcium counts for
    both scans: the heart region without bone (automatic), or the user box without bone.
    ``calcium`` is the input's calcium that placed the boxes (automatic mode only).
    """

    boxes: list[Box]
    scoring: np.ndarray = field(repr=False)
    source: str = "auto"
    calcium: np.ndarray | None = field(default=None, repr=False)

    @property
    def slices(self) -> tuple[int, int] | None:
        """(first, end) slice range covered by the boxes, end exclusive; None when nothing is corrected."""
        if not self.boxes:
            return None
        return min(b.z0 for b in self.boxes), max(b.z1 for b in self.boxes)

    @property
    def voxels(self) -> int:
        return int(sum(np.prod(b.shape) for b in self.boxes))


def check_roi(roi: Sequence[int], shape_zyx: Sequence[int]) -> Box:
    """``roi`` = (I0, I1, J0, J1, K0, K1), voxel indices x/y/z, end exclusive, as a :class:`Box`."""
    values = list(roi)
    if len(values) != 6:
        raise ValueError(f"--roi needs 6 numbers I0 I1 J0 J1 K0 K1 (x, y, z index ranges), got {len(values)}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"--roi values must be whole voxel indices, got {values}")
    size_xyz = list(shape_zyx)[::-1]
    for axis, (start, stop, size) in enumerate(zip(values[0::2], values[1::2], size_xyz)):
        name = "IJK"[axis]
        if stop <= start:
            raise ValueError(f"--roi is empty along {name}: {name}0={start} must be smaller than {name}1={stop} "
                             "(ranges are end exclusive)")
        if start < 0 or stop > size:
            raise ValueError(f"--roi {name} range {start}..{stop} lies outside the volume, whose {name} indices run "
                             f"0..{size} (size {size_xyz[0]}×{size_xyz[1]}×{size_xyz[2]}, end exclusive)")
    i0, i1, j0, j1, k0, k1 = (int(v) for v in values)
    return Box(k0, k1, j0, j1, i0, i1)


def find_region(volume: Volume, roi: Sequence[int] | None = None, *, heart: np.ndarray | None = None,
                patch_size: int = PATCH_SIZE) -> MotionRegion:
    """The boxes to correct and the scoring region (see the module docstring).

    ``roi`` (I0, I1, J0, J1, K0, K1, end exclusive) corrects exactly that box and scores inside
    it, bone excluded. Without it the region is found from the calcium in the heart: ``heart``
    (a mask on the CT's grid, e.g. from a segmentation, needed for a heart-centred field of
    view that shows too little lung to find it) or the heart found automatically. A CT without
    calcium in the heart gets no boxes (nothing to correct).
    """
    hu = _hu(volume)
    scoring = np.zeros(hu.shape, bool)
    if roi is not None:
        box = check_roi(roi, hu.shape)
        scoring[box.slices] = ~bone_near(volume, box)
        return MotionRegion([box], scoring, "roi")

    if heart is None:
        heart = _heart(volume)
    else:
        heart = np.asarray(heart) > 0
        if heart.shape != hu.shape:
            raise ValueError(f"the heart mask has shape {heart.shape} but the CT has {hu.shape}; "
                             "expected a mask on the CT's grid")
    if not heart.any():
        return MotionRegion([], heart, "auto", np.zeros(hu.shape, bool))
    outer = _bounding_box(heart)
    allowed = heart[outer.slices] & ~bone_near(volume, outer)
    # detect_calcium's rule (Agatston lesions in the region, bone excluded), on the heart's box only
    counted = agatston(hu[outer.slices], volume.spacing, mask=allowed.view(np.uint8)).label_map > 0
    scoring[outer.slices] = allowed
    calcium = np.zeros(hu.shape, bool)
    calcium[outer.slices] = counted
    return MotionRegion(_calcium_boxes(counted | _smeared_calcium(hu[outer.slices], allowed), outer, hu.shape,
                                       patch_size), scoring, "auto", calcium)


def _smeared_calcium(hu: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Calcium that motion smeared below the Agatston rule, inside ``allowed``: boxes only, never scored.

    Motion spreads a lesion's HU over a larger area, so a small or faint one can keep only a
    few pixels (under 1 mm²) above 130 HU, or none, and would get no box. Kept: groups of two or
    more pixels >= 130 HU (a lone pixel is usually noise), and pixels >= ``SMEARED_HU`` after
    in-plane smoothing (sigma 1 px lowers the noise about three-fold, so the threshold stays far
    above blood and myocardium at about 40 HU). A false candidate costs one more box, not a
    wrong score.
    """
    bright = (hu >= 130.0) & allowed
    labels, count = ndimage.label(bright, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    smooth = ndimage.gaussian_filter(hu, sigma=(0, 1, 1))
    return (sizes[labels] >= 2) | ((smooth >= SMEARED_HU) & allowed)


def bone_near(volume: Volume, box: Box) -> np.ndarray:
    """``physics.calcium.bone_mask(volume)`` inside ``box`` (a bool array of the box's shape).

    Which structures are bone is decided on the whole volume (a rib cut by the box is still a
    rib); the 2 mm growth, the costly part, is computed only in the box plus that margin.
    """
    from meddiffusion.physics.calcium import BONE_MARGIN_MM, BONE_MIN_VOLUME_MM3, CALCIUM_THRESHOLD_HU

    hu = _hu(volume)
    spacing = np.asarray(volume.spacing_zyx)
    pad = np.ceil(BONE_MARGIN_MM / spacing).astype(int) + 1
    outer = _clip_box(Box(box.z0 - pad[0], box.z1 + pad[0], box.y0 - pad[1], box.y1 + pad[1],
                          box.x0 - pad[2], box.x1 + pad[2]), hu.shape)
    labels, count = ndimage.label(hu >= CALCIUM_THRESHOLD_HU, structure=np.ones((3, 3, 3), bool))
    inner = (slice(box.z0 - outer.z0, box.z1 - outer.z0), slice(box.y0 - outer.y0, box.y1 - outer.y0),
             slice(box.x0 - outer.x0, box.x1 - outer.x0))
    if count == 0:
        return np.zeros(box.shape, bool)
    sizes = np.bincount(labels[labels > 0], minlength=count + 1) * float(np.prod(volume.spacing))
    large = sizes >= BONE_MIN_VOLUME_MM3
    large[0] = False
    bone = large[labels[outer.slices]]
    if not bone.any():
        return np.zeros(box.shape, bool)
    return (ndimage.distance_transform_edt(~bone, sampling=spacing) <= BONE_MARGIN_MM)[inner]


def _heart(volume: Volume) -> np.ndarray:
    """The heart region on the full grid, found on a copy of the body box reduced to ~2×2×3 mm voxels."""
    from meddiffusion.physics.calcium import heart_region

    hu = _hu(volume)
    heart = np.zeros(hu.shape, bool)
    body = _body_box(hu)
    if body is None:
        return heart
    factors = tuple(max(1, int(round(target / s))) for target, s in zip(_REDUCED_MM[::-1], volume.spacing_zyx))
    reduced, covered = _reduce(_crop(volume, body), factors)
    try:
        heart_small = heart_region(reduced)
    except ValueError as exc:
        raise ValueError(f"the heart could not be found automatically ({exc}). Pass --roi I0 I1 J0 J1 K0 K1 "
                         "with the voxel box to correct") from None
    inner = Box(body.z0, body.z0 + covered[0], body.y0, body.y0 + covered[1], body.x0, body.x0 + covered[2])
    heart[inner.slices] = _expand(heart_small, factors)
    return heart


def _body_box(hu: np.ndarray) -> Box | None:
    """The box holding every voxel above -500 HU (the patient, table included), or None for air only."""
    plane = np.zeros(hu.shape[1:], bool)
    zs = []
    for z in range(hu.shape[0]):  # slice by slice: no full-size temporary
        body = hu[z] > _BODY_HU
        if body.any():
            plane |= body
            zs.append(z)
    if not zs:
        return None
    ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return Box(zs[0], zs[-1] + 1, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)


def _reduce(volume: Volume, factors: tuple[int, int, int]) -> tuple[Volume, tuple[int, int, int]]:
    """Block means over ``factors`` (z, y, x) voxels, and the (z, y, x) extent the blocks cover.

    A partial block at the far edge of an axis is left out (it is the body's surface, or a
    volume thinner than one block, which is then kept at full resolution along that axis).
    """
    factors = tuple(f if n >= f else 1 for n, f in zip(volume.shape, factors))
    covered = tuple(n - n % f for n, f in zip(volume.shape, factors))
    array = volume.array[: covered[0], : covered[1], : covered[2]]
    nz, ny, nx = (n // f for n, f in zip(covered, factors))
    fz, fy, fx = factors
    reduced = array.reshape(nz, fz, ny, fy, nx, fx).mean(axis=(1, 3, 5), dtype=np.float32)
    spacing = tuple(s * f for s, f in zip(volume.spacing, factors[::-1]))
    origin = volume.index_to_physical([(f - 1) / 2 for f in factors])  # the first block's centre
    return Volume(reduced, spacing, tuple(origin), volume.direction, modality="CT"), covered


def _expand(mask: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Each reduced voxel back to its block of full-resolution voxels."""
    factors = tuple(f if f else 1 for f in factors)
    out = mask
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    return out


def _calcium_boxes(calcium: np.ndarray, where: Box, shape: tuple[int, int, int], patch_size: int) -> list[Box]:
    """A box per calcium component (grown for motion smear, at least a patch in-plane), overlaps merged.

    ``calcium`` covers the part ``where`` of a volume of ``shape``.
    """
    labels, _ = ndimage.label(calcium, structure=np.ones((3, 3, 3), bool))
    boxes = []
    for zs, ys, xs in ndimage.find_objects(labels):
        z0, y0, x0 = zs.start + where.z0, ys.start + where.y0, xs.start + where.x0
        z1, y1, x1 = zs.stop + where.z0, ys.stop + where.y0, xs.stop + where.x0
        box = Box(z0 - SLICE_MARGIN, z1 + SLICE_MARGIN, y0 - MOTION_MARGIN_PX, y1 + MOTION_MARGIN_PX,
                  x0 - MOTION_MARGIN_PX, x1 + MOTION_MARGIN_PX)
        boxes.append(_at_least(_clip_box(box, shape), patch_size, shape))
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    boxes[i] = boxes[i].union(boxes.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: (b.z0, b.y0, b.x0))


def _clip_box(box: Box, shape) -> Box:
    return Box(max(box.z0, 0), min(box.z1, shape[0]), max(box.y0, 0), min(box.y1, shape[1]),
               max(box.x0, 0), min(box.x1, shape[2]))


def _at_least(box: Box, size: int, shape) -> Box:
    """The box grown in-plane, about its centre, to ``size`` pixels where the image allows."""
    def grow(start: int, stop: int, extent: int) -> tuple[int, int]:
        length = min(extent, max(size, stop - start))
        start = max(0, min(start - (length - (stop - start)) // 2, extent - length))
        return start, start + length

    y0, y1 = grow(box.y0, box.y1, shape[1])
    x0, x1 = grow(box.x0, box.x1, shape[2])
    return Box(box.z0, box.z1, y0, y1, x0, x1)


def _bounding_box(mask: np.ndarray) -> Box:
    """The smallest box holding every True voxel of a non-empty mask."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    plane = mask[zs[0]: zs[-1] + 1].any(axis=0)
    ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return Box(int(zs[0]), int(zs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)


def _crop(volume: Volume, box: Box) -> Volume:
    origin = volume.index_to_physical([box.z0, box.y0, box.x0])
    return Volume(np.ascontiguousarray(volume.array[box.slices]), volume.spacing, tuple(origin), volume.direction,
                  modality=volume.modality or "CT")


def _hu(volume: Volume) -> np.ndarray:
    if not isinstance(volume, Volume):
        raise ValueError(f"expected a meddiffusion.io.Volume (CT in HU), got {type(volume).__name__}")
    return volume.array

