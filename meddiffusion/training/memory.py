"""Training memory: an estimate before the first step, and a smaller step instead of a crash when memory runs out.

A user picks the batch and crop before knowing what their GPU holds, and a crash after the data
were read costs them minutes. :func:`estimate` measures one forward/backward at batch 1 on the
run's device (the tensors autograd keeps for the backward, and on a GPU the allocator's peak) and
adds the weights, gradients, optimizer moments and EMA copy: the memory the run will need at its
batch. On the CPU the same sum, added to the process's resident memory now, is the RSS to expect.

On an out-of-memory error during a step, :class:`OutOfMemoryFallback` frees what the step held and
makes the step smaller, in this order: halve the batch down to 1; then turn on gradient
checkpointing of the network's MONAI blocks (recomputed in the backward instead of kept: slower,
the same learning problem); then halve the training crop, down to :data:`MIN_CROP`. The trainer
retries the same step. Each change is logged and recorded (the card's ``memory_fallback``);
at batch 1, with checkpointing and the smallest crop, it gives up with a message saying what to change.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch import nn

__all__ = ["is_out_of_memory", "free_memory", "estimate", "describe_estimate", "checkpoint_blocks",
           "OutOfMemoryFallback", "MIN_CROP"]

#: the smallest training crop the fallback goes to; crops stay multiples of 16 (every network's pooling)
MIN_CROP = 32
_MB = 1 << 20


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (CUDA's OutOfMemoryError or a RuntimeError saying so)."""
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def free_memory(device: torch.device) -> None:
    """Return what the failed step held to the device (the caller has dropped its references)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _activation_bytes(trainer) -> int:
    """Bytes one training sample needs beyond the weights: a forward/backward at batch 1, leaving no trace.

    The saved-tensor hooks count what autograd keeps for the backward (every device); on a GPU the
    allocator's peak over the step is taken when larger. The global RNG, the network's buffers
    (batch-norm statistics) and gradients are restored, so the run is the one it would have been.
    """
    from torch.utils.data import default_collate

    from meddiffusion.devices import autocast
    from meddiffusion.training.trainer import _to_device

    model, device = trainer.model, trainer.device
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen and storage.data_ptr() not in weights:
            seen.add(storage.data_ptr())
            saved[0] += storage.nbytes()
        return tensor

    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.random.fork_rng(devices=[device] if cuda else []):
        batch = _to_device(default_collate([trainer.train_data[0]]), device)
        generator = torch.Generator(device=device).manual_seed(0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            with autocast(device, trainer.precision):
                loss = trainer.loss_fn(model, batch, generator)[0]
        loss.backward()
    peak = torch.cuda.max_memory_allocated(device) - base if cuda else 0
    del loss, batch
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    free_memory(device)
    return max(saved[0], peak)


def _available(device: torch.device) -> int | None:
    """Free bytes of the device: the GPU's free memory, the machine's available RAM (Linux) for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _resident() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            import os

            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def estimate(trainer) -> dict[str, Any]:
    """The memory a run will need on its device, in MB (see the module docstring); ``{"error"}`` if unmeasurable."""
    model = trainer.model
    weights = _bytes(model.parameters()) + _bytes(model.buffers())
    trainable = _bytes(p for p in model.parameters() if p.requires_grad)
    per_process = trainer.config.batch_size // trainer.world_size
    try:
        sample = _activation_bytes(trainer)
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop a run
        if is_out_of_memory(exc):
            free_memory(trainer.device)
        return {"device": str(trainer.device), "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    parts = {"weights": weights, "gradients": trainable, "optimizer": 2 * trainable, "ema": weights,
             "activations": sample * per_process}
    result: dict[str, Any] = {"device": str(trainer.device), "batch_size": per_process,
                              "activations_per_sample_mb": round(sample / _MB, 1)}
    result |= {f"{name}_mb": round(value / _MB, 1) for name, value in parts.items()}
    if trainer.device.type == "cpu":  # weights, EMA and data are resident already; the rest comes on top
        result["rss_mb"] = round((_resident() + trainable * 3 + sample * per_process) / _MB, 1)
        result["total_mb"] = result["rss_mb"]
    else:
        result["total_mb"] = round(sum(parts.values()) / _MB, 1)
    available = _available(trainer.device)
    result["available_mb"] = None if available is None else round(available / _MB, 1)
    return result


