"""Whole-volume inference of the LDCT task: every axial slice with its two neighbours.

- **slice context**: each axial slice (array axis 0) is denoised with its two low-dose
  neighbours as extra channels, ``[above, x_t, below]``; the first and last slice (and a
  single-slice volume) use themselves as the missing neighbour;
- **air skipping**: only the bounding box of the body (HU > -500 after a small opening, plus a
  margin) of each batch of slices goes through the network; outside it the input is copied;
- **out of range**: voxels outside [-1024, 3072] HU (padding outside the field of view, metal)
  are handed back unchanged;
- **noise-level gain**: where the model card has one, quiet slices are shown to the network at
  a higher noise level and its change scaled back (:mod:`meddiffusion.tasks.ldct.noisegain`).

A 512² × 300 volume is processed in batches of slices: besides the input, only the output
array and one batch of tensors are held, so memory stays near two float32 copies of the volume.
The network runs channels-last and, where the model card allows it (``cpu_bf16_ok``) and the
CPU has native bf16, under bf16 autocast (``devices.autocast``); the sampler's arithmetic
stays in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from meddiffusion.devices import autocast
from meddiffusion.io import Volume
from meddiffusion.tasks.ldct.model import HU_MIN, HU_RANGE, LDCTModel, denormalize, normalize

__all__ = ["BODY_HU", "context_indices", "body_box", "denoise_volume"]

#: HU above which a pixel counts as body (air is -1000, lung parenchyma about -850 but enclosed)
BODY_HU = -500.0
_BODY_MARGIN = 8
_MIN_BOX = 16


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


def denoise_volume(volume: Volume, model: LDCTModel, *, steps: int | None = None, batch_size: int = 4,
                   device: torch.device | str = "cpu", precision: str = "auto",
                   callback: Callable[[int, int], None] | None = None, gains: np.ndarray | None = None) -> Volume:
    """Denoise every axial slice of a CT volume in HU; the result is a new volume on the same grid.

    ``callback(done, total)`` counts slice-steps (slices × sampling steps), so progress and
    cancellation are checked after every network call. ``gains`` are the model's noise-level
    gains of the slices if already measured (``model.noise_gain.gains``); by default they are
    measured here.
    """
    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    array = volume.array
    steps = model.default_steps(device) if steps is None else int(steps)
    model.diffusion.sample_steps(steps)
    with torch.no_grad():  # not inference mode: the weights must stay usable for adaptation afterwards
        model.net.to(device, memory_format=torch.channels_last).eval()  # faster convolutions on CPU and GPU
    if model.noise_gain is None:
        gains = None
    elif gains is None:
        gains = model.noise_gain.gains(array)
    elif len(gains) != array.shape[0]:
        raise ValueError(f"gains must hold one value per axial slice ({array.shape[0]}), got {len(gains)}")
    with torch.inference_mode():
        output = _denoise_slices(array, model, steps, batch_size, device, precision, callback, gains)
    return volume.with_array(output)


def _denoise_slices(array: np.ndarray, model: LDCTModel, steps: int, batch_size: int, device: torch.device,
                    precision: str, callback: Callable[[int, int], None] | None,
                    gains: np.ndarray | None = None) -> np.ndarray:
    """The batches of ``denoise_volume``: context stacks of the body's box through the sampler, each slice
    amplified by its noise-level gain (``gains``, one per slice) where there is one."""
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
        original = array[index, y0:y1, x0:x1]
        if gains is not None:
            stack = model.noise_gain.network_input(stack, gains[index])
        slices = normalize(torch.from_numpy(np.ascontiguousarray(stack, np.float32)).to(device, torch.float32))
        slices = slices.contiguous(memory_format=torch.channels_last)

        def on_step(step: int, _steps: int, base: int = done, size: int = len(index)) -> None:
            if callback is not None:
                callback(base + step * size, total)

        with autocast(device, precision, cpu_bf16_ok=model.cpu_bf16_ok):
            result = model.denoise(slices, steps, callback=on_step)
        done += len(index) * steps
        denoised = denormalize(result[:, 0].float()).cpu().numpy()
        if gains is not None:
            denoised = model.noise_gain.restore(original, stack[:, 1], denoised, gains[index])
        out_of_range = (original < HU_MIN) | (original > HU_MIN + HU_RANGE)
        output[index, y0:y1, x0:x1] = np.where(out_of_range, original, denoised)
    return output



# -- the task contract (see meddiffusion.tasks.job) ---------------------------------------------------
def check_arguments(args, wanted: frozenset[str]) -> None:
    """Options that need no data: ``--png-slice`` only with ``--png``."""
    if getattr(args, "png_slice", None) is not None and "png" not in wanted:
        raise ValueError("--png-slice needs --png (the picture to write)")


def run(job):
    """``meddiff ldct-denoise``: the denoised volume and, when asked, the before/after picture."""
    import time

    from meddiffusion.figures import axial_slice_count, before_after_image

    ct, model, steps, png_slice = job.inputs["ct"], job.model, job.steps, job.args.png_slice
    if png_slice is not None and not 0 <= png_slice < axial_slice_count(ct):
        raise ValueError(f"--png-slice {png_slice} is outside the input's axial slices "
                         f"0..{axial_slice_count(ct) - 1}")
    job.progress.log(f"model {model.id}, {steps} step(s), {ct.shape[0]} slice(s) of "
                     f"{ct.shape[1]}×{ct.shape[2]} on {job.device}")
    start = time.monotonic()
    gains = model.noise_gain.gains(ct.array) if model.noise_gain is not None else None
    if gains is not None:
        job.progress.log(_gain_line(gains, model.noise_gain.target_noise_hu))
    denoised = denoise_volume(ct, model, steps=steps, batch_size=job.args.batch_size, device=job.device,
                              precision=job.args.precision,
                              callback=job.progress.callback("denoise", ct.shape[0] * steps), gains=gains)
    seconds = time.monotonic() - start
    denoised.metadata["SeriesDescription"] = f"LDCT denoised ({model.id}, {steps} steps)"
    outputs = {"output": denoised}
    if "png" in job.wanted:
        outputs["png"] = before_after_image(ct, denoised, slice_index=png_slice)
    png = job.args.png
    info = {"model": model.id, "steps": steps, "slices": ct.shape[0], "seconds": round(seconds, 2),
            "noise_gain": None if gains is None else [round(float(gains.min()), 2), round(float(gains.max()), 2)],
            "seconds_per_slice": round(seconds / ct.shape[0], 3),
            "summary": (f"denoised {ct.shape[0]} slice(s) with {model.id} ({steps} steps) in {seconds:.1f} s "
                        f"-> {job.args.output}" + (f" (before/after picture {png})" if png else ""))}
    return outputs, info


def _gain_line(gains: np.ndarray, target_hu: float) -> str:
    """What the noise-level gain does to this volume, in words."""
    quiet = int((gains > 1.0).sum())
    if not quiet:
        return f"noise-level gain: no slice is quieter than {target_hu:g} HU; every slice is denoised as it is"
    return (f"noise-level gain: {quiet} of {len(gains)} slice(s) quieter than {target_hu:g} HU, their fine detail "
            f"amplified ×{gains[gains > 1].min():.2f}–{gains.max():.2f} for the network and its change scaled back")
