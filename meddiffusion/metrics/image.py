"""Image-quality metrics: PSNR, SSIM and RMSE as CoreDiff reports them for CT, plus min–max
normalised PSNR/SSIM for modalities without a fixed intensity scale (PET, SPECT, MR).

CT protocol (CoreDiff, Gao et al., TMI 2024, ``utils/measure.py``), slice by slice:

1. clip HU to the window [-1000, 1000] and map it linearly to [0, 255];
2. PSNR = 10·log10(DR² / MSE), with DR = max − min of the windowed *reference* slice;
3. SSIM with an 11×11 Gaussian window (σ = 1.5), C1 = (0.01·DR)², C2 = (0.03·DR)²; the
   local means are taken with zero padding, so the SSIM map has the slice's size and its
   mean includes the border;
4. RMSE of the windowed values converted back to HU (the RMSE of the clipped HU);

then the per-slice values are averaged.  MONAI's SSIM uses a "valid" convolution that drops
a 5-pixel border, which changes the numbers noticeably, so the Gaussian local means are
computed here with two 1D scipy passes (the window is separable), in float64.

Inputs are numpy arrays or torch tensors, one 2D slice (y, x) or a volume (z, y, x) read as
axial slices.  Reference slices that are uniform inside the window have no data range; they
are left out of the PSNR and SSIM means (reported as NaN per slice).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "HU_WINDOW", "psnr", "ssim", "rmse_hu", "image_quality", "per_slice_quality",
    "psnr_minmax", "ssim_minmax",
]

Array = np.ndarray | torch.Tensor

#: CoreDiff's evaluation window in HU
HU_WINDOW: tuple[float, float] = (-1000.0, 1000.0)
#: the windowed intensity scale, [0, WINDOW_UNITS]
WINDOW_UNITS = 255.0
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


# -- input checks -------------------------------------------------------------------------
def _as_volume(image: Array, name: str) -> np.ndarray:
    """(z, y, x) numpy view of a 2D slice or 3D volume, rejecting bad values."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().double().numpy()
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected a 2D slice (y, x) or a 3D volume (z, y, x), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: image is empty (shape {a.shape})")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numeric intensities, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values; expected finite intensities")
    return a


def _as_pair(pred: Array, ref: Array) -> tuple[np.ndarray, np.ndarray]:
    p, r = _as_volume(pred, "pred"), _as_volume(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    return p, r


def _check_window(window: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in window)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"window must be (low, high) HU with low < high, got {window}")
    return lo, hi


# -- one slice ----------------------------------------------------------------------------
def _gaussian_taps(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


_TAPS = _gaussian_taps()


def _local_mean(x: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean of a 2D slice, zero outside it."""
    x = ndimage.correlate1d(x, _TAPS, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(x, _TAPS, axis=1, mode="constant", cval=0.0)


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _local_mean(a), _local_mean(b)
    var_a = _local_mean(a * a) - mu_a**2
    var_b = _local_mean(b * b) - mu_b**2
    cov = _local_mean(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


# -- slice by slice -----------------------------------------------------------------------
def _per_slice(pred: Array, ref: Array, window: tuple[float, float], names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named metrics ("psnr", "ssim", "rmse_hu") for every axial slice."""
    lo, hi = _check_window(window)
    p, r = _as_pair(pred, ref)
    units_per_hu = WINDOW_UNITS / (hi - lo)
    values: dict[str, list[float]] = {name: [] for name in names}
    for p_slice, r_slice in zip(p, r):
        pw = (np.clip(p_slice.astype(np.float64), lo, hi) - lo) * units_per_hu
        rw = (np.clip(r_slice.astype(np.float64), lo, hi) - lo) * units_per_hu
        data_range = float(rw.max() - rw.min())
        for name, metric in values.items():
            if name == "rmse_hu":
                metric.append(math.sqrt(float(np.mean((pw - rw) ** 2))) / units_per_hu)
            elif data_range == 0:
                metric.append(math.nan)
            else:
                metric.append((_psnr if name == "psnr" else _ssim)(pw, rw, data_range))
    return {name: np.asarray(v) for name, v in values.items()}


def _slice_mean(values: np.ndarray, what: str) -> float:
    if np.isnan(values).all():
        raise ValueError(f"{what}: the reference is uniform inside the window on every slice, "
                         "so there is no data range; expected a reference with contrast")
    return float(np.nanmean(values))


# -- public API ---------------------------------------------------------------------------
def per_slice_quality(pred: Array, ref: Array, window: tuple[float, float] = HU_WINDOW) -> dict[str, np.ndarray]:
    """PSNR (dB), SSIM and RMSE (HU) of every axial slice, as arrays of length z.

    PSNR and SSIM are NaN on slices where the windowed reference is uniform.
    """
    return _per_slice(pred, ref, window, ("psnr", "ssim", "rmse_hu"))


def psnr(pred: Array, ref: Array, window: tuple[float, float] = HU_WINDOW) -> float:
    """Mean per-slice PSNR in dB of HU images (inf when a slice is reproduced exactly)."""
    return _slice_mean(_per_slice(pred, ref, window, ("psnr",))["psnr"], "PSNR")


def ssim(pred: Array, ref: Array, window: tuple[float, float] = HU_WINDOW) -> float:
    """Mean per-slice SSIM of HU images (1 for identical images)."""
    return _slice_mean(_per_slice(pred, ref, window, ("ssim",))["ssim"], "SSIM")


def rmse_hu(pred: Array, ref: Array, window: tuple[float, float] = HU_WINDOW) -> float:
    """Mean per-slice RMSE in HU, computed on the images clipped to the window."""
    return float(_per_slice(pred, ref, window, ("rmse_hu",))["rmse_hu"].mean())


def image_quality(pred: Array, ref: Array, window: tuple[float, float] = HU_WINDOW) -> dict[str, float]:
    """``{"psnr", "ssim", "rmse_hu", "slices"}``: the per-slice means and the slice count."""
    per_slice = per_slice_quality(pred, ref, window)
    return {
        "psnr": _slice_mean(per_slice["psnr"], "PSNR"),
        "ssim": _slice_mean(per_slice["ssim"], "SSIM"),
        "rmse_hu": float(per_slice["rmse_hu"].mean()),
        "slices": int(per_slice["rmse_hu"].size),
    }


def _minmax_slices(pred: Array, ref: Array, metric: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    """``metric`` per slice after scaling both images by the reference's min and max over the
    whole array.  The prediction is not rescaled by its own range, so bias and gain errors count.
    """
    p, r = _as_pair(pred, ref)
    lo, hi = float(r.min()), float(r.max())
    if hi <= lo:
        raise ValueError(f"ref is constant ({lo}); min–max normalisation needs a reference with contrast")
    scale = 1.0 / (hi - lo)
    return np.array([metric((ps.astype(np.float64) - lo) * scale, (rs.astype(np.float64) - lo) * scale)
                     for ps, rs in zip(p, r)])


def psnr_minmax(pred: Array, ref: Array) -> float:
    """PSNR in dB over the whole array after min–max normalisation by the reference (DR = 1)."""
    mse = float(_minmax_slices(pred, ref, lambda a, b: float(np.mean((a - b) ** 2))).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim_minmax(pred: Array, ref: Array) -> float:
    """Mean per-slice 2D SSIM after min–max normalisation by the reference (DR = 1)."""
    return float(_minmax_slices(pred, ref, lambda a, b: _ssim(a, b, 1.0)).mean())
