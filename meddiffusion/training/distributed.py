"""Multi-process training helpers for ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N script.py`` starts N copies of the script with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; :func:`init_from_env` joins them into one process
group (NCCL on GPUs, gloo on the CPU). Without those variables everything here degrades to a
single process, so the same training script runs with and without torchrun.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "local_rank", "is_main",
           "barrier", "cleanup", "any_rank", "all_reduce_mean", "distributed_session", "rank_device"]


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; False when run alone.

    ``backend`` defaults to ``nccl`` when CUDA is available and ``gloo`` otherwise. On GPUs each
    process is pinned to the GPU numbered by its LOCAL_RANK.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} is not; start the script with "
                         "torchrun (python -m torch.distributed.run --nproc_per_node N ...)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"unknown backend '{backend}'; expected nccl (GPU) or gloo (CPU)")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its machine (which GPU it uses)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on the one process that writes files and reports progress."""
    return rank() == 0


def rank_device() -> torch.device:
    """The GPU of this process's local rank under NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a cancel request)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], device=device or rank_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (a copy; the input is left as it is)."""
    value = value.detach().clone()
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world_size()
    return value


@contextmanager
def distributed_session(backend: str | None = None) -> Iterator[bool]:
    """``with distributed_session() as distributed:`` joins the group and always leaves it."""
    joined = init_from_env(backend)
    try:
        yield joined
    finally:
        if joined:
            cleanup()
