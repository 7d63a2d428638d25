"""Per-slice PSNR gain of LDCT models and of BM3D (oracle σ sweep) on quiet slices (validation data only).

The bench's means hide where a network falls behind BM3D; this reads single slices, made the
way ``meddiff bench ldct`` makes them:

- ``--validation K ...``: slices K of the bench's validation split (``bench.validation_slices``),
  the low dose simulated from the reference with the bench's seed for that slice and dose;
- ``--slabs DIR --first N --count C``: the middle slice of cached training slabs (a run's
  ``data`` folder, its own low-dose images), to compare on a training run's own distribution.

BM3D gets the bench's σ sweep (``bench._bm3d``) around the measured low-dose noise. Never the
held-out real slices.

    python scripts/ldct_quiet_probe.py --models default MODEL_ID --validation 2 4 5 6 7 --dose 0.1
    python scripts/ldct_quiet_probe.py --models default MODEL_ID --slabs runs/RUN/data --first 40 --count 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from meddiffusion.metrics.image import psnr
from meddiffusion.tasks.ldct import bench
from meddiffusion.tasks.ldct.model import load_model
from meddiffusion.tasks.ldct.physics import calibrate_source_i0, simulate_pair


def validation_cases(indices: list[int], dose: float):
    """(name, low-dose HU, reference HU, pixel mm, low-dose noise HU) of bench validation slices."""
    slices = bench.validation_slices(max(indices) + 1)
    for k in indices:
        item = slices[k]
        reference = item["hu"]
        i0, noise_nd = calibrate_source_i0(reference, item["pixel_mm"])
        generator = torch.Generator().manual_seed(1000 * k + round(100 * dose))  # the bench's seed
        low = simulate_pair(torch.from_numpy(reference), dose, pixel_size_mm=item["pixel_mm"], i0=i0,
                            generator=generator).numpy()
        yield item["description"], low, reference, item["pixel_mm"], bench._low_dose_noise(low, reference, noise_nd)


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
    args = parser.parse_args()
    if (args.validation is None) == (args.slabs is None):
        parser.error("give either --validation K ... or --slabs DIR")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    models = {name: load_model(None if name == "default" else name, device) for name in args.models}
    cases = validation_cases(args.validation, args.dose) if args.validation else \
        slab_cases(args.slabs, args.first, args.count)
    for name, low, reference, pixel_mm, noise_ld in cases:
        base = psnr(low, reference)
        gains = {"BM3D": psnr(bench._bm3d(low, reference, noise_ld, bench.BM3D_FACTORS)[0], reference) - base}
        for model_name, model in models.items():
            out = bench._denoise(model, low, pixel_mm, model.default_steps(device), device)
            gains[model_name] = psnr(out, reference) - base
        print(f"{name}: input {base:.2f} dB, added noise {noise_ld:.1f} HU, gain "
              + ", ".join(f"{k} {v:+.2f}" for k, v in gains.items()), flush=True)


if __name__ == "__main__":
    main()
