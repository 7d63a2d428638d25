"""Losses of the three training stages.

**VAE** (the paper's, with one substitution): L1 + w_p·perceptual + w_adv·LSGAN + w_dice·DiceCE
(labelled frames) + w_kl·KL. The paper's perceptual term is LPIPS on VGG features, which
cannot be downloaded here; its role is to keep edges and texture that an L1 alone blurs. We use
**1 − SSIM on every short-axis slice** (MONAI's ``SSIMLoss``, 2D, 7-pixel window) instead: it
compares local means, contrasts and structure, needs no pretrained weights, and is the
structural term MR reconstruction uses (fastMRI); slices are what a reader looks at, and the
10 mm slice spacing makes a 3D window meaningless across slices. The LSGAN critic (MONAI's
``PatchDiscriminator``) has its own Adam (lr 5e-4, the paper's) and starts at
``adv_start`` of the run; the KL weight is 0 until 20 % of the run, then ramps over 5 % to
its value (the paper's 20k and 5k of 100k steps).

**Anatomy and motion LDMs**: the DDPM's MSE on ε or v (``diffusion.latent``; v by default), with
classifier-free-guidance dropout of the clinical token (10 %) and ±5 % jitter of the clinical
scalars (the paper's augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["VaeWeights", "kl_weight_at", "vae_loss_fn", "vae_val_fn", "ldm_loss_fn", "ldm_val_fn", "dice_scores"]


class VaeWeights:
    """The VAE loss weights (the paper's values by default; ``perceptual`` weighs our SSIM term)."""

    def __init__(self, perceptual: float = 0.3, adversarial: float = 0.1, dice: float = 20.0, kl: float = 1e-7,
                 adv_start: float = 0.5):
        self.perceptual, self.adversarial, self.dice, self.kl, self.adv_start = (perceptual, adversarial, dice, kl,
                                                                                   adv_start)


def kl_weight_at(step: int, steps: int, weight: float) -> float:
    """0 until 20 % of the run, then linear to ``weight`` by 25 %."""
    start, ramp = 0.2 * steps, max(0.05 * steps, 1.0)
    return float(weight) * min(max((step - start) / ramp, 0.0), 1.0)


def _ssim_term():
    from monai.losses import SSIMLoss

    ssim = SSIMLoss(spatial_dims=2, data_range=2.0, win_size=7)

    def term(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = real.shape
        as_slices = lambda x: x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)  # noqa: E731
        return ssim(as_slices(fake), as_slices(real))

    return term


def _dice_ce():
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


def vae_loss_fn(weights: VaeWeights, steps: int, step, critic=None):
    """``loss(model, batch, generator)`` of the dual-decoder VAE; ``critic`` (optional) is trained inside."""
    from meddiffusion.nets.cardiac4d import kl_divergence

    ssim, dice_ce = _ssim_term(), _dice_ce()
    critic_opt = None if critic is None else torch.optim.Adam(critic.parameters(), lr=5e-4, betas=(0.5, 0.999))

    def loss(model, batch, generator=None):
        x, labels, labelled = batch["image"], batch["labels"], batch["labelled"].bool()
        out = model(x, generator=generator, labels=weights.dice > 0)
        fake = out["image"]
        l1, structure = F.l1_loss(fake, x), ssim(fake, x)
        logs = {"l1": l1.detach(), "ssim_loss": structure.detach()}
        total = l1 + weights.perceptual * structure
        if weights.dice > 0 and labelled.any():
            seg = dice_ce(out["logits"][labelled], labels[labelled][:, None])
            total = total + weights.dice * seg
            logs["dice_ce"] = seg.detach()
        kl_w = kl_weight_at(step(), steps, weights.kl)
        kl = kl_divergence(out["mu"], out["logvar"])
        logs["kl"] = kl.detach()
        if kl_w > 0:
            total = total + kl_w * kl
        if critic is not None and weights.adversarial > 0 and step() >= weights.adv_start * steps:
            critic.to(x.device).train()
            critic_opt.zero_grad(set_to_none=True)
            d_loss = 0.5 * (((_critic(critic, x) - 1) ** 2).mean() + (_critic(critic, fake.detach()) ** 2).mean())
            d_loss.backward()
            critic_opt.step()
            for p in critic.parameters():
                p.requires_grad_(False)
            adv = ((_critic(critic, fake) - 1) ** 2).mean()
            total = total + weights.adversarial * adv
            for p in critic.parameters():
                p.requires_grad_(True)
            logs |= {"adv": adv.detach(), "critic": d_loss.detach()}
        return total, logs

    return loss


def _critic(critic, x: torch.Tensor) -> torch.Tensor:
    """The critic's last patch map (MONAI's PatchDiscriminator returns every layer's output)."""
    out = critic(x)
    return out[-1] if isinstance(out, (list, tuple)) else out


def dice_scores(pred: torch.Tensor, labels: torch.Tensor, classes=(1, 2, 3)) -> torch.Tensor:
    """Dice of each class (RV, MYO, LV) per sample: (B, len(classes)); 1 where both are empty."""
    scores = []
    for k in classes:
        p, t = (pred == k).flatten(1).float(), (labels == k).flatten(1).float()
        inter, total = (p * t).sum(1), p.sum(1) + t.sum(1)
        scores.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)))
    return torch.stack(scores, 1)


