"""Benchmarks behind ``meddiff bench``: each module has ``run(device, quick, progress) -> dict``
returning at least ``table`` (Markdown) and ``machine`` (where it ran)."""

from __future__ import annotations

import platform
import time

import torch


def machine(device: torch.device) -> str:
    from meddiffusion.devices import describe_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{describe_device(device)}; {cpu}; torch {torch.__version__}"


def timed(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (synchronising CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
