"""Choose the LDCT noise-level gain's target on the validation split (never the held-out real slices).

For each target noise (0: no gain), the bench's validation slices at both bench doses, made as
``meddiff bench ldct --split validation`` makes them, are denoised by the model with that
gain (``tasks/ldct/noisegain.py``) at its default steps. Prints, per target, the mean PSNR and
SSIM per dose and the worst per-slice PSNR gain, and the per-slice gains.

    python scripts/ldct_noise_gain_sweep.py --targets 0 10 15 20 [--max-gain 3] [--model ID]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch

from meddiffusion.metrics.image import per_slice_quality
from meddiffusion.tasks.ldct import bench
from meddiffusion.tasks.ldct.model import load_model
from meddiffusion.tasks.ldct.noisegain import NoiseGain


def sweep(model, targets: list[float], max_gain: float, smooth_px: float, count: int) -> list[dict]:
    device = torch.device("cpu")
    slices = bench.validation_slices(count)
    pairs = [(k, dose, *bench.simulate_low_dose(k, item, dose))
             for k, item in enumerate(slices) for dose in bench.DOSES]
    rows = []
    for target in targets:
        gain = NoiseGain(target, max_gain, smooth_px) if target > 0 else None
        variant = replace(model, noise_gain=gain)
        scores = {dose: [] for dose in bench.DOSES}
        for k, dose, low, _ in pairs:
            reference, pixel_mm = slices[k]["hu"], slices[k]["pixel_mm"]
            out = bench._denoise(variant, low, pixel_mm, variant.default_steps(device), device)
            quality = {key: float(v[0]) for key, v in per_slice_quality(out, reference).items()}
            base = float(per_slice_quality(low, reference)["psnr"][0])
            scores[dose].append({**quality, "gain": quality["psnr"] - base})
        rows.append({"target_noise_hu": target, "max_gain": max_gain, "smooth_px": smooth_px,
                     **{f"{dose:.0%}": {"psnr": round(float(np.mean([v["psnr"] for v in values])), 2),
                                        "ssim": round(float(np.mean([v["ssim"] for v in values])), 4),
                                        "worst_gain": round(float(min(v["gain"] for v in values)), 2),
                                        "gains": [round(v["gain"], 2) for v in values]}
                        for dose, values in scores.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="LDCT model id (default: the catalogue's)")
    parser.add_argument("--targets", nargs="+", type=float, default=[0, 10, 15, 20])
    parser.add_argument("--max-gain", type=float, default=3.0)
    parser.add_argument("--smooth-px", type=float, default=2.0)
    parser.add_argument("--count", type=int, default=bench.VALIDATION_SLICES)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu")
    for row in sweep(model, args.targets, args.max_gain, args.smooth_px, args.count):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
