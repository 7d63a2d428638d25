"""Exponential moving average of a model's weights, the copy used for validation and export.

Diffusion models sample noticeably better from averaged weights. Following CoreDiff/DDPM
practice the average is updated only every ``every`` steps and, until step ``start``, simply
tracks the raw weights (early weights are poor and would only slow the average down)::

    ema <- decay * ema + (1 - decay) * weights      at steps s > start with s % every == 0
    ema <- weights                                   at steps s <= start with s % every == 0

Buffers (e.g. normalisation statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.995, every: int = 10, start: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if every < 1 or start < 0:
            raise ValueError(f"EMA every must be >= 1 and start >= 0, got every={every}, start={start}")
        self.decay, self.every, self.start = decay, every, start
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Apply the schedule after optimizer step number ``step`` (1-based)."""
        if step % self.every:
            return
        if step <= self.start:
            self.copy_from(model)
        else:
            self.update(model)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step: ``ema = decay * ema + (1 - decay) * weights``."""
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        for ema_t, t in zip(self.model.state_dict().values(), model.state_dict().values()):
            ema_t.copy_(t)
