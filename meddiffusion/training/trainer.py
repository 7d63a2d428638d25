"""The optimisation every task trains with: optimizer, LR schedule, EMA, AMP, checkpoints, DDP.

``training.loop`` drives it for ``meddiff train``; a task supplies only a model, a dataset of
dicts of tensors and a loss::

    def loss_fn(model, batch, generator):      # generator: all randomness of this step
        noise = torch.randn(batch["image"].shape, generator=generator, device=...)
        ...
        return loss, {"mse": mse.detach()}

Every random choice is a function of (seed, step) (``training.sampler``): the batch indices come
from a per-epoch permutation seeded by (seed, epoch), and ``generator`` is seeded by (seed, step, rank). A
checkpoint therefore needs no iterator state, and resuming reproduces the uninterrupted run
bit for bit (on the CPU; on a GPU where the kernels are deterministic). Dropout and other
draws from torch's global RNG are covered by saving that RNG in the checkpoint. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and each rank takes its own slice of the same global batch
(``batch_size`` is the global batch), so gradients equal those of one process on the whole
batch. Only rank 0 writes files and reports progress.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from meddiffusion.catalog import save_model
from meddiffusion.devices import autocast, resolve_device
from meddiffusion.progress import Cancelled, Progress
from meddiffusion.training import distributed as dist_utils
from meddiffusion.training.checkpoint import (capture_rng, checkpoint_path, flatten_optimizer_state,
                                              read_checkpoint, restore_rng, strip_prefix,
                                              unflatten_optimizer_state, with_prefix, write_checkpoint)
from meddiffusion.training.ema import EMA
from meddiffusion.training.sampler import STREAM_STEP, STREAM_VAL, STREAM_WORKERS, StepBatchSampler, derive_seed

__all__ = ["TrainConfig", "Trainer", "lr_factor", "batch_mean"]

LossFn = Callable[[nn.Module, Any, torch.Generator], "tuple[torch.Tensor, dict[str, Any]]"]
ValFn = Callable[[nn.Module, Any], "dict[str, Any]"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine", "linear-warmup-cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint.

    ``batch_size`` is the global batch (split evenly across DDP ranks). ``val_every`` and
    ``ckpt_every`` of 0 mean "only at the end". ``precision`` selects autocast on a GPU
    (``auto``: bf16 where supported, else fp16 with a GradScaler); the CPU trains in fp32.
    ``time_limit_s`` > 0 ends :meth:`Trainer.fit` at the first logging step past that many
    seconds, with the validation and checkpoint of a last step: a run that must fit a budget.
    Training metrics are logged every ``log_every`` steps, and also after any step that ends
    ``log_seconds`` or more after the last line (0: never), so that live curves keep moving when
    steps are slow (a 3D network on a CPU).
    """

    steps: int
    batch_size: int
    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"
    warmup_steps: int = 0
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start: int = 0
    grad_clip: float | None = None
    precision: str = "auto"
    log_every: int = 10
    log_seconds: float = 5.0
    val_every: int = 0
    ckpt_every: int = 0
    out_dir: str | None = None
    seed: int = 0
    num_workers: int = 0
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                    "ema_every": self.ema_every, "log_every": self.log_every}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {value}")
        non_negative = {"weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
                        "ema_start": self.ema_start, "val_every": self.val_every,
                        "ckpt_every": self.ckpt_every, "seed": self.seed, "num_workers": self.num_workers,
                        "time_limit_s": self.time_limit_s, "log_seconds": self.log_seconds}
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {value}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}'; expected one of {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown LR schedule '{self.schedule}'; expected one of {list(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{self.precision}'; expected one of {list(PRECISIONS)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.schedule == "linear-warmup-cosine" and not 0 < self.warmup_steps < self.steps:
            raise ValueError(f"schedule 'linear-warmup-cosine' needs 0 < warmup_steps < steps, "
                             f"got warmup_steps={self.warmup_steps}, steps={self.steps}")
        if self.schedule != "linear-warmup-cosine" and self.warmup_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} only applies to schedule "
                             f"'linear-warmup-cosine', not '{self.schedule}'")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base LR for optimizer step ``step`` (0-based)."""
    if config.schedule == "constant":
        return 1.0
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    fraction = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))


class Trainer:
    """Trains ``model`` on ``train_data`` by minimising ``loss_fn``; see the module docstring.

    ``val_fn(model, batch) -> {metric: value}`` scores the EMA model on ``val_data``; the
    validation ``loss`` is ``loss_fn``'s (with fixed noise per validation batch) unless ``val_fn``
    returns its own.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, config: TrainConfig, train_data: Dataset,
                 val_data: Dataset | None = None, val_fn: ValFn | None = None,
                 progress: Progress | None = None, device: str | torch.device = "auto"):
        if not hasattr(train_data, "__len__") or not hasattr(train_data, "__getitem__"):
            raise ValueError("train_data must be a map-style dataset (with __len__ and __getitem__)")
        self.config = config
        self.loss_fn, self.val_fn = loss_fn, val_fn
        self.train_data, self.val_data = train_data, val_data
        self.progress = progress or Progress()
        self.rank, self.world_size = dist_utils.rank(), dist_utils.world_size()
        self.is_main = self.rank == 0
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of "
                             f"processes {self.world_size}")
        self.device = self._pick_device(device)
        self.precision = _amp_precision(self.device, config.precision)
        self.model = model.to(self.device)
        self.net: nn.Module = self.model
        if dist_utils.is_distributed():  # DDP broadcasts rank 0's weights, so the EMA copy comes after
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.ema = EMA(self.model, config.ema_decay, config.ema_every, config.ema_start)
        self.optimizer = OPTIMIZERS[config.optimizer](self.model.parameters(), lr=config.lr, betas=config.betas,
                                                      weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, partial(lr_factor, config=config))
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        self.step = 0
        self.last_train: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        #: ``on_oom(message)`` makes a step that ran out of memory smaller (``training.memory``), or raises
        self.on_oom: Callable[[str], Any] | None = None

    @property
    def ema_model(self) -> nn.Module:
        return self.ema.model

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, callback: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Train from the current step to ``config.steps``; returns the last logs.

        ``callback(done, total)`` runs after each step (rank 0 only) and may raise to stop.
        On :class:`Cancelled` a checkpoint of the current step is written, then it is re-raised.
        A step that runs out of memory is retried after ``on_oom`` made it smaller (when set).
        """
        cfg = self.config
        if self.is_main:
            self.progress.log(f"training {cfg.steps} steps from step {self.step} on {self.device}, "
                              f"world size {self.world_size}, precision {self.precision}")
        report = self.progress.callback("train", cfg.steps) if self.is_main else None
        self.net.train()
        batches = iter(self._train_loader(self.step))
        started, timed_out = time.monotonic(), False
        self._logged_at = started
        while self.step < cfg.steps and not timed_out:
            logs = self._step_or_shrink(next(batches))
            if logs is None:  # out of memory: the step is retried with the smaller batch or crop
                batches = iter(self._train_loader(self.step))
                continue
            self.step += 1
            self.ema.step(self.model, self.step)
            if cfg.time_limit_s and self.step % cfg.log_every == 0:  # every rank stops at the same step
                timed_out = dist_utils.any_rank(time.monotonic() - started >= cfg.time_limit_s, self.device)
                if timed_out and self.is_main:
                    self.progress.log(f"time limit of {cfg.time_limit_s:g} s reached: stopping at step {self.step} "
                                      f"of {cfg.steps}")
            last = self.step == cfg.steps or timed_out
            if self._log_due(last):
                self._log_train(logs)
            if self.val_data is not None and (last or cfg.val_every and self.step % cfg.val_every == 0):
                self.validate()
            if self.out_dir and (last or cfg.ckpt_every and self.step % cfg.ckpt_every == 0):
                self.save_checkpoint()
            self._report(report, callback)
        dist_utils.barrier()
        checkpoint = checkpoint_path(self.out_dir, self.step) if self.out_dir else None
        return {"step": self.step, "train": self.last_train, "val": self.last_val,
                "checkpoint": str(checkpoint) if checkpoint else None, "timed_out": timed_out}

    def _step_or_shrink(self, batch: Any) -> dict[str, Any] | None:
        """One step; None when it ran out of memory and ``on_oom`` made the next try smaller."""
        from meddiffusion.training.memory import free_memory, is_out_of_memory

        try:
            return self._train_step(batch)
        except Exception as exc:
            if self.on_oom is None or not is_out_of_memory(exc):
                raise
            message = str(exc)  # the exception's frames hold the step's tensors: let them go first
        batch = None
        self.optimizer.zero_grad(set_to_none=True)
        free_memory(self.device)
        self.on_oom(message)
        return None

    def _train_step(self, batch: Any) -> dict[str, Any]:
        cfg = self.config
        batch = _to_device(batch, self.device)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(cfg.seed, STREAM_STEP, self.step, self.rank))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            output = self.loss_fn(self.net, batch, generator)
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], torch.Tensor)
                and output[0].ndim == 0 and isinstance(output[1], Mapping)):
            raise ValueError("loss_fn must return (scalar loss tensor, dict of logs)")
        loss, logs = output
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        grad_norm = None
        if cfg.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        extra = {} if grad_norm is None else {"grad_norm": grad_norm}
        return {**logs, "loss": loss.detach(), "lr": lr, **extra}

    def _log_due(self, last: bool) -> bool:
        """Log this step: every ``log_every`` steps, at the last, or ``log_seconds`` after the last line."""
        cfg = self.config
        if last or self.step % cfg.log_every == 0:
            return True
        if not cfg.log_seconds:
            return False
        late = time.monotonic() - self._logged_at >= cfg.log_seconds
        return dist_utils.any_rank(late, self.device if self.device.type == "cuda" else None)  # every rank logs

    def _log_train(self, logs: Mapping[str, Any]) -> None:
        if self.config.log_seconds:
            self._logged_at = time.monotonic()
        loss = float(dist_utils.all_reduce_mean(logs["loss"].float()))
        if not math.isfinite(loss) and self.scaler is None:
            raise FloatingPointError(f"training loss became {loss} at step {self.step}; lower the "
                                     "learning rate or set grad_clip")
        self.last_train = {k: _as_float(v) for k, v in logs.items()} | {"loss": loss}
        self._write_metrics("train", self.last_train)

    def _report(self, report: Callable[[int, int], None] | None, callback: Callable[[int, int], None] | None) -> None:
        """Progress, the user callback, and a cancel request shared by every rank."""
        cancelled = False
        if self.is_main:
            try:
                report(self.step, self.config.steps)
                if callback is not None:
                    callback(self.step, self.config.steps)
            except Cancelled:
                cancelled = True
        if dist_utils.any_rank(cancelled, self.device if self.device.type == "cuda" else None):
            where = ""
            if self.out_dir:
                where = f"; resume from {self.save_checkpoint()}"
            raise Cancelled(f"training cancelled at step {self.step}{where}")

    # -- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean metrics of the EMA model over ``val_data`` (computed and logged on rank 0)."""
        if self.val_data is None or not self.is_main:
            return {}

        def metrics(index: int, batch: Any) -> dict[str, Any]:
            with autocast(self.device, self.precision):
                values = dict(self.val_fn(self.ema.model, batch)) if self.val_fn is not None else {}
                if "loss" not in values:  # the training loss at seeded noise, beside the task's own metrics
                    generator = torch.Generator(device=self.device)
                    generator.manual_seed(derive_seed(self.config.seed, STREAM_VAL, index))
                    values = {"loss": self.loss_fn(self.ema.model, batch, generator)[0], **values}
            return values

        self.last_val = batch_mean(self.val_data, metrics, self.config.batch_size, self.device,
                                   self.config.num_workers)
        self._write_metrics("val", self.last_val)
        self.progress.log(f"step {self.step}: validation " +
                          ", ".join(f"{k} {v:.6g}" for k, v in self.last_val.items()))
        return self.last_val

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint_step<step>`` in ``out_dir`` (rank 0) and return its path."""
        if self.out_dir is None:
            raise ValueError("TrainConfig.out_dir is not set; there is nowhere to write checkpoints")
        path = checkpoint_path(self.out_dir, self.step)
        if not self.is_main:
            return path
        optim_tensors, optim_layout = flatten_optimizer_state(self.optimizer.state_dict())
        rng_tensors, rng_info = capture_rng()
        tensors = {**with_prefix("model/", self.model.state_dict()),
                   **with_prefix("ema/", self.ema.model.state_dict()), **optim_tensors, **rng_tensors}
        info = {"step": self.step, "world_size": self.world_size, "config": self.config.to_dict(),
                "scheduler": self.scheduler.state_dict(), "optimizer": optim_layout, "rng": rng_info,
                "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return write_checkpoint(path, tensors, info)

    def resume(self, path: str | Path) -> int:
        """Restore weights, EMA, optimizer, schedule, scaler, RNG and step from a checkpoint.

        Lines of ``metrics.jsonl`` logged after the checkpoint's step are dropped, since that
        part of the run is about to be redone. Returns the restored step.
        """
        tensors, info = read_checkpoint(path)
        _load_module(self.model, strip_prefix("model/", tensors), f"{path} (model)")
        _load_module(self.ema.model, strip_prefix("ema/", tensors), f"{path} (EMA)")
        self.optimizer.load_state_dict(unflatten_optimizer_state(tensors, info["optimizer"]))
        self.scheduler.load_state_dict(info["scheduler"])
        if self.scaler is not None and info.get("grad_scaler"):
            self.scaler.load_state_dict(info["grad_scaler"])
        restore_rng(tensors, info["rng"])
        self.step = int(info["step"])
        changed = [k for k in ("seed", "batch_size", "steps", "schedule", "lr")
                   if info["config"].get(k) != self.config.to_dict()[k]]
        if self.is_main:
            if changed or info.get("world_size") != self.world_size:
                self.progress.log(f"resuming {path} with changed {', '.join(changed) or 'world size'}; "
                                  "the run will differ from an uninterrupted one")
            self._truncate_metrics(self.step)
        return self.step

    def export_weights(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the EMA weights as a plain safetensors model file (for the catalogue)."""
        path = Path(path)
        if self.is_main:
            meta = {"step": self.step, "train_config": self.config.to_dict(), **(metadata or {})}
            save_model(self.ema.model.state_dict(), path, meta)
        return path

    # -- helpers -----------------------------------------------------------------------------
    def _train_loader(self, start: int) -> DataLoader:
        cfg = self.config
        sampler = StepBatchSampler(len(self.train_data), cfg.batch_size, cfg.seed, start, cfg.steps,
                                   self.rank, self.world_size)
        # an explicit generator keeps DataLoader from drawing its worker seed from the global RNG
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, STREAM_WORKERS, start, self.rank))
        return DataLoader(self.train_data, batch_sampler=sampler, num_workers=cfg.num_workers,
                          pin_memory=self.device.type == "cuda", generator=generator)

    def _pick_device(self, device: str | torch.device) -> torch.device:
        device = device if isinstance(device, torch.device) else resolve_device(str(device))
        if dist_utils.is_distributed() and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", dist_utils.local_rank())
        return device

    def _write_metrics(self, split: str, values: Mapping[str, float]) -> None:
        if self.out_dir is None or not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"split": split, "step": self.step, **values}) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        if self.out_dir is None or not (self.out_dir / "metrics.jsonl").is_file():
            return
        path = self.out_dir / "metrics.jsonl"
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _amp_precision(device: torch.device, precision: str) -> str:
    """The concrete precision: mixed precision only on CUDA GPUs."""
    if precision == "fp32":
        return "fp32"
    if device.type != "cuda":
        if precision == "auto":
            return "fp32"
        raise ValueError(f"precision '{precision}' needs a CUDA GPU; training on {device.type} uses "
                         "fp32 (set precision to 'fp32' or 'auto')")
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def _load_module(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(module.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(module.state_dict()))
    if missing or unexpected:
        raise ValueError(f"checkpoint {source} does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    module.load_state_dict(state)


def batch_mean(data: Dataset, metrics: Callable[[int, Any], Mapping[str, Any]], batch_size: int,
               device: torch.device, num_workers: int = 0) -> dict[str, float]:
    """The mean over ``data`` of ``metrics(index, batch)`` (each batch on ``device``), weighted by batch size:
    validation, and a recipe's gate score over the validation split."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    totals: dict[str, float] = {}
    count = 0
    for index, batch in enumerate(loader):
        batch = _to_device(batch, device)
        size = _batch_size(batch)
        for name, value in metrics(index, batch).items():
            totals[name] = totals.get(name, 0.0) + _as_float(value) * size
        count += size
    if count == 0:
        raise ValueError("val_data is empty")
    return {name: total / count for name, total in totals.items()}


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_to_device(value, device) for value in batch]
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    for value in batch if isinstance(batch, list) else [batch]:
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    raise ValueError("cannot tell the batch size: a validation batch holds no batched tensor")


def _as_float(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
