"""Coronary calcium motion correction with ProDM (arXiv 2512.24948) on whole non-gated chest CTs.

Shared constants of the task (used by training, inference and the bench):

- **intensities**: HU clipped to [-200, 800] and mapped linearly to [-1, 1] (ProDM's window);
  outside the corrected region the input is handed back unchanged;
- **slices**: 2.5D, k = 3 adjacent axial slices of the corrupted CT as the condition;
- **bridge**: Brownian bridge with T = 1000 (linear m_t, BBDM's ``max_var`` 1), sampled with
  BBDM's skip sampler, 10 steps by default.

Inference on a whole CT (``correct_volume``) touches only where calcium is:

1. **region** (``find_region``): calcium candidates (>= 130 HU, Agatston's 1 mm² rule) inside
   the heart region with bone excluded (``physics.calcium``), or a user box. The heart region
   is found on a copy of the body reduced to about 2 × 2 × 3 mm voxels (on a 512² × 200 CT
   this takes a few seconds instead of about 15), the bone and the calcium at full resolution
   inside the heart's bounding box. Each calcium component gets a box grown by 16 pixels
   in-plane (motion smears calcium by a few millimetres) and by one slice above and below;
   overlapping boxes merge.
2. **correction**: every slice of a box with its two neighbours is normalised, tiled into
   ``PATCH_SIZE`` windows with 25 % overlap (MONAI ``sliding_window_inference``, Gaussian
   blending), and each batch of windows runs the whole bridge sampler. The result is applied
   as a change to the input: ``out = input + (prediction − clip(input))``, so voxels outside the
   HU window (lung, dense bone) keep their value wherever the model leaves the window alone.
   Outside the boxes the output is the input, bit for bit.
3. **scoring** (``score_before_after``): Agatston (``metrics.agatston``) of the input and of the
   corrected CT inside the same region, lesion by lesion, as table rows and segmentation layers.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from meddiffusion.catalog import ModelEntry, get_model, list_models, load_state_dict
from meddiffusion.devices import autocast
from meddiffusion.diffusion.bridge import BrownianBridge
from meddiffusion.files import atomic_write
from meddiffusion.io import Volume
from meddiffusion.metrics.agatston import AgatstonResult, agatston

__all__ = ["TASK", "HU_LOW", "HU_HIGH", "CONTEXT_SLICES", "NUM_TIMESTEPS", "DEFAULT_STEPS", "PATCH_SIZE",
           "DEFAULT_MODEL", "TABLE_FIELDS", "normalize", "denormalize", "MotionModel", "build_model", "load_model",
           "Box", "MotionRegion", "MotionCorrection", "find_region", "check_roi", "bone_near", "correct_volume",
           "count_windows", "score_before_after", "score_region", "agatston_total", "evaluate", "table_rows",
           "write_table", "segmentation_layers", "largest_lesion_lps", "summary_of"]

TASK = "motion"
#: ProDM's HU window
HU_LOW, HU_HIGH = -200.0, 800.0
CONTEXT_SLICES = 3
NUM_TIMESTEPS = 1000
DEFAULT_STEPS = 10
#: training and inference patch size in pixels (about 45 mm at 0.7 mm pixels)
PATCH_SIZE = 64
DEFAULT_MODEL = "motion-prodm-small"
#: in-plane margin around a calcium component: motion smears calcium by a few mm (16 px ≈ 11 mm at 0.7 mm)
MOTION_MARGIN_PX = 16
#: smoothed HU above which a voxel may be calcium smeared by motion (boxes only, never scored)
SMEARED_HU = 100.0
#: slices added above and below a calcium component
SLICE_MARGIN = 1
#: overlap of neighbouring windows; the Gaussian blend hides the seams
WINDOW_OVERLAP = 0.25
#: slices sent to the sliding window at once (bounds memory for a large --roi)
_SLICE_CHUNK = 16
#: voxel size of the reduced copy on which the heart region and the large bones are found
_REDUCED_MM = (2.0, 2.0, 3.0)
#: a voxel is body above this HU (air -1000, lung about -850 but inside the body box)
_BODY_HU = -500.0
#: columns of the before/after table (--table); lesion rows leave "category" empty, total rows the lesion details
TABLE_FIELDS = ("scan", "lesion", "first_slice", "last_slice", "area_mm2", "peak_hu", "weight", "agatston",
                "volume_mm3", "category")


def normalize(hu: torch.Tensor) -> torch.Tensor:
    """HU -> [-1, 1] over ProDM's window [-200, 800] HU (values outside are clipped)."""
    return (hu.clamp(HU_LOW, HU_HIGH) - HU_LOW) / (HU_HIGH - HU_LOW) * 2 - 1


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> HU in [-200, 800]."""
    return (x + 1) / 2 * (HU_HIGH - HU_LOW) + HU_LOW


# -- the model -----------------------------------------------------------------------------------------
NetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MotionModel:
    """A ProDM network with its bridge and sampler settings, ready to correct 3-slice stacks.

    ``net(x_t, t, condition)`` predicts BBDM's grad target g (so x0_hat = x_t − g); any callable
    with that signature works, which is how tests plug in an exact oracle. ``objective`` is
    ``"bridge"`` (the sampler runs ``steps`` network calls) or ``"regression"`` (one call at
    t = T − 1 from the corrupted centre slice).
    """

    net: NetFn
    bridge: BrownianBridge
    objective: str = "bridge"
    steps: int = DEFAULT_STEPS
    eta: float = 0.0
    patch_size: int = PATCH_SIZE
    cpu_bf16_ok: bool = False
    entry: ModelEntry | None = None

    def __post_init__(self) -> None:
        if self.objective not in ("bridge", "regression"):
            raise ValueError(f"objective must be 'bridge' or 'regression', got {self.objective!r}")
        if self.eta < 0:
            raise ValueError(f"sampler eta must be >= 0, got {self.eta}")
        if self.patch_size < 8:
            raise ValueError(f"patch size must be at least 8 pixels, got {self.patch_size}")
        self.check_steps(self.steps)

    @property
    def id(self) -> str:
        return self.entry.id if self.entry is not None else "(unregistered)"

    def check_steps(self, steps: int) -> int:
        """The number of network calls ``steps`` means for this model (ValueError if out of range)."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise ValueError(f"steps must be a whole number, got {steps!r}")
        if self.objective == "regression":
            if steps < 1:
                raise ValueError(f"steps must be >= 1, got {steps}")
            return 1
        return len(self.bridge.sample_steps(int(steps)))  # raises for steps outside 1..T

    def device(self) -> torch.device:
        parameters = getattr(self.net, "parameters", None)
        first = next(iter(parameters()), None) if parameters is not None else None
        return first.device if first is not None else torch.device("cpu")

    def predict(self, stacks: torch.Tensor, steps: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised (B, 3, H, W) corrupted stacks [above, centre, below] -> (B, 1, H, W) x0_hat in [-1, 1]."""
        if stacks.ndim != 4 or stacks.shape[1] != CONTEXT_SLICES:
            raise ValueError(f"stacks must be (B, {CONTEXT_SLICES}, H, W), got {tuple(stacks.shape)}")
        centre = stacks[:, CONTEXT_SLICES // 2: CONTEXT_SLICES // 2 + 1]
        if self.objective == "regression":
            t = torch.full((stacks.shape[0],), self.bridge.num_timesteps - 1, dtype=torch.long, device=stacks.device)
            return (centre - self.net(centre, t, stacks).float()).clamp(-1.0, 1.0)
        steps = self.steps if steps is None else int(steps)
        return self.bridge.sample(lambda x_t, t: self.net(x_t, t, stacks).float(), centre, steps, eta=self.eta,
                                  generator=generator, clip_x0=(-1.0, 1.0))


def build_model(architecture: dict, state: dict[str, torch.Tensor] | None = None,
                entry: ModelEntry | None = None) -> MotionModel:
    """A :class:`MotionModel` from a model card's ``architecture`` and (optionally) its tensors.

    The card holds ``{"network": "ProDMUNet", "kwargs": {...}, "objective": "bridge" |
    "regression", "diffusion": {"kind": "brownian_bridge", "num_timesteps", "schedule",
    "max_var"}, "sampler": {"steps", "eta"}, "patch_size"}``.
    """
    from meddiffusion.nets import ProDMUNet

    if not isinstance(architecture, dict):
        raise ValueError(f"architecture must be a dict (the model card's), got {type(architecture).__name__}")
    name = architecture.get("network")
    if name != "ProDMUNet":
        raise ValueError(f"a motion model must use the ProDMUNet network, got {name!r}")
    kwargs = dict(architecture.get("kwargs", {}))
    if int(kwargs.get("context_slices", CONTEXT_SLICES)) != CONTEXT_SLICES:
        raise ValueError(f"this task feeds {CONTEXT_SLICES} context slices; the card asks for "
                         f"{kwargs.get('context_slices')}")
    diffusion = architecture.get("diffusion", {})
    kind = diffusion.get("kind", "brownian_bridge")
    if kind != "brownian_bridge":
        raise ValueError(f"a motion model's diffusion must be 'brownian_bridge', got {kind!r}")
    bridge = BrownianBridge(int(diffusion.get("num_timesteps", NUM_TIMESTEPS)), diffusion.get("schedule", "linear"),
                            float(diffusion.get("max_var", 1.0)))
    net = ProDMUNet(**kwargs)
    if state is not None:
        net.load_state_dict(dict(state))
    sampler = architecture.get("sampler", {})
    patch = int(architecture.get("patch_size", PATCH_SIZE))
    if patch % net.multiple:
        raise ValueError(f"patch size {patch} must be a multiple of {net.multiple} for this network")
    return MotionModel(net.eval(), bridge, architecture.get("objective", "bridge"),
                       int(sampler.get("steps", DEFAULT_STEPS)), float(sampler.get("eta", 0.0)), patch,
                       bool(architecture.get("cpu_bf16_ok", False)), entry)


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> MotionModel:
    """The motion model ``model_id`` from the catalogue, or ``motion-prodm-small`` (else any motion model)."""
    if model_id is None:
        available = {m.id: m for m in list_models(TASK)}
        entry = available.get(DEFAULT_MODEL) or next(iter(available.values()), None)
        if entry is None:
            raise ValueError("no motion-correction model is installed; train one with "
                             "'meddiff train motion --out DIR --register ID' or pass --model")
    else:
        entry = get_model(model_id)
        if entry.task != TASK:
            raise ValueError(f"model '{model_id}' is for task '{entry.task}', not motion correction ('{TASK}')")
    window = (entry.normalization.get("min_hu", HU_LOW), entry.normalization.get("max_hu", HU_HIGH))
    if tuple(map(float, window)) != (HU_LOW, HU_HIGH):
        raise ValueError(f"model '{entry.id}' was trained on the HU window {window}; this task uses "
                         f"[{HU_LOW:g}, {HU_HIGH:g}]")
    model = build_model(entry.architecture, load_state_dict(entry), entry)
    model.net.to(device)
    return model


# -- the region ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """Half-open index ranges in array order: slices z0:z1, rows y0:y1, columns x0:x1."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return slice(self.z0, self.z1), slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0

    def overlaps(self, other: "Box") -> bool:
        return (self.z0 < other.z1 and other.z0 < self.z1 and self.y0 < other.y1 and other.y0 < self.y1
                and self.x0 < other.x1 and other.x0 < self.x1)

    def union(self, other: "Box") -> "Box":
        return Box(min(self.z0, other.z0), max(self.z1, other.z1), min(self.y0, other.y0), max(self.y1, other.y1),
                   min(self.x0, other.x0), max(self.x1, other.x1))

    def ijk(self) -> list[int]:
        """The box as ``--roi`` spells it: I0 I1 J0 J1 K0 K1 (x, y, z; end exclusive)."""
        return [self.x0, self.x1, self.y0, self.y1, self.z0, self.z1]


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


# -- correction ----------------------------------------------------------------------------------------
@dataclass
class MotionCorrection:
    """A corrected CT (the input's grid) with the region that was corrected and what it cost."""

    corrected: Volume
    region: MotionRegion
    steps: int
    windows: int
    seconds_region: float
    seconds_correct: float


def correct_volume(volume: Volume, model: MotionModel, *, roi: Sequence[int] | None = None,
                   region: MotionRegion | None = None, steps: int | None = None, batch_size: int = 16, seed: int = 0,
                   precision: str = "auto", callback: Callable[[int, int], None] | None = None) -> MotionCorrection:
    """Correct calcium motion in a CT in HU; a new volume on the same grid (see the module docstring).

    ``region`` (from :func:`find_region`) skips the search; otherwise it is found from ``roi``
    or automatically. ``callback(done, total)`` counts windows (patch × slice), once per batch,
    so progress and cancellation are checked after every batch of the sampler.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = model.steps if steps is None else steps
    model.check_steps(steps)
    start = time.monotonic()
    if region is None:
        region = find_region(volume, roi, patch_size=model.patch_size)
    seconds_region = time.monotonic() - start

    start = time.monotonic()
    if isinstance(model.net, torch.nn.Module):
        with torch.no_grad():  # not inference mode: the weights must stay usable for training afterwards
            model.net.to(memory_format=torch.channels_last).eval()  # faster convolutions on CPU and GPU
    with torch.inference_mode():
        output = _correct_boxes(volume, model, region, steps, batch_size, seed, precision, callback)
    return MotionCorrection(volume.with_array(output), region, int(steps), count_windows(region, model.patch_size),
                            seconds_region, time.monotonic() - start)


def _correct_boxes(volume: Volume, model: MotionModel, region: MotionRegion, steps: int, batch_size: int, seed: int,
                   precision: str, callback: Callable[[int, int], None] | None) -> np.ndarray:
    """The corrected array: the input with every box replaced by the blended model output."""
    hu = _hu(volume)
    output = np.array(hu, dtype=np.float32, copy=True)
    device = model.device()
    generator = torch.Generator().manual_seed(int(seed))
    patch = model.patch_size
    total = count_windows(region, patch)
    done = 0
    if callback is not None:
        callback(0, total)
    for box in region.boxes:
        rows, cols = box.slices[1], box.slices[2]
        for z0 in range(box.z0, box.z1, _SLICE_CHUNK):
            index = np.arange(z0, min(z0 + _SLICE_CHUNK, box.z1))
            above, below = np.maximum(index - 1, 0), np.minimum(index + 1, hu.shape[0] - 1)
            stack = np.stack([hu[above, rows, cols], hu[index, rows, cols], hu[below, rows, cols]], axis=1)
            inputs = normalize(torch.from_numpy(stack).to(device, torch.float32))
            inputs = inputs.contiguous(memory_format=torch.channels_last)

            def predictor(windows: torch.Tensor) -> torch.Tensor:
                nonlocal done
                with autocast(device, precision, cpu_bf16_ok=model.cpu_bf16_ok):
                    result = model.predict(windows, steps, generator).float()
                done += windows.shape[0]
                if callback is not None:
                    callback(done, total)
                return result

            x0 = sliding_window_inference(inputs, (patch, patch), batch_size, predictor, overlap=WINDOW_OVERLAP,
                                          mode="gaussian", padding_mode="replicate")
            predicted = denormalize(x0[:, 0].float()).cpu().numpy()
            original = hu[index, rows, cols]
            output[index, rows, cols] = original + (predicted - np.clip(original, HU_LOW, HU_HIGH))
    return output


def count_windows(region: MotionRegion, patch_size: int = PATCH_SIZE) -> int:
    """Windows (one patch on one slice) :func:`correct_volume` runs for ``region``: its progress total."""
    return sum(b.shape[0] * _windows_per_slice(b.shape[1], b.shape[2], patch_size) for b in region.boxes)


def _windows_per_slice(height: int, width: int, patch: int) -> int:
    """How many windows MONAI's sliding window places on one (height, width) slice."""
    from monai.data.utils import dense_patch_slices

    size = (max(height, patch), max(width, patch))
    interval = tuple(patch if s == patch else max(int(patch * (1 - WINDOW_OVERLAP)), 1) for s in size)
    return len(dense_patch_slices(size, (patch, patch), interval))


# -- scoring -------------------------------------------------------------------------------------------
def score_region(volume: Volume, region: MotionRegion | np.ndarray) -> AgatstonResult:
    """Agatston of ``volume`` inside the region's scoring mask, with physical lesion centroids.

    Scored on the mask's bounding box, then put back on the full grid (slice numbers, label
    map, centroids), which is the same as scoring the whole volume, only faster.
    """
    mask = region.scoring if isinstance(region, MotionRegion) else np.asarray(region) > 0
    hu = _hu(volume)
    if mask.shape != hu.shape:
        raise ValueError(f"scoring region has shape {mask.shape} but the CT has {hu.shape}")
    if not mask.any():
        return _empty_score(volume)
    box = _bounding_box(mask)
    corner = volume.index_to_physical([box.z0, box.y0, box.x0])
    result = agatston(hu[box.slices], volume.spacing, mask=mask[box.slices].view(np.uint8), origin_xyz=corner,
                      direction=volume.direction)
    label_map = np.zeros(hu.shape, np.int32)
    label_map[box.slices] = result.label_map
    lesions = [replace(lesion, slice_first=lesion.slice_first + box.z0, slice_last=lesion.slice_last + box.z0,
                       centroid_zyx=tuple(c + o for c, o in zip(lesion.centroid_zyx, (box.z0, box.y0, box.x0))))
               for lesion in result.lesions]
    return replace(result, lesions=lesions, label_map=label_map)


def _empty_score(volume: Volume) -> AgatstonResult:
    return AgatstonResult([], 0.0, 0.0, "zero", float(volume.spacing[2]), np.zeros(volume.shape, np.int32))


def score_before_after(before: Volume, after: Volume,
                       region: MotionRegion | np.ndarray) -> tuple[AgatstonResult, AgatstonResult]:
    """Agatston of the input and of the corrected CT, both inside the same region."""
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must be on one grid")
    return score_region(before, region), score_region(after, region)


def agatston_total(volume: Volume, region: MotionRegion | np.ndarray) -> float:
    """The total Agatston score of ``volume`` inside the region (for benches)."""
    return float(score_region(volume, region).total)


def evaluate(corrupted: Volume, corrected: Volume, static: Volume,
             region: MotionRegion | np.ndarray) -> dict[str, Any]:
    """Agatston of the non-gated input, the corrected CT and the motion-free reference in one region.

    Returns each scan's :func:`summary_of` plus the absolute Agatston errors of the input and of
    the correction against the reference and whether their risk categories match it.
    """
    scores = {name: score_region(volume, region) for name, volume in
              (("corrupted", corrupted), ("corrected", corrected), ("static", static))}
    reference = scores["static"]
    out: dict[str, Any] = {name: summary_of(result) for name, result in scores.items()}
    for name in ("corrupted", "corrected"):
        out[f"{name}_abs_error"] = abs(scores[name].total - reference.total)
        out[f"{name}_category_match"] = scores[name].category == reference.category
    return out


def table_rows(before: AgatstonResult, after: AgatstonResult) -> list[dict[str, Any]]:
    """Rows with ``TABLE_FIELDS``: one per lesion of each scan, then that scan's total row."""
    rows = []
    for scan, result in (("before", before), ("after", after)):
        for lesion in result.lesions:
            rows.append({"scan": scan, "lesion": lesion.id, "first_slice": lesion.slice_first,
                         "last_slice": lesion.slice_last, "area_mm2": lesion.area_mm2, "peak_hu": lesion.peak_hu,
                         "weight": lesion.weight, "agatston": lesion.agatston, "volume_mm3": lesion.volume_mm3,
                         "category": ""})
        rows.append({"scan": scan, "lesion": "total", "first_slice": "", "last_slice": "", "area_mm2": "",
                     "peak_hu": "", "weight": "", "agatston": result.total, "volume_mm3": result.volume_mm3,
                     "category": result.category})
    return rows


def write_table(path: str | os.PathLike, before: AgatstonResult, after: AgatstonResult) -> Path:
    """Write :func:`table_rows` as CSV, atomically."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
            writer.writeheader()
            writer.writerows(table_rows(before, after))

    return atomic_write(path, write)


#: segment colours: warm for the input's lesions, cool for the corrected ones
_BEFORE_COLOURS = ((0.95, 0.35, 0.2), (0.95, 0.65, 0.15), (0.85, 0.2, 0.45), (0.95, 0.85, 0.3))
_AFTER_COLOURS = ((0.2, 0.55, 0.95), (0.25, 0.85, 0.7), (0.55, 0.4, 0.95), (0.3, 0.75, 0.95))


def segmentation_layers(before: AgatstonResult, after: AgatstonResult) -> tuple[list[np.ndarray], list[dict]]:
    """Layers (before, after lesion label maps) and segments "before L1", ..., "after L1", ... for
    :func:`meddiffusion.io.write_segmentation`."""
    layers, segments = [], []
    for layer, (scan, result, colours) in enumerate((("before", before, _BEFORE_COLOURS),
                                                     ("after", after, _AFTER_COLOURS))):
        layers.append(result.label_map)
        for lesion in result.lesions:
            segments.append({"name": f"{scan} L{lesion.id}", "layer": layer, "label": lesion.id,
                             "color": colours[(lesion.id - 1) % len(colours)],
                             "tags": {"Scan": scan, "Agatston": f"{lesion.agatston:.2f}"}})
    return layers, segments


def largest_lesion_lps(result: AgatstonResult) -> list[float] | None:
    """LPS centroid (mm) of the lesion with the largest volume; None without calcium."""
    if not result.lesions:
        return None
    largest = max(result.lesions, key=lambda lesion: (lesion.volume_mm3, -lesion.id))
    return [float(c) for c in largest.centroid_xyz_mm]


def summary_of(result: AgatstonResult) -> dict[str, Any]:
    """The result-event dict of one scan: agatston, volume_mm3, lesions, category."""
    return {"agatston": float(result.total), "volume_mm3": float(result.volume_mm3),
            "lesions": len(result.lesions), "category": result.category}

