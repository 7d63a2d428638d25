"""Options shared by several subcommands, so every command spells them the same way."""

from __future__ import annotations

import argparse

import os


def add_device_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("compute")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA, then MPS where supported, else CPU), cpu, cuda, cuda:N or mps")
    group.add_argument("--threads", type=int, default=default_threads(),
                       help="CPU threads for torch (default: torch's choice, or $MEDDIFF_THREADS)")
    group.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                       help="mixed precision: auto = bf16/fp16 on GPU, fp32 on CPU unless the model "
                            "is validated for bf16 and the CPU has native bf16")


def default_threads() -> int | None:
    """Threads from MEDDIFF_THREADS, so Slicer can cap the child process (read without loading torch)."""
    value = os.environ.get("MEDDIFF_THREADS")
    return int(value) if value else None


def setup_device(args: argparse.Namespace, *, mps_ok: bool = False):
    """Apply --threads and resolve --device (raises ValueError with a clear message)."""
    from meddiffusion.devices import resolve_device, set_threads

    set_threads(args.threads)
    return resolve_device(args.device, mps_ok=mps_ok)


def check_hu(ct, skip: bool = False, name: str = "input") -> None:
    """Refuse images that are not CT in HU (``checks.CT``, the rule Slicer's modules apply too)."""
    from meddiffusion.checks import CT

    CT.check(ct.array, name=name, modality=ct.modality, skip=skip)


def check_same_grid(reference, other, name: str) -> None:
    import numpy as np

    if other.shape != reference.shape:
        raise ValueError(f"{name} has shape {other.shape} but the CT has {reference.shape}; it must be on the CT's grid")
    for what in ("spacing", "origin", "direction"):
        if not np.allclose(getattr(other, what), getattr(reference, what), atol=1e-3):
            raise ValueError(f"{name} {what} {getattr(other, what)} differs from the CT's "
                             f"{getattr(reference, what)}; it must be on the CT's grid")
