"""Whole-volume inference of the PET/MR task: low-count PET (+ MR) → denoised PET in the input's units.

1. the MR is brought onto the PET grid: a rigid registration (SimpleITK, Mattes mutual
   information, from the scanner's shared coordinates) measures how far it is off; beyond
   ``ALIGNED_MM`` or ``ALIGNED_DEG`` its transform is applied, otherwise the MR is only
   resampled. The measured translation and rotation are reported either way;
2. both images are normalised as CSRD does (``model``), padded to the network's multiple and
   given x, y, z channels of their position in the whole volume;
3. the (scaled) residual r = full − low is sampled by the deterministic Heun sampler; each network
   pass runs through MONAI's sliding window (``--overlap``, Gaussian blending), and because
   the coordinate channels are cut from the whole volume, overlapping windows see the same
   input where they overlap;
4. x̂ = low + r̂ is scaled back into the input's units (SUV, Bq/ml) on its exact grid and
   clipped at 0. Denoising must not create or remove activity: the total of the output is
   compared with the input's and, when it deviates by more than ``TOTAL_TOLERANCE``, the
   output is rescaled to the input's total (both the ratio and the rescale are reported).
"""

from __future__ import annotations

import math
import time

import numpy as np
import SimpleITK as sitk
import torch

from meddiffusion.diffusion.edm import EDMPreconditioning, heun_sample
from meddiffusion.io import Volume, overlap_fraction
from meddiffusion.tasks.petmr.model import (PetmrModel, default_model_for, denormalize_pet, normalize_mr,
                                            normalize_pet, pet_range, uses_mr)

__all__ = ["check_arguments", "run", "register_mr", "sample_residual", "denoise", "ALIGNED_MM", "ALIGNED_DEG",
           "TOTAL_TOLERANCE", "MIN_OVERLAP"]

#: an MR within this translation (mm) and rotation (°) of the PET is taken as aligned
ALIGNED_MM = 1.0
ALIGNED_DEG = 1.0
#: relative deviation of the total activity beyond which the output is rescaled
TOTAL_TOLERANCE = 0.01
#: the MR must cover at least this share of the PET's field of view
MIN_OVERLAP = 0.5


def check_arguments(args, wanted) -> None:  # noqa: ARG001 - one output
    """--overlap in [0, 1), --samples in 1..MAX_SAMPLES; without --model the cards' first model that
    matches whether an MR is given."""
    overlap = getattr(args, "overlap", 0.25)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--overlap must be in [0, 1), got {overlap}")
    if getattr(args, "samples", None) is not None:
        PetmrModel.check_samples(args.samples)
    with_mr = bool(getattr(args, "mr", None))
    if args.model is None:
        args.model = default_model_for(with_mr, getattr(args, "device", "cpu") or "cpu")
        return
    from meddiffusion.catalog import get_model

    reads_mr = uses_mr(get_model(args.model))
    if reads_mr and not with_mr:
        raise ValueError(f"model '{args.model}' is MR-guided: give the patient's MR with --mr, or leave --model out "
                         "to run the PET-only model")
    if with_mr and not reads_mr:
        raise ValueError(f"model '{args.model}' reads PET only and cannot use --mr; leave --model out to run the "
                         "MR-guided model, or drop --mr")


# -- registration ------------------------------------------------------------------------------
def _rotation_deg(matrix: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))))


