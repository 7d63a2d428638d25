"""Low-dose physics of the LDCT task: noise measured on real slices, simulated low-dose pairs.

Low-dose pairs come from projection-domain noise insertion (``meddiffusion.physics``), with I0
calibrated so the simulated full-dose noise matches the source images (training and
evaluation); quality is CoreDiff's PSNR / SSIM / RMSE(HU).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from meddiffusion.io import Volume
from meddiffusion.metrics.image import image_quality
from meddiffusion.physics import calibrate_i0, simulate_low_dose
from meddiffusion.tasks.ldct.model import HU_MIN

__all__ = ["estimate_noise_hu", "calibrate_source_i0", "simulate_pair", "simulate_volume", "evaluate"]


def estimate_noise_hu(slice_hu: np.ndarray | torch.Tensor, block: int = 16,
                      tissue_hu: tuple[float, float] = (-300.0, 300.0), share: float = 0.3) -> tuple[float, np.ndarray]:
    """Noise standard deviation (HU) of a CT slice from its flattest soft-tissue blocks.

    The slice is tiled into ``block``² blocks; blocks whose 5×5 local means all lie inside
    ``tissue_hu`` have a plane fitted and removed (slow anatomy), and the flattest ``share`` of them by residual std are
    kept. Returns the RMS residual std over the kept blocks and their pixel mask, so simulated
    noise can be measured in the very same region (``calibrate_source_i0``).
    """
    image = np.asarray(slice_hu.cpu() if isinstance(slice_hu, torch.Tensor) else slice_hu, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"estimate_noise_hu takes one slice (H, W), got shape {image.shape}")
    rows, cols = image.shape[0] // block, image.shape[1] // block

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a[: rows * block, : cols * block].reshape(rows, block, cols, block).swapaxes(1, 2)
        return a.reshape(rows * cols, block * block)

    tiles = blocks(image)
    smooth = blocks(ndimage.uniform_filter(image, 5))  # the tissue test must not reject noisy blocks
    inside = ((smooth >= tissue_hu[0]) & (smooth <= tissue_hu[1])).all(axis=1)
    if inside.sum() < 4:
        raise ValueError(f"the slice has only {int(inside.sum())} flat {block}×{block} regions within "
                         f"{tissue_hu} HU; noise cannot be estimated (expected a CT slice with soft tissue)")
    yy, xx = np.mgrid[:block, :block]
    design = np.stack([np.ones(block * block), yy.ravel(), xx.ravel()], axis=1)
    fitted = np.linalg.lstsq(design, tiles[inside].T, rcond=None)[0]
    residual_std = (tiles[inside] - (design @ fitted).T).std(axis=1, ddof=3)
    keep_count = max(2, int(math.ceil(share * residual_std.size)))
    order = np.argsort(residual_std)[:keep_count]
    chosen = np.flatnonzero(inside)[order]
    mask = np.zeros((rows, cols), bool)
    mask.flat[chosen] = True
    full = np.zeros(image.shape, bool)
    full[: rows * block, : cols * block] = np.kron(mask, np.ones((block, block), bool)).astype(bool)
    return float(np.sqrt(np.mean(residual_std[order] ** 2))), full


def calibrate_source_i0(nd_slice_hu: np.ndarray | torch.Tensor, pixel_size_mm: float, **kwargs) -> tuple[float, float]:
    """(I0, measured noise HU): the full-dose photon count that reproduces a real slice's own noise."""
    noise, roi = estimate_noise_hu(nd_slice_hu)
    hu = torch.as_tensor(np.asarray(nd_slice_hu, dtype=np.float32))
    return calibrate_i0(hu, noise, torch.from_numpy(roi), pixel_size_mm=pixel_size_mm, **kwargs), noise


def simulate_pair(nd_hu: torch.Tensor, dose: float, *, pixel_size_mm: float, i0: float, num_views: int = 720,
                  generator: torch.Generator | None = None, **scanner) -> torch.Tensor:
    """Low-dose (dose fraction ``dose``) version of normal-dose slices that already carry full-dose noise.

    ``scanner`` passes the reconstruction kernel (``filter``) and ``electronic_noise_std`` on.
    """
    return simulate_low_dose(nd_hu, dose, pixel_size_mm=pixel_size_mm, i0=i0, num_views=num_views,
                             input_is_noisy=True, generator=generator, **scanner)


def simulate_volume(volume: Volume, dose: float, *, i0: float | None = None, noise_free: bool = False,
                    seed: int = 0, batch_size: int = 4,
                    callback: Callable[[int, int], None] | None = None) -> tuple[Volume, float]:
    """A low-dose version of a CT volume, slice by slice; returns (volume, I0 used).

    Without ``i0`` the full-dose noise of the middle slice is measured and I0 calibrated to it.
    ``noise_free`` treats the input as noiseless (a phantom): full Poisson noise at the dose is
    drawn instead of only the missing part. Non-square slices are padded with air for the
    projector and cropped back.
    """
    sx, sy = volume.spacing[0], volume.spacing[1]
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise ValueError(f"in-plane pixels must be square for the CT projector, got spacing {sx} × {sy} mm")
    array = volume.array
    num_slices, height, width = array.shape
    size = max(height, width)
    if i0 is None:
        if noise_free:
            raise ValueError("a noise-free input has no noise to calibrate I0 from; pass i0")
        i0, _ = calibrate_source_i0(_square(array[num_slices // 2], size), sx)
    generator = torch.Generator().manual_seed(int(seed))
    output = np.empty_like(array, dtype=np.float32)
    for start in range(0, num_slices, batch_size):
        stop = min(start + batch_size, num_slices)
        batch = torch.from_numpy(np.stack([_square(s, size) for s in array[start:stop]]))
        low = simulate_low_dose(batch, dose, pixel_size_mm=sx, i0=i0, input_is_noisy=not noise_free,
                                generator=generator)
        output[start:stop] = low[:, :height, :width].numpy()
        if callback is not None:
            callback(stop, num_slices)
    return volume.with_array(output), float(i0)


def _square(image: np.ndarray, size: int) -> np.ndarray:
    padded = np.full((size, size), HU_MIN, np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def evaluate(denoised_hu, reference_hu) -> dict[str, float]:
    """CoreDiff's PSNR (dB), SSIM and RMSE (HU) in the [-1000, 1000] HU window, per-slice means."""
    return image_quality(denoised_hu, reference_hu)
