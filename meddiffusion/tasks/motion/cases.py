"""Training data for coronary calcium motion correction (ProDM): phantom pairs, patches, losses, recipe.

Each *case* is one phantom patient imaged as a gated calcium-scoring CT and then corrupted by
ProDM's motion simulation (:func:`meddiffusion.physics.motion.simulate_motion`):

1. a thorax phantom of a random preset whose calcified plaques are drawn here: none in 10 % of
   the cases, otherwise 1-12 plaques 1.5-12 mm long at 150-1300 HU (log-uniform). The presets'
   own plaques (1-5 mm) rarely score above "moderate"; these span Agatston 0 to well over 400;
2. a heart-centred CT in diastole (192² pixels of 0.6-0.8 mm, 40 slices of 3 mm, as
   ``data/make_samples.py`` makes the sample), with full-dose quantum noise inserted in the
   projection domain at I0 drawn log-uniform in 1e5-1e6 photons (3e5 is a routine scan);
3. motion profile ``index % 21`` with ``ALLOWED_VIEWS[index % 5]`` views, so every profile and
   every view count appear (all 105 pairs in any 105 consecutive cases). The *static* image went
   through the same acquisition with the calcium at rest: it is the training target, and the
   pair differs by the motion alone.

Simulation costs seconds per case, so each case is reduced once to patches and written to
``case_NNNN.npz`` (int16 HU) in a cache folder that several training runs can share; an
interrupted build resumes. For every slice the calcium reaches and every calcium component
there, a patch holds the corrupted slices z-1, z, z+1 (edges replicate) and the static slice z,
80×80 around the component with a random offset; about 15 % more patches sit at random places
of the heart without calcium, so the network also learns to leave calcium-free anatomy alone.
Training cuts a random 64² crop out of each patch and flips or transposes it, with the trainer's
per-step generator, so a resumed run repeats the same crops.

Two objectives train the same network (the bench compares them): ``bridge`` is ProDM's Brownian
bridge from the corrupted centre slice y to the static x0 (BBDM's ``grad`` target, L1) plus
lambda times the calcium consistency loss on x0_hat; ``regression`` calls the network once at
t = T - 1 with x_t = y, reads its output as y - x0 and takes the L1 error of x0_hat. Lambda
is held at 0 for the first steps and then ramped up (see :func:`make_loss_fn` for why). In both,
the L1 can count the few pixels the motion changed ``1 + focus`` times (:func:`focus_weight`;
``meddiff train motion --focus``, off by default), so that the network is graded on the
correction and not only on copying the untouched background.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from meddiffusion.diffusion.bridge import BrownianBridge, weighted_mean
from meddiffusion.io import Volume
from meddiffusion.phantoms.coronaries import Plaque
from meddiffusion.physics.motion_profiles import ALLOWED_VIEWS, PROFILES
from meddiffusion.tasks.motion.model import (CONTEXT_SLICES, DEFAULT_STEPS, HU_HIGH, HU_LOW, PATCH_SIZE, TASK, denormalize, normalize)
from meddiffusion.training.augment import dihedral
from meddiffusion.training.calcium_loss import (CALCIUM_THRESHOLD_HU, REGION_MARGIN_PX, TAU_HU,
                                                calcium_consistency_loss, calcium_region, grow_mask)
from meddiffusion.training.storage import hu_to_int16
from meddiffusion.training.trainer import derive_seed

__all__ = ["MotionDataOptions", "CaseSpec", "MotionCase", "case_spec", "make_case", "extract_patches",
           "build_cache", "read_case_info", "MotionPatches", "random_crops", "FOCUS_CHANGE_HU", "FOCUS_MARGIN_PX",
           "focus_weight", "make_loss_fn", "calcium_ramp",
           "make_val_fn", "NETWORK_CONFIGS",
           "OBJECTIVES", "default_model_id", "train"]

OBJECTIVES = ("bridge", "regression")
#: coronary branches a plaque sits on, and how often (proximal LAD and RCA disease is commonest)
VESSEL_WEIGHTS = {"LM": 0.1, "LAD": 0.4, "LCX": 0.2, "RCA": 0.3}
#: a plaque is at most this wide across the vessel, however long it is
MAX_PLAQUE_WIDTH_MM = 6.0
#: labels that make up the heart, where calcium-free patches are centred
HEART_LABELS = ("lv_blood", "rv_blood", "lv_myocardium", "rv_myocardium", "la", "ra", "coronary_artery", "infarct")
#: the coronary scoring region: arteries and plaques grown by this much (as ``data/make_samples.py``)
REGION_MARGIN_MM = 3.0
#: the largest displacement of any motion profile: calcium this far away in z can land in a slice
MAX_MOTION_MM = max(profile.magnitude_mm for profile in PROFILES)


@dataclass(frozen=True)
class MotionDataOptions:
    """How cases are drawn and cut into patches (see the module docstring for the defaults).

    ``plaques`` is the count range of a calcified case and ``calcium_free`` the share of cases
    without calcium; ``noise_views`` the views of the noise insertion (360 resolve a 192-pixel
    field of view; 720 would double the dominant cost of a case for no visible change in the noise);
    ``phase`` the gated scan's moment as a fraction of the RR interval. Patches are ``patch``
    pixels, centred on calcium up to ``jitter`` pixels off; ``background_share`` of them sit
    elsewhere in the heart, ``free_case_patches`` in a case without calcium.
    """

    size: int = 192
    slices: int = 40
    pixel_mm: tuple[float, float] = (0.6, 0.8)
    slice_mm: float = 3.0
    plaques: tuple[int, int] = (1, 12)
    calcium_free: float = 0.1
    plaque_mm: tuple[float, float] = (1.5, 12.0)
    plaque_hu: tuple[float, float] = (150.0, 1300.0)
    i0: tuple[float, float] = (1e5, 1e6)
    noise_views: int = 360
    phase: tuple[float, float] = (0.65, 0.8)
    patch: int = 80
    jitter: int = 8
    background_share: float = 0.15
    free_case_patches: int = 12

    def __post_init__(self) -> None:
        if self.size < 32 or self.slices < CONTEXT_SLICES:
            raise ValueError(f"cases need size >= 32 and slices >= {CONTEXT_SLICES}, got {self.size} and {self.slices}")
        if not 16 <= self.patch <= self.size:
            raise ValueError(f"patch must be between 16 and the image size {self.size}, got {self.patch}")
        if not 0 < self.slice_mm:
            raise ValueError(f"slice_mm must be > 0, got {self.slice_mm}")
        if not 0 <= self.plaques[0] <= self.plaques[1] <= 50:
            raise ValueError(f"plaques must be a count range (low, high) within 0-50, got {self.plaques}")
        for name in ("pixel_mm", "plaque_mm", "plaque_hu", "i0", "phase"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, got {(low, high)}")
        if not self.phase[1] < 1:
            raise ValueError(f"phase is a fraction of the cardiac cycle, below 1; got {self.phase}")
        for name in ("calcium_free", "background_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be a fraction in [0, 1), got {getattr(self, name)}")
        if self.noise_views < 1 or self.jitter < 0 or self.free_case_patches < 1:
            raise ValueError("noise_views and free_case_patches must be >= 1 and jitter >= 0, got "
                             f"{self.noise_views}, {self.free_case_patches} and {self.jitter}")


@dataclass(frozen=True)
class CaseSpec:
    """Everything that defines one case; a pure function of (seed, index) via :func:`case_spec`."""

    preset: str
    phantom_seed: int
    plaques: tuple[Plaque, ...]
    pixel_mm: float
    offset_mm: tuple[float, float, float]
    phase: float
    i0: float
    profile: int
    views: int
    noise_seed: int
    motion_seed: int
    patch_seed: int


@dataclass
class MotionCase:
    """A simulated case: the corrupted and static CTs (HU) and the masks on their grid.

    ``region`` is the coronary scoring region (arteries and plaques grown by 3 mm), inside which
    the bench scores Agatston; ``heart`` the heart's labels; ``calcium_mask`` the calcium that
    moved; ``slices_with_motion`` the slices the moving calcium reaches.
    """

    spec: CaseSpec
    corrupted: Volume
    static: Volume
    calcium_mask: np.ndarray
    region: np.ndarray
    heart: np.ndarray
    slices_with_motion: list[int] = field(default_factory=list)

    @property
    def profile(self) -> int:
        return self.spec.profile

    @property
    def views(self) -> int:
        return self.spec.views

    @property
    def phantom_seed(self) -> int:
        return self.spec.phantom_seed

    def agatston(self, which: str = "static") -> float:
        """Agatston score of the static (reference) or corrupted CT inside the scoring region."""
        from meddiffusion.metrics.agatston import agatston

        if which not in ("static", "corrupted"):
            raise ValueError(f"which must be 'static' or 'corrupted', got {which!r}")
        volume = self.static if which == "static" else self.corrupted
        return agatston(volume.array, volume.spacing, mask=self.region).total


def case_spec(seed: int, index: int, options: MotionDataOptions) -> CaseSpec:
    """The random draw of case ``index`` of dataset ``seed`` (other seeds: other patients)."""
    from meddiffusion.phantoms import PRESETS

    if index < 0:
        raise ValueError(f"case index must be >= 0, got {index}")
    rng = np.random.default_rng([int(seed), int(index)])
    preset = str(rng.choice(sorted(PRESETS)))
    phantom_seed = int(rng.integers(2**31))
    calcium_free = rng.uniform() < options.calcium_free
    count = 0 if calcium_free else int(rng.integers(options.plaques[0], options.plaques[1] + 1))
    plaques = _sample_plaques(count, options, rng)
    return CaseSpec(
        preset=preset, phantom_seed=phantom_seed, plaques=plaques, pixel_mm=float(rng.uniform(*options.pixel_mm)),
        offset_mm=tuple(float(v) for v in rng.uniform(-10, 10, 3)), phase=float(rng.uniform(*options.phase)),
        i0=float(math.exp(rng.uniform(math.log(options.i0[0]), math.log(options.i0[1])))),
        profile=int(index % len(PROFILES)), views=int(ALLOWED_VIEWS[index % len(ALLOWED_VIEWS)]),
        noise_seed=int(rng.integers(2**31)), motion_seed=int(rng.integers(2**31)),
        patch_seed=int(rng.integers(2**31)))


def _sample_plaques(count: int, options: MotionDataOptions, rng: np.random.Generator) -> tuple[Plaque, ...]:
    """Plaques placed as the presets place them (proximal more often, apart on one vessel), sized by ``options``."""
    names, weights = zip(*VESSEL_WEIGHTS.items())
    log_size, log_hu = np.log(options.plaque_mm), np.log(options.plaque_hu)
    plaques: list[Plaque] = []
    while len(plaques) < count:
        vessel = str(rng.choice(names, p=weights))
        size = float(math.exp(rng.uniform(*log_size)))
        for _ in range(20):
            position = float(rng.beta(1.3, 2.5)) if vessel != "LM" else float(rng.uniform(0.1, 0.9))
            if all(q.vessel != vessel or abs(q.position - position) > 0.08 for q in plaques):
                break
        aspect = min(float(rng.uniform(0.5, 0.9)), MAX_PLAQUE_WIDTH_MM / size)
        plaques.append(Plaque(id=len(plaques) + 1, vessel=vessel, position=position, size_mm=size, aspect=aspect,
                              hu=float(math.exp(rng.uniform(*log_hu))), angle_deg=float(rng.uniform(-70, 70))))
    return tuple(plaques)


def make_case(seed: int, index: int, options: MotionDataOptions | None = None) -> MotionCase:
    """Render, add noise to and motion-corrupt case ``index`` of dataset ``seed`` (deterministic)."""
    from meddiffusion.phantoms import LABELS, PLAQUE_LABEL_BASE, Grid, Phantom, render_calcium, render_ct
    from meddiffusion.phantoms.presets import sample_params
    from meddiffusion.physics import simulate_low_dose
    from meddiffusion.physics.motion import simulate_motion

    options = options or MotionDataOptions()
    spec = case_spec(seed, index, options)
    params = sample_params(spec.preset, spec.phantom_seed, calcium=False)
    params.plaques = list(spec.plaques)
    phantom = Phantom(params)
    heart = phantom.heart
    centre = heart.state(0.0).apex + 0.5 * heart.base_height * heart.e_h + np.asarray(spec.offset_mm)
    grid = Grid.centred((options.size, options.size, options.slices), (spec.pixel_mm, spec.pixel_mm, options.slice_mm),
                        tuple(float(c) for c in centre))
    t = spec.phase * phantom.rr_s
    clean = render_ct(phantom, grid, t, seed=spec.noise_seed)
    labels = phantom.labels(grid, t).array
    opacity, _ = render_calcium(phantom, grid, t)
    calcium = (labels > PLAQUE_LABEL_BASE) | (opacity.array > 0.05)
    coronary = (labels == LABELS["coronary_artery"]) | calcium
    radius = np.ceil(REGION_MARGIN_MM / np.asarray(grid.spacing[::-1]))
    region = ndimage.binary_dilation(coronary, structure=_ellipsoid(radius))
    heart_mask = np.isin(labels, [LABELS[name] for name in HEART_LABELS]) | region

    generator = torch.Generator().manual_seed(spec.noise_seed)
    noisy = simulate_low_dose(torch.from_numpy(clean.array), 1.0, pixel_size_mm=spec.pixel_mm, i0=spec.i0,
                              num_views=options.noise_views, generator=generator)
    gated = clean.with_array(noisy.numpy())
    result = simulate_motion(gated, calcium, spec.profile, spec.views, seed=spec.motion_seed)
    return MotionCase(spec=spec, corrupted=result.corrupted, static=result.static, calcium_mask=result.calcium_mask,
                      region=region, heart=heart_mask, slices_with_motion=list(result.slices_with_motion))


def _ellipsoid(radius_zyx) -> np.ndarray:
    rz, ry, rx = (int(r) for r in radius_zyx)
    z, y, x = np.ogrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]
    return (z / max(rz, 1)) ** 2 + (y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2 <= 1


# -- patches -------------------------------------------------------------------------------------------
def extract_patches(case: MotionCase, options: MotionDataOptions) -> dict[str, np.ndarray]:
    """Training patches of one case, int16 HU.

    Returns ``corrupted`` (N, 3, P, P): slices z-1, z, z+1 of the corrupted CT; ``static``
    (N, 1, P, P): slice z of the static CT; ``calcium`` (N,): whether the patch was centred on
    calcium; ``position`` (N, 3): its (z, row, col) centre.
    """
    rng = np.random.default_rng(case.spec.patch_seed)
    size, (depth, rows, cols) = options.patch, case.corrupted.shape
    if size > min(rows, cols):
        raise ValueError(f"patch size {size} is larger than the slices ({rows}×{cols})")
    reach = math.ceil(MAX_MOTION_MM / options.slice_mm)
    centres = [(z, r, c, True) for z, r, c in _calcium_centres(case, rng, options.jitter, reach)]
    wanted = (round(len(centres) * options.background_share / (1 - options.background_share)) if centres
              else options.free_case_patches)
    centres += [(z, r, c, False) for z, r, c in _background_centres(case, wanted, size, reach, rng)]
    corrupted = np.empty((len(centres), CONTEXT_SLICES, size, size), np.int16)
    static = np.empty((len(centres), 1, size, size), np.int16)
    half = CONTEXT_SLICES // 2
    for n, (z, r, c, _) in enumerate(centres):
        top = int(min(max(round(r - size / 2), 0), rows - size))
        left = int(min(max(round(c - size / 2), 0), cols - size))
        window = (slice(top, top + size), slice(left, left + size))
        stack = [min(max(z + d, 0), depth - 1) for d in range(-half, half + 1)]
        corrupted[n] = hu_to_int16(case.corrupted.array[stack][(slice(None), *window)])
        static[n, 0] = hu_to_int16(case.static.array[z][window])
    return {"corrupted": corrupted, "static": static,
            "calcium": np.array([flag for *_, flag in centres], bool),
            "position": np.array([(z, r, c) for z, r, c, _ in centres], np.float32).reshape(-1, 3)}


def _calcium_centres(case: MotionCase, rng: np.random.Generator, jitter: int,
                     reach: int) -> list[tuple[int, float, float]]:
    """One centre per calcium component (within ``reach`` slices) per slice the calcium reaches, offset at random."""
    centres = []
    mask = case.calcium_mask
    for z in case.slices_with_motion:
        footprint = mask[max(z - reach, 0) : z + reach + 1].any(axis=0)
        if not footprint.any():
            continue
        labels, _ = ndimage.label(ndimage.binary_dilation(footprint, iterations=2), structure=np.ones((3, 3), bool))
        for rows, cols in ndimage.find_objects(labels):
            dr, dc = rng.integers(-jitter, jitter + 1, 2)
            centres.append((int(z), (rows.start + rows.stop - 1) / 2 + dr, (cols.start + cols.stop - 1) / 2 + dc))
    return centres


def _background_centres(case: MotionCase, count: int, size: int, reach: int,
                        rng: np.random.Generator) -> list[tuple[int, float, float]]:
    """Up to ``count`` random heart positions whose patch (and its neighbour slices) holds no calcium."""
    candidates = np.argwhere(case.heart)
    if count == 0 or candidates.size == 0:
        return []
    mask, (depth, rows, cols) = case.calcium_mask, case.calcium_mask.shape
    centres = []
    for _ in range(20 * count):
        z, r, c = candidates[rng.integers(len(candidates))]
        top, left = min(max(r - size // 2, 0), rows - size), min(max(c - size // 2, 0), cols - size)
        near = mask[max(z - reach, 0) : z + reach + 1, top : top + size, left : left + size]
        if not near.any():
            centres.append((int(z), float(r), float(c)))
            if len(centres) == count:
                break
    return centres


# -- the shared cache ----------------------------------------------------------------------------------
def build_cache(folder: str | Path, count: int, seed: int, options: MotionDataOptions | None = None,
                callback: Callable[[int, int], None] | None = None, first: int = 0) -> list[Path]:
    """Simulate cases ``first .. first + count - 1`` of dataset ``seed`` into ``folder`` as patch files.

    Cases already there are kept (so an interrupted build resumes, and several training runs
    can share one folder); a file made with other options is an error, since mixing them
    would silently change the training data. Each file is written atomically.
    """
    from meddiffusion.files import atomic_write

    options = options or MotionDataOptions()
    if count < 1 or first < 0:
        raise ValueError(f"need count >= 1 and first >= 0, got {count} and {first}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, index in enumerate(range(first, first + count)):
        path = folder / f"case_{index:04d}.npz"
        spec = case_spec(seed, index, options)
        meta = json.dumps({"seed": int(seed), "index": index, "spec": asdict(spec), "options": asdict(options)})
        if path.exists():
            if read_case_info(path)["meta"] != meta:
                raise ValueError(f"{path} was generated with another seed or other data options; use another "
                                 "--data folder or delete this one")
        else:
            start = time.monotonic()
            case = make_case(seed, index, options)
            patches = extract_patches(case, options)
            info = {"agatston": case.agatston("static"), "agatston_corrupted": case.agatston("corrupted"),
                    "slices_with_motion": case.slices_with_motion, "seconds": round(time.monotonic() - start, 2)}
            atomic_write(path, lambda tmp: _save(tmp, patches, meta, info))
        paths.append(path)
        if callback is not None:
            callback(n + 1, count)
    return paths


def _save(tmp: Path, patches: dict[str, np.ndarray], meta: str, info: dict) -> None:
    with open(tmp, "wb") as handle:  # a file object: numpy would append .npz to the temporary name
        np.savez_compressed(handle, meta=np.array(meta), info=np.array(json.dumps(info)), **patches)


def read_case_info(path: str | Path) -> dict:
    """A cached case's spec and options (``meta``, JSON text), Agatston scores and patch count."""
    with np.load(path) as stored:
        info = json.loads(str(stored["info"]))
        meta = str(stored["meta"])
        info.update(meta=meta, patches=int(stored["static"].shape[0]), calcium_patches=int(stored["calcium"].sum()))
    described = json.loads(meta)
    info.update(profile=described["spec"]["profile"], views=described["spec"]["views"])
    return info


