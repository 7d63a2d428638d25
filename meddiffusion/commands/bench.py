"""``meddiff bench <name>``: the measured speed and quality figures quoted in the README.

Targets are checked here, never by timed unit tests: each bench prints a Markdown table (and
writes it with ``-o``) together with the machine it ran on, so a figure can be reproduced.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

#: bench name -> (module under meddiffusion.benchmarks, one-line description)
BENCHES = {
    "precision": ("meddiffusion.benchmarks.precision", "fp32 vs bf16 autocast: speed and output error of the shipped network types"),
    "phantom": ("meddiffusion.benchmarks.phantom", "seconds per thorax phantom frame (256x256x128 CT) and per modality"),
    "ldct": ("meddiffusion.tasks.ldct.bench", "LDCT denoising on held-out real CT slices: PSNR/SSIM/RMSE vs BM3D, s/slice"),
    "motion": ("meddiffusion.tasks.motion.bench", "calcium motion correction on held-out phantom cases: Agatston MAE, risk class, r"),
}

#: benches that can score further catalogue models beside their own (``--model``) and other case sets (``--split``)
TAKES_MODELS = ("motion",)

EXAMPLE = """examples:
  meddiff bench precision --threads 2
  meddiff bench phantom -o bench_phantom.md
  meddiff bench motion --threads 2 --model my-motion-model"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure speed/quality figures (README tables)",
                              description=__doc__ + "\nbenches:\n" + "\n".join(
                                  f"  {k:<10} {d}" for k, (_, d) in BENCHES.items()),
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(BENCHES), help="which bench to run")
    p.add_argument("-o", "--output", help="write the Markdown table here (JSON beside it as .json, and any "
                                           "picture as <name>_<picture>.png)")
    p.add_argument("--quick", action="store_true", help="smaller sizes/fewer repeats (smoke test)")
    p.add_argument("--model", action="append", metavar="ID",
                   help=f"also score this catalogue model, e.g. one you trained and registered (repeatable; "
                        f"{', '.join(TAKES_MODELS)})")
    p.add_argument("--split", choices=("heldout", "validation"),
                   help="motion: score the held-out set (default) or the training run's validation patients, "
                        "where settings are chosen")
    from meddiffusion.commands.options import add_device_options

    add_device_options(p)


def run(args: argparse.Namespace, progress) -> dict:
    from meddiffusion.commands.options import setup_device

    if (args.model or args.split) and args.name not in TAKES_MODELS:
        raise ValueError(f"bench '{args.name}' scores its own models on its own cases; --model and --split work "
                         f"with {', '.join(TAKES_MODELS)}")
    device = setup_device(args)
    module = importlib.import_module(BENCHES[args.name][0])
    extra = {key: value for key, value in (("models", args.model), ("split", args.split)) if value}
    result = module.run(device=device, quick=args.quick, progress=progress, **extra)
    pictures = result.pop("pictures", {})
    if args.output:
        from meddiffusion.figures import write_png

        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result["table"] + "\n")
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
        for name, rgb in pictures.items():
            write_png(out.with_name(f"{out.stem}_{name}.png"), rgb)
    result["summary"] = result["table"]
    return result
