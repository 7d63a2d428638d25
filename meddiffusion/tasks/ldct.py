"""Low-dose CT denoising with CoreDiff (Gao et al., IEEE TMI 2024, arXiv 2304.01814).

The task end to end, on top of the shared pieces (``nets.clearnet``, ``diffusion.meanpreserving``,
``physics``, ``metrics.image``):

- **intensities**: CoreDiff's scale ``x = clip(HU + 1024, 0, 4096) / 4096``; voxels outside
  [-1024, 3072] HU (padding outside the field of view, metal) are handed back unchanged;
- **slice context**: each axial slice (array axis 0) is denoised with its two low-dose
  neighbours as extra channels, ``[above, x_t, below]``; the first and last slice (and a
  single-slice volume) use themselves as the missing neighbour;
- **air skipping**: only the bounding box of the body (HU > -500 after a small opening, plus a
  margin) of each batch of slices goes through the network; outside it the input is copied;
- **sampling**: the improved cold-diffusion sampler with T = 10 and any 1..T steps; a model
  adapted to a new dose (``ldct_adapt``) blends the sampler's trajectory with learned weights;
- **physics**: low-dose pairs by projection-domain noise insertion, with I0 calibrated so the
  simulated full-dose noise matches the source images (used for training and evaluation);
- **evaluation**: PSNR / SSIM / RMSE(HU) by CoreDiff's protocol.

A 512² × 300 volume is processed in batches of slices: besides the input, only the output
array and one batch of tensors are held, so memory stays near two float32 copies of the volume.
The network runs channels-last and, where the model card allows it (``cpu_bf16_ok``) and the
CPU has native bf16, under bf16 autocast (``devices.autocast``); the sampler's arithmetic
stays in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from meddiffusion.catalog import ModelEntry, get_model, list_models, load_state_dict
from meddiffusion.devices import autocast
from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
from meddiffusion.io import Volume
from meddiffusion.metrics.image import image_quality
from meddiffusion.physics import calibrate_i0, simulate_low_dose

__all__ = [
    "TASK", "HU_MIN", "HU_RANGE", "DEFAULT_DOSE", "DEFAULT_MODELS", "LDCTModel", "normalize", "denormalize",
    "context_indices", "body_box", "load_model", "build_model", "denoise_volume", "estimate_noise_hu",
    "calibrate_source_i0", "simulate_pair", "simulate_volume", "evaluate",
]

TASK = "ldct"
#: CoreDiff's intensity scale: HU in [HU_MIN, HU_MIN + HU_RANGE] maps to [0, 1]
HU_MIN, HU_RANGE = -1024.0, 4096.0
#: the dose fraction the shipped models are trained for
DEFAULT_DOSE = 0.25
#: default catalogue ids, best first: the paper-size network where a GPU runs it, else the CPU one
DEFAULT_MODELS = {"cuda": ("ldct-corediff-paper", "ldct-corediff-small"), "cpu": ("ldct-corediff-small",)}
#: HU above which a pixel counts as body (air is -1000, lung parenchyma about -850 but enclosed)
BODY_HU = -500.0
_BODY_MARGIN = 8
_MIN_BOX = 16


def normalize(hu: torch.Tensor) -> torch.Tensor:
    """HU -> CoreDiff's [0, 1] scale, clipping to [-1024, 3072] HU."""
    return ((hu - HU_MIN) / HU_RANGE).clamp(0.0, 1.0)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """CoreDiff's [0, 1] scale -> HU."""
    return x * HU_RANGE + HU_MIN


def context_indices(num_slices: int, index: int) -> tuple[int, int, int]:
    """(above, centre, below) slice indices, replicating the edge slice at either end."""
    if not 0 <= index < num_slices:
        raise ValueError(f"slice index {index} is outside 0..{num_slices - 1}")
    return max(index - 1, 0), index, min(index + 1, num_slices - 1)


