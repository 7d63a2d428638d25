"""The losses of SPECT training: PADM's bridge (teacher, student with attention transfer) and the ablations.

- ``teacher`` and ``bridge``: PADM's Algorithm 1, the L1 between the bridge's target
  m_t(y − x0) + √δ_t ε and x_t − X_θ, i.e. |x̂0 − x0| (the network predicts x̂0); the
  teacher sees the μ-map, the ``bridge`` ablation is a student without the physics head;
- ``student``: the same L1 plus λ·L_AT, the attention-transfer loss between the student's and
  the frozen teacher's feature maps on the same x_t and t (PADM eq. 17–18);
- ``unet``: a plain regressor, one call at t = T − 1 from x_t = y, L1 on x̂0.

Every variant logs ``l1`` and ``psnr`` (dB on the paper's [−1, 1] scale, peak-to-peak 2) of x̂0.
"""

from __future__ import annotations

import torch

from meddiffusion.diffusion.bridge import BrownianBridge, standard_normal
from meddiffusion.training.sampler import fixed_noise_val

__all__ = ["VARIANTS", "make_loss_fn", "make_val_fn", "psnr"]

VARIANTS = ("teacher", "student", "bridge", "unet")


def psnr(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Mean PSNR (dB) over the batch on the [−1, 1] scale (data range 2)."""
    mse = ((x0_hat.clamp(-1, 1) - x0) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(4.0 / mse)).mean()


def make_loss_fn(variant: str, bridge: BrownianBridge, teacher: torch.nn.Module | None = None,
                 at_weight: float = 0.0):
    """``loss_fn(model, batch, generator) -> (loss, logs)`` for the trainer."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if variant == "student" and at_weight > 0 and teacher is None:
        raise ValueError("the student's attention transfer needs a teacher network")
    if not at_weight >= 0:
        raise ValueError(f"attention-transfer weight must be >= 0, got {at_weight}")

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
        from meddiffusion.nets.padm import attention_transfer_loss

        device = next(model.parameters()).device
        nac, mu, x0 = (batch[key].to(device) for key in ("nac", "mu", "ac"))
        y = nac[:, nac.shape[1] // 2 : nac.shape[1] // 2 + 1]
        condition = mu if variant == "teacher" else None
        if variant == "unet":
            t = torch.full((x0.shape[0],), bridge.num_timesteps - 1, dtype=torch.long, device=device)
            x_t = y
        else:
            t = bridge.random_timesteps(x0.shape[0], generator, device)
            x_t = bridge.q_sample(x0, y, t, standard_normal(x0.shape, generator, device, x0.dtype))
        x0_hat, feats, _ = model.forward_features(x_t, t, nac, condition)
        l1 = (x0_hat - x0).abs().mean()
        logs = {"l1": l1.detach(), "psnr": psnr(x0_hat.detach(), x0)}
        loss = l1
        if variant == "student" and at_weight > 0:
            teacher.to(device).eval()
            with torch.no_grad():
                _, teacher_feats, _ = teacher.forward_features(x_t, t, nac, mu)
            at = attention_transfer_loss(teacher_feats, feats)
            loss = l1 + at_weight * at
            logs["at"] = at.detach()
        return loss, logs

    return loss_fn


def make_val_fn(variant: str, bridge: BrownianBridge, teacher: torch.nn.Module | None = None,
                at_weight: float = 0.0, seed: int = 0):
    """Validation figures (loss, l1, psnr, at) with the same timesteps and noise for every validation."""
    return fixed_noise_val(make_loss_fn(variant, bridge, teacher, at_weight), seed)

