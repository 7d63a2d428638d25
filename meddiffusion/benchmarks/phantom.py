"""Seconds per thorax phantom frame: the issue target is one 256×256×128 CT frame in ≤ 2 s."""

from __future__ import annotations

import torch

from meddiffusion.benchmarks.harness import result


def run(device: torch.device, quick: bool = False, progress=None) -> dict:
    """The phantom renders on the CPU whatever ``--device`` says, so the CPU is the machine line."""
    from meddiffusion.phantoms.bench import bench_phantom

    figures = bench_phantom(quick=quick)
    return result([figures.pop("table")], torch.device("cpu"), **figures)
