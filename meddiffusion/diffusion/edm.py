"""EDM score diffusion (Karras et al. 2022) as CSRD applies it to a residual image.

Used by MR-guided PET denoising: the diffused variable is the residual r = x_full - x_low, and
the result is x_low + r_hat.  The raw network ``net_fn(c_in r_sigma, cond, c_noise) -> F`` is
wrapped by EDM's preconditioning so that its input and training target both have unit variance
at every noise level::

    D(r_sigma; sigma) = c_skip(sigma) r_sigma + c_out(sigma) F(c_in(sigma) r_sigma, cond, c_noise(sigma))

Sampling integrates the probability-flow ODE with Heun's method (deterministic, S_churn = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .bridge import broadcast_to, standard_normal

__all__ = ["EDMPreconditioning", "sigma_schedule", "heun_sample"]

NetFn = Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor]
DenoiserFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EDMPreconditioning:
    """EDM's input/output scalings, noise-level distribution and weighted loss.

    Args:
        sigma_data: standard deviation of the data (CSRD: 0.5).
    """

    def __init__(self, sigma_data: float = 0.5):
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / (sigma**2 + self.sigma_data**2).sqrt()

    @staticmethod
    def c_noise(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log() / 4

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """(sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2: every sigma weighs the same."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def denoise(
        self, net_fn: NetFn, r_sigma: torch.Tensor, sigma: float | torch.Tensor, cond: Any = None
    ) -> torch.Tensor:
        """D(r_sigma; sigma): the preconditioned denoiser. sigma is a number or one value per sample."""
        sigma = torch.as_tensor(sigma, dtype=r_sigma.dtype, device=r_sigma.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(r_sigma.shape[0])
        if sigma.shape != (r_sigma.shape[0],):
            raise ValueError(f"sigma must be a number or one value per sample ({r_sigma.shape[0]}), "
                             f"got shape {tuple(sigma.shape)}")
        if bool((sigma <= 0).any()):
            raise ValueError("sigma must be > 0 (c_noise = ln(sigma) / 4)")
        s = broadcast_to(sigma, r_sigma)
        out = net_fn(self.c_in(s) * r_sigma, cond, self.c_noise(sigma))
        return self.c_skip(s) * r_sigma + self.c_out(s) * out

    @staticmethod
    def sample_sigma(
        n: int,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        start_share: float = 0.0,
        start_sigma: float = 80.0,
    ) -> torch.Tensor:
        """Training noise levels: ln(sigma) ~ N(p_mean, p_std^2).

        With ``start_share`` > 0 each level is instead the sampler's start ``start_sigma`` with that
        probability: a few-step sampler's answer is mostly the denoiser at its start, a level the
        log-normal alone rarely draws (sigma >= 5 about 1 % of the time at the defaults).
        """
        if not 0.0 <= start_share <= 1.0:
            raise ValueError(f"start_share must be in [0, 1], got {start_share}")
        sigma = (standard_normal((n,), generator, device) * p_std + p_mean).exp()
        if start_share > 0:
            at_start = torch.rand((n,), generator=generator, device=sigma.device) < start_share
            sigma = torch.where(at_start, torch.full_like(sigma, start_sigma), sigma)
        return sigma

    def edm_loss(
        self,
        net_fn: NetFn,
        r: torch.Tensor,
        cond: Any = None,
        generator: torch.Generator | None = None,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        start_share: float = 0.0,
        start_sigma: float = 80.0,
    ) -> torch.Tensor:
        """lambda(sigma) ||D(r + sigma n; sigma) - r||^2 summed over each sample, averaged over the batch.

        This is EDM's loss (per-element terms summed, divided by the batch size); ``start_share`` and
        ``start_sigma`` as in :meth:`sample_sigma`.
        """
        sigma = self.sample_sigma(r.shape[0], p_mean, p_std, generator, r.device, start_share,
                                  start_sigma).to(r.dtype)
        noise = standard_normal(r.shape, generator, r.device, r.dtype)
        s = broadcast_to(sigma, r)
        denoised = self.denoise(net_fn, r + s * noise, sigma, cond)
        return (self.loss_weight(s) * (denoised - r) ** 2).sum() / r.shape[0]


def sigma_schedule(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> torch.Tensor:
    """EDM's noise levels (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0.

    Returns N + 1 values in float64, falling from sigma_max to sigma_min, with a trailing 0.
    N = 1 gives [sigma_max, 0]: one Euler step straight to the clean estimate.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    fraction = torch.arange(num_steps, dtype=torch.float64) / (num_steps - 1)
    sigmas = (sigma_max ** (1 / rho) + fraction * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(
    denoiser_fn: DenoiserFn,
    noise_or_shape: torch.Tensor | Sequence[int],
    num_steps: int = 100,
    generator: torch.Generator | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Deterministic EDM sampler: Heun steps along :func:`sigma_schedule`, Euler on the last one.

    ``denoiser_fn(x, sigma)`` returns D(x; sigma) for a per-sample sigma (close over the
    conditions and :meth:`EDMPreconditioning.denoise`).  ``noise_or_shape`` is either the
    standard-normal starting noise or the shape to draw it in with ``generator``.  CSRD samples
    with 100 steps; EDM's own default is 18.
    """
    if isinstance(noise_or_shape, torch.Tensor):
        noise = noise_or_shape
    else:
        noise = standard_normal(tuple(noise_or_shape), generator, device, dtype)
    sigmas = sigma_schedule(num_steps, sigma_min, sigma_max, rho).tolist()
    batch = noise.shape[0]

    def slope(x: torch.Tensor, sigma: float) -> torch.Tensor:  # dx/dsigma of the probability-flow ODE
        sigma_batch = torch.full((batch,), sigma, dtype=x.dtype, device=x.device)
        return (x - denoiser_fn(x, sigma_batch)) / sigma

    x = noise * sigmas[0]
    for i in range(num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = slope(x, sigma)
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:  # second-order correction; the final step to sigma = 0 stays Euler
            x_next = x + (sigma_next - sigma) * 0.5 * (d + slope(x_next, sigma_next))
        x = x_next
        if callback is not None:
            callback(i + 1, num_steps)
    return x
