"""ProDM's calcium consistency loss: a differentiable calcium score of each image, compared in log space.

Agatston scoring keeps voxels at or above 130 HU, a hard threshold with no gradient. ProDM
(arXiv 2512.24948) replaces it by a soft mask ``s = sigmoid((HU - 130) / tau)`` and scores each
image by an intensity-weighted soft volume ``V = sum(s * I)``; the loss is
``(log(1 + V_pred) - log(1 + V_ref))^2`` averaged over the batch, weighted by lambda = 20 next
to the bridge loss. The log makes a lesion that gains or loses a given fraction of its calcium
cost about the same whatever its size, so small lesions (the ones that decide between the
"minimal" and "mild" categories) are not drowned by large ones.

**What tau means.** The paper gives tau = 60 without units. We read it as the sigmoid's slope in
the normalised window units, where [-200, 800] HU spans 1: ``sigmoid(60 (u - u_130))``, which is
``sigmoid((HU - 130) / tau_HU)`` with a temperature ``tau_HU = 1000 / 60 ~ 16.7 HU``. So the
mask is 0.5 at 130 HU and sigmoid(1) = 0.73 at 146.7 HU. A temperature of 60 HU instead would
give soft tissue at 40 HU a weight of sigmoid(-1.5) = 0.18; summed over a patch that is mostly
soft tissue, it would swamp the score of a small lesion. At 16.7 HU soft tissue weighs 0.0045.

**Intensity.** ``I`` is the pixel's value on ProDM's window mapped to [0, 1] (-200 HU -> 0,
800 HU -> 1), so V is in pixel units: about the lesion's area in pixels times its mean
brightness. It keeps a gradient for denser calcium and never goes negative.

**Where it is scored.** Even at 16.7 HU the sigmoid's tail gives each soft-tissue pixel a
weight of 0.0045, and a 64² patch has thousands of them: together they weigh as much as a
small lesion, and shifting all tissue by a few HU moves V as much as fixing the calcium does.
Trained on whole patches at lambda = 20, the network took that lever: it darkened soft tissue
by 27 HU on average to pull V down, tripling its error in HU. Training therefore scores V only
within a few pixels of calcium in the reference or in the corrupted input (``calcium_region``):
calcium that the prediction loses, or leaves smeared where the motion put it, is still counted,
while the tissue elsewhere is left to the L1 term. Without ``region`` the whole image counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from meddiffusion.metrics.agatston import CALCIUM_THRESHOLD_HU
from meddiffusion.tasks.motion.model import HU_HIGH, HU_LOW, denormalize

__all__ = ["CALCIUM_THRESHOLD_HU", "PAPER_TAU", "TAU_HU", "REGION_MARGIN_PX", "soft_calcium_mask",
           "soft_volume_score", "grow_mask", "calcium_region", "calcium_consistency_loss"]

#: ProDM's tau, a slope in normalised window units (the window [-200, 800] HU spans 1)
PAPER_TAU = 60.0
#: the same sigmoid as a temperature in HU: 1000 HU / 60 ~ 16.7 HU
TAU_HU = (HU_HIGH - HU_LOW) / PAPER_TAU
#: training scores pixels this close to calcium in the reference or the corrupted input
REGION_MARGIN_PX = 3


def soft_calcium_mask(hu: torch.Tensor, tau_hu: float = TAU_HU,
                      threshold_hu: float = CALCIUM_THRESHOLD_HU) -> torch.Tensor:
    """sigmoid((HU - threshold) / tau_hu): 0.5 at the threshold, sigmoid(1) one tau above it."""
    if not tau_hu > 0:
        raise ValueError(f"tau_hu must be a temperature > 0 HU, got {tau_hu}")
    return torch.sigmoid((hu - threshold_hu) / tau_hu)


def soft_volume_score(x_norm: torch.Tensor, tau_hu: float = TAU_HU, threshold_hu: float = CALCIUM_THRESHOLD_HU,
                      region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample soft calcium volume V = sum(soft mask * window intensity) of (B, ...) images in [-1, 1].

    The images are in the task's normalised space (``tasks.motion.normalize``); the result has
    shape (B,), in pixel units. ``region`` (same shape, 0/1) limits the sum to some pixels.
    """
    if x_norm.ndim < 2:
        raise ValueError(f"expected a batch of images (B, ...), got shape {tuple(x_norm.shape)}")
    mask = soft_calcium_mask(denormalize(x_norm), tau_hu, threshold_hu)
    intensity = ((x_norm + 1) / 2).clamp_min(0)
    if region is not None:
        if region.shape != x_norm.shape:
            raise ValueError(f"region must have the images' shape {tuple(x_norm.shape)}, got {tuple(region.shape)}")
        mask = mask * region.to(mask.dtype)
    return (mask * intensity).flatten(1).sum(dim=1)


def calcium_region(*images: torch.Tensor, margin_px: int = REGION_MARGIN_PX,
                   threshold_hu: float = CALCIUM_THRESHOLD_HU) -> torch.Tensor:
    """Pixels within ``margin_px`` of one at or above the threshold in any of the (B, C, H, W) images (0/1, no grad).

    Scoring only there removes the soft mask's tail over the rest of the patch (see the module
    docstring); pass the reference and the corrupted input, so that calcium lost, and calcium
    left smeared where the motion put it, are both inside.
    """
    if not images:
        raise ValueError("calcium_region needs at least one image")
    candidates = torch.zeros_like(images[0], dtype=torch.bool)
    for image in images:
        if image.ndim != 4 or image.shape != images[0].shape:
            raise ValueError(f"images must all be (B, C, H, W) of one shape, got {tuple(image.shape)}")
        candidates |= denormalize(image.detach()) >= threshold_hu
    return grow_mask(candidates, margin_px)


def grow_mask(mask: torch.Tensor, margin_px: int) -> torch.Tensor:
    """A (B, C, H, W) boolean mask grown in-plane by ``margin_px`` pixels (a square reach), as 0/1 floats."""
    size = 2 * margin_px + 1
    return F.max_pool2d(mask.float(), size, stride=1, padding=margin_px)


def calcium_consistency_loss(x0_hat: torch.Tensor, x0: torch.Tensor, tau_hu: float = TAU_HU,
                             threshold_hu: float = CALCIUM_THRESHOLD_HU,
                             region: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of (log(1 + V(x0_hat)) - log(1 + V(x0)))^2, both over ``region``; x0 gets no gradient."""
    if x0_hat.shape != x0.shape:
        raise ValueError(f"x0_hat and x0 must have the same shape, got {tuple(x0_hat.shape)} and {tuple(x0.shape)}")
    predicted = torch.log1p(soft_volume_score(x0_hat, tau_hu, threshold_hu, region))
    reference = torch.log1p(soft_volume_score(x0.detach(), tau_hu, threshold_hu, region))
    return (predicted - reference).pow(2).mean()
