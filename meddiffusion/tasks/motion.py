"""Coronary calcium motion correction with ProDM (arXiv 2512.24948) on whole non-gated chest CTs.

Shared constants of the task (used by training, inference and the bench):

- **intensities**: HU clipped to [-200, 800] and mapped linearly to [-1, 1] (ProDM's window);
  outside the corrected region the input is handed back unchanged;
- **slices**: 2.5D, k = 3 adjacent axial slices of the corrupted CT as the condition;
- **bridge**: Brownian bridge with T = 1000 (linear m_t, BBDM's ``max_var`` 1), sampled with
  BBDM's skip sampler, 10 steps by default.
"""

from __future__ import annotations

import torch

__all__ = ["TASK", "HU_LOW", "HU_HIGH", "CONTEXT_SLICES", "NUM_TIMESTEPS", "DEFAULT_STEPS", "PATCH_SIZE",
           "normalize", "denormalize"]

TASK = "motion"
#: ProDM's HU window
HU_LOW, HU_HIGH = -200.0, 800.0
CONTEXT_SLICES = 3
NUM_TIMESTEPS = 1000
DEFAULT_STEPS = 10
#: training and inference patch size in pixels (about 45 mm at 0.7 mm pixels)
PATCH_SIZE = 64


def normalize(hu: torch.Tensor) -> torch.Tensor:
    """HU -> [-1, 1] over ProDM's window [-200, 800] HU (values outside are clipped)."""
    return (hu.clamp(HU_LOW, HU_HIGH) - HU_LOW) / (HU_HIGH - HU_LOW) * 2 - 1


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> HU in [-200, 800]."""
    return (x + 1) / 2 * (HU_HIGH - HU_LOW) + HU_LOW