class MotionPatches(Dataset):
    """Every patch of the cached cases: int16 HU ``corrupted`` (3, P, P) and ``static`` (1, P, P).

    :func:`random_crops` cuts the training crops from a batch with the trainer's generator.
    """

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise ValueError("no training cases given; generate them with build_cache first")
        corrupted, static, calcium = [], [], []
        for path in paths:
            with np.load(path) as data:
                corrupted.append(data["corrupted"])
                static.append(data["static"])
                calcium.append(data["calcium"])
        self.corrupted, self.static = np.concatenate(corrupted), np.concatenate(static)
        self.calcium = np.concatenate(calcium)
        if len(self.static) == 0:
            raise ValueError(f"the {len(paths)} cached cases hold no patches")

    def __len__(self) -> int:
        return len(self.static)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"corrupted": torch.from_numpy(self.corrupted[index]), "static": torch.from_numpy(self.static[index])}


def random_crops(batch: dict[str, torch.Tensor], crop: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (B, 3, c, c) corrupted context and (B, 1, c, c) static crops, each flipped/transposed at random."""
    corrupted, static = batch["corrupted"], batch["static"]
    height, width = corrupted.shape[-2:]
    if crop > min(height, width):
        raise ValueError(f"crop {crop} is larger than the patches ({height}×{width})")
    uniform = torch.rand((corrupted.shape[0], 3), generator=generator, device=generator.device).cpu()
    conditions, targets = [], []
    for i in range(corrupted.shape[0]):
        top = int(uniform[i, 0] * (height - crop + 1))
        left = int(uniform[i, 1] * (width - crop + 1))
        pair = torch.cat([corrupted[i], static[i]])[:, top : top + crop, left : left + crop].float()
        pair = dihedral(pair, int(uniform[i, 2] * 8))
        conditions.append(pair[:CONTEXT_SLICES])
        targets.append(pair[CONTEXT_SLICES:])
    return normalize(torch.stack(conditions)), normalize(torch.stack(targets))


#: a pixel the motion changed by more than this is where the network has work to do
FOCUS_CHANGE_HU = 20.0
#: the focus region reaches this far around those pixels and around calcium
FOCUS_MARGIN_PX = 2


def focus_weight(x0: torch.Tensor, y: torch.Tensor, focus: float) -> torch.Tensor:
    """Per-pixel L1 weight ``1 + focus`` where the motion changed the image or calcium is, else 1 (no grad).

    Motion moves only the calcium: in a patch centred on a plaque about 1-2 % of the pixels
    differ from the static image by more than 20 HU and the rest are identical, noise and all.
    With a plain mean the network is graded almost only on copying the input through the
    bridge noise, and the pixels that decide the Agatston score weigh about as much as
    rounding. The focus region is every pixel the motion changed by more than
    ``FOCUS_CHANGE_HU``, or calcium (>= 130 HU) in either image, grown by ``FOCUS_MARGIN_PX``.
    """
    if focus < 0:
        raise ValueError(f"focus weight must be >= 0, got {focus}")
    x0_hu, y_hu = denormalize(x0.detach()), denormalize(y.detach())
    changed = (y_hu - x0_hu).abs() > FOCUS_CHANGE_HU
    calcium = (x0_hu >= CALCIUM_THRESHOLD_HU) | (y_hu >= CALCIUM_THRESHOLD_HU)
    return 1 + focus * grow_mask(changed | calcium, FOCUS_MARGIN_PX)


def make_loss_fn(objective: str, bridge: BrownianBridge, calcium_weight: float, crop: int, warmup: int = 0,
                 step: Callable[[], int] | None = None, focus: float = 0.0):
    """The training loss for :class:`meddiffusion.training.Trainer`: ``bridge`` (ProDM) or ``regression``.

    loss = L1 of the objective + lambda * calcium consistency loss of x0_hat, scored within a
    few pixels of calcium in x0 or in the corrupted centre slice (``calcium_loss.calcium_region``
    says why). With ``focus`` > 0 the L1 is a weighted mean that counts the pixels the motion
    changed ``1 + focus`` times (``focus_weight``). With ``warmup`` and ``step`` (the trainer's
    current step), lambda is 0 for the first ``warmup`` steps and then rises linearly to
    ``calcium_weight`` over as many more. Why:
    an untrained network's x0_hat carries the bridge noise (up to ~350 HU at mid-bridge), whose
    soft score dwarfs the calcium's; at lambda = 20 from step 0 that term dominates every update
    and the network settles for an x0_hat that matches the score and not the image (measured:
    HU error 150 after 200 steps, against 25 without the term). Once the bridge has learned to
    denoise, the term measures the calcium. Logs the L1 term (``l1``), the calcium term
    (``calcium``), lambda in force (``calcium_weight``) and the mean absolute error of
    x0_hat in HU within the window (``hu_mae``).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if not calcium_weight >= 0:
        raise ValueError(f"calcium weight must be >= 0, got {calcium_weight}")
    if warmup < 0:
        raise ValueError(f"calcium warm-up must be >= 0 steps, got {warmup}")

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
        condition, x0 = random_crops(batch, crop, generator)
        device = next(model.parameters()).device
        condition, x0 = condition.to(device), x0.to(device)
        y = condition[:, CONTEXT_SLICES // 2 : CONTEXT_SLICES // 2 + 1]
        weight = focus_weight(x0, y, focus) if focus > 0 else None
        if objective == "bridge":
            l1, x0_hat = bridge.training_loss(lambda x_t, t: model(x_t, t, condition), x0, y, generator=generator,
                                              weight=weight)
        else:
            t = torch.full((y.shape[0],), bridge.num_timesteps - 1, dtype=torch.long, device=device)
            x0_hat = y - model(y, t, condition)
            l1 = weighted_mean((x0_hat - x0).abs(), weight)
        calcium = calcium_consistency_loss(x0_hat, x0, region=calcium_region(x0, y))
        lam = calcium_weight * calcium_ramp(step(), warmup) if step is not None else calcium_weight
        loss = l1 + lam * calcium if lam > 0 else l1
        hu_mae = (denormalize(x0_hat.detach().clamp(-1, 1)) - denormalize(x0)).abs().mean()
        return loss, {"l1": l1.detach(), "calcium": calcium.detach(), "calcium_weight": lam, "hu_mae": hu_mae}

    return loss_fn


def calcium_ramp(step: int, warmup: int) -> float:
    """Share of lambda in force at ``step``: 0 for ``warmup`` steps, then linear up to 1 over ``warmup`` more."""
    if warmup <= 0:
        return 1.0
    return min(max((step - warmup) / warmup, 0.0), 1.0)


def make_val_fn(objective: str, bridge: BrownianBridge, calcium_weight: float, crop: int, seed: int = 0,
                focus: float = 0.0):
    """Validation metrics (loss at the full lambda, l1, calcium, hu_mae) with the same crops, timesteps and noise.

    Every batch draws from a generator seeded with ``seed`` alone, so the figures of two
    validations differ only through the model.
    """
    loss_fn = make_loss_fn(objective, bridge, calcium_weight, crop, focus=focus)

    def val_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, 1))
        loss, logs = loss_fn(model, batch, generator)
        logs.pop("calcium_weight")
        return {"loss": loss, **logs}

    return val_fn