def estimate_rigid(pet: Volume, mr: Volume, *, seed: int = 0) -> sitk.Euler3DTransform:
    """The rigid transform T (about the PET's centre) with MR(T(p)) ≈ PET(p), by Mattes mutual information.

    It starts from the identity (PET/MR scanners share coordinates) and runs three levels
    (shrink 4, 2, 1) of regular-step gradient descent on 20 % of the voxels, seeded.
    """
    fixed = sitk.Cast(pet.to_sitk(), sitk.sitkFloat32)
    moving = sitk.Cast(mr.to_sitk(), sitk.sitkFloat32)
    centre = pet.index_to_physical((np.asarray(pet.shape) - 1) / 2)
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(c) for c in centre))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.5, int(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=200,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform


def register_mr(pet: Volume, mr: Volume, *, seed: int = 0) -> tuple[Volume, dict]:
    """The MR on the PET grid, rigidly registered when it is off by more than ALIGNED_MM / ALIGNED_DEG.

    Returns (MR on the PET grid, {"translation_mm": [x, y, z] LPS, "shift_mm", "rotation_deg",
    "registered"}); the translation is that of the PET's centre.
    """
    covered = overlap_fraction(mr, pet)
    if covered < MIN_OVERLAP:
        raise ValueError(f"the MR covers only {covered:.0%} of the PET's field of view; expected the same patient "
                         "and position (at least 50 % overlap in scanner coordinates)")
    transform = estimate_rigid(pet, mr, seed=seed)
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    translation = np.asarray(transform.GetTranslation())
    shift, angle = float(np.linalg.norm(translation)), _rotation_deg(matrix)
    registered = shift > ALIGNED_MM or angle > ALIGNED_DEG
    applied = transform if registered else sitk.Transform()
    image = sitk.Resample(mr.to_sitk(), pet.to_sitk(), applied, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    on_pet = Volume(sitk.GetArrayFromImage(image).astype(np.float32, copy=False), pet.spacing, pet.origin,
                    pet.direction, modality=mr.modality or "MR", units=mr.units)
    info = {"translation_mm": [round(float(t), 2) for t in translation], "shift_mm": round(shift, 2),
            "rotation_deg": round(angle, 2), "registered": registered}
    return on_pet, info


# -- sampling ------------------------------------------------------------------------------
def _padded(shape, multiple: int) -> tuple[int, ...]:
    return tuple(-(-int(s) // multiple) * multiple for s in shape)


def conditions(model: PetmrModel, low_n: np.ndarray, mr_n: np.ndarray | None, device="cpu") -> torch.Tensor:
    """(1, C, D', H', W') [MR, PET_low, x, y, z], zero-padded to the network's multiple.

    The coordinates are those of the whole (unpadded) volume, so every window cut from it
    carries its own position. The plain UNet baseline reads [MR, PET_low] only.
    """
    from meddiffusion.nets.csrd import global_coordinates

    shape = low_n.shape
    padded = _padded(shape, model.multiple)
    images = ([mr_n] if model.use_mr else []) + [low_n]
    channels = torch.zeros((len(images), *padded), dtype=torch.float32)
    for k, image in enumerate(images):
        channels[k, : shape[0], : shape[1], : shape[2]] = torch.from_numpy(np.asarray(image, np.float32))
    if model.objective == "regression":
        return channels[None].to(device)
    coords = global_coordinates(padded, shape)
    return torch.cat([channels, coords])[None].to(device)


def sample_residual(model: PetmrModel, cond: torch.Tensor, *, steps: int, overlap: float = 0.25,
                    batch_size: int = 1, seed: int = 0, window: int | None = None, callback=None,
                    samples: int = 1) -> torch.Tensor:
    """r̂ (1, 1, D', H', W'): the Heun sampler over the whole (padded) volume, each pass through sliding windows;
    the mean of ``samples`` samples from seeds ``seed``, ``seed + 1``, ... (``callback(done, steps × samples)``)."""
    from monai.inferers import SlidingWindowInferer

    window = int(window or model.window)
    window = max(model.multiple, window // model.multiple * model.multiple)
    roi = tuple(min(window, s) for s in cond.shape[2:])
    inferer = SlidingWindowInferer(roi, sw_batch_size=batch_size, overlap=overlap, mode="gaussian")
    if model.objective == "regression":
        with torch.inference_mode():
            r = inferer(cond, model.net)
        if callback is not None:
            callback(1, 1)
        return r
    precond = EDMPreconditioning(model.sigma_data)

    def net_fn(x_in: torch.Tensor, c: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return inferer(torch.cat([x_in, c], dim=1), model.net, c_noise)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return precond.denoise(net_fn, x, sigma, cond)

    total = int(steps) * int(samples)
    mean = None
    for k in range(int(samples)):
        generator = torch.Generator(device=cond.device).manual_seed(int(seed) + k)
        done = (lambda i, _n, k=k: callback(k * steps + i, total)) if callback is not None else None
        with torch.inference_mode():
            r = heun_sample(denoiser, (1, 1, *cond.shape[2:]), steps, generator, model.sigma_min, model.sigma_max,
                            model.rho, device=cond.device, callback=done)
        mean = r if mean is None else mean + (r - mean) / (k + 1)
    return mean


def denoise(model: PetmrModel, pet: Volume, mr: Volume | None = None, *, steps: int, overlap: float = 0.25,
            batch_size: int = 1, seed: int = 0, device="cpu", callback=None,
            samples: int | None = None) -> tuple[Volume, dict]:
    """The denoised PET on ``pet``'s grid and units (``mr`` already on that grid), and its activity check."""
    if model.use_mr and mr is None:
        raise ValueError(f"model '{model.id}' is MR-guided and needs the MR")
    scale = pet_range(pet.array)
    low_n = normalize_pet(pet.array.astype(np.float32), scale)
    mr_n = normalize_mr(mr.array) if model.use_mr else None
    cond = conditions(model, low_n, mr_n, device)
    samples = model.samples_for(samples, device)
    r = sample_residual(model, cond, steps=steps, overlap=overlap, batch_size=batch_size, seed=seed,
                        callback=callback, samples=samples)
    depth, height, width = pet.shape
    full_n = low_n + r[0, 0, :depth, :height, :width].float().cpu().numpy() / model.residual_scale
    out = np.clip(denormalize_pet(full_n, scale), 0.0, None).astype(np.float32)
    total_in = float(np.clip(pet.array, 0.0, None).sum(dtype=np.float64))
    ratio = float(out.sum(dtype=np.float64) / total_in) if total_in > 0 else 1.0
    rescaled = abs(ratio - 1.0) > TOTAL_TOLERANCE
    if rescaled:
        out = (out / ratio).astype(np.float32)
    volume = pet.with_array(out, modality=pet.modality or "PT", units=pet.units)
    return volume, {"total_activity_ratio": round(ratio, 5), "total_rescaled": rescaled,
                    "pet_range": [float(scale[0]), float(scale[1])]}


def run(job) -> tuple[dict, dict]:
    """The task's ``infer``: the denoised PET on the input's grid, with the registration and activity figures."""
    model: PetmrModel = job.model
    edm = model.objective == "edm"
    steps = model.check_steps(job.steps) if edm else 1
    samples = model.samples_for(getattr(job.args, "samples", None), job.device) if edm else 1
    pet = job.inputs["pet"]
    started = time.perf_counter()
    info: dict = {"model": model.id, "steps": steps, "samples": samples, "mr_guided": model.use_mr}
    mr = None
    if model.use_mr:
        if job.inputs.get("mr") is None:
            raise ValueError(f"model '{model.id}' is MR-guided: give the patient's MR with --mr")
        with job.progress.stage("register MR", total=1) as step:
            mr, info["registration"] = register_mr(pet, job.inputs["mr"])
            step()
    with job.progress.stage("denoise", total=steps * samples) as step:
        out, figures = denoise(model, pet, mr, steps=steps, overlap=job.args.overlap, batch_size=job.args.batch_size,
                               seed=getattr(job.args, "seed", 0), device=job.device, samples=samples,
                               callback=lambda done, total: step())
    info.update(figures)
    info["seconds"] = round(time.perf_counter() - started, 2)
    reg = info.get("registration")
    where = ("" if reg is None else
             f"; MR {'registered' if reg['registered'] else 'aligned'} (measured {reg['shift_mm']:.1f} mm, "
             f"{reg['rotation_deg']:.1f}°)")
    info["summary"] = (f"denoised a {'×'.join(map(str, pet.shape[::-1]))} PET with {model.id} ({f'{steps} Heun steps, mean of {samples} samples' if edm else 'one pass'}, "
                       f"{'MR-guided' if model.use_mr else 'PET only'}) in {info['seconds']:.1f} s{where}; total "
                       f"activity × {figures['total_activity_ratio']:.3f}"
                       + (" (rescaled to the input's)" if figures["total_rescaled"] else ""))
    return {"output": out}, info
