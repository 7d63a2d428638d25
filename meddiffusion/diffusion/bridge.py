"""Brownian bridge diffusion (BBDM, Li et al. CVPR 2023) between a target x0 and a source y.

Used by ProDM (motion correction, T = 1000) and PADM (SPECT attenuation correction, T = 500).
The forward process pins both ends::

    x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) eps,      delta_t = 2 s (m_t - m_t^2)

so sampling starts from the source image itself rather than from pure noise.  The network is
any callable ``model_fn(x_t, t) -> prediction`` (extra conditions are closed over by the
caller), predicting either BBDM's ``grad`` objective ``g = m_t (y - x0) + sqrt(delta_t) eps``
(so ``x0_hat = x_t - g``) or, as in PADM, ``x0`` directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from monai.utils import unsqueeze_right

__all__ = ["BrownianBridge", "bridge_schedule", "weighted_mean", "network_calls"]

Schedule = Literal["linear", "paper", "sin"]
Prediction = Literal["grad", "x0"]
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bridge_schedule(num_timesteps: int, schedule: Schedule = "linear") -> torch.Tensor:
    """m_t for indices t = 0..T-1 (float64).

    ``linear``: BBDM code, ``linspace(0.001, 0.999, T)``.
    ``paper``: m = t/T for paper times t = 1..T, so index T-1 has m = 1 (x_{T-1} = y exactly).
    ``sin``: BBDM code's sine schedule, ``0.5 sin(pi (t/T - 0.5)) + 0.5`` with t/T at index 0 set to 0.0005.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if schedule == "linear":
        return torch.linspace(0.001, 0.999, num_timesteps, dtype=torch.float64)
    if schedule == "paper":
        return torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    if schedule == "sin":
        fraction = torch.arange(num_timesteps, dtype=torch.float64) / num_timesteps
        fraction[0] = 0.0005
        return 0.5 * torch.sin(math.pi * (fraction - 0.5)) + 0.5
    raise ValueError(f"unknown bridge schedule {schedule!r}; expected 'linear', 'paper' or 'sin'")