def describe_estimate(found: dict[str, Any]) -> str:
    """One log line of an :func:`estimate`."""
    if "error" in found:
        return f"memory estimate on {found['device']} failed: {found['error']}"
    what = "process memory (RSS)" if "rss_mb" in found else "memory"
    words = (f"{what} estimate on {found['device']}: {found['total_mb']:.0f} MB (weights {found['weights_mb']:g}, "
             f"optimizer {found['optimizer_mb']:g}, EMA {found['ema_mb']:g}, activations "
             f"{found['activations_per_sample_mb']:g} per sample × batch {found['batch_size']})")
    if found["available_mb"] is not None:
        words += f" of {found['available_mb']:.0f} MB available"
        if found["total_mb"] > found["available_mb"]:
            words += "; it will not fit: on running out the batch, then the crop, shrink"
    return words


def checkpoint_blocks(model: nn.Module) -> int:
    """Recompute the network's MONAI blocks in the backward instead of keeping their activations; how many.

    A block is a ``monai`` ``Convolution`` or ``*ResnetBlock`` not inside another one. The blocks'
    ``forward`` is wrapped on the instance, so the weights and their names stay as they are.
    """
    from torch.utils.checkpoint import checkpoint

    def is_block(module: nn.Module) -> bool:
        kind = type(module)
        return kind.__module__.startswith("monai.") and (kind.__name__ == "Convolution"
                                                         or kind.__name__.endswith("ResnetBlock"))

    def wrap(module: nn.Module) -> None:
        forward = module.forward

        def checkpointed(*args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)

        module.forward = checkpointed
        module._meddiff_checkpointed = True

    count, inside = 0, set()
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside) or not is_block(module):
            continue
        inside.add(name)
        if not getattr(module, "_meddiff_checkpointed", False):
            wrap(module)
        count += 1
    return count


class OutOfMemoryFallback:
    """The trainer's ``on_oom``: make the next try of the step smaller (see the module docstring), or give up.

    ``rebuild_loss()`` makes the recipe's loss again after ``args.crop`` changed; ``changes`` lists
    every change made (step, batch size, crop, checkpointing) for the card and run.json.
    """

    def __init__(self, trainer, args, rebuild_loss, progress):
        self.trainer, self.args, self.rebuild_loss, self.progress = trainer, args, rebuild_loss, progress
        self.checkpointing = False
        self.changes: list[dict[str, Any]] = []

    def __call__(self, message: str) -> dict[str, Any]:
        trainer, args = self.trainer, self.args
        config = trainer.config
        crop = getattr(args, "crop", None)
        where = f"out of memory on {trainer.device} at step {trainer.step + 1}"
        if trainer.world_size > 1:  # the other ranks wait in the gradient all-reduce: no rank may change alone
            raise ValueError(f"{where} on {trainer.world_size} processes; lower --batch-size or --crop "
                             f"({message.splitlines()[0]})")
        if config.batch_size > 1:
            config.batch_size //= 2
            change = f"batch size halved to {config.batch_size}"
        elif not self.checkpointing and checkpoint_blocks(trainer.model):
            self.checkpointing = True
            change = "gradient checkpointing turned on"
        elif crop is not None and crop // 2 >= MIN_CROP and (crop // 2) % 16 == 0:
            args.crop = crop // 2
            trainer.loss_fn = self.rebuild_loss()
            change = f"training crop halved to {args.crop}"
        else:
            done = f"batch 1{f', crop {crop}' if crop else ''}{', gradient checkpointing' if self.checkpointing else ''}"
            raise ValueError(f"{where} even at {done}: the network does not fit on this device; use a smaller "
                             "--config, or another --device")
        record = {"step": trainer.step, "batch_size": config.batch_size, "crop": getattr(args, "crop", None),
                  "checkpointing": self.checkpointing, "change": change}
        self.changes.append(record)
        self.progress.log(f"{where}: {change}; retrying the step (the run now differs from its recorded command)")
        return record
