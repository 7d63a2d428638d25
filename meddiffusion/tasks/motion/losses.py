"""The losses of motion-correction training: ProDM's bridge or a plain regression, plus the calcium term.

Two objectives train the same network (the bench compares them): ``bridge`` is ProDM's Brownian
bridge from the corrupted centre slice y to the static x0 (BBDM's ``grad`` target, L1) plus
lambda times the calcium consistency loss on x0_hat; ``regression`` calls the network once at
t = T - 1 with x_t = y, reads its output as y - x0 and takes the L1 error of x0_hat. Lambda
is held at 0 for the first steps and then ramped up (see :func:`make_loss_fn` for why). In both,
the L1 can count the few pixels the motion changed ``1 + focus`` times (:func:`focus_weight`;
``meddiff train motion --focus``, off by default), so that the network is graded on the
correction and not only on copying the untouched background.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from meddiffusion.diffusion.bridge import BrownianBridge, weighted_mean
from meddiffusion.tasks.motion.data import random_crops
from meddiffusion.tasks.motion.model import CONTEXT_SLICES, denormalize
from meddiffusion.training.calcium_loss import (CALCIUM_THRESHOLD_HU, calcium_consistency_loss, calcium_region,
                                                grow_mask)
from meddiffusion.training.sampler import derive_seed

__all__ = ["OBJECTIVES", "FOCUS_CHANGE_HU", "FOCUS_MARGIN_PX", "focus_weight", "make_loss_fn", "calcium_ramp",
           "make_val_fn"]

OBJECTIVES = ("bridge", "regression")
#: a pixel the motion changed by more than this is where the network has work to do
FOCUS_CHANGE_HU = 20.0
#: the focus region reaches this far around those pixels and around calcium
FOCUS_MARGIN_PX = 2


def focus_weight(x0: torch.Tensor, y: torch.Tensor, focus: float) -> torch.Tensor:
    """Per-pixel L1 weight ``1 + focus`` where the motion changed the image or calcium is, else 1 (no grad).

    Motion moves only the calcium: in a patch centred on a plaque about 1-2 % of the pixels
    differ from the static image by more than 20 HU and the rest are identical, noise and all.
    With a plain mean the network is graded almost only on copying the input through the
    bridge noise, and the pixels that decide the Agatston score weigh about as much as
    rounding. The focus region is every pixel the motion changed by more than
    ``FOCUS_CHANGE_HU``, or calcium (>= 130 HU) in either image, grown by ``FOCUS_MARGIN_PX``.
    """
    if focus < 0:
        raise ValueError(f"focus weight must be >= 0, got {focus}")
    x0_hu, y_hu = denormalize(x0.detach()), denormalize(y.detach())
    changed = (y_hu - x0_hu).abs() > FOCUS_CHANGE_HU
    calcium = (x0_hu >= CALCIUM_THRESHOLD_HU) | (y_hu >= CALCIUM_THRESHOLD_HU)
    return 1 + focus * grow_mask(changed | calcium, FOCUS_MARGIN_PX)


def make_loss_fn(objective: str, bridge: BrownianBridge, calcium_weight: float, crop: int, warmup: int = 0,
                 step: Callable[[], int] | None = None, focus: float = 0.0):
    """The training loss for :class:`meddiffusion.training.Trainer`: ``bridge`` (ProDM) or ``regression``.

    loss = L1 of the objective + lambda * calcium consistency loss of x0_hat, scored within a
    few pixels of calcium in x0 or in the corrupted centre slice (``calcium_loss.calcium_region``
    says why). With ``focus`` > 0 the L1 is a weighted mean that counts the pixels the motion
    changed ``1 + focus`` times (``focus_weight``). With ``warmup`` and ``step`` (the trainer's
    current step), lambda is 0 for the first ``warmup`` steps and then rises linearly to
    ``calcium_weight`` over as many more. Why:
    an untrained network's x0_hat carries the bridge noise (up to ~350 HU at mid-bridge), whose
    soft score dwarfs the calcium's; at lambda = 20 from step 0 that term dominates every update
    and the network settles for an x0_hat that matches the score and not the image (measured:
    HU error 150 after 200 steps, against 25 without the term). Once the bridge has learned to
    denoise, the term measures the calcium. Logs the L1 term (``l1``), the calcium term
    (``calcium``), lambda in force (``calcium_weight``) and the mean absolute error of
    x0_hat in HU within the window (``hu_mae``).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if not calcium_weight >= 0:
        raise ValueError(f"calcium weight must be >= 0, got {calcium_weight}")
    if warmup < 0:
        raise ValueError(f"calcium warm-up must be >= 0 steps, got {warmup}")

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
        condition, x0 = random_crops(batch, crop, generator)
        device = next(model.parameters()).device
        condition, x0 = condition.to(device), x0.to(device)
        y = condition[:, CONTEXT_SLICES // 2 : CONTEXT_SLICES // 2 + 1]
        weight = focus_weight(x0, y, focus) if focus > 0 else None
        if objective == "bridge":
            l1, x0_hat = bridge.training_loss(lambda x_t, t: model(x_t, t, condition), x0, y, generator=generator,
                                              weight=weight)
        else:
            t = torch.full((y.shape[0],), bridge.num_timesteps - 1, dtype=torch.long, device=device)
            x0_hat = y - model(y, t, condition)
            l1 = weighted_mean((x0_hat - x0).abs(), weight)
        calcium = calcium_consistency_loss(x0_hat, x0, region=calcium_region(x0, y))
        lam = calcium_weight * calcium_ramp(step(), warmup) if step is not None else calcium_weight
        loss = l1 + lam * calcium if lam > 0 else l1
        hu_mae = (denormalize(x0_hat.detach().clamp(-1, 1)) - denormalize(x0)).abs().mean()
        return loss, {"l1": l1.detach(), "calcium": calcium.detach(), "calcium_weight": lam, "hu_mae": hu_mae}

    return loss_fn


def calcium_ramp(step: int, warmup: int) -> float:
    """Share of lambda in force at ``step``: 0 for ``warmup`` steps, then linear up to 1 over ``warmup`` more."""
    if warmup <= 0:
        return 1.0
    return min(max((step - warmup) / warmup, 0.0), 1.0)


def make_val_fn(objective: str, bridge: BrownianBridge, calcium_weight: float, crop: int, seed: int = 0,
                focus: float = 0.0):
    """Validation metrics (loss at the full lambda, l1, calcium, hu_mae) with the same crops, timesteps and noise.

    Every batch draws from a generator seeded with ``seed`` alone, so the figures of two
    validations differ only through the model.
    """
    loss_fn = make_loss_fn(objective, bridge, calcium_weight, crop, focus=focus)

    def val_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, 1))
        loss, logs = loss_fn(model, batch, generator)
        logs.pop("calcium_weight")
        return {"loss": loss, **logs}

    return val_fn