class BrownianBridge:
    """Schedule, forward process, training target, posterior and skip sampler of BBDM.

    Args:
        num_timesteps: T, the number of training timesteps (indices 0..T-1).
        schedule: how m_t rises from near 0 to near 1, see :func:`bridge_schedule`.
        max_var: s, the scale of the bridge variance; delta_t peaks at s/2 where m_t = 0.5.
    """

    def __init__(self, num_timesteps: int = 1000, schedule: Schedule = "linear", max_var: float = 1.0):
        if max_var <= 0:
            raise ValueError(f"max_var must be > 0, got {max_var}")
        self.num_timesteps = int(num_timesteps)
        self.schedule = schedule
        self.max_var = float(max_var)
        self.m_t = bridge_schedule(self.num_timesteps, schedule)
        self.delta_t = 2.0 * self.max_var * (self.m_t - self.m_t**2)

    # ----------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, y: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) noise; t is an int or one index per sample."""
        self._check_timesteps(t)
        m, delta = schedule_at(self.m_t, t, x0), schedule_at(self.delta_t, t, x0)
        return (1 - m) * x0 + m * y + delta.sqrt() * noise

    def training_target(
        self, x0: torch.Tensor, y: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """BBDM's ``grad`` objective g = m_t (y - x0) + sqrt(delta_t) noise, which equals x_t - x0."""
        self._check_timesteps(t)
        m, delta = schedule_at(self.m_t, t, x0), schedule_at(self.delta_t, t, x0)
        return m * (y - x0) + delta.sqrt() * noise

    def random_timesteps(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """One training timestep per image, uniform over 0..T-1 (as in BBDM)."""
        draw_on = generator.device if generator is not None else device
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=draw_on).to(device)

    @staticmethod
    def x0_from_prediction(x_t: torch.Tensor, pred: torch.Tensor, prediction: Prediction = "grad") -> torch.Tensor:
        """x0_hat from the network output: x_t - g for ``grad``, the output itself for ``x0``."""
        if prediction == "grad":
            return x_t - pred
        if prediction == "x0":
            return pred
        raise ValueError(f"unknown prediction {prediction!r}; expected 'grad' or 'x0'")

    def training_loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        prediction: Prediction = "grad",
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L1 between the grad target and x_t - x0_hat; returns (loss, x0_hat).

        For ``grad`` this is BBDM's loss on g itself; for ``x0`` it is PADM's Algorithm 1.
        x0_hat is returned so a task can add image-space terms (ProDM's calcium loss).
        ``weight`` (x0's shape, >= 0) makes it a weighted mean, sum(w |e|) / sum(w).
        """
        if x0.shape != y.shape:
            raise ValueError(f"x0 and y must have the same shape, got {tuple(x0.shape)} and {tuple(y.shape)}")
        if t is None:
            t = self.random_timesteps(x0.shape[0], generator, x0.device)
        if noise is None:
            noise = standard_normal(x0.shape, generator, x0.device, x0.dtype)
        x_t = self.q_sample(x0, y, t, noise)
        x0_hat = self.x0_from_prediction(x_t, model_fn(x_t, t), prediction)
        error = (self.training_target(x0, y, t, noise) - (x_t - x0_hat)).abs()
        return weighted_mean(error, weight), x0_hat

    # ----------------------------------------------------------------- reverse process
    def posterior_coefficients(
        self, t: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_xt, c_yt, c_epst, posterior variance) of q(x_{t-1} | x_t, x0, y) for t >= 1, in float64.

        The posterior mean is ``c_xt x_t + c_yt y - c_epst g``.  At a pinned step (delta_t = 0,
        the top of the ``paper`` schedule) x_t = y carries no information, so the posterior is
        the marginal at t-1: mean (1 - m_{t-1}) x0 + m_{t-1} y, written as c_xt = 0, c_yt = 1.
        """
        self._check_timesteps(t, lowest=1)
        t = torch.as_tensor(t).cpu()
        m, m_prev = self.m_t[t], self.m_t[t - 1]
        delta, delta_prev = self.delta_t[t], self.delta_t[t - 1]
        pinned = delta == 0
        delta = torch.where(pinned, 1.0, delta)  # any nonzero value: pinned entries are replaced below
        ratio = (1 - m) / (1 - m_prev)
        delta_step = delta - delta_prev * ratio**2  # delta_{t|t-1}
        c_xt = (delta_prev / delta) * ratio + (delta_step / delta) * (1 - m_prev)
        c_yt = m_prev - m * ratio * delta_prev / delta
        c_epst = (1 - m_prev) * delta_step / delta
        variance = delta_step * delta_prev / delta
        return (
            torch.where(pinned, 0.0, c_xt),
            torch.where(pinned, 1.0, c_yt),
            torch.where(pinned, 1 - m_prev, c_epst),
            torch.where(pinned, delta_prev, variance),
        )

    def posterior_mean(
        self, x_t: torch.Tensor, y: torch.Tensor, g: torch.Tensor, t: int | torch.Tensor
    ) -> torch.Tensor:
        """mu = c_xt x_t + c_yt y - c_epst g (the minus sign checked against the exact posterior)."""
        c_xt, c_yt, c_epst, _ = (broadcast_to(c, x_t) for c in self.posterior_coefficients(t))
        return c_xt * x_t + c_yt * y - c_epst * g

    def sample_steps(self, num_steps: int) -> list[int]:
        """Timesteps the sampler visits, from T-1 down to 0: one network call each.

        BBDM's list ``arange(T-1, 1, -(T-1)/(S-2)) ∪ {1, 0}`` for S >= 3 (T = 1000, S = 200 gives
        999, 993, 988, ..., 5, 1, 0).  S = 2 gives [T-1, 0] and S = 1 gives [T-1] (a single
        prediction of x0 from y).  S = T visits every timestep (BBDM without skipping).  Otherwise
        indices repeated by the rounding (S close to T) are dropped, so the list may be shorter
        than S.
        """
        T = self.num_timesteps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be between 1 and num_timesteps={T}, got {num_steps}")
        if num_steps == T:
            return list(range(T - 1, -1, -1))
        if num_steps == 1:
            return [T - 1]
        if num_steps == 2:
            return [T - 1, 0]
        middle = torch.arange(T - 1, 1, -(T - 1) / (num_steps - 2), dtype=torch.float64).long().tolist()
        return list(dict.fromkeys(middle + [1, 0]))

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        y: torch.Tensor,
        num_steps: int = 10,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        prediction: Prediction = "grad",
        clip_x0: tuple[float, float] | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Translate y to the target domain with BBDM's skip sampler; returns the last x0_hat.

        Starts at x = y (as BBDM's code does).  eta = 1 is the stochastic sampler of the paper,
        eta = 0 the deterministic one.  ``clip_x0`` clamps each x0_hat (BBDM uses (-1, 1)).
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        steps = self.sample_steps(num_steps)
        x = y
        for i, t in enumerate(steps):
            t_batch = torch.full((y.shape[0],), t, device=y.device, dtype=torch.long)
            x0_hat = self.x0_from_prediction(x, model_fn(x, t_batch), prediction)
            if clip_x0 is not None:
                x0_hat = x0_hat.clamp(*clip_x0)
            is_last = i + 1 == len(steps)
            x = x0_hat if is_last else self.step(x, y, x0_hat, t, steps[i + 1], eta, generator)
            if callback is not None:
                callback(i + 1, len(steps))
        return x

    def step(
        self,
        x_t: torch.Tensor,
        y: torch.Tensor,
        x0_hat: torch.Tensor,
        t: int,
        s: int,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One skip update from timestep t to s < t given the current x0_hat.

        x_s = (1-m_s) x0_hat + m_s y + sqrt((delta_s - sigma^2)/delta_t) (x_t - (1-m_t) x0_hat - m_t y) + sigma z
        with sigma^2 = eta^2 (delta_t - delta_s (1-m_t)^2/(1-m_s)^2) delta_s/delta_t.  When x0_hat
        is exact and x_t follows the forward marginal, so does x_s, for any eta.
        """
        if not 0 <= s < t <= self.num_timesteps - 1:
            raise ValueError(f"need 0 <= s < t <= {self.num_timesteps - 1}, got t={t}, s={s}")
        m_t, m_s = self.m_t[t].item(), self.m_t[s].item()
        delta_t, delta_s = self.delta_t[t].item(), self.delta_t[s].item()
        if delta_t == 0:  # pinned start: x_t = y has no noise component to carry over
            variance, direction = eta**2 * delta_s, 0.0
        else:
            variance = eta**2 * (delta_t - delta_s * (1 - m_t) ** 2 / (1 - m_s) ** 2) * delta_s / delta_t
            direction = math.sqrt(max(delta_s - variance, 0.0) / delta_t)
        x_s = (1 - m_s) * x0_hat + m_s * y + direction * (x_t - (1 - m_t) * x0_hat - m_t * y)
        if variance > 0:
            x_s = x_s + math.sqrt(variance) * standard_normal(x_t.shape, generator, x_t.device, x_t.dtype)
        return x_s

    def _check_timesteps(self, t: int | torch.Tensor, lowest: int = 0) -> None:
        check_timesteps(t, lowest, self.num_timesteps - 1)


def network_calls(bridge: BrownianBridge, steps: int, objective: str = "bridge") -> int:
    """How many network calls ``steps`` means for a bridge-sampled model (ValueError outside 1..T).

    A ``regression`` model (the bridge's network trained as a plain regressor) always makes one.
    """
    import numpy as np

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be a whole number, got {steps!r}")
    if objective == "regression":
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return 1
    return len(bridge.sample_steps(int(steps)))


# Helpers shared by the formulations of this package.


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean(values), or sum(weight * values) / sum(weight) with a non-negative ``weight`` of the same shape."""
    if weight is None:
        return values.mean()
    if weight.shape != values.shape:
        raise ValueError(f"weight must have the values' shape {tuple(values.shape)}, got {tuple(weight.shape)}")
    weight = weight.to(values.dtype)
    return (weight * values).sum() / weight.sum().clamp_min(torch.finfo(values.dtype).tiny)


def standard_normal(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """N(0, 1) noise drawn on the generator's device, then moved to device.

    A CPU generator thus gives the same numbers whichever device the model runs on.
    """
    draw_on = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)


def broadcast_to(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values in like's dtype/device; a per-sample vector gets trailing dims to broadcast over like."""
    values = values.to(device=like.device, dtype=like.dtype)
    return unsqueeze_right(values, like.ndim) if values.ndim else values


def schedule_at(values: torch.Tensor, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] ready to multiply like (t: an int or one index per sample)."""
    return broadcast_to(values[torch.as_tensor(t).cpu()], like)


def check_timesteps(t: int | torch.Tensor, lowest: int, highest: int) -> None:
    """Raise ValueError unless t is an int or integer tensor with every value in [lowest, highest]."""
    if isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"timesteps must be an integer tensor, got dtype {t.dtype}")
        if t.numel() and (int(t.min()) < lowest or int(t.max()) > highest):
            raise ValueError(f"timesteps must lie in [{lowest}, {highest}], got {int(t.min())}..{int(t.max())}")
    elif isinstance(t, bool) or not isinstance(t, int):
        raise ValueError(f"timestep must be an int or an integer tensor, got {type(t).__name__}")
    elif not lowest <= t <= highest:
        raise ValueError(f"timestep must lie in [{lowest}, {highest}], got {t}")
