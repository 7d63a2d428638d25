"""Training checkpoints as a safetensors file plus a JSON sidecar (no pickle anywhere).

``checkpoint_step<N>.safetensors`` holds every tensor, under prefixes::

    model/<name>            raw weights and buffers
    ema/<name>              averaged weights
    optim/<param>/<name>    optimizer state (e.g. Adam's exp_avg, exp_avg_sq, step)
    rng/torch_cpu           torch's CPU generator state (uint8); rng/cuda/<i> per GPU

``checkpoint_step<N>.json`` holds the rest: step, config, scheduler and grad-scaler state,
the optimizer's param groups and the names/shapes/dtypes of its state tensors, and the
Python/numpy RNG states. The JSON is written after the tensors, so its presence marks a
complete checkpoint.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from meddiffusion.catalog import load_weights, save_model
from meddiffusion.files import atomic_write

__all__ = ["FORMAT", "checkpoint_path", "latest_checkpoint", "write_checkpoint", "read_checkpoint",
           "flatten_optimizer_state", "unflatten_optimizer_state", "capture_rng", "restore_rng",
           "with_prefix", "strip_prefix"]

FORMAT = "meddiffusion-checkpoint"
_NAME = re.compile(r"^checkpoint_step(\d+)\.json$")


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """The tensors file of the checkpoint taken after ``step`` optimizer steps."""
    return Path(out_dir) / f"checkpoint_step{step}.safetensors"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The most advanced complete checkpoint in ``out_dir`` (its .safetensors path), or None."""
    found = []
    for sidecar in Path(out_dir).glob("checkpoint_step*.json"):
        match = _NAME.match(sidecar.name)
        if match and sidecar.with_suffix(".safetensors").is_file():
            found.append((int(match.group(1)), sidecar.with_suffix(".safetensors")))
    return max(found)[1] if found else None


def write_checkpoint(path: str | Path, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Path:
    """Write tensors, then the sidecar, each atomically; returns the tensors path."""
    path = Path(path)
    save_model(tensors, path, {"format": FORMAT, "step": str(info.get("step", ""))})
    text = json.dumps({"format": FORMAT, **info}, indent=1)
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and sidecar of a checkpoint, given either of its two files."""
    path = Path(path).with_suffix(".safetensors")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise ValueError(f"checkpoint sidecar {sidecar} is missing; the checkpoint is incomplete")
    info = json.loads(sidecar.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{sidecar} is not a meddiffusion training checkpoint (format {info.get('format')!r})")
    return load_weights(path), info


def with_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + name: tensor for name, tensor in tensors.items()}


def strip_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


# -- optimizer ---------------------------------------------------------------------------

def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into string-keyed tensors and a JSON layout."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    for param, values in state_dict["state"].items():
        entry = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                key = f"optim/{param}/{name}"
                tensors[key] = value
                entry[name] = {"tensor": key, "shape": list(value.shape), "dtype": str(value.dtype)}
            else:
                entry[name] = {"value": value}
        layout[str(param)] = entry
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
              for group in state_dict["param_groups"]]
    return tensors, {"state": layout, "param_groups": groups}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild ``optimizer.state_dict()`` from :func:`flatten_optimizer_state`'s output."""
    state: dict[int, dict[str, Any]] = {}
    for param, entry in layout["state"].items():
        values = {}
        for name, spec in entry.items():
            if "tensor" not in spec:
                values[name] = spec["value"]
                continue
            tensor = tensors.get(spec["tensor"])
            if tensor is None or list(tensor.shape) != spec["shape"]:
                raise ValueError(f"optimizer state '{spec['tensor']}' is missing or has the wrong shape "
                                 f"in the checkpoint (expected {spec['shape']})")
            values[name] = tensor
        state[int(param)] = values
    groups = [{k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in group.items()}
              for group in layout["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- random number generators ------------------------------------------------------------

def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states (torch CPU/CUDA as tensors; Python and numpy as JSON)."""
    tensors = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{index}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    info = {"python": [version, list(internal), gauss],
            "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    return tensors, info


def restore_rng(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch_cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = info["numpy"]
    np.random.set_state((npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
