"""One-shot adaptation of a CoreDiff model to a new dose (CoreDiff's one-shot learning, OSL).

The trained network is frozen. At a new dose its sampler still visits S intermediate images
x_1..x_S on the way from the low-dose image to x̂0: early ones keep more of the input's noise,
later ones are smoother. OSL learns softmax weights w over them, output = Σ softmax(w)_s x_s,
from ONE low-dose slice with a normal-dose target: the same slice (paired) or a neighbouring
slice (unpaired, e.g. two slices away, as in CoreDiff). Weights start uniform (1/S).

Because the trajectory does not depend on w, it is computed once and the fit is a tiny
optimisation over S numbers. CoreDiff's loss is a VGG-16 perceptual loss, whose ImageNet
weights cannot be bundled here; instead:

- **band-energy loss** (both modes): the slice's body box is cut into 32×32 patches and each
  patch's energy in the bands of a 4-level Laplacian pyramid is compared in log scale with the
  target's at the same place. Band energies measure what the blend controls, how much noise
  and fine detail is left at each scale, and they need no pixel alignment, so a neighbouring
  slice is a valid target. Like VGG's early layers it compares local multi-scale statistics
  rather than pixels;
- **structural term** (paired only): 1 - SSIM plus L1, the image-restoration loss mix of Zhao
  et al. (IEEE TCI 2017), both on the evaluation's [-1000, 1000] HU window scaled to [0, 1]
  with its SSIM (11-pixel Gaussian window), since a paired target is aligned pixel for pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from meddiffusion.metrics.image import HU_WINDOW
from meddiffusion.tasks.ldct.infer import body_box
from meddiffusion.tasks.ldct.model import LDCTModel, denormalize, normalize

__all__ = ["Adaptation", "trajectory", "fit_weights", "band_energy_loss", "ssim_loss", "adapt"]

_PATCH = 32
_LEVELS = 4


@dataclass
class Adaptation:
    """The learned blend and how well it fits: ``weights`` (S,) sum to 1."""

    weights: torch.Tensor
    loss_start: float
    loss_end: float
    paired: bool


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable blur of (B, 1, H, W) with zero padding."""
    k = taps.numel()
    x = F.conv2d(x, taps.view(1, 1, 1, k), padding=(0, k // 2))
    return F.conv2d(x, taps.view(1, 1, k, 1), padding=(k // 2, 0))


def ssim_loss(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """1 - SSIM of (B, 1, H, W) images (11-pixel Gaussian window, sigma 1.5, as the metrics)."""
    taps = _gaussian_kernel().to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, taps), _blur(y, taps)
    vx, vy = _blur(x * x, taps) - mx**2, _blur(y * y, taps) - my**2
    cov = _blur(x * y, taps) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return 1 - ssim.mean()


def _window(x: torch.Tensor) -> torch.Tensor:
    """Normalised CT -> the evaluation window [-1000, 1000] HU scaled to [0, 1]."""
    low, high = HU_WINDOW
    return ((denormalize(x) - low) / (high - low)).clamp(0.0, 1.0)


def _band_energies(x: torch.Tensor) -> torch.Tensor:
    """(B, levels, H/32, W/32): mean squared Laplacian-pyramid band per 32×32 patch and level."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    energies = []
    patch = _PATCH
    for _ in range(_LEVELS):
        low = _blur(F.pad(x, (2, 2, 2, 2), mode="replicate"), taps)[..., 2:-2, 2:-2]
        energies.append(F.avg_pool2d((x - low) ** 2, patch))
        x, patch = F.avg_pool2d(low, 2), patch // 2
    return torch.cat(energies, dim=1)


def band_energy_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Mean |log band energy(x) - log band energy(y)| over 32×32 patches and 4 pyramid levels."""
    return (torch.log(_band_energies(x) + eps) - torch.log(_band_energies(y) + eps)).abs().mean()


@torch.no_grad()
def trajectory(model: LDCTModel, low_dose_hu: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """(S, 1, H, W) sampler images (normalised) for one [above, centre, below] low-dose slice in HU."""
    if low_dose_hu.ndim != 3 or low_dose_hu.shape[0] != 3:
        raise ValueError("the low-dose slice must be (3, H, W) = [above, centre, below], "
                         f"got {tuple(low_dose_hu.shape)}")
    device = next(model.net.parameters()).device
    stack, gain = low_dose_hu.detach().cpu().numpy().astype(np.float32)[None], None
    if model.noise_gain is not None:  # the sampler sees what ldct-denoise shows it (tasks/ldct/noisegain.py)
        gain = model.noise_gain.gains(stack[0, 1:2])
        original, stack = stack[:, 1], model.noise_gain.network_input(stack, gain)
    slices = normalize(torch.from_numpy(stack).to(device))
    steps = model.default_steps(device) if steps is None else steps
    centre, context = slices[:, 1:2], torch.cat([slices[:, :1], slices[:, 2:]], dim=1)
    _, images = model.diffusion.sample(model.model_fn, centre, steps, context=context, return_trajectory=True)
    images = torch.cat(images).float().cpu()
    if gain is None:
        return images
    restored = model.noise_gain.restore(original, stack[:, 1], denormalize(images[:, 0]).numpy(), gain)
    return normalize(torch.from_numpy(restored.astype(np.float32)))[:, None]


def fit_weights(images: torch.Tensor, target: torch.Tensor, paired: bool, iterations: int = 300, lr: float = 0.05,
                callback: Callable[[int, int], None] | None = None) -> Adaptation:
    """Softmax weights over ``images`` (S, 1, H, W) that best match ``target`` (1, 1, H, W), both normalised."""
    if images.ndim != 4 or images.shape[1] != 1 or target.shape != (1, 1, *images.shape[-2:]):
        raise ValueError(f"images must be (S, 1, H, W) and target (1, 1, H, W), got {tuple(images.shape)} "
                         f"and {tuple(target.shape)}")
    if min(images.shape[-2:]) < _PATCH:
        raise ValueError(f"the adaptation slice must be at least {_PATCH}×{_PATCH} pixels inside the body")
    logits = torch.zeros(images.shape[0], requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)

    def loss_of(weights: torch.Tensor) -> torch.Tensor:
        blend = (weights.view(-1, 1, 1, 1) * images).sum(0, keepdim=True)
        loss = band_energy_loss(blend, target)
        if paired:
            a, b = _window(blend), _window(target)
            loss = loss + ssim_loss(a, b) + (a - b).abs().mean()
        return loss

    with torch.no_grad():
        start = float(loss_of(torch.softmax(logits, 0)))
    for i in range(iterations):
        optimizer.zero_grad()
        loss = loss_of(torch.softmax(logits, 0))
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(i + 1, iterations)
    weights = torch.softmax(logits.detach(), 0)
    with torch.no_grad():
        end = float(loss_of(weights))
    return Adaptation(weights, start, end, paired)


def adapt(model: LDCTModel, low_dose_hu: np.ndarray, target_hu: np.ndarray, *, paired: bool,
          steps: int | None = None, iterations: int = 300,
          callback: Callable[[int, int], None] | None = None) -> Adaptation:
    """Fit OSL weights from one low-dose slice with context (3, H, W) and a normal-dose target (H, W), in HU.

    Only the body's bounding box is used, so air does not dilute the loss.
    """
    low = np.asarray(low_dose_hu, dtype=np.float32)
    target = np.asarray(target_hu, dtype=np.float32)
    if low.ndim != 3 or low.shape[0] != 3 or target.shape != low.shape[1:]:
        raise ValueError(f"expected low-dose (3, H, W) and target (H, W) on the same grid, got {low.shape} "
                         f"and {target.shape}")
    box = body_box(low[1:2], multiple=_PATCH)
    if box is None:
        raise ValueError("the adaptation slice contains no body (all air); choose a slice through the patient")
    y0, y1, x0, x1 = box
    images = trajectory(model, torch.from_numpy(low[:, y0:y1, x0:x1]), steps)
    reference = normalize(torch.from_numpy(target[y0:y1, x0:x1]))[None, None]
    result = fit_weights(images, reference, paired, iterations, callback=callback)
    if not math.isfinite(result.loss_end):
        raise ValueError("the adaptation loss is not finite; check that the target is a normal-dose CT slice in HU")
    return result
