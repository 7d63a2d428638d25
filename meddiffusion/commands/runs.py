"""``meddiff runs RUN...``: the state of detached training runs (``meddiff train ... --detach``), or cancel them.

Reads only the run folders (``meddiffusion.training.runs``): a run started from another shell, or
before Slicer was closed, is seen the same way; ``--cancel`` asks it to stop, and it writes a
resumable checkpoint first.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("runs", help="state of detached training runs (meddiff train --detach); cancel them",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="examples:\n  meddiff runs runs/ldct-mine\n  meddiff runs runs/  "
                                     "# every run in the folder\n  meddiff runs runs/ldct-mine --cancel")
    p.add_argument("folders", nargs="+", metavar="RUN", help="a run folder (--out), or a folder of run folders")
    p.add_argument("--cancel", action="store_true", help="ask the running ones to stop (a checkpoint is written)")
    p.add_argument("--metrics", type=int, default=5, metavar="N", help="last metrics lines to report (default: 5)")


def run(args: argparse.Namespace, progress) -> dict:  # noqa: ARG001 - nothing long to report
    from meddiffusion.training.runs import RUN_FILE, cancel_run, list_runs, read_run

    found = []
    for folder in map(Path, args.folders):
        found += [read_run(folder, args.metrics)] if (folder / RUN_FILE).is_file() else list_runs(folder)
    if not found:
        raise ValueError(f"no training run in {', '.join(args.folders)}; runs started with "
                         "'meddiff train <task> --detach' have a run.json")
    cancelled = [str(status.folder) for status in found if args.cancel and cancel_run(status.folder)]
    lines = [status.describe() for status in found]
    if args.cancel:
        lines.append(f"asked {len(cancelled)} run(s) to stop" if cancelled else "no run was running")
    return {"runs": [status.to_dict() for status in found], "cancelled": cancelled, "summary": "\n".join(lines)}