def vae_val_fn():
    """Validation of the VAE: L1, PSNR (dB on [-1, 1]), label Dice, and the latents' std (its latent scale)."""

    def val(model, batch):
        x, labels = batch["image"], batch["labels"]
        mu, _ = model.encode(x)
        image, pred = model.decode_image(mu), model.decode_labels(mu).argmax(1)
        mse = F.mse_loss(image, x)
        dice = dice_scores(pred, labels).mean(0)
        l1 = F.l1_loss(image, x)
        return {"loss": float(l1), "l1": float(l1), "psnr": float(10 * torch.log10(4.0 / mse.clamp_min(1e-10))),
                "dice_rv": float(dice[0]), "dice_myo": float(dice[1]), "dice_lv": float(dice[2]),
                "latent_std": float(mu.std())}

    return val


def _jitter(scalars: torch.Tensor, generator) -> torch.Tensor:
    """±5 % on EF, EDV and ESV (not on the slice count), as the paper's augmentation."""
    noise = torch.rand(scalars.shape, generator=generator, device=generator.device if generator else None)
    factor = 1.0 + 0.1 * (noise.to(scalars.device) - 0.5)
    factor[:, 3] = 1.0
    return scalars * factor


def _inputs(kind: str, batch: dict) -> tuple[torch.Tensor, dict]:
    """The clean latent the LDM learns and its condition, from a batch of the stage's dataset."""
    cond = {"diagnosis": batch["diagnosis"], "scalars": batch["scalars"], "mask": batch["mask"]}
    if kind == "anatomy":
        return batch["z"], cond
    return batch["dz"], {**cond, "z_ed": batch["z_ed"], "tau": batch["tau"]}


def ldm_loss_fn(kind: str, diffusion, dropout: float = 0.1):
    """The MSE of the anatomy or motion LDM on its target (ε or v), with CFG dropout and scalar jitter."""
    from meddiffusion.nets.cardiac4d import drop_condition

    def loss(model, batch, generator=None):
        x0, cond = _inputs(kind, batch)
        cond["scalars"] = _jitter(cond["scalars"], generator)
        cond = drop_condition(cond, dropout, generator)
        draw_on = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=draw_on).to(x0.device)
        t = diffusion.random_timesteps(x0.shape[0], generator, device=x0.device)
        target = diffusion.training_target(x0, noise, t)
        mse = F.mse_loss(model(diffusion.add_noise(x0, noise, t), t, cond), target)
        return mse, {"mse": mse.detach()}

    return loss


def ldm_val_fn(kind: str, diffusion, seed: int = 0):
    """Validation at fixed noise and timesteps (comparable between checkpoints): the target's MSE and the ε it means."""

    def val(model, batch):
        x0, cond = _inputs(kind, batch)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, diffusion.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        x_t = diffusion.add_noise(x0, noise, t)
        output = model(x_t, t, cond)
        mse = F.mse_loss(output, diffusion.training_target(x0, noise, t))
        eps = F.mse_loss(diffusion.epsilon(output, x_t, t), noise)
        return {"loss": float(mse), "mse": float(mse), "eps_mse": float(eps)}

    return val
