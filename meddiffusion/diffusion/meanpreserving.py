"""CoreDiff's generalised (cold) diffusion with a mean-preserving degradation operator.

Used by low-dose CT denoising.  There is no Gaussian noise: the low-dose image x_T itself is
the "noise", and every intermediate image is a blend of the normal-dose image x0 and x_T::

    x_t = D(x0, x_T, t) = alpha_t x0 + (1 - alpha_t) x_T,        D(., ., -1) = x0

The network is any callable ``model_fn(x_t, t, context, emm_input) -> x0_hat``: ``context``
is passed through untouched (CoreDiff: the neighbouring low-dose slices) and ``emm_input`` is
the error-modulation module's input [previous x0_hat, x_T] stacked on channels, or ``None``
when the module is off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import unsqueeze_right

from .bridge import check_timesteps, schedule_at

__all__ = ["MeanPreservingDiffusion", "corediff_alphas"]

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any, torch.Tensor | None], torch.Tensor]


def corediff_alphas(num_timesteps: int) -> torch.Tensor:
    """alpha_t for t = 0..T-1 exactly as CoreDiff's code: clip(1 - linspace(0, T, T)/T, 0, 0.999).

    For T = 10: [0.999, 0.889, 0.778, ..., 0.111, 0]; alpha_{T-1} = 0 is the pure low-dose image.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    fraction = torch.linspace(0, num_timesteps, num_timesteps, dtype=torch.float64) / num_timesteps
    return (1 - fraction).clamp(0.0, 0.999)


class MeanPreservingDiffusion:
    """Degradation, two-stage training loss and improved cold-diffusion sampler of CoreDiff.

    Args:
        num_timesteps: T (CoreDiff uses 10; its ablation tried 1, 10, 50 and 250).
    """

    def __init__(self, num_timesteps: int = 10):
        self.num_timesteps = int(num_timesteps)
        self.alphas = corediff_alphas(self.num_timesteps)
        # alpha at index t + 1, so that t = -1 reads alpha = 1 (the clean image)
        self._alphas_from_minus_one = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas])

    def degrade(self, x0: torch.Tensor, xT: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """D(x0, x_T, t) = alpha_t x0 + (1 - alpha_t) x_T, with D(., ., -1) = x0; t: int or per sample."""
        check_timesteps(t, -1, self.num_timesteps - 1)
        alpha = schedule_at(self._alphas_from_minus_one, torch.as_tensor(t) + 1, x0)
        return alpha * x0 + (1 - alpha) * xT

    def random_timestep(self, generator: torch.Generator | None = None) -> int:
        """One training timestep for the whole batch, uniform over 0..T-1 (as CoreDiff)."""
        draw_on = generator.device if generator is not None else None
        return int(torch.randint(0, self.num_timesteps, (1,), generator=generator, device=draw_on))

    def two_stage_loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        xT: torch.Tensor,
        t: int | torch.Tensor,
        context: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CoreDiff's loss 0.5 MSE(x0_hat, x0) + 0.5 MSE(x0_hat', x0); returns (loss, x0_hat, x0_hat').

        Stage I predicts x0_hat from x_t with the EMM off.  Stage II re-degrades that prediction
        to t-1, *without* detaching it, so its error also trains stage I, and predicts x0_hat'
        with the EMM fed [x0_hat, x_T].  Samples at t = 0 have no t-1 and reuse x0_hat.
        """
        if x0.shape != xT.shape:
            raise ValueError(f"x0 and xT must have the same shape, got {tuple(x0.shape)} and {tuple(xT.shape)}")
        check_timesteps(t, 0, self.num_timesteps - 1)
        t = torch.as_tensor(t, device=x0.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x0.shape[0]):
            raise ValueError(f"t must be an int or one timestep per sample ({x0.shape[0]}), got shape {tuple(t.shape)}")
        t = t.expand(x0.shape[0])
        x0_hat = model_fn(self.degrade(x0, xT, t), t, context, None)

        has_previous = t >= 1
        if has_previous.any():
            t_prev = (t - 1).clamp(min=0)
            x_prev = self.degrade(x0_hat, xT, t_prev)
            x0_hat2 = model_fn(x_prev, t_prev, context, torch.cat([x0_hat, xT], dim=1))
            x0_hat2 = torch.where(unsqueeze_right(has_previous, x0.ndim), x0_hat2, x0_hat)
        else:
            x0_hat2 = x0_hat
        loss = 0.5 * F.mse_loss(x0_hat, x0) + 0.5 * F.mse_loss(x0_hat2, x0)
        return loss, x0_hat, x0_hat2

    def sample_steps(self, num_steps: int | None = None) -> list[int]:
        """Timesteps the sampler visits: round(linspace(T-1, 0, S)), one network call each.

        S = T (the default) visits every timestep as CoreDiff does; fewer steps spread evenly
        over the schedule and always start at T-1 (the low-dose image) and end at 0.  S = 1 is
        a single prediction from x_T.
        """
        T = self.num_timesteps
        num_steps = T if num_steps is None else num_steps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be between 1 and num_timesteps={T}, got {num_steps}")
        return torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long().tolist()

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        xT: torch.Tensor,
        num_steps: int | None = None,
        context: Any = None,
        clamp: tuple[float, float] | None = (0.0, 1.0),
        callback: Callable[[int, int], None] | None = None,
        return_trajectory: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Restore x0 from the low-dose image with Cold Diffusion's improved sampler.

        Each step predicts x0_hat at t, infers x_T_hat = (x - alpha_t x0_hat) / (1 - alpha_t) and
        moves x <- x - D(x0_hat, x_T_hat, t) + D(x0_hat, x_T_hat, s), s the next visited step
        (-1 after the last, giving x0_hat).  The EMM is off on the first step only.  The final
        image is clamped to ``clamp`` (CoreDiff's [0, 1]; None keeps it as is).

        With ``return_trajectory`` also returns the unclamped image after every step (its last
        entry is the unclamped result), which one-shot adaptation blends with learned weights.
        """
        steps = self.sample_steps(num_steps)
        x, x0_hat = xT, None
        trajectory: list[torch.Tensor] = []
        for i, t in enumerate(steps):
            t_batch = torch.full((xT.shape[0],), t, device=xT.device, dtype=torch.long)
            emm_input = None if x0_hat is None else torch.cat([x0_hat, xT], dim=1)
            x0_hat = model_fn(x, t_batch, context, emm_input)
            alpha = self.alphas[t].item()
            xT_hat = (x - alpha * x0_hat) / (1 - alpha)
            s = steps[i + 1] if i + 1 < len(steps) else -1
            x = x - self.degrade(x0_hat, xT_hat, t) + self.degrade(x0_hat, xT_hat, s)
            trajectory.append(x)
            if callback is not None:
                callback(i + 1, len(steps))
        result = x.clamp(*clamp) if clamp is not None else x
        return (result, trajectory) if return_trajectory else result
