"""The CoreDiff model of the LDCT task: CoreDiff's intensity scale and a CLEAR-Net with its sampler.

CoreDiff's scale is ``x = clip(HU + 1024, 0, 4096) / 4096``. A model card's ``architecture``
builds an :class:`LDCTModel`; the default model for a device is chosen by the cards
(``catalog.default_model``), never by code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from meddiffusion.catalog import ModelEntry, load_task_model
from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
from meddiffusion.tasks.ldct.noisegain import NoiseGain

__all__ = ["TASK", "HU_MIN", "HU_RANGE", "DEFAULT_DOSE", "LDCTModel", "normalize", "denormalize",
           "worst_if_diverged", "build_model", "load_model"]

TASK = "ldct"
#: CoreDiff's intensity scale: HU in [HU_MIN, HU_MIN + HU_RANGE] maps to [0, 1]
HU_MIN, HU_RANGE = -1024.0, 4096.0
#: the dose fraction the shipped models are trained for
DEFAULT_DOSE = 0.25


def normalize(hu: torch.Tensor) -> torch.Tensor:
    """HU -> CoreDiff's [0, 1] scale, clipping to [-1024, 3072] HU."""
    return ((hu - HU_MIN) / HU_RANGE).clamp(0.0, 1.0)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """CoreDiff's [0, 1] scale -> HU."""
    return x * HU_RANGE + HU_MIN


def worst_if_diverged(hu: np.ndarray) -> np.ndarray:
    """``hu`` with NaN and infinities set to the ends of the HU range: a diverged network's output scores as
    the worst image in validation, instead of stopping the run with an error."""
    return np.nan_to_num(hu, nan=HU_MIN, posinf=HU_MIN + HU_RANGE, neginf=HU_MIN)


# -- the model ---------------------------------------------------------------------------------------
@dataclass
class LDCTModel:
    """A CLEAR-Net with its diffusion schedule and sampler settings, ready to denoise.

    ``trajectory_weights`` (one per sampling step, summing to 1) come from one-shot adaptation:
    the output is then the weighted sum of the images after every step instead of the last one.
    ``noise_gain`` (from the card) shows quiet slices to the network at a higher noise level
    (:mod:`meddiffusion.tasks.ldct.noisegain`); whole-volume inference applies it.
    """

    net: torch.nn.Module
    diffusion: MeanPreservingDiffusion
    steps: int
    cpu_steps: int
    trajectory_weights: torch.Tensor | None = None
    cpu_bf16_ok: bool = False
    entry: ModelEntry | None = None
    noise_gain: NoiseGain | None = None

    @property
    def id(self) -> str:
        return self.entry.id if self.entry is not None else "(unregistered)"

    def default_steps(self, device: torch.device | str = "cpu") -> int:
        """The card's step count for ``device`` (an adapted model runs as many steps as it was fitted with)."""
        device = torch.device(device)
        if self.trajectory_weights is not None:
            return int(self.trajectory_weights.numel())
        return self.cpu_steps if device.type == "cpu" else self.steps

    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 emm_input: torch.Tensor | None) -> torch.Tensor:
        """The sampler's network call: [above, x_t, below] -> x0_hat."""
        return self.net(torch.cat([context[:, :1], x_t, context[:, 1:]], dim=1), t, emm_input)

    def denoise(self, slices: torch.Tensor, steps: int | None = None,
                callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Denoise (B, 3, H, W) normalised [above, centre, below] low-dose slices -> (B, 1, H, W)."""
        if slices.ndim != 4 or slices.shape[1] != 3:
            raise ValueError(f"slices must be (B, 3, H, W) = [above, centre, below], got {tuple(slices.shape)}")
        steps = self.default_steps(slices.device) if steps is None else int(steps)
        if self.trajectory_weights is not None and steps != self.trajectory_weights.numel():
            raise ValueError(f"this model was adapted with {self.trajectory_weights.numel()} sampling steps "
                             f"and must run with that many, got --steps {steps}")
        centre, context = slices[:, 1:2], torch.cat([slices[:, :1], slices[:, 2:]], dim=1)
        if self.trajectory_weights is None:
            return self.diffusion.sample(self.model_fn, centre, steps, context=context, callback=callback).float()
        _, trajectory = self.diffusion.sample(self.model_fn, centre, steps, context=context, callback=callback,
                                              return_trajectory=True)
        weights = self.trajectory_weights.to(centre.device, torch.float32)
        return sum(w * x.float() for w, x in zip(weights, trajectory)).clamp(0.0, 1.0)


def build_model(architecture: dict, state: dict[str, torch.Tensor] | None = None,
                entry: ModelEntry | None = None) -> LDCTModel:
    """An :class:`LDCTModel` from a model card's ``architecture`` and (optionally) its tensors.

    The card's architecture is ``{"network": "CLEARNet", "kwargs": {...}, "diffusion":
    {"num_timesteps": T}, "sampler": {"steps": S, "cpu_steps": S_cpu}, "cpu_bf16_ok": bool}``
    and optionally ``"noise_gain": {"target_noise_hu": ..., "max_gain": ..., "smooth_px": ...}``;
    an adapted model's weights file also holds ``trajectory_weights``.
    """
    from meddiffusion import nets

    name = architecture.get("network")
    if name != "CLEARNet":
        raise ValueError(f"an LDCT model must use the CLEARNet network, got {name!r}")
    net = nets.CLEARNet(**architecture.get("kwargs", {}))
    timesteps = int(architecture.get("diffusion", {}).get("num_timesteps", 10))
    sampler = architecture.get("sampler", {})
    weights = None
    if state is not None:
        state = dict(state)
        weights = state.pop("trajectory_weights", None)
        net.load_state_dict(state)
    steps = int(sampler.get("steps", timesteps))
    model = LDCTModel(net.eval(), MeanPreservingDiffusion(timesteps), steps, int(sampler.get("cpu_steps", steps)),
                      weights, bool(architecture.get("cpu_bf16_ok", False)), entry,
                      NoiseGain.from_card(architecture.get("noise_gain")))
    for value in {model.steps, model.cpu_steps}:
        model.diffusion.sample_steps(value)  # raises a clear error for a step count outside 1..T
    return model



def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> LDCTModel:
    """The LDCT model ``model_id`` from the catalogue (shipped or user), or the cards' default for ``device``."""
    entry = load_task_model(TASK, model_id, device, title="low-dose CT")
    model = build_model(entry.architecture, entry.state_dict(), entry)
    model.net.to(torch.device(device))
    return model
