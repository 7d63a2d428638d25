"""Numbers shown to users: image quality, segmentation agreement and coronary calcium."""

from meddiffusion.metrics.agatston import AgatstonResult, Lesion, agatston, density_weight, risk_category
from meddiffusion.metrics.agreement import agreement, bootstrap_interval, cut_interval, error_cut
from meddiffusion.metrics.image import (
    HU_WINDOW,
    image_quality,
    per_slice_quality,
    psnr,
    psnr_minmax,
    rmse_hu,
    ssim,
    ssim_minmax,
)
from meddiffusion.metrics.segmentation import dice, hd95

__all__ = [
    "AgatstonResult", "Lesion", "agatston", "density_weight", "risk_category",
    "agreement", "bootstrap_interval", "cut_interval", "error_cut",
    "HU_WINDOW", "image_quality", "per_slice_quality", "psnr", "psnr_minmax", "rmse_hu", "ssim",
    "ssim_minmax",
    "dice", "hd95",
]
