"""Motion correction inside the region: windows of 3-slice stacks through the bridge sampler.

Every slice of a box with its two neighbours is normalised, tiled into ``PATCH_SIZE`` windows
with 25 % overlap (MONAI ``sliding_window_inference``, Gaussian blending), and each batch of
windows runs the whole bridge sampler. The result is applied as a change to the input:
``out = input + (prediction − clip(input))``, so voxels outside the HU window (lung, dense bone)
keep their value wherever the model leaves the window alone. Outside the boxes the output is
the input, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from meddiffusion.devices import autocast
from meddiffusion.io import Volume
from meddiffusion.tasks.motion.model import HU_HIGH, HU_LOW, PATCH_SIZE, MotionModel, denormalize, normalize
from meddiffusion.tasks.motion.region import MotionRegion, _hu, find_region

__all__ = ["WINDOW_OVERLAP", "MotionCorrection", "correct_volume", "count_windows"]

#: overlap of neighbouring windows; the Gaussian blend hides the seams
WINDOW_OVERLAP = 0.25
#: slices sent to the sliding window at once (bounds memory for a large --roi)
_SLICE_CHUNK = 16


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



# -- the task contract (see meddiffusion.tasks.job) ---------------------------------------------------
def run(job):
    """``meddiff motion-correct``: the corrected CT, and when asked the calcium segmentation and Agatston table."""
    from meddiffusion.tasks.job import Segmentation, Table, VolumeOutput
    from meddiffusion.tasks.motion.region import check_roi
    from meddiffusion.tasks.motion.scoring import (TABLE_FIELDS, largest_lesion_lps, score_before_after,
                                                   segmentation_layers, summary_of, table_rows)

    ct, model, args, progress = job.inputs["ct"], job.model, job.args, job.progress
    if args.roi is not None:
        check_roi(args.roi, ct.shape)
    steps = job.steps
    if model.check_steps(steps) == 1 and model.objective == "regression":
        steps = 1  # the regression baseline is one network call, whatever --steps says
    start = time.monotonic()
    with progress.stage("region", total=1) as step:
        region = find_region(ct, args.roi, patch_size=model.patch_size)
        step()
    seconds_region = time.monotonic() - start
    slices = region.slices
    where = (f"slices {slices[0]}-{slices[1] - 1} in {len(region.boxes)} box(es)" if slices
             else "nothing: no calcium found in the heart")
    progress.log(f"model {model.id} ({model.objective}), {steps} step(s) on {job.device}; correcting {where}")
    result = correct_volume(ct, model, region=region, steps=steps, batch_size=args.batch_size, seed=args.seed,
                            precision=args.precision,
                            callback=progress.callback("correct", count_windows(region, model.patch_size)))
    corrected = result.corrected
    integral = _integral(ct)
    if integral:  # integer HU in, integer HU out: the corrected boxes are rounded, the rest is the input
        for box in region.boxes:
            corrected.array[box.slices] = np.clip(np.rint(corrected.array[box.slices]), -32768, 32767)
    corrected.metadata["SeriesDescription"] = f"motion corrected ({model.id}, {steps} steps)"
    with progress.stage("score", total=2) as step:
        before, after = score_before_after(ct, corrected, region)
        step(2)
    outputs = {"output": VolumeOutput(corrected, "int16" if integral else None)}
    if "seg" in job.wanted:
        outputs["seg"] = Segmentation(*segmentation_layers(before, after), ct)
    if "table" in job.wanted:
        outputs["table"] = Table(TABLE_FIELDS, table_rows(before, after))
    b, a = summary_of(before), summary_of(after)
    seconds = seconds_region + result.seconds_correct
    info = {"model": model.id, "objective": model.objective, "steps": steps, "region": region.source,
            "boxes": [box.ijk() for box in region.boxes], "corrected_slices": list(slices) if slices else None,
            "windows": result.windows, "seconds": round(seconds, 2), "seconds_region": round(seconds_region, 2),
            "before": b, "after": a, "largest_lesion_lps": largest_lesion_lps(before),
            "summary": (f"Agatston {b['agatston']:.1f} ({b['category']}, {b['lesions']} lesion(s)) before, "
                        f"{a['agatston']:.1f} ({a['category']}, {a['lesions']} lesion(s)) after; corrected "
                        f"{where} with {model.id} ({steps} steps) in {seconds:.1f} s -> {args.output}")}
    return outputs, info


def _integral(volume: Volume) -> bool:
    """Whole numbers within int16 (CT stored as integers), checked slice by slice to spare memory."""
    array = volume.array
    return bool(array.min() >= -32768 and array.max() <= 32767
                and all(np.array_equal(plane, np.rint(plane)) for plane in array))
