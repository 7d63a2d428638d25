"""Training data for low-dose CT denoising: paired slices simulated from the thorax phantom, and the loss.

Each *slab* is a few adjacent axial slices of a random patient (preset and seed), rendered on
a random grid (pixel size, slice spacing, table height, in-plane rotation and offset). Pairs
are made exactly as the evaluation makes them from real scans:

1. the noise-free phantom slices get full-dose noise, giving the normal-dose (ND) images,
   which carry realistic noise like a clinical scan. Its level is drawn log-uniform in HU
   (clinical full-dose scans range from ~2 HU, smooth-kernel heads, to ~30 HU, large bodies) and I0 is
   calibrated to it on the middle slice: drawing I0 itself would make the noise depend on
   body size and pixel size, from nothing to photon-starved streaks;
2. the low-dose (LD) images are simulated *from the ND images* with ``input_is_noisy=True``
   at the training dose, so only the missing noise is added (``tasks.ldct.simulate_pair``).

Simulation costs seconds per 512² slice, so slabs are generated once into ``<out>/data``
(one ``slab_NNNN.npz`` of int16 HU each, in the training cache of ``training.cache``; an
interrupted run resumes) and training draws random crops, flips and transposes from them at
no cost. Every slice of a slab is a training centre; the first and last replicate themselves
as the missing neighbour, exactly as at inference, and a share of samples replicate the
centre on both sides, as a single-slice input does. :func:`make_loss_fn` is CoreDiff's
two-stage loss on those crops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
from meddiffusion.physics import calibrate_i0, simulate_low_dose
from meddiffusion.physics.radon import FILTERS
from meddiffusion.tasks.ldct.infer import body_box, context_indices
from meddiffusion.tasks.ldct.model import DEFAULT_DOSE, HU_MIN, HU_RANGE, normalize
from meddiffusion.tasks.ldct.physics import simulate_pair
from meddiffusion.training import cache
from meddiffusion.training.augment import crop_room, dihedral
from meddiffusion.training.storage import hu_to_int16

__all__ = ["DataOptions", "SlabSpec", "slab_spec", "render_clean", "render_slab", "build_cache", "describe",
           "LDCTPairs", "LOSS_WEIGHTINGS",
           "pad_slices", "random_crops", "training_crops", "make_loss_fn"]


@dataclass(frozen=True)
class DataOptions:
    """How slabs are drawn: image size, slices per slab, pixel and slice spacing, anatomy and scanner ranges.

    ``procedural`` is the share of slabs that are dead leaves (``phantoms.deadleaves``) instead
    of the thorax phantom, whose tissue texture each slab scales by a factor drawn log-uniform in
    ``texture_scale`` (from nearly flat, like brain, to coarser than the phantom's own). Each slab
    draws its dose log-uniform in ``dose`` (one value: fixed), the reconstruction kernel of its
    full-dose noise and, independently, of the inserted low-dose noise from ``kernels`` (ramp
    windows from sharp ``ram-lak`` to smooth ``hann``), and the detector's electronic noise
    (counts) uniform in ``electronic_noise``.
    """

    size: int = 512
    slices: int = 4
    pixel_mm: tuple[float, float] = (0.25, 1.0)
    slice_mm: tuple[float, float] = (0.6, 3.0)
    nd_noise_hu: tuple[float, float] = (1.0, 40.0)
    dose: tuple[float, float] = (DEFAULT_DOSE, DEFAULT_DOSE)
    num_views: int = 720
    procedural: float = 0.5
    kernels: tuple[str, ...] = FILTERS
    electronic_noise: tuple[float, float] = (5.0, 30.0)
    texture_scale: tuple[float, float] = (0.1, 1.5)

    def __post_init__(self) -> None:
        if self.size < 16 or self.slices < 1:
            raise ValueError(f"slabs need size >= 16 and slices >= 1, got {self.size} and {self.slices}")
        for name in ("pixel_mm", "slice_mm", "nd_noise_hu", "dose", "texture_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, got {(low, high)}")
        if not self.dose[1] <= 1:
            raise ValueError(f"dose must be fractions in (0, 1], got {self.dose}")
        if not 0 <= self.procedural <= 1:
            raise ValueError(f"procedural must be a share in [0, 1], got {self.procedural}")
        unknown = set(self.kernels) - set(FILTERS)
        if not self.kernels or unknown:
            raise ValueError(f"kernels must be among {', '.join(FILTERS)}, got {self.kernels}")
        if not 0 <= self.electronic_noise[0] <= self.electronic_noise[1]:
            raise ValueError(f"electronic_noise must be a range (low, high) of counts >= 0, "
                             f"got {self.electronic_noise}")


@dataclass(frozen=True)
class SlabSpec:
    """Everything that defines one slab; a pure function of (seed, index) via :func:`slab_spec`."""

    preset: str
    phantom_seed: int
    pixel_mm: float
    slice_mm: float
    centre_mm: tuple[float, float, float]
    angle_deg: float
    nd_noise_hu: float
    noise_seed: int
    source: str = "phantom"
    dose: float = DEFAULT_DOSE
    nd_kernel: str = "hann"
    ld_kernel: str = "hann"
    electronic_noise: float = 10.0
    texture_scale: float = 1.0


def slab_spec(seed: int, index: int, options: DataOptions) -> SlabSpec:
    """The random draw of slab ``index`` of dataset ``seed``."""
    from meddiffusion.phantoms import PRESETS

    rng = np.random.default_rng([int(seed), int(index)])

    def log_uniform(low: float, high: float) -> float:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))

    nd_noise = log_uniform(*options.nd_noise_hu)
    return SlabSpec(
        preset=str(rng.choice(sorted(PRESETS))), phantom_seed=int(rng.integers(2**31)),
        pixel_mm=float(rng.uniform(*options.pixel_mm)), slice_mm=float(rng.uniform(*options.slice_mm)),
        centre_mm=(float(rng.uniform(-15, 15)), float(rng.uniform(-15, 15)), float(rng.uniform(-120, 140))),
        angle_deg=float(rng.uniform(-20, 20)), nd_noise_hu=nd_noise, noise_seed=int(rng.integers(2**31)),
        source="deadleaves" if rng.uniform() < options.procedural else "phantom", dose=log_uniform(*options.dose),
        nd_kernel=str(rng.choice(options.kernels)), ld_kernel=str(rng.choice(options.kernels)),
        electronic_noise=float(rng.uniform(*options.electronic_noise)),
        texture_scale=log_uniform(*options.texture_scale))


def render_clean(spec: SlabSpec, options: DataOptions) -> np.ndarray:
    """The noise-free slab (slices, size, size) in HU: phantom anatomy or dead leaves."""
    if spec.source == "deadleaves":
        from meddiffusion.phantoms.deadleaves import render_dead_leaves

        return render_dead_leaves((options.slices, options.size, options.size), spec.pixel_mm, spec.slice_mm,
                                  spec.phantom_seed)
    from meddiffusion.phantoms import Grid, Phantom, render_ct

    phantom = Phantom.sample(spec.preset, spec.phantom_seed)
    c, s = math.cos(math.radians(spec.angle_deg)), math.sin(math.radians(spec.angle_deg))
    grid = Grid.centred((options.size, options.size, options.slices), (spec.pixel_mm, spec.pixel_mm, spec.slice_mm),
                        spec.centre_mm, (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return render_ct(phantom, grid, texture_scale=spec.texture_scale).array


def render_slab(spec: SlabSpec, options: DataOptions) -> dict[str, np.ndarray | float]:
    """ND and LD slices (slices, size, size) in HU for one slab, and the calibrated I0."""
    clean = torch.from_numpy(render_clean(spec, options))
    middle = clean[options.slices // 2]
    tissue = (middle > -200) & (middle < 200)
    if tissue.sum() < 2:
        tissue = middle > -500
    scanner = {"pixel_size_mm": spec.pixel_mm, "num_views": options.num_views,
               "electronic_noise_std": spec.electronic_noise}

    def calibrated(kernel: str) -> float:  # the I0 giving the drawn full-dose noise through this kernel
        return calibrate_i0(middle, spec.nd_noise_hu, tissue, filter=kernel, seed=spec.noise_seed, rtol=0.1,
                            clip=True, **scanner)

    i0 = calibrated(spec.nd_kernel)
    generator = torch.Generator().manual_seed(spec.noise_seed)
    normal = simulate_low_dose(clean, 1.0, i0=i0, filter=spec.nd_kernel, generator=generator, **scanner)
    # as when a real scan of unknown kernel gets simulated low-dose noise: I0 matched to its noise level
    i0_ld = i0 if spec.ld_kernel == spec.nd_kernel else calibrated(spec.ld_kernel)
    low = simulate_pair(normal, spec.dose, i0=i0_ld, filter=spec.ld_kernel, generator=generator, **scanner)
    return {"nd": normal.numpy(), "ld": low.numpy(), "i0": i0}


def build_cache(folder: str | Path, count: int, seed: int, options: DataOptions,
                callback: Callable[[int, int], None] | None = None, first: int = 0) -> list[Path]:
    """Generate slabs ``first .. first + count - 1`` of dataset ``seed`` into ``folder``; existing ones are kept."""

    def make(index: int) -> tuple[dict[str, np.ndarray], dict]:
        slab = render_slab(slab_spec(seed, index, options), options)
        return {"nd": hu_to_int16(slab["nd"]), "ld": hu_to_int16(slab["ld"])}, {"i0": slab["i0"]}

    return cache.build_cache(folder, "slab", range(first, first + count), lambda index: describe(seed, index, options),
                             make, callback)


def describe(seed: int, index: int, options: DataOptions) -> dict:
    """What defines slab ``index`` of dataset ``seed``: the cache's ``meta``."""
    return {"seed": int(seed), "index": index, "spec": asdict(slab_spec(seed, index, options)),
            "options": asdict(options)}


def pad_slices(arrays, shape: tuple[int, int]) -> list[np.ndarray]:
    """(k, H, W) HU arrays padded with air at the bottom and right to ``shape``: volumes of any size batch together."""
    return [np.pad(a, ((0, 0), (0, shape[0] - a.shape[1]), (0, shape[1] - a.shape[2])), constant_values=HU_MIN)
            for a in arrays]


class LDCTPairs(Dataset):
    """Every slice of the cached slabs as a training centre: int16 HU [above, centre, below] LD and ND.

    Slabs (or the user's volumes) of different slice sizes are padded with air to the largest.

    Items are whole slices (``{"ld": (3, H, W), "nd": (1, H, W), "box": (4,)}``, box = the
    body's (y0, y1, x0, x1)); :func:`random_crops` cuts the training crops from them with the
    trainer's per-step generator, so a resumed run repeats the same crops.
    """

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise ValueError("no training slabs given; generate them with build_cache first")
        self.slabs, self.items = [], []
        arrays = [cache.read_item(path, "nd", "ld") for path in paths]
        shape = tuple(max(nd.shape[k] for nd, _ in arrays) for k in (1, 2))
        for nd, ld in (pad_slices(arrays_, shape) for arrays_ in arrays):
            slab = len(self.slabs)
            self.slabs.append((nd, ld))
            for k in range(nd.shape[0]):
                self.items.append((slab, k, body_box(nd[k : k + 1].astype(np.float32), margin=0, multiple=1)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        slab, k, box = self.items[index]
        nd, ld = self.slabs[slab]
        above, centre, below = context_indices(nd.shape[0], k)
        box = box or (0, nd.shape[1], 0, nd.shape[2])
        return {"ld": torch.from_numpy(ld[[above, centre, below]]), "nd": torch.from_numpy(nd[centre : centre + 1]),
                "box": torch.tensor(box)}


def make_val_fn(architecture: dict):
    """The task's validation metric: whole validation slices denoised as ``ldct-denoise`` runs them (the
    card's default steps for the device) and scored against their normal dose, PSNR / SSIM in
    [-1000, 1000] HU, as the bench and the registration gate score them."""
    from meddiffusion.metrics.image import image_quality
    from meddiffusion.tasks.ldct.model import build_model, denormalize, normalize, worst_if_diverged

    sampler = build_model(architecture)
    gain = sampler.noise_gain

    def val(net, batch):
        sampler.net = net
        ld = batch["ld"].float()
        if gain is not None:  # each slice with its own gain, as ldct-denoise shows it to the network
            k = np.array([gain.gains(slice_[1:2].cpu().numpy())[0] for slice_ in ld])
            original = ld[:, 1].cpu().numpy()
            ld = torch.from_numpy(gain.network_input(ld.cpu().numpy(), k)).to(ld.device)
        denoised = denormalize(sampler.denoise(normalize(ld), sampler.default_steps(ld.device)))
        denoised = denoised[:, 0].float().cpu().numpy()
        if gain is not None:
            denoised = gain.restore(original, ld[:, 1].cpu().numpy(), denoised, k)
        quality = image_quality(worst_if_diverged(denoised), batch["nd"][:, 0].float().cpu().numpy())
        return {"psnr": quality["psnr"], "ssim": quality["ssim"]}

    return val


def random_crops(batch: dict[str, torch.Tensor], crop: int, generator: torch.Generator,
                 replicate_share: float = 0.25, gain=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (B, 3, c, c) LD context and (B, 1, c, c) ND crops, mostly over the body.

    Each crop is centred at a uniform point of the body's box, then flipped/transposed at
    random; ``replicate_share`` of the samples replace both neighbours by the centre slice.
    With ``gain`` (a ``noisegain.NoiseGain``) a crop quieter than its target is shown as
    inference shows it, the LD and ND crops amplified alike around the LD's smooth part
    (:func:`amplify_crop`).
    """
    ld, nd, boxes = batch["ld"], batch["nd"], batch["box"]
    height, width = crop_room(ld, crop, "training slices")
    uniform = torch.rand((ld.shape[0], 4), generator=generator, device=generator.device).cpu()
    ld_crops, nd_crops = [], []
    for i in range(ld.shape[0]):
        y0, y1, x0, x1 = (int(v) for v in boxes[i])
        cy = y0 + float(uniform[i, 0]) * (y1 - y0)
        cx = x0 + float(uniform[i, 1]) * (x1 - x0)
        top = int(min(max(cy - crop / 2, 0), height - crop))
        left = int(min(max(cx - crop / 2, 0), width - crop))
        pair = torch.cat([ld[i], nd[i]])[:, top : top + crop, left : left + crop].float()
        pair = dihedral(pair, int(uniform[i, 2] * 8))
        if float(uniform[i, 3]) < replicate_share:
            pair = torch.stack([pair[1], pair[1], pair[1], pair[3]])
        if gain is not None:
            pair = amplify_crop(pair, gain)
        ld_crops.append(pair[:3])
        nd_crops.append(pair[3:])
    return normalize(torch.stack(ld_crops)), normalize(torch.stack(nd_crops))


def amplify_crop(pair: torch.Tensor, gain) -> torch.Tensor:
    """[above, centre, below, ND] HU crops with the noise-level gain of ``gain`` applied to all four.

    The crop's noise is the RMS of its LD centre minus its ND (what inference measures in the
    flattest tissue, up to the ND's own noise); k = target / noise within [1, max_gain]. The
    ND is amplified around the LD centre's smooth part, so the network learns the amplified
    slice's denoised version, the output inference divides back by k.
    """
    noise = float((pair[1] - pair[3]).pow(2).mean().sqrt())
    k = min(max(gain.target_noise_hu / noise, 1.0), gain.max_gain) if noise > 0 else 1.0
    if k == 1.0:
        return pair
    stack = pair.cpu().numpy()
    amplified = gain.amplify(stack[None], np.array([k]))[0]
    amplified[3] = amplified[1] + k * (stack[3] - stack[1])  # s_centre + k (nd - s_centre)
    return torch.from_numpy(np.clip(amplified, HU_MIN, HU_MIN + HU_RANGE)).to(pair.device)


def training_crops(model: torch.nn.Module, batch: dict[str, torch.Tensor], crop: int, generator: torch.Generator,
                   replicate_share: float = 0.25, gain=None):
    """(model_fn, centre, context, target) of a training step: crops on the step's device, the sampler's call."""
    ld, target = random_crops(batch, crop, generator, replicate_share, gain)
    ld, target = ld.to(generator.device), target.to(generator.device)

    def model_fn(x_t, t, ctx, emm_input):
        return model(torch.cat([ctx[:, :1], x_t, ctx[:, 1:]], dim=1), t, emm_input)

    return model_fn, ld[:, 1:2], torch.cat([ld[:, :1], ld[:, 2:]], dim=1), target


#: ``--loss-weighting``: ``noise`` weighs each crop by 1 / its low-dose error; ``none`` is CoreDiff's plain mean
LOSS_WEIGHTINGS = ("noise", "none")
#: plain MSEs are taken in units of (100 HU)², the network's own intensity unit: on CoreDiff's
#: [0, 1] scale (4096 HU per unit) a 20 HU error is an MSE of 2e-5, whose gradients fall under
#: Adam's epsilon (1e-8) and shrink its steps (docs/experiments/ldct.md, version 3)
LOSS_UNIT_HU = 100.0


def plain_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of two images on CoreDiff's [0, 1] scale, in units of (``LOSS_UNIT_HU``)²."""
    return ((a - b) * (HU_RANGE / LOSS_UNIT_HU)).pow(2).mean()


def make_loss_fn(diffusion: MeanPreservingDiffusion, crop: int, replicate_share: float = 0.25,
                 weighting: str = "noise", gain=None):
    """CoreDiff's two-stage loss on random crops, for :class:`meddiffusion.training.Trainer`.

    ``weighting="none"`` is CoreDiff's plain mean of the two stages' MSEs (:func:`plain_mse`).

    With ``weighting="noise"`` each crop's two-stage MSE is divided by its low-dose MSE (a
    weight without gradient): a relative error, so every noise level counts alike, and the
    mean of ``-10 log10`` of it is the PSNR gain the benches report. The plain mean is ruled
    by the noisiest crops (a 7 % dose crop has 100× the MSE of a quiet head), and a model
    trained on it smooths away the texture of low-noise scans (docs/experiments/ldct.md).

    The relative error is of order one (1 for the identity). It must not be rescaled to the
    size of an MSE on CoreDiff's [0, 1] scale (about 1e-5): the gradients would then be about
    1e-9 per weight, below Adam's epsilon (1e-8), and Adam would take steps many times smaller
    than its learning rate says (the first version of this loss did, and learnt slowly).

    ``gain`` trains on crops as the noise-level gain shows them (:func:`random_crops`).
    """
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {', '.join(LOSS_WEIGHTINGS)}")

    def per_crop(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).flatten(1).mean(dim=1)

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
        model_fn, centre, context, nd = training_crops(model, batch, crop, generator, replicate_share, gain)
        t = diffusion.random_timestep(generator)
        _, x0_hat, x0_hat2 = diffusion.two_stage_loss(model_fn, nd, centre, t, context=context)
        if weighting == "noise":
            weights = 1.0 / (per_crop(centre, nd) + 1e-10)
            loss = (weights * 0.5 * (per_crop(x0_hat, nd) + per_crop(x0_hat2, nd))).mean()
        else:
            loss = 0.5 * plain_mse(x0_hat, nd) + 0.5 * plain_mse(x0_hat2, nd)
        rmse_hu = ((x0_hat2.detach() - nd) * HU_RANGE).pow(2).mean().sqrt()
        return loss, {"rmse_hu": rmse_hu}

    return loss_fn
