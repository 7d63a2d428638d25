"""``meddiff info``: versions, the registered tasks, the installed models and the compute devices.

``--json`` prints one JSON object (what Slicer and scripts read): ``tasks`` (name, commands,
inputs, outputs, options, default model per device, whether a training recipe and a bench
exist), ``models`` (id, task, size, training conditions, measured speed, weights check),
``broken_models`` (user cards that cannot be used, with the reason) and ``devices``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform

EXAMPLE = """examples:
  meddiff info
  meddiff info --json           # tasks, models and devices as one JSON object
  meddiff info --events jsonl   # the same payload as the final 'result' event"""
PACKAGES = ("meddiffusion", "torch", "monai", "SimpleITK", "numpy", "safetensors", "scipy", "pynrrd")
#: training conditions and speed figures a card's metrics may hold, shown per model
CONDITIONS = ("dose", "steps", "train_seconds", "cases", "profiles", "views")
SPEEDS = ("seconds_per_512_slice", "ms_per_slice_cpu")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="versions, tasks, installed models and devices",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print tasks, models and devices as one JSON object")


def run(args: argparse.Namespace, progress) -> dict:  # noqa: ARG001 - the command interface
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    devices = _devices()
    models = _models()
    tasks = _tasks(devices)
    from meddiffusion.catalog import broken_models

    broken = broken_models()
    result = {"versions": versions, "device": devices[0]["name"], "device_description": devices[0]["description"],
              "devices": devices, "tasks": tasks, "models": models, "broken_models": broken}
    if getattr(args, "json", False):
        result["summary"] = json.dumps({k: v for k, v in result.items()}, indent=2, default=str)
        return result
    lines = [f"meddiffusion {versions['meddiffusion']} on Python {platform.python_version()} ({platform.system()})",
             "packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "meddiffusion"),
             "devices: " + "; ".join(f"{d['name']} — {d['description']}" for d in devices),
             f"tasks ({len(tasks)}):"]
    lines += [f"  {t['name']:<8} {', '.join(t['commands']):<40} default model: {t['default_model'] or 'none'}"
              for t in tasks]
    lines.append(f"models ({len(models)}):")
    lines += [f"  {m['id']:<28} {m['task']:<10} v{m['version']:<6} {m['description']}"
              + ("" if m["weights"] == "ok" else f"  [BROKEN: weights {m['weights']}; it will not load]")
              for m in models] \
        or ["  none installed"]
    lines += [f"  BROKEN {b['card']}: {b['reason']}" for b in broken]
    result["summary"] = "\n".join(lines)
    return result


def _tasks(devices: list[dict]) -> list[dict]:
    from meddiffusion import catalog
    from meddiffusion.tasks.registry import all_tasks

    kinds = sorted({d["name"].split(":")[0] for d in devices})
    tasks = []
    for spec in all_tasks():
        defaults = {}
        for kind in kinds:
            try:
                defaults[kind] = catalog.default_model(spec.name, kind).id
            except ValueError:
                defaults[kind] = None
        tasks.append({**spec.to_dict(), "default_model": defaults.get(devices[0]["name"].split(":")[0]),
                      "default_models": defaults, "training": _training(spec)})
    return tasks


def _training(spec) -> dict | None:
    """The task's training recipe as ``meddiff train`` offers it (its module loads without torch)."""
    if not spec.recipe:
        return None
    from meddiffusion.training.recipe import recipe_of

    recipe = recipe_of(spec)
    return {"command": f"meddiff train {spec.name}", "description": recipe.description, "configs": recipe.configs,
            "sources": list(recipe.sources), "defaults": recipe.defaults}


def _models() -> list[dict]:
    from meddiffusion import catalog

    return [{"id": m.id, "task": m.task, "version": m.version, "description": m.description,
             "source": "user" if m.user else "shipped", "size_bytes": _size(m), "weights": _weights_status(m),
             "default_for": m.default_for,
             "training": {k: m.metrics[k] for k in CONDITIONS if k in m.metrics},
             "speed": {k: m.metrics[k] for k in SPEEDS if k in m.metrics}} for m in catalog.list_models()]


def _size(entry) -> int | None:
    try:
        return entry.weights_path.stat().st_size
    except (OSError, ValueError):
        return None


def _weights_status(entry) -> str:
    """"ok", "missing", "no checksum" or "checksum mismatch" (the check every load makes)."""
    from meddiffusion.catalog import sha256_file

    try:
        path = entry.weights_path
    except ValueError:
        return "missing"
    if not path.is_file():
        return "missing"
    if not entry.sha256:
        return "no checksum"
    return "ok" if sha256_file(path) == entry.sha256.lower() else "checksum mismatch"


def _devices() -> list[dict]:
    """Every device this machine offers, the one ``--device auto`` picks first."""
    import torch

    from meddiffusion.devices import describe_device, resolve_device

    chosen = resolve_device("auto")
    devices = [chosen]
    if torch.cuda.is_available():
        devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    devices.append(torch.device("cpu"))
    unique = list(dict.fromkeys(str(d) if d.type != "cuda" or d.index is not None else "cuda:0" for d in devices))
    return [{"name": name, "description": describe_device(torch.device(name))} for name in unique]
