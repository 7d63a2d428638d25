"""Self-supervised (low-dose only) against paired fine-tuning of the LDCT model, on phantom patients.

    python -m meddiffusion.tasks.ldct.finetune_bench --out runs/ldct-finetune [--steps 100 ...]

Phantom patients are rendered like the training slabs (``data.render_slab``) at ``--dose`` and
written as NRRD: ``--patients`` for fine-tuning (``paired/input``, ``paired/target``) and
``--test-patients`` held out. The parent model is fine-tuned twice through the real command,
``meddiff train ldct --from-model PARENT``: with ``--source paired-folder`` on the pairs and with
``--source lowdose-folder`` on the low-dose volumes alone, same steps and seed. Each model and
the low-dose input are then scored on the held-out patients against their normal-dose images
(PSNR / SSIM / RMSE in [-1000, 1000] HU, as ``ldct-denoise`` runs them). Prints a markdown
table and writes ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def make_cases(root: Path, args) -> list[str]:
    """Write the phantom patients; returns the held-out ones' names."""
    from meddiffusion.io import Volume, write_volume
    from meddiffusion.tasks.ldct.data import DataOptions, render_slab, slab_spec

    options = DataOptions(size=args.size, slices=args.slices, pixel_mm=tuple(args.pixel_range),
                          slice_mm=tuple(args.slice_range), nd_noise_hu=tuple(args.noise_range),
                          dose=(args.dose, args.dose), num_views=args.views)
    held_out = []
    for index in range(args.patients + args.test_patients):
        name, test = f"patient{index:02d}", index >= args.patients
        folder = root / ("test" if test else "paired")
        if not (folder / "target" / f"{name}.nrrd").exists():
            spec = slab_spec(args.seed + 1000, index, options)
            slab = render_slab(spec, options)
            for role, key in (("input", "ld"), ("target", "nd")):
                write_volume(Volume(slab[key], (spec.pixel_mm, spec.pixel_mm, spec.slice_mm), modality="CT"),
                             folder / role / f"{name}.nrrd")
        held_out += [name] if test else []
    return held_out


def fine_tune(source: str, data: Path, out: Path, args) -> dict:
    from meddiffusion.benchmarks.harness import meddiff_result

    argv = ["train", "ldct", "--source", source, "--data", str(data), "--from-model", args.parent, "--steps",
            str(args.steps), "--lr", f"{args.lr:g}", "--batch-size", str(args.batch_size), "--crop", str(args.crop),
            "--val-every", "0", "--ckpt-every", "0", "--seed", str(args.seed), "--out", str(out)]
    result = meddiff_result(*argv)
    return {"command": "meddiff " + " ".join(argv), **{k: result[k] for k in ("train_seconds", "gate")}}


def evaluate(model, root: Path, names: list[str]) -> dict[str, float]:
    """Mean per-slice PSNR / SSIM / RMSE of a model (None: the low-dose input) on the held-out patients."""
    from meddiffusion.io import read_volume
    from meddiffusion.metrics.image import image_quality
    from meddiffusion.tasks.ldct.infer import denoise_volume

    outputs, references = [], []
    for name in names:
        low = read_volume(root / "test" / "input" / f"{name}.nrrd")
        outputs.append(low.array if model is None else denoise_volume(low, model).array)
        references.append(read_volume(root / "test" / "target" / f"{name}.nrrd").array)
    quality = image_quality(np.concatenate(outputs), np.concatenate(references))
    return {k: round(v, 4) for k, v in quality.items() if k != "slices"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the cases, the runs and results.json")
    parser.add_argument("--parent", default="ldct-corediff-small", help="the model both fine-tunes start from")
    parser.add_argument("--patients", type=int, default=6, help="fine-tuning patients (one is validation)")
    parser.add_argument("--test-patients", type=int, default=3, help="held-out patients scored at the end")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--pixel-range", type=float, nargs=2, default=(1.6, 2.0))
    parser.add_argument("--slice-range", type=float, nargs=2, default=(0.6, 3.0), help="slice spacing in mm")
    parser.add_argument("--noise-range", type=float, nargs=2, default=(8.0, 15.0))
    parser.add_argument("--dose", type=float, default=0.1)
    parser.add_argument("--views", type=int, default=360)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from meddiffusion.catalog import ModelEntry
    from meddiffusion.tasks.ldct.model import build_model, load_model

    root = Path(args.out)
    os.environ.setdefault("MEDDIFF_MODEL_DIR", str(root / "models"))
    start = time.monotonic()
    test = make_cases(root, args)
    rows = {"low-dose input": {"scores": evaluate(None, root, test)},
            f"parent {args.parent}": {"scores": evaluate(load_model(args.parent), root, test)}}
    for label, source, data in (("paired fine-tune", "paired-folder", root / "paired"),
                                ("self-supervised fine-tune", "lowdose-folder", root / "paired" / "input")):
        out = root / "runs" / source
        run = fine_tune(source, data, out, args)
        card = json.loads((out / "model.json").read_text())
        entry = ModelEntry.from_dict(card, folder=out)
        rows[label] = {"scores": evaluate(build_model(entry.architecture, entry.state_dict(), entry), root, test),
                       **run}
    result = {"settings": vars(args), "held_out": test, "rows": rows, "seconds": round(time.monotonic() - start)}
    (root / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| model | PSNR (dB) | SSIM | RMSE (HU) | train s |\n|---|---|---|---|---|")
    for label, row in rows.items():
        s = row["scores"]
        print(f"| {label} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['rmse_hu']:.1f} | {row.get('train_seconds', '')} |")
    return result


if __name__ == "__main__":
    main()
