"""Per-slice PSNR gain of LDCT models and of BM3D (oracle σ sweep) on quiet slices (validation data only).

The bench's means hide where a network falls behind BM3D; this reads single slices, made the
way ``meddiff bench ldct`` makes them:

- ``--validation K ...``: slices K of the bench's validation split (``bench.validation_slices``),
  the low dose simulated from the reference with the bench's seed for that slice and dose;
- ``--slabs DIR --first N --count C``: the middle slice of cached training slabs (a run's
  ``data`` folder, its own low-dose images), to compare on a training run's own distribution.

BM3D gets the bench's σ sweep (``bench._bm3d``) around the measured low-dose noise. Never the
held-out real slices.

``--breakdown`` also splits each output's squared error (HU²) by where it lies: by spatial
frequency (radial bands of the 2D spectrum, in cycles per pixel: below 0.08, 0.08-0.2, above
0.2) and by place (flat tissue, where the reference's gradient is below 20 HU per pixel, and
the rest). Residual noise left in flat tissue shows as error in flat and high bands, blurred
edges as error at edges; the input's row shows the noise to remove.

    python scripts/ldct_quiet_probe.py --models default MODEL_ID --validation 2 4 5 6 7 --dose 0.1
    python scripts/ldct_quiet_probe.py --models default MODEL_ID --slabs runs/RUN/data --first 40 --count 4
    python scripts/ldct_quiet_probe.py --models default --validation 5 6 7 --dose 0.1 --breakdown [--gain-off]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from meddiffusion.metrics.image import psnr
from meddiffusion.tasks.ldct import bench
from meddiffusion.tasks.ldct.model import load_model

#: band edges (cycles per pixel) and the flat-tissue gradient limit (HU per pixel) of ``--breakdown``
BANDS = (0.08, 0.2)
FLAT_GRADIENT_HU = 20.0


def error_breakdown(out: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean squared error (HU²) of ``out`` by frequency band and by flat / edge place (see the module docstring)."""
    from scipy import ndimage

    error = (out - reference).astype(np.float64)
    spectrum = np.abs(np.fft.fft2(error)) ** 2 / error.size ** 2   # Parseval: sums to the mean squared error
    fy, fx = np.meshgrid(np.fft.fftfreq(error.shape[0]), np.fft.fftfreq(error.shape[1]), indexing="ij")
    radius = np.hypot(fy, fx)
    low, high = BANDS
    image = reference.astype(np.float64)
    gradient = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1)) / 8   # HU per pixel
    flat = gradient < FLAT_GRADIENT_HU
    return {"low": float(spectrum[radius < low].sum()), "mid": float(spectrum[(radius >= low) & (radius < high)].sum()),
            "high": float(spectrum[radius >= high].sum()), "flat": float(np.mean(error[flat] ** 2)),
            "edges": float(np.mean(error[~flat] ** 2)), "flat_share": float(flat.mean())}


def _breakdown_line(name: str, figures: dict[str, float]) -> str:
    return (f"    {name:>17}: low {figures['low']:7.1f}  mid {figures['mid']:7.1f}  high {figures['high']:7.1f}  |  "
            f"flat {figures['flat']:7.1f}  edges {figures['edges']:7.1f}  "
            f"(HU², flat {100 * figures['flat_share']:.0f} %)")


def validation_cases(indices: list[int], dose: float):
    """(name, low-dose HU, reference HU, pixel mm, low-dose noise HU) of bench validation slices."""
    slices = bench.validation_slices(max(indices) + 1)
    for k in indices:
        item = slices[k]
        low, noise_nd = bench.simulate_low_dose(k, item, dose)
        yield item["description"], low, item["hu"], item["pixel_mm"], bench._low_dose_noise(low, item["hu"], noise_nd)


def slab_cases(folder: Path, first: int, count: int):
    """The same tuple for the middle slice of cached slabs ``first .. first + count - 1``."""
    for path in sorted(folder.glob("slab_*.npz"))[first:first + count]:
        data = np.load(path)
        spec = json.loads(str(data["meta"]))["spec"]
        middle = data["nd"].shape[0] // 2
        nd, ld = data["nd"][middle].astype(np.float32), data["ld"][middle].astype(np.float32)
        yield path.name, ld, nd, spec["pixel_mm"], float(np.sqrt(np.mean((ld - nd) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default"], help="model ids ('default': the cards' default)")
    parser.add_argument("--validation", nargs="+", type=int, metavar="K", help="bench validation slice indices")
    parser.add_argument("--dose", type=float, default=0.1, help="with --validation: the simulated dose")
    parser.add_argument("--slabs", type=Path, metavar="DIR", help="a training run's slab cache")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--breakdown", action="store_true", help="split each output's error by frequency and place")
    parser.add_argument("--gain-off", action="store_true",
                        help="also score each model whose card has a noise-level gain without it ('ID, no gain')")
    args = parser.parse_args()
    if (args.validation is None) == (args.slabs is None):
        parser.error("give either --validation K ... or --slabs DIR")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    models = {name: load_model(None if name == "default" else name, device) for name in args.models}
    if args.gain_off:
        models |= {f"{name}, no gain": replace(model, noise_gain=None) for name, model in models.items()
                   if model.noise_gain is not None}
    cases = validation_cases(args.validation, args.dose) if args.validation else \
        slab_cases(args.slabs, args.first, args.count)
    for name, low, reference, pixel_mm, noise_ld in cases:
        base = psnr(low, reference)
        outputs = {"BM3D": bench._bm3d(low, reference, noise_ld, bench.BM3D_FACTORS)[0]}
        for model_name, model in models.items():
            outputs[model_name] = bench._denoise(model, low, pixel_mm, model.default_steps(device), device)
        print(f"{name}: input {base:.2f} dB, added noise {noise_ld:.1f} HU, gain "
              + ", ".join(f"{k} {psnr(v, reference) - base:+.2f}" for k, v in outputs.items()), flush=True)
        if args.breakdown:
            for label, image in {"input": low, **outputs}.items():
                print(_breakdown_line(label, error_breakdown(image, reference)), flush=True)


if __name__ == "__main__":
    main()
