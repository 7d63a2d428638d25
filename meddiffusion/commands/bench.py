"""``meddiff bench <name>``: the measured speed and quality figures quoted in the README.

Targets are checked here, never by timed unit tests: each bench prints a Markdown table (and
writes it with ``-o``) together with the machine it ran on, so a figure can be reproduced.
"""

from __future__ import annotations

import argparse
import importlib

#: benches of no one task: name -> (module, one-line description); each task's bench comes from the registry
GENERAL = {
    "precision": ("meddiffusion.benchmarks.precision",
                  "fp32 vs bf16 autocast: speed and output error of the shipped network types"),
    "phantom": ("meddiffusion.benchmarks.phantom",
                "seconds per thorax phantom frame (256x256x128 CT) and per modality"),
    "training": ("meddiffusion.benchmarks.training",
                 "a 200-step LDCT fine-tune on one CT pair as the Training module runs it: time, curve updates, gain"),
}

EXAMPLE = """examples:
  meddiff bench precision --threads 2
  meddiff bench phantom -o bench_phantom.md
  meddiff bench training --threads 2
  meddiff bench motion --threads 2 --model my-motion-model"""


def benches() -> dict[str, tuple[str, str]]:
    """Every bench: the general ones, then each registered task's (name -> module, description).

    Read from the task declarations only, so listing them loads no bench (and no torch).
    """
    from meddiffusion.tasks.registry import all_tasks

    return {**GENERAL, **{spec.name: (spec.bench, spec.bench_summary) for spec in all_tasks() if spec.bench}}


def add_parser(subparsers) -> None:
    listed = benches()
    p = subparsers.add_parser("bench", help="measure speed/quality figures (README tables)",
                              description=__doc__ + "\nbenches:\n" + "\n".join(
                                  f"  {k:<10} {d}" for k, (_, d) in listed.items()),
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(listed), help="which bench to run")
    p.add_argument("-o", "--output", help="write the Markdown table here (JSON beside it as .json, and any "
                                           "picture as <name>_<picture>.png)")
    p.add_argument("--quick", action="store_true", help="smaller sizes/fewer repeats (smoke test)")
    p.add_argument("--model", action="append", metavar="ID",
                   help="also score this catalogue model, e.g. one you trained and registered (repeatable; "
                        "benches that compare models, such as motion)")
    p.add_argument("--split", help="score another case set of the bench, e.g. motion's 'validation' (the training "
                                   "run's validation patients, where settings are chosen; default: 'heldout')")
    from meddiffusion.commands.options import add_device_options

    add_device_options(p)


def _options(module) -> set[str]:
    """The keywords ``--model`` (``models``) and ``--split`` (``split``) a bench's ``run`` takes."""
    return set(getattr(module, "OPTIONS", ()))


def run(args: argparse.Namespace, progress) -> dict:
    from meddiffusion.benchmarks.harness import write
    from meddiffusion.commands.options import setup_device

    listed = benches()
    module = importlib.import_module(listed[args.name][0])
    extra = {key: value for key, value in (("models", args.model), ("split", args.split)) if value}
    refused = set(extra) - _options(module)
    if refused:
        takers = [name for name, (path, _) in listed.items() if refused <= _options(importlib.import_module(path))]
        raise ValueError(f"bench '{args.name}' scores its own models on its own cases; --model and --split work "
                         f"with {', '.join(takers) or 'no bench'}")
    device = setup_device(args)
    result = module.run(device=device, quick=args.quick, progress=progress, **extra)
    pictures = result.pop("pictures", {})
    if args.output:
        write(result, args.output, pictures)
    result["summary"] = result["table"]
    return result