def body_box(slices_hu: np.ndarray, margin: int = _BODY_MARGIN, multiple: int = 4) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) covering the body on every slice of ``slices_hu`` (k, H, W), or None if all air.

    A 3×3 opening drops isolated noisy air pixels; the box grows by ``margin`` pixels and to a
    multiple of ``multiple`` (the network's pooling) where the image allows, at least 16 pixels.
    """
    mask = np.asarray(slices_hu).max(axis=0) > BODY_HU
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    if not mask.any():
        return None
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (*_grow(rows[0], rows[-1] + 1, height, margin, multiple),
            *_grow(cols[0], cols[-1] + 1, width, margin, multiple))


def _grow(start: int, stop: int, size: int, margin: int, multiple: int) -> tuple[int, int]:
    start, stop = max(0, start - margin), min(size, stop + margin)
    length = min(size, max(_MIN_BOX, -(-(stop - start) // multiple) * multiple))
    start = min(start, size - length)
    return int(start), int(start + length)


# -- the model ---------------------------------------------------------------------------------------
@dataclass
class LDCTModel:
    """A CLEAR-Net with its diffusion schedule and sampler settings, ready to denoise.

    ``trajectory_weights`` (one per sampling step, summing to 1) come from one-shot adaptation:
    the output is then the weighted sum of the images after every step instead of the last one.
    """

    net: torch.nn.Module
    diffusion: MeanPreservingDiffusion
    steps: int
    cpu_steps: int
    trajectory_weights: torch.Tensor | None = None
    cpu_bf16_ok: bool = False
    entry: ModelEntry | None = None

    def default_steps(self, device: torch.device) -> int:
        if self.trajectory_weights is not None:
            return int(self.trajectory_weights.numel())
        return self.cpu_steps if device.type == "cpu" else self.steps

    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 emm_input: torch.Tensor | None) -> torch.Tensor:
        """The sampler's network call: [above, x_t, below] -> x0_hat."""
        return self.net(torch.cat([context[:, :1], x_t, context[:, 1:]], dim=1), t, emm_input)

    def denoise(self, slices: torch.Tensor, steps: int | None = None,
                callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Denoise (B, 3, H, W) normalised [above, centre, below] low-dose slices -> (B, 1, H, W)."""
        if slices.ndim != 4 or slices.shape[1] != 3:
            raise ValueError(f"slices must be (B, 3, H, W) = [above, centre, below], got {tuple(slices.shape)}")
        steps = self.default_steps(slices.device) if steps is None else int(steps)
        if self.trajectory_weights is not None and steps != self.trajectory_weights.numel():
            raise ValueError(f"this model was adapted with {self.trajectory_weights.numel()} sampling steps "
                             f"and must run with that many, got --steps {steps}")
        centre, context = slices[:, 1:2], torch.cat([slices[:, :1], slices[:, 2:]], dim=1)
        if self.trajectory_weights is None:
            return self.diffusion.sample(self.model_fn, centre, steps, context=context, callback=callback).float()
        _, trajectory = self.diffusion.sample(self.model_fn, centre, steps, context=context, callback=callback,
                                              return_trajectory=True)
        weights = self.trajectory_weights.to(centre.device, torch.float32)
        return sum(w * x.float() for w, x in zip(weights, trajectory)).clamp(0.0, 1.0)


def build_model(architecture: dict, state: dict[str, torch.Tensor] | None = None,
                entry: ModelEntry | None = None) -> LDCTModel:
    """An :class:`LDCTModel` from a model card's ``architecture`` and (optionally) its tensors.

    The card's architecture is ``{"network": "CLEARNet", "kwargs": {...}, "diffusion":
    {"num_timesteps": T}, "sampler": {"steps": S, "cpu_steps": S_cpu}, "cpu_bf16_ok": bool}``;
    an adapted model's weights file also holds ``trajectory_weights``.
    """
    from meddiffusion import nets

    name = architecture.get("network")
    if name != "CLEARNet":
        raise ValueError(f"an LDCT model must use the CLEARNet network, got {name!r}")
    net = nets.CLEARNet(**architecture.get("kwargs", {}))
    timesteps = int(architecture.get("diffusion", {}).get("num_timesteps", 10))
    sampler = architecture.get("sampler", {})
    weights = None
    if state is not None:
        state = dict(state)
        weights = state.pop("trajectory_weights", None)
        net.load_state_dict(state)
    steps = int(sampler.get("steps", timesteps))
    model = LDCTModel(net.eval(), MeanPreservingDiffusion(timesteps), steps, int(sampler.get("cpu_steps", steps)),
                      weights, bool(architecture.get("cpu_bf16_ok", False)), entry)
    for value in {model.steps, model.cpu_steps}:
        model.diffusion.sample_steps(value)  # raises a clear error for a step count outside 1..T
    return model


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> LDCTModel:
    """The LDCT model ``model_id`` from the catalogue (shipped or user), or the default for ``device``."""
    device = torch.device(device)
    if model_id is None:
        available = {m.id: m for m in list_models(TASK)}
        preferred = DEFAULT_MODELS["cuda" if device.type == "cuda" else "cpu"]
        choice = next((available[i] for i in preferred if i in available), None)
        if choice is None and available:
            choice = next(iter(available.values()))
        if choice is None:
            raise ValueError("no low-dose CT model is installed; train one with "
                             "'meddiff train ldct --out DIR --register ID' or pass --model")
        entry = choice
    else:
        entry = get_model(model_id)
        if entry.task != TASK:
            raise ValueError(f"model '{model_id}' is for task '{entry.task}', not low-dose CT ('{TASK}')")
    model = build_model(entry.architecture, load_state_dict(entry), entry)
    model.net.to(device)
    return model


# -- volumes -----------------------------------------------------------------------------------------
def denoise_volume(volume: Volume, model: LDCTModel, *, steps: int | None = None, batch_size: int = 4,
                   device: torch.device | str = "cpu", precision: str = "auto",
                   callback: Callable[[int, int], None] | None = None) -> Volume:
    """Denoise every axial slice of a CT volume in HU; the result is a new volume on the same grid.

    ``callback(done, total)`` counts slice-steps (slices × sampling steps), so progress and
    cancellation are checked after every network call.
    """
    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    array = volume.array
    steps = model.default_steps(device) if steps is None else int(steps)
    model.diffusion.sample_steps(steps)
    with torch.no_grad():  # not inference mode: the weights must stay usable for adaptation afterwards
        model.net.to(device, memory_format=torch.channels_last).eval()  # faster convolutions on CPU and GPU
    with torch.inference_mode():
        output = _denoise_slices(array, model, steps, batch_size, device, precision, callback)
    return volume.with_array(output)


def _denoise_slices(array: np.ndarray, model: LDCTModel, steps: int, batch_size: int, device: torch.device,
                    precision: str, callback: Callable[[int, int], None] | None) -> np.ndarray:
    """The batches of ``denoise_volume``: context stacks of the body's box through the sampler."""
    num_slices = array.shape[0]
    output = np.array(array, dtype=np.float32, copy=True)
    total, done = num_slices * steps, 0
    for start in range(0, num_slices, batch_size):
        index = np.arange(start, min(start + batch_size, num_slices))
        above, below = np.maximum(index - 1, 0), np.minimum(index + 1, num_slices - 1)
        box = body_box(array[np.unique(np.concatenate([above, index, below]))])
        if box is None:  # only air: nothing to denoise
            done += len(index) * steps
            if callback is not None:
                callback(done, total)
            continue
        y0, y1, x0, x1 = box
        stack = np.stack([array[above, y0:y1, x0:x1], array[index, y0:y1, x0:x1], array[below, y0:y1, x0:x1]], axis=1)
        slices = normalize(torch.from_numpy(stack).to(device, torch.float32))
        slices = slices.contiguous(memory_format=torch.channels_last)

        def on_step(step: int, _steps: int, base: int = done, size: int = len(index)) -> None:
            if callback is not None:
                callback(base + step * size, total)

        with autocast(device, precision, cpu_bf16_ok=model.cpu_bf16_ok):
            result = model.denoise(slices, steps, callback=on_step)
        done += len(index) * steps
        denoised = denormalize(result[:, 0].float()).cpu().numpy()
        original = array[index, y0:y1, x0:x1]
        out_of_range = (original < HU_MIN) | (original > HU_MIN + HU_RANGE)
        output[index, y0:y1, x0:x1] = np.where(out_of_range, original, denoised)
    return output


# -- physics: pairs for training and evaluation ------------------------------------------------------
def estimate_noise_hu(slice_hu: np.ndarray | torch.Tensor, block: int = 16,
                      tissue_hu: tuple[float, float] = (-300.0, 300.0), share: float = 0.3) -> tuple[float, np.ndarray]:
    """Noise standard deviation (HU) of a CT slice from its flattest soft-tissue blocks.

    The slice is tiled into ``block``² blocks; blocks whose 5×5 local means all lie inside
    ``tissue_hu`` have a plane fitted and removed (slow anatomy), and the flattest ``share`` of them by residual std are
    kept. Returns the RMS residual std over the kept blocks and their pixel mask, so simulated
    noise can be measured in the very same region (``calibrate_source_i0``).
    """
    image = np.asarray(slice_hu.cpu() if isinstance(slice_hu, torch.Tensor) else slice_hu, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"estimate_noise_hu takes one slice (H, W), got shape {image.shape}")
    rows, cols = image.shape[0] // block, image.shape[1] // block

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a[: rows * block, : cols * block].reshape(rows, block, cols, block).swapaxes(1, 2)
        return a.reshape(rows * cols, block * block)

    tiles = blocks(image)
    smooth = blocks(ndimage.uniform_filter(image, 5))  # the tissue test must not reject noisy blocks
    inside = ((smooth >= tissue_hu[0]) & (smooth <= tissue_hu[1])).all(axis=1)
    if inside.sum() < 4:
        raise ValueError(f"the slice has only {int(inside.sum())} flat {block}×{block} regions within "
                         f"{tissue_hu} HU; noise cannot be estimated (expected a CT slice with soft tissue)")
    yy, xx = np.mgrid[:block, :block]
    design = np.stack([np.ones(block * block), yy.ravel(), xx.ravel()], axis=1)
    fitted = np.linalg.lstsq(design, tiles[inside].T, rcond=None)[0]
    residual_std = (tiles[inside] - (design @ fitted).T).std(axis=1, ddof=3)
    keep_count = max(2, int(math.ceil(share * residual_std.size)))
    order = np.argsort(residual_std)[:keep_count]
    chosen = np.flatnonzero(inside)[order]
    mask = np.zeros((rows, cols), bool)
    mask.flat[chosen] = True
    full = np.zeros(image.shape, bool)
    full[: rows * block, : cols * block] = np.kron(mask, np.ones((block, block), bool)).astype(bool)
    return float(np.sqrt(np.mean(residual_std[order] ** 2))), full


def calibrate_source_i0(nd_slice_hu: np.ndarray | torch.Tensor, pixel_size_mm: float, **kwargs) -> tuple[float, float]:
    """(I0, measured noise HU): the full-dose photon count that reproduces a real slice's own noise."""
    noise, roi = estimate_noise_hu(nd_slice_hu)
    hu = torch.as_tensor(np.asarray(nd_slice_hu, dtype=np.float32))
    return calibrate_i0(hu, noise, torch.from_numpy(roi), pixel_size_mm=pixel_size_mm, **kwargs), noise


def simulate_pair(nd_hu: torch.Tensor, dose: float, *, pixel_size_mm: float, i0: float, num_views: int = 720,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Low-dose (dose fraction ``dose``) version of normal-dose slices that already carry full-dose noise."""
    return simulate_low_dose(nd_hu, dose, pixel_size_mm=pixel_size_mm, i0=i0, num_views=num_views,
                             input_is_noisy=True, generator=generator)


def simulate_volume(volume: Volume, dose: float, *, i0: float | None = None, noise_free: bool = False,
                    seed: int = 0, batch_size: int = 4,
                    callback: Callable[[int, int], None] | None = None) -> tuple[Volume, float]:
    """A low-dose version of a CT volume, slice by slice; returns (volume, I0 used).

    Without ``i0`` the full-dose noise of the middle slice is measured and I0 calibrated to it.
    ``noise_free`` treats the input as noiseless (a phantom): full Poisson noise at the dose is
    drawn instead of only the missing part. Non-square slices are padded with air for the
    projector and cropped back.
    """
    sx, sy = volume.spacing[0], volume.spacing[1]
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise ValueError(f"in-plane pixels must be square for the CT projector, got spacing {sx} × {sy} mm")
    array = volume.array
    num_slices, height, width = array.shape
    size = max(height, width)
    if i0 is None:
        if noise_free:
            raise ValueError("a noise-free input has no noise to calibrate I0 from; pass i0")
        i0, _ = calibrate_source_i0(_square(array[num_slices // 2], size), sx)
    generator = torch.Generator().manual_seed(int(seed))
    output = np.empty_like(array, dtype=np.float32)
    for start in range(0, num_slices, batch_size):
        stop = min(start + batch_size, num_slices)
        batch = torch.from_numpy(np.stack([_square(s, size) for s in array[start:stop]]))
        low = simulate_low_dose(batch, dose, pixel_size_mm=sx, i0=i0, input_is_noisy=not noise_free,
                                generator=generator)
        output[start:stop] = low[:, :height, :width].numpy()
        if callback is not None:
            callback(stop, num_slices)
    return volume.with_array(output), float(i0)


def _square(image: np.ndarray, size: int) -> np.ndarray:
    padded = np.full((size, size), HU_MIN, np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def evaluate(denoised_hu, reference_hu) -> dict[str, float]:
    """CoreDiff's PSNR (dB), SSIM and RMSE (HU) in the [-1000, 1000] HU window, per-slice means."""
    return image_quality(denoised_hu, reference_hu)
