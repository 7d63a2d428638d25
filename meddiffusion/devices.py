"""Where and how inference runs: device choice, CPU threads, mixed precision.

``auto`` picks CUDA, then Apple MPS (only for tasks whose ops MPS supports), else the CPU.
Mixed precision is a per-model decision: GPUs run bf16 (fp16 where bf16 is missing); on the
CPU bf16 is used only when the CPU has native bf16 and the model card says it keeps accuracy
(``meddiff bench precision`` measures that), because emulated bf16 is slower than fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["resolve_device", "set_threads", "autocast", "Precision", "cpu_has_bf16", "describe_device"]

Precision = str  # "fp32" | "bf16" | "fp16" | "auto"


def resolve_device(name: str = "auto", *, mps_ok: bool = False) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:1``/``mps`` into a device, with clear errors.

    ``mps_ok`` says whether the caller's operations run on MPS (3D convolutions and some
    interpolation modes do not on every macOS release), so ``auto`` never picks MPS blindly.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_ok and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' requested but no CUDA GPU is available "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) exist")
        return device
    if name == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' requested but Apple MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device '{name}'; expected auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def set_threads(threads: int | None) -> int:
    """Limit CPU threads (``None``/0 keeps torch's default); returns the count in use."""
    if threads:
        if threads < 0:
            raise ValueError(f"--threads must be a positive number, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_has_bf16() -> bool:
    """True when the CPU executes bf16 matrix work natively (AVX512-BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class _Autocast:
    device_type: str
    dtype: torch.dtype | None


def _resolve_precision(device: torch.device, precision: Precision, cpu_bf16_ok: bool) -> _Autocast:
    if precision == "fp32":
        return _Autocast(device.type, None)
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and cpu_bf16_ok and cpu_has_bf16():
            precision = "bf16"
        else:
            return _Autocast(device.type, None)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision '{precision}'; expected auto, fp32, bf16 or fp16")
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("fp16 autocast is not supported on the CPU; use bf16 or fp32")
    return _Autocast(device.type, dtypes[precision])


def autocast(device: torch.device, precision: Precision = "auto", *, cpu_bf16_ok: bool = False):
    """Context manager for mixed precision, a no-op for fp32 (and for ``auto`` on most CPUs)."""
    choice = _resolve_precision(device, precision, cpu_bf16_ok)
    if choice.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=choice.device_type, dtype=choice.dtype)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "cpu":
        return f"CPU, {torch.get_num_threads()} threads, bf16 {'native' if cpu_has_bf16() else 'emulated'}"
    return device.type

