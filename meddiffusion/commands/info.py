"""``meddiff info``: versions, compute device and the installed models."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform

EXAMPLE = "example:\n  meddiff info\n  meddiff info --events jsonl   # machine-readable"
PACKAGES = ("meddiffusion", "torch", "monai", "SimpleITK", "numpy", "safetensors", "scipy", "pynrrd")


def add_parser(subparsers) -> None:
    subparsers.add_parser("info", help="versions, device and installed models",
                          description=__doc__, epilog=EXAMPLE,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def run(args: argparse.Namespace, progress) -> dict:
    import torch

    from meddiffusion.devices import describe_device, resolve_device

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    device = resolve_device("auto")
    models = _models()
    lines = [f"meddiffusion {versions['meddiffusion']} on Python {platform.python_version()} ({platform.system()})",
             "packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "meddiffusion"),
             f"device: {device} — {describe_device(device)}"
             + (f"; CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""),
             f"models ({len(models)}):"]
    lines += [f"  {m['id']:<28} {m['task']:<10} v{m['version']:<6} {m['description']}" for m in models] or ["  none installed"]
    return {"versions": versions, "device": str(device), "device_description": describe_device(device),
            "models": models, "summary": "\n".join(lines)}


def _models() -> list[dict]:
    from meddiffusion import catalog

    return [{"id": m.id, "task": m.task, "version": m.version, "description": m.description,
             "source": "user" if m.user else "shipped"} for m in catalog.list_models()]
