"""Imaging physics: CT projection and reconstruction, low-dose CT simulation."""

from .lowdose import MU_WATER_PER_MM, calibrate_i0, hu_to_mu, mu_to_hu, noise_std_in_roi, simulate_low_dose
from .radon import FILTERS, ParallelBeamGeometry, RadonTransform, ramp_filter

__all__ = [
    "FILTERS",
    "MU_WATER_PER_MM",
    "ParallelBeamGeometry",
    "RadonTransform",
    "calibrate_i0",
    "hu_to_mu",
    "mu_to_hu",
    "noise_std_in_roi",
    "ramp_filter",
    "simulate_low_dose",
]
