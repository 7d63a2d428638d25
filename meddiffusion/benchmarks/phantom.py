"""Seconds per thorax phantom frame: the issue target is one 256×256×128 CT frame in ≤ 2 s."""

from __future__ import annotations

import torch

from meddiffusion.benchmarks import machine


def run(device: torch.device, quick: bool = False, progress=None) -> dict:
    from meddiffusion.phantoms.bench import bench_phantom

    result = bench_phantom(quick=quick)
    result["machine"] = machine(torch.device("cpu"))
    result["table"] = result["table"] + f"\n\n{result['machine']}"
    return result
