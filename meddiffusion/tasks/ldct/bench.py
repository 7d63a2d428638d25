"""Low-dose CT denoising on held-out real CT slices: PSNR / SSIM / RMSE(HU), speed and memory.

**Evaluation set.** The real CT slices bundled with pydicom and pydicom-data, never used for
training (the shipped models learn from the thorax phantom only): an abdomen (0.86 mm
pixels), two heads (0.48 and 0.43 mm; one JPEG 2000, needing the pylibjpeg plugins), a neck /
spine slice (0.29 mm) and a 128² spine crop. Files that do not decode are skipped and listed.

**Pairs.** Each real slice is the normal-dose reference, with its own full-dose noise. I0 is
calibrated so that simulated full-dose noise matches the noise measured in the slice's
flattest soft-tissue blocks; low-dose slices at 25 % and 10 % dose are simulated from it
with ``input_is_noisy=True`` (seeded), the pipeline the training data uses. Each slice is a
one-slice volume, so the model's neighbours replicate the slice.

**Worst slice gain.** The smallest PSNR gain over the input across the slices: a method that
makes any one scan worse shows a negative value, whatever its mean.

**Methods.** The low-dose input; BM3D (``bm3d`` package) with, per slice, the best of a sweep
of sigma = f × (noise measured on the low-dose slice), chosen by PSNR against the reference
and extended until the best f is bracketed: an oracle choice that favours the baseline; the default LDCT model at its default step count
for the device and at 1 step. Metrics follow CoreDiff ([-1000, 1000] HU window).

**One-shot adaptation.** The default model is adapted to 10 % dose on the first 512² slice
(paired, ``tasks.ldct_adapt``) and compared with the unadapted model on the other slices.

**Speed and memory.** Seconds per 512² slice through ``denoise_volume`` (air skipped) on the
abdomen slice; peak resident memory of a separate process that reads, denoises and writes a
512² × 300 volume (16 slices with ``--quick``) at 1 step (memory does not depend on steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

from meddiffusion.benchmarks.harness import clocked, each_case, markdown_table, result, timed

#: (file in pydicom / pydicom-data, description); the held-out real-anatomy evaluation set
EVAL_FILES = (
    ("explicit_VR-UN.dcm", "abdomen 512², 0.86 mm"),
    ("693_UNCR.dcm", "head 512², 0.48 mm"),
    ("J2K_pixelrep_mismatch.dcm", "head 512², 0.43 mm (JPEG 2000)"),
    ("bad_sequence.dcm", "neck/spine 512², 0.29 mm"),
    ("CT_small.dcm", "spine crop 128², 0.66 mm"),
)
DOSES = (0.25, 0.1)
BM3D_FACTORS = (0.75, 1.0, 1.5, 2.0)
#: --split validation: slices of the training data's kind (half phantom, half dead leaves, scanner
#: noise of any kernel) from a seed no training run uses, where data and training settings are chosen
VALIDATION_SEED, VALIDATION_SLICES, QUICK_VALIDATION_SLICES = 7001, 8, 2
SPLITS = ("heldout", "validation")
OPTIONS = ("models", "split")


def load_eval_slices(names: tuple[str, ...] | None = None) -> tuple[list[dict], list[str]]:
    """The held-out slices as ``{"name", "description", "hu" (H, W) float32, "pixel_mm"}``, and the skipped files."""
    import pydicom
    from pydicom.data import get_testdata_file

    slices, skipped = [], []
    for name, description in EVAL_FILES:
        if names is not None and name not in names:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(get_testdata_file(name))
                pixels = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - a missing decoder or data package only skips the file
            skipped.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        slope, intercept = float(getattr(ds, "RescaleSlope", 1)), float(getattr(ds, "RescaleIntercept", 0))
        hu = pixels.astype(np.float32) * slope + intercept
        slices.append({"name": name, "description": description, "hu": hu, "pixel_mm": float(ds.PixelSpacing[0])})
    return slices, skipped


def validation_slices(count: int) -> list[dict]:
    """Normal-dose 512² slices like the training data's (``--split validation``), never the held-out real ones.

    Slab ``k`` of dataset ``VALIDATION_SEED`` with the training data's ranges and half dead
    leaves; its middle full-dose slice is the reference, treated exactly like a real slice.
    """
    from meddiffusion.tasks.ldct.data import DataOptions, render_slab, slab_spec

    options = DataOptions(size=512, slices=1)
    slices = []
    for index in range(count):
        spec = slab_spec(VALIDATION_SEED, index, options)
        nd = render_slab(spec, options)["nd"][0]
        what = "dead leaves" if spec.source == "deadleaves" else f"phantom {spec.preset}"
        slices.append({"name": f"validation-{index}", "hu": nd.astype(np.float32), "pixel_mm": spec.pixel_mm,
                       "description": f"{what}, {spec.pixel_mm:.2f} mm, {spec.nd_kernel} kernel, "
                                      f"{spec.nd_noise_hu:.0f} HU noise"})
    return slices


def simulate_low_dose(k: int, item: dict, dose: float) -> tuple[np.ndarray, float]:
    """The bench's low-dose version of evaluation slice ``k`` (``item`` of ``load_eval_slices`` or
    ``validation_slices``) at ``dose``, and the reference's own measured noise (HU).

    The source is calibrated to the reference's noise and the seed is fixed by (k, dose), so every
    script that scores on these slices sees the bench's very images.
    """
    from meddiffusion.tasks.ldct.physics import calibrate_source_i0, simulate_pair

    reference = item["hu"]
    i0, noise_nd = calibrate_source_i0(reference, item["pixel_mm"])
    generator = torch.Generator().manual_seed(1000 * k + round(100 * dose))
    low = simulate_pair(torch.from_numpy(reference), dose, pixel_size_mm=item["pixel_mm"], i0=i0,
                        generator=generator).numpy()
    return low, noise_nd


def _low_dose_noise(low: np.ndarray, reference: np.ndarray, noise_nd: float) -> float:
    """The low-dose slice's noise (HU) for BM3D's sigma: measured in its flat soft tissue, or on a
    slice with too little of it (dense dead leaves) the reference's measured noise plus the RMS of
    what the simulation added (the sigma sweep is an oracle anyway)."""
    from meddiffusion.tasks.ldct.physics import estimate_noise_hu

    try:
        return estimate_noise_hu(low)[0]
    except ValueError:
        return float(np.sqrt(noise_nd**2 + np.mean((low - reference) ** 2)))


def _bm3d(low: np.ndarray, reference: np.ndarray, noise_hu: float, factors) -> tuple[np.ndarray, float, float]:
    """BM3D at its best sigma: (denoised, chosen factor, seconds of one run).

    Starts from ``factors`` (multiples of the measured noise) and keeps extending the sweep
    past whichever end wins (×/÷ 4/3, within 0.25-4), so the optimum is bracketed.
    """
    import bm3d

    from meddiffusion.metrics.image import psnr

    tried: dict[float, tuple[float, np.ndarray, float]] = {}

    def trial(factor: float) -> None:
        out, seconds = clocked(bm3d.bm3d, low.astype(np.float64), sigma_psd=factor * noise_hu)
        out = out.astype(np.float32)
        tried[factor] = (psnr(out, reference), out, seconds)

    for factor in factors:
        trial(factor)
    while True:
        best = max(tried, key=lambda f: tried[f][0])
        if best == max(tried) and best * 4 / 3 <= 4.0:
            trial(round(best * 4 / 3, 3))
        elif best == min(tried) and best * 3 / 4 >= 0.25:
            trial(round(best * 3 / 4, 3))
        else:
            return tried[best][1], best, tried[best][2]


def _denoise(model, hu: np.ndarray, pixel_mm: float, steps: int, device, precision: str = "auto") -> np.ndarray:
    from meddiffusion.io import Volume
    from meddiffusion.tasks.ldct.infer import denoise_volume

    volume = Volume(hu[None], (pixel_mm, pixel_mm, 1.0), modality="CT")
    return denoise_volume(volume, model, steps=steps, device=device, precision=precision).array[0]


def _speed(model, low: np.ndarray, pixel_mm: float, step_counts, device, repeats: int) -> dict[str, float]:
    """Median seconds per 512² slice: each step count at the automatic precision, the default also in fp32."""
    speeds = {}
    for steps in step_counts:
        speeds[f"{steps}"] = timed(lambda s=steps: _denoise(model, low, pixel_mm, s, device), repeats=repeats)
    speeds[f"{step_counts[0]} fp32"] = timed(lambda: _denoise(model, low, pixel_mm, step_counts[0], device, "fp32"),
                                             repeats=repeats)
    return speeds


def _memory_probe(low_slice: np.ndarray, pixel_mm: float, slices: int, threads: int) -> dict:
    """Peak RSS of a fresh process that reads, denoises (1 step) and writes a 512² × ``slices`` volume."""
    from meddiffusion.io import Volume, write_volume

    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "volume.nrrd")
        volume = Volume(np.repeat(low_slice[None], slices, axis=0), (pixel_mm, pixel_mm, 1.0), modality="CT")
        write_volume(volume, source)
        del volume
        argv = [source, "-o", os.path.join(folder, "out.nrrd"), "--steps", "1", "--batch-size", "4",
                "--device", "cpu", "--threads", str(threads), "--events", "none"]
        code = ("import json, resource, time\n"
                "import meddiffusion.tasks.ldct.infer\n"   # the libraries load before the clock starts
                "from meddiffusion.cli import main\n"
                f"start = time.time(); status = main(['ldct-denoise', *{argv!r}])\n"
                "print(json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
                " 'seconds': time.time() - start}))\n"
                "raise SystemExit(status)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    return {"slices": slices, **probe}


def run(device: torch.device, quick: bool = False, progress=None, models: list[str] | None = None,
        split: str = "heldout") -> dict:
    """The table and figures; ``models`` adds rows for further catalogue models at their default steps.

    ``split`` picks the slices: the held-out real CT the README reports, or ``validation``
    (:func:`validation_slices`), where settings are chosen.
    """
    from meddiffusion.devices import cpu_has_bf16
    from meddiffusion.metrics.image import per_slice_quality
    from meddiffusion.tasks.ldct.model import load_model

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    factors = (1.0, 1.5) if quick else BM3D_FACTORS
    if split == "validation":
        slices, skipped = validation_slices(QUICK_VALIDATION_SLICES if quick else VALIDATION_SLICES), []
    else:
        slices, skipped = load_eval_slices(("explicit_VR-UN.dcm", "CT_small.dcm") if quick else None)
    if not slices:
        raise ValueError("no evaluation slice could be read; install pydicom, pydicom-data and the pylibjpeg plugins")
    model = load_model(None, device)
    default_steps = model.default_steps(device)
    step_counts = sorted({default_steps, 1}, reverse=True)
    methods = ["low-dose input", "BM3D (oracle sigma)"] + [f"{model.id}, {s} step{'s' * (s > 1)}"
                                                          for s in step_counts]
    extra = {}
    for model_id in dict.fromkeys(models or ()):
        if model_id != model.id:
            other = load_model(model_id, device)
            extra[f"{other.id}, {other.default_steps(device)} steps"] = other
    methods += list(extra)
    scores = {(dose, m): [] for dose in DOSES for m in methods}
    seconds = {m: [] for m in methods}
    per_slice, lows = [], {}
    for k, item in each_case(progress, "evaluate", enumerate(slices)):
        reference = item["hu"]
        for dose in DOSES:
            low, noise_nd = simulate_low_dose(k, item, dose)
            lows[(k, dose)] = low
            noise_ld = _low_dose_noise(low, reference, noise_nd)
            outputs = {"low-dose input": low}
            outputs["BM3D (oracle sigma)"], factor, bm3d_s = _bm3d(low, reference, noise_ld, factors)
            if reference.shape == (512, 512):
                seconds["BM3D (oracle sigma)"].append(bm3d_s)
            for s, name in zip(step_counts, methods[2:]):
                outputs[name] = _denoise(model, low, item["pixel_mm"], s, device)
            for name, other in extra.items():
                outputs[name] = _denoise(other, low, item["pixel_mm"], other.default_steps(device), device)
            row = {"file": item["name"], "dose": dose, "noise_nd_hu": noise_nd, "noise_ld_hu": noise_ld,
                   "bm3d_sigma_factor": factor}
            for name, image in outputs.items():
                quality = {key: float(v[0]) for key, v in per_slice_quality(image, reference).items()}
                scores[(dose, name)].append(quality)
                row[name] = quality
            per_slice.append(row)
    with progress.stage("adapt", total=1) as step:
        adaptation = _adaptation(model, slices, lows, device, default_steps)
        step()
    low_512, pixel_512 = _abdomen_low(slices, lows)
    with progress.stage("speed", total=1) as step:
        speeds = _speed(model, low_512, pixel_512, step_counts, device, repeats=1 if quick else 3)
        step()
    for s, name in zip(step_counts, methods[2:]):
        seconds[name].append(speeds[f"{s}"])
    memory = _memory_probe(low_512, pixel_512, slices=16 if quick else 300, threads=torch.get_num_threads())
    rows = []
    for dose in DOSES:
        inputs = [v["psnr"] for v in scores[(dose, "low-dose input")]]
        for name in methods:
            values = scores[(dose, name)]
            rows.append({"dose": dose, "method": name,
                         **{key: float(np.mean([v[key] for v in values])) for key in ("psnr", "ssim", "rmse_hu")},
                         "worst_gain_db": float(min(v["psnr"] - x for v, x in zip(values, inputs))),
                         "seconds_per_512_slice": float(np.median(seconds[name])) if seconds[name] else None})
    precision = "bf16" if model.cpu_bf16_ok and cpu_has_bf16() and device.type == "cpu" else "fp32"
    table = _table(rows, slices, skipped, memory, speeds, precision, step_counts[0], adaptation, split)
    return result(table, device, rows=rows, per_slice=per_slice, memory=memory, speeds=speeds, precision=precision,
                  adaptation=adaptation, skipped=skipped, default_steps=default_steps, model=model.id, split=split)


def _adaptation(model, slices: list[dict], lows: dict, device, steps: int, dose: float = 0.1) -> dict | None:
    """Adapt on the first 512² slice at ``dose`` (paired) and score base vs adapted on the other slices."""
    from dataclasses import replace

    from meddiffusion.metrics.image import per_slice_quality
    from meddiffusion.tasks.ldct.adapt import adapt

    first = next((k for k, s in enumerate(slices) if s["hu"].shape == (512, 512)), None)
    others = [k for k in range(len(slices)) if k != first]
    if first is None or not others or (first, dose) not in lows:
        return None
    low = lows[(first, dose)]
    result = adapt(model, np.stack([low, low, low]), slices[first]["hu"], paired=True, steps=steps)
    adapted = replace(model, trajectory_weights=result.weights)
    scores = {"base": [], "adapted": []}
    for k in others:
        for name, m in (("base", model), ("adapted", adapted)):
            out = _denoise(m, lows[(k, dose)], slices[k]["pixel_mm"], steps, device)
            scores[name].append({key: float(v[0]) for key, v in per_slice_quality(out, slices[k]["hu"]).items()})
    mean = {name: {key: float(np.mean([v[key] for v in values])) for key in ("psnr", "ssim", "rmse_hu")}
            for name, values in scores.items()}
    return {"dose": dose, "learned_on": slices[first]["name"], "slices": len(others),
            "weights": [round(float(w), 3) for w in result.weights], **mean}


def _abdomen_low(slices: list[dict], lows: dict) -> tuple[np.ndarray, float]:
    """A 512² low-dose slice and its pixel size for timing: the first 512² evaluation slice at 25 % dose."""
    k = next((k for k, s in enumerate(slices) if s["hu"].shape == (512, 512)), 0)
    return lows[(k, DOSES[0])], slices[k]["pixel_mm"]


def _table(rows: list[dict], slices: list[dict], skipped: list[str], memory: dict, speeds: dict, precision: str,
           default_steps: int, adaptation: dict | None, split: str = "heldout") -> list[str]:
    cells = [(f"{r['dose']:.0%}", r["method"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['rmse_hu']:.1f}",
              "" if r["method"] == "low-dose input" else f"{r['worst_gain_db']:+.2f}",
              "" if r["seconds_per_512_slice"] is None else f"{r['seconds_per_512_slice']:.2f}") for r in rows]
    lines = markdown_table(("dose", "method", "PSNR (dB)", "SSIM", "RMSE (HU)", "worst slice gain (dB)",
                            "s / 512² slice"), cells)
    lines.append("")
    what = "Held-out real CT slices" if split == "heldout" else "Validation slices (training-like, never held out)"
    lines.append(f"{what}: " + "; ".join(f"{s['name']} ({s['description']})" for s in slices))
    if skipped:
        lines.append("Skipped (could not be read): " + "; ".join(skipped))
    if adaptation:
        lines.append(f"One-shot adaptation to {adaptation['dose']:.0%} dose on {adaptation['learned_on']} (paired), "
                     f"mean over the other {adaptation['slices']} slice(s): PSNR {adaptation['base']['psnr']:.2f} -> "
                     f"{adaptation['adapted']['psnr']:.2f} dB, SSIM {adaptation['base']['ssim']:.4f} -> "
                     f"{adaptation['adapted']['ssim']:.4f}, RMSE {adaptation['base']['rmse_hu']:.1f} -> "
                     f"{adaptation['adapted']['rmse_hu']:.1f} HU (weights {adaptation['weights']}).")
    lines.append(f"Model speed at {precision} (auto); in fp32 the default {default_steps} steps take "
                 f"{speeds[f'{default_steps} fp32']:.2f} s per 512² slice. BM3D time is one run at the chosen sigma.")
    lines.append(f"Memory: peak RSS {memory['peak_rss_mb']:.0f} MB reading, denoising (1 step) and writing a "
                 f"512²×{memory['slices']} volume ({memory['seconds']:.0f} s).")
    return lines
