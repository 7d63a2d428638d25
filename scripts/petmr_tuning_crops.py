"""PSNR/SSIM of PET/MR models on the bench's tuning crops, where settings and checkpoints are chosen.

The crops are the central 64³ of training subjects 0 and 1 (dataset seed 0) at the unseen DRF 10,
the cases ``meddiff bench petmr`` tunes its classical filters and sweeps the sampler on
(``bench.sampler_sweep``); never the held-out subjects. Each setting is "<Heun steps>x<samples>".

    python scripts/petmr_tuning_crops.py MODEL_ID ... [--settings 1x1 1x3] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from meddiffusion.tasks.petmr import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="PET/MR model ids (shipped or registered)")
    parser.add_argument("--settings", nargs="+", default=["1x1", "1x3"], metavar="STEPSxSAMPLES")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    settings = tuple(tuple(int(n) for n in s.split("x")) for s in args.settings)
    torch.set_num_threads(args.threads)
    subjects = [bench.heldout_subject(i, dataset_seed=0) for i in bench.TUNE_SUBJECTS]
    for model_id in args.models:
        scores = bench.sampler_sweep(model_id, subjects, torch.device("cpu"), settings=settings)
        print(model_id + ": " + "; ".join(f"{name} {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f}"
                                          for name, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
