"""The loss of PET/MR training: EDM's weighted denoising loss on the residual (CSRD).

For a batch of patches, σ is drawn with ln σ ~ N(−1.2, 1.2²), r_σ = r + σ n, and the
preconditioned denoiser D (``diffusion.edm``, σ_data = 0.5) is scored by
λ(σ) ‖D(r_σ; σ) − r‖² with λ = (σ² + σ_data²)/(σ σ_data)². EDM sums the squares over each
sample; here they are averaged over its voxels instead, which only divides the loss by the
patch volume and keeps it near 1 whatever the patch size (the trainer clips the gradient norm,
so its scale matters). The network sees [c_in r_σ, (MR), PET_low, x, y, z].

The plain 3D UNet baseline (``--variant unet``) regresses r from [(MR), PET_low] with an L1
loss, the usual choice for image-to-image denoisers (less blur than L2).
"""

from __future__ import annotations

import torch

from meddiffusion.diffusion.edm import EDMPreconditioning
from meddiffusion.tasks.petmr.model import P_MEAN, P_STD, SIGMA_DATA, SIGMA_MAX
from meddiffusion.training.sampler import fixed_noise_val

__all__ = ["conditions_of", "make_loss_fn", "make_val_fn", "make_regression_loss_fn"]


def conditions_of(batch: dict[str, torch.Tensor], use_mr: bool, device, coords: bool = True) -> torch.Tensor:
    """(B, 4 or 5, P, P, P): [MR, PET_low, x, y, z] or [PET_low, x, y, z] (without x, y, z: ``coords=False``)."""
    parts = ([batch["mr"]] if use_mr else []) + [batch["low"]] + ([batch["coords"]] if coords else [])
    return torch.cat([part.to(device) for part in parts], dim=1)


def make_loss_fn(use_mr: bool, p_mean: float = P_MEAN, p_std: float = P_STD, sigma_data: float = SIGMA_DATA,
                 start_share: float = 0.0, start_sigma: float = SIGMA_MAX):
    """``loss_fn(model, batch, generator) -> (loss, logs)`` for the trainer.

    ``start_share``: the share of samples trained at the sampler's start σ (``start_sigma``) instead
    of a log-normal σ; the CPU default answer is the denoiser at that level (one step, a few samples).
    """
    precond = EDMPreconditioning(sigma_data)

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
        device = next(model.parameters()).device
        r = batch["r"].to(device)
        cond = conditions_of(batch, use_mr, device)

        def net_fn(x_in: torch.Tensor, c: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            return model(torch.cat([x_in, c], dim=1), c_noise)

        loss = precond.edm_loss(net_fn, r, cond, generator, p_mean, p_std, start_share, start_sigma) / r[0].numel()
        return loss, {"edm": loss.detach()}

    return loss_fn


def make_val_fn(use_mr: bool, seed: int = 0):
    """Validation loss with the same σ and noise at every validation."""
    return fixed_noise_val(make_loss_fn(use_mr), seed)


def make_regression_loss_fn(use_mr: bool):
    """``loss_fn`` of the plain UNet baseline: mean |UNet([MR], PET_low) − r|; also its validation."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator=None):  # noqa: ARG001
        device = next(model.parameters()).device
        loss = (model(conditions_of(batch, use_mr, device, coords=False)) - batch["r"].to(device)).abs().mean()
        return loss, {"l1": loss.detach()}

    return loss_fn
