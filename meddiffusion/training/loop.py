"""The one ``meddiff train`` run every task goes through: data, Trainer, checkpoints, export, model card.

The run folder ``--out`` holds the data cache (unless the recipe keeps it elsewhere), the
checkpoints and ``metrics.jsonl`` of the :class:`~meddiffusion.training.Trainer`, and at the
end ``model.safetensors`` (the EMA weights) with its card ``model.json``, written and
optionally registered by :func:`~meddiffusion.training.publish.publish_model`. A fine-tune
(``--from-model``) starts from a catalogue model and registers only through the gate of
:mod:`meddiffusion.training.finetune`; runs on the user's data are scored and their provenance recorded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from meddiffusion.training.recipe import Outcome, Recipe

__all__ = ["train", "ema_decay", "train_config"]

#: the default cap of :func:`ema_decay`: CoreDiff's 0.995, an average over about the last 200 steps
EMA_CAP = 0.995


def ema_decay(steps: int, cap: float = EMA_CAP) -> float:
    """The EMA decay of a ``steps``-long run: an average over its last tenth, and at most ~200 steps.

    ``1 - 10 / steps`` spans about a tenth of a short run, so even a few hundred CPU steps end
    on averaged weights. The cap keeps long runs from averaging over more: the cosine schedule
    has brought the learning rate near zero by then, the weights barely move, and a longer
    window (0.999 spans ~1000 steps) would only mix in weights from when they still did. A
    recipe may set another cap (``Recipe.ema_cap``) where its published models were made so.
    """
    return max(0.0, min(cap, 1 - 10 / steps))


def train_config(args: argparse.Namespace, ema_cap: float = EMA_CAP):
    """The :class:`TrainConfig` of a ``meddiff train`` command line: cosine LR, clipped gradients, EMA."""
    from meddiffusion.training import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                       ema_decay=ema_decay(args.steps, ema_cap), ema_every=1, ema_start=min(200, args.steps // 10),
                       grad_clip=1.0, val_every=args.val_every, ckpt_every=args.ckpt_every, out_dir=str(args.out),
                       seed=args.seed, time_limit_s=60.0 * (getattr(args, "time_limit", 0.0) or 0.0))


def train(recipe: Recipe, args: argparse.Namespace, progress, device) -> dict[str, Any]:
    """Build the data, train (or resume) the recipe's network, export the EMA weights and the card.

    ``args`` is a ``meddiff train <task>`` command line (``args.command_line`` is recorded in
    the card). Returns the command's result (see ``publish_model``).
    """
    import torch

    from meddiffusion.catalog import ModelEntry, sha256_file
    from meddiffusion.training import Trainer, finetune, latest_checkpoint
    from meddiffusion.training.sampler import STREAM_INIT, derive_seed
    from meddiffusion.training.publish import publish_model

    out = Path(args.out)
    start = time.monotonic()
    data = recipe.build_data(args, progress)
    simulate_s = time.monotonic() - start

    torch.manual_seed(derive_seed(args.seed, STREAM_INIT))  # the recorded command reproduces the initial weights
    parent = None
    if getattr(args, "from_model", None):
        parent, model = finetune.parent_network(recipe, args)
    else:
        model = recipe.make_model(args)
    # the loss reads the step at call time, after the trainer below exists
    loss_fn = recipe.make_loss(args, lambda: trainer.step)
    val_fn = recipe.make_val(args) if recipe.make_val else None
    trainer = Trainer(model, loss_fn, train_config(args, recipe.ema_cap), data.train, data.val, val_fn=val_fn,
                      progress=progress, device=device)
    checkpoint = latest_checkpoint(out) if args.resume else None
    if checkpoint is not None:
        trainer.resume(checkpoint)
        progress.log(f"resumed from {checkpoint}")
    fallback = _watch_memory(recipe, args, trainer, progress)
    val_start = trainer.validate() if trainer.step == 0 else {}
    start = time.monotonic()
    fit = trainer.fit(_step_callback(recipe, args, trainer, data, device, progress))
    train_s = time.monotonic() - start

    model_id = args.register or recipe.model_id(args)
    weights = trainer.export_weights(out / "model.safetensors", {"model_id": model_id, "task": recipe.name})
    fields = recipe.card(args, Outcome(data, val_start, fit["val"], fit["step"], parent))
    metrics = {"val_loss_start": val_start.get("loss"), "val_loss_end": fit["val"].get("loss"),
               **fields.pop("metrics", {}), "steps": fit["step"], "train_seconds": round(train_s, 1),
               "simulate_seconds": round(simulate_s, 1)}
    if fit.get("timed_out"):
        metrics["stopped_by_time_limit"] = f"step {fit['step']} of {args.steps} after {args.time_limit:g} min"
    if fallback.changes:  # the run differs from its recorded command: say how
        metrics["memory_fallback"] = fallback.changes
    register, gate = bool(args.register), None
    if parent is not None or "provenance" in data.info:  # a fine-tune or the user's data: score, record, gate
        if parent is not None:  # the fine-tune keeps its parent's architecture (sampler, scale)
            fields |= {"architecture": parent.architecture, "normalization": parent.normalization}
        if recipe.score is not None:
            gate = finetune.gate(recipe, args, data, trainer.ema_model, parent, device)
            register = register and (gate.get("passed", True) or bool(getattr(args, "register_anyway", False)))
        fields["provenance"] = {**finetune.provenance(args, parent, data, trainer.config.to_dict()), "gate": gate}
    entry = ModelEntry(id=model_id, task=recipe.name, version="1.0", weights=weights.name,
                       sha256=sha256_file(weights), training_command=args.command_line, metrics=metrics,
                       license="MIT", **fields)
    result = publish_model(entry, weights, out, register=register, overwrite=args.overwrite,
                           steps=fit["step"], train_seconds=train_s, val_start=metrics["val_loss_start"],
                           val_end=metrics["val_loss_end"], metrics=metrics)
    if entry.provenance:
        result |= {"gate": gate, "provenance": entry.provenance}
    if gate is not None:
        words = finetune.gate_words(gate, bool(args.register), bool(getattr(args, "register_anyway", False)))
        result["summary"] += f"; {words}"
    return result


def _watch_memory(recipe: Recipe, args: argparse.Namespace, trainer, progress):
    """Log the memory estimate (and record it in a detached run's run.json); arm the out-of-memory fallback."""
    from meddiffusion.training import runs
    from meddiffusion.training.memory import OutOfMemoryFallback, describe_estimate, estimate

    found = estimate(trainer)
    fallback = OutOfMemoryFallback(trainer, args, lambda: recipe.make_loss(args, lambda: trainer.step), progress)

    def on_oom(message: str) -> dict:
        change = fallback(message)
        if trainer.is_main and _detached(args):
            runs.update_run(args.out, memory_fallback=fallback.changes)
        return change

    trainer.on_oom = on_oom
    if trainer.is_main:
        progress.log(describe_estimate(found))
        if _detached(args):
            runs.update_run(args.out, memory=found)
    return fallback


def _detached(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "run_child", False))


def _step_callback(recipe: Recipe, args: argparse.Namespace, trainer, data, device, progress):
    """After every step (rank 0): a detached run's cancel request, and every ``--preview-every`` steps a preview."""
    import torch

    from meddiffusion.progress import Cancelled
    from meddiffusion.training import runs

    every = getattr(args, "preview_every", 0) or 0
    if every and recipe.preview is None:
        progress.log(f"{recipe.name} training renders no preview; --preview-every is ignored")
        every = 0

    def callback(done: int, total: int) -> None:
        if _detached(args) and runs.cancel_requested(args.out):
            raise Cancelled("cancel requested")
        if every and (done % every == 0 or done == total):
            try:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    volumes = recipe.preview(args, trainer.ema_model, data, device)
                runs.write_preview(args.out, done, *volumes)
            except (Cancelled, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a failed picture must not end the run
                progress.log(f"warning: preview at step {done} failed: {type(exc).__name__}: {exc}")

    return callback