# -- the training recipe behind ``meddiff train motion`` ----------------------------------------------
NETWORK_CONFIGS = ("large", "small", "tiny")


def default_model_id(objective: str, calcium_weight: float, config: str) -> str:
    """``motion-prodm-<config>`` (lambda > 0), ``motion-prodm-nocal-<config>`` or ``motion-unet-l1-<config>``."""
    if objective == "regression":
        return f"motion-unet-l1-{config}" if calcium_weight == 0 else f"motion-unet-l1-cal-{config}"
    return f"motion-prodm-{config}" if calcium_weight > 0 else f"motion-prodm-nocal-{config}"


def data_options(args) -> MotionDataOptions:
    """The data options of a ``meddiff train motion`` command line."""
    return MotionDataOptions(size=args.size, slices=args.slices)


def train(args, progress, device: torch.device) -> dict:
    """Simulate (or reuse) the cases, train ProDM's UNet with the chosen objective, export the EMA weights.

    Cases ``0 .. cases-1`` of dataset ``--seed`` train and the next ``val_cases`` validate,
    from ``--data`` (default ``<out>/data``). Writes ``<out>/model.safetensors`` and its card
    ``<out>/model.json`` (catalogue format); with ``args.register`` the model is also
    registered in the user model folder.
    """
    from meddiffusion.catalog import ModelEntry, sha256_file
    from meddiffusion.training.publish import publish_model
    from meddiffusion.nets.prodm import PRODM_CONFIGS, ProDMUNet
    from meddiffusion.training import TrainConfig, Trainer, latest_checkpoint

    objective = args.objective
    calcium_weight = args.calcium_weight if args.calcium_weight is not None else (
        20.0 if objective == "bridge" else 0.0)
    if args.cases < 1 or args.val_cases < 1:
        raise ValueError(f"--cases and --val-cases must be >= 1, got {args.cases} and {args.val_cases}")
    kwargs = PRODM_CONFIGS[args.config]
    multiple = 2 ** (len(kwargs["channels"]) - 1)
    if args.crop % multiple or args.crop < multiple:
        raise ValueError(f"--crop must be a multiple of {multiple} for the '{args.config}' network, got {args.crop}")
    options = data_options(args)
    if args.crop > options.patch:
        raise ValueError(f"--crop {args.crop} is larger than the stored patches ({options.patch} pixels)")
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    start = time.monotonic()
    total = args.cases + args.val_cases
    paths = build_cache(data, total, args.seed, options, progress.callback("simulate", total))
    simulate_s = time.monotonic() - start
    train_data, val_data = MotionPatches(paths[: args.cases]), MotionPatches(paths[args.cases :])
    infos = [read_case_info(p) for p in paths[: args.cases]]
    scores = [i["agatston"] for i in infos]
    profiles = sorted({i["profile"] for i in infos})
    views = sorted({i["views"] for i in infos})
    progress.log(f"{len(train_data)} training patches ({int(train_data.calcium.sum())} on calcium) from "
                 f"{args.cases} cases and {len(val_data)} validation patches from {args.val_cases} cases in {data}")

    bridge = BrownianBridge(args.timesteps, schedule="linear", max_var=1.0)
    ema_decay = max(0.0, min(0.999, 1 - 10 / args.steps))
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                         ema_decay=ema_decay, ema_every=1, ema_start=min(200, args.steps // 10), grad_clip=1.0,
                         val_every=args.val_every, ckpt_every=args.ckpt_every, out_dir=str(out), seed=args.seed)
    warmup = args.calcium_warmup if args.calcium_warmup is not None else min(300, args.steps // 10)
    current: list[Trainer] = []
    focus = args.focus
    loss_fn = make_loss_fn(objective, bridge, calcium_weight, args.crop, warmup, step=lambda: current[0].step,
                           focus=focus)
    trainer = Trainer(ProDMUNet(CONTEXT_SLICES, **kwargs), loss_fn, config, train_data, val_data,
                      val_fn=make_val_fn(objective, bridge, calcium_weight, args.crop, args.seed, focus),
                      progress=progress,
                      device=device)
    current.append(trainer)
    checkpoint = latest_checkpoint(out) if args.resume else None
    if checkpoint is not None:
        trainer.resume(checkpoint)
        progress.log(f"resumed from {checkpoint}")
    first_val = trainer.validate() if trainer.step == 0 else {}
    val_start = first_val.get("loss")
    start = time.monotonic()
    fit = trainer.fit()
    train_s = time.monotonic() - start

    model_id = args.register or default_model_id(objective, calcium_weight, args.config)
    weights = trainer.export_weights(out / "model.safetensors", {"model_id": model_id, "task": TASK})
    architecture = {
        "network": "ProDMUNet",
        "kwargs": {"context_slices": CONTEXT_SLICES, "channels": list(kwargs["channels"]),
                   "num_res_blocks": kwargs["num_res_blocks"], "norm_num_groups": kwargs["norm_num_groups"]},
        "objective": objective,
        "diffusion": {"kind": "brownian_bridge", "num_timesteps": args.timesteps, "schedule": "linear",
                      "max_var": 1.0},
        "sampler": {"steps": min(DEFAULT_STEPS, args.timesteps), "eta": 0.0},
        "patch_size": PATCH_SIZE,
        "calcium_loss": {"lambda": float(calcium_weight), "tau_hu": round(TAU_HU, 4), "warmup_steps": warmup,
                         "region_margin_px": REGION_MARGIN_PX},
        "focus": {"weight": float(focus), "changed_hu": FOCUS_CHANGE_HU, "margin_px": FOCUS_MARGIN_PX},
    }
    val_end = fit["val"].get("loss")
    metrics = {"val_loss_start": val_start, "val_loss_end": val_end,
               **{f"val_{name}_{when}": values.get(name) for when, values in (("start", first_val), ("end", fit["val"]))
                  for name in ("l1", "calcium", "hu_mae")},
               "steps": fit["step"], "train_seconds": round(train_s, 1),
               "simulate_seconds": round(simulate_s, 1), "cases": args.cases, "val_cases": args.val_cases,
               "patches": len(train_data), "profiles": len(profiles), "views": views,
               "agatston_range": [round(min(scores), 1), round(max(scores), 1)]}
    severe = sum(s > 400 for s in scores)
    entry = ModelEntry(
        id=model_id, task=TASK, version="1.0", architecture=architecture, weights=weights.name,
        sha256=sha256_file(weights),
        normalization={"kind": "hu_window", "min_hu": int(HU_LOW), "max_hu": int(HU_HIGH), "range": [-1, 1]},
        training_data=(f"{len(train_data)} patches ({options.patch}², random {args.crop}² crops) from {args.cases} "
                       f"thorax-phantom gated CTs ({options.size}²×{options.slices}, pixels {options.pixel_mm[0]:g}-"
                       f"{options.pixel_mm[1]:g} mm, {options.slice_mm:g} mm slices, full-dose noise at I0 "
                       f"{options.i0[0]:g}-{options.i0[1]:g}) corrupted by ProDM's motion simulation: "
                       f"{len(profiles)} of 21 profiles, views {', '.join(map(str, views))}; Agatston of the "
                       f"static CTs {min(scores):.0f}-{max(scores):.0f} ({sum(s == 0 for s in scores)} zero, "
                       f"{severe} above 400); data seed {args.seed}"),
        training_command=args.command_line, metrics=metrics, license="MIT",
        description=(f"ProDM 2.5D UNet ({args.config}), {objective} objective"
                     + (f", T={args.timesteps}" if objective == "bridge" else ", one call at t=T-1")
                     + f", calcium loss weight {calcium_weight:g}"
                     + (f", L1 focus weight {focus:g}" if focus > 0 else "")))
    return publish_model(entry, weights, out, register=bool(args.register), overwrite=args.overwrite,
                         steps=fit["step"], train_seconds=train_s, val_start=val_start, val_end=val_end,
                         metrics=metrics)
