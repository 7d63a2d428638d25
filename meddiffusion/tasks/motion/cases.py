"""Simulated cases for coronary calcium motion correction (ProDM): phantom patients, gated CT, motion.

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

The training data (``data``) cuts each case into patches; the bench scores held-out cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from meddiffusion.io import Volume
from meddiffusion.phantoms.coronaries import Plaque
from meddiffusion.physics.motion_profiles import ALLOWED_VIEWS, PROFILES
from meddiffusion.tasks.motion.model import CONTEXT_SLICES

__all__ = ["MotionDataOptions", "CaseSpec", "MotionCase", "case_spec", "make_case", "MAX_MOTION_MM"]

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
