"""Image-quality and segmentation metrics against closed forms and independent numpy code."""

import itertools
import math

import numpy as np
import pytest
import torch

from meddiffusion.metrics import (
    dice,
    hd95,
    image_quality,
    per_slice_quality,
    psnr,
    psnr_minmax,
    rmse_hu,
    ssim,
    ssim_minmax,
)

HU_PER_UNIT = 2000.0 / 255.0  # the [-1000, 1000] HU window mapped to [0, 255]


def phantom(slices=2, size=40, seed=0):
    """Smooth structure plus texture, inside [-500, 500] HU so offsets stay in the window."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    base = 400 * np.sin(4 * x) * np.cos(3 * y)
    return np.stack([base * (1 + 0.2 * z) / 1.5 + 50 * rng.standard_normal((size, size)) for z in range(slices)])


# -- an independent SSIM: an explicit 11 × 11 Gaussian window slid over a zero-padded slice --
_OFFSETS = np.arange(11) - 5
_KERNEL = np.exp(-(_OFFSETS[:, None] ** 2 + _OFFSETS[None, :] ** 2) / (2 * 1.5**2))
_KERNEL /= _KERNEL.sum()


def blur_11x11(a):
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(a, 5), (11, 11))
    return np.einsum("yxij,ij->yx", windows, _KERNEL)


def ssim_2d(p, r, data_range):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mp, mr = blur_11x11(p), blur_11x11(r)
    vp, vr, cov = blur_11x11(p * p) - mp**2, blur_11x11(r * r) - mr**2, blur_11x11(p * r) - mp * mr
    return (((2 * mp * mr + c1) * (2 * cov + c2)) / ((mp**2 + mr**2 + c1) * (vp + vr + c2))).mean()


def reference_ssim(pred_hu, ref_hu):
    """CoreDiff's SSIM written from its definition: window, per-slice data range, average."""
    values = []
    for p, r in zip(pred_hu.reshape(-1, *pred_hu.shape[-2:]), ref_hu.reshape(-1, *ref_hu.shape[-2:])):
        p = (np.clip(p, -1000, 1000) + 1000) / HU_PER_UNIT
        r = (np.clip(r, -1000, 1000) + 1000) / HU_PER_UNIT
        values.append(ssim_2d(p, r, r.max() - r.min()))
    return float(np.mean(values))


# -- PSNR / SSIM / RMSE in HU -------------------------------------------------------------
def test_psnr_of_constant_offset_matches_closed_form():
    ref = phantom(slices=3)
    offset_hu = 40.0
    per_slice_range = (ref.max(axis=(1, 2)) - ref.min(axis=(1, 2))) / HU_PER_UNIT
    expected = np.mean(20 * np.log10(per_slice_range / (offset_hu / HU_PER_UNIT)))
    assert psnr(ref + offset_hu, ref) == pytest.approx(expected, abs=1e-9)


def test_identical_images_give_ssim_1_and_infinite_psnr():
    ref = phantom()
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert psnr(ref, ref) == math.inf
    assert rmse_hu(ref, ref) == 0.0


def test_ssim_drops_with_noise():
    ref = phantom()
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(ref.shape)
    scores = [ssim(ref + sigma * noise, ref) for sigma in (10.0, 40.0, 160.0)]
    assert all(0.0 < s < 1.0 for s in scores)
    assert scores[0] > scores[1] > scores[2]


def test_rmse_of_10_hu_offset_is_10():
    ref = phantom()
    assert rmse_hu(ref + 10.0, ref) == pytest.approx(10.0, abs=1e-9)


def test_rmse_is_measured_on_hu_clipped_to_the_window():
    ref = np.full((1, 16, 16), 1500.0)
    ref[0, :8] = -200.0
    pred = ref.copy()
    pred[ref > 1000] = 1200.0       # differs only above the window: both clip to 1000 HU
    assert rmse_hu(pred, ref) == 0.0


def test_ssim_matches_an_independent_gaussian_implementation():
    ref = phantom(slices=2, size=32)
    ref[1, :4] = 1400.0             # some bone above the window, clipped before SSIM
    rng = np.random.default_rng(2)
    pred = ref + 60.0 * rng.standard_normal(ref.shape) + 15.0
    assert ssim(pred, ref) == pytest.approx(reference_ssim(pred, ref), abs=1e-4)
    assert ssim(pred[0], ref[0]) == pytest.approx(reference_ssim(pred[0], ref[0]), abs=1e-4)


def test_volume_values_are_the_mean_of_slice_values():
    ref = phantom(slices=3)
    pred = ref + np.random.default_rng(3).normal(0, 30, ref.shape)
    per_slice = per_slice_quality(pred, ref)
    quality = image_quality(pred, ref)
    for name in ("psnr", "ssim", "rmse_hu"):
        singles = [image_quality(pred[z], ref[z])[name] for z in range(3)]
        assert per_slice[name] == pytest.approx(singles, abs=1e-12)
        assert quality[name] == pytest.approx(np.mean(singles), abs=1e-12)
    assert quality["slices"] == 3


def test_torch_and_numpy_inputs_agree():
    ref = phantom()
    pred = ref + 25.0 * np.random.default_rng(4).standard_normal(ref.shape)
    from_numpy = image_quality(pred, ref)
    from_torch = image_quality(torch.from_numpy(pred).float(), torch.from_numpy(ref).float())
    for name in ("psnr", "ssim", "rmse_hu"):
        assert from_torch[name] == pytest.approx(from_numpy[name], rel=1e-5)


def test_slices_flat_in_the_window_are_left_out_of_psnr_and_ssim():
    ref = phantom(slices=2)
    ref[1] = -1024.0                # air only: windowed to 0 everywhere, no data range
    pred = ref + 20.0
    per_slice = per_slice_quality(pred, ref)
    assert np.isnan(per_slice["psnr"][1]) and np.isnan(per_slice["ssim"][1])
    assert psnr(pred, ref) == pytest.approx(psnr(pred[0], ref[0]))
    with pytest.raises(ValueError, match="uniform"):
        psnr(pred[1], ref[1])


def test_image_metrics_reject_bad_input():
    ref = phantom()
    with pytest.raises(ValueError, match="same shape"):
        psnr(ref[:, :10], ref)
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ssim(bad, ref)
    with pytest.raises(ValueError, match="2D slice"):
        rmse_hu(ref[0, 0], ref[0, 0])
    with pytest.raises(ValueError, match="window"):
        psnr(ref, ref, window=(1000, -1000))


# -- min–max normalised PSNR / SSIM (PET, SPECT, MR) --------------------------------------
def test_minmax_psnr_of_constant_offset_matches_closed_form():
    ref = np.random.default_rng(5).uniform(0.0, 10.0, (2, 24, 24))
    ref[0, 0, 0], ref[0, 0, 1] = 0.0, 10.0          # range exactly 10
    # an offset of 0.5 is 0.05 of the range: PSNR = 20·log10(1 / 0.05)
    assert psnr_minmax(ref + 0.5, ref) == pytest.approx(20 * math.log10(1 / 0.05), abs=1e-9)
    assert psnr_minmax(ref, ref) == math.inf


def test_minmax_ssim_matches_an_independent_implementation():
    rng = np.random.default_rng(6)
    ref = rng.gamma(2.0, 3.0, (2, 24, 24))
    pred = ref * 1.1 + rng.normal(0, 1.0, ref.shape)
    lo, hi = ref.min(), ref.max()
    p, r = (pred - lo) / (hi - lo), (ref - lo) / (hi - lo)
    expected = np.mean([ssim_2d(ps, rs, 1.0) for ps, rs in zip(p, r)])
    assert ssim_minmax(pred, ref) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="constant"):
        ssim_minmax(ref, np.ones_like(ref))


# -- Dice ---------------------------------------------------------------------------------
def two_squares(shift_x=2):
    """5 × 5 squares, the prediction shifted by ``shift_x`` columns."""
    ref = np.zeros((20, 20), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[5:10, 5:10] = 1
    pred[5:10, 5 + shift_x:10 + shift_x] = 1
    return pred, ref


def test_dice_of_shifted_squares():
    pred, ref = two_squares()
    assert dice(pred, ref) == {1: pytest.approx(2 * 15 / (25 + 25))}   # overlap 5 × 3


def test_dice_per_label_and_empty_conventions():
    pred = np.zeros((1, 6, 6), dtype=int)
    ref = np.zeros_like(pred)
    pred[0, :2, :2] = 1            # label 1: 4 voxels in pred ...
    ref[0, :2, :3] = 1             # ... 6 in ref, 4 shared
    pred[0, 4, 4] = 2              # label 2 only in pred
    scores = dice(pred, ref)
    assert scores == {1: pytest.approx(2 * 4 / 10), 2: 0.0}
    assert dice(pred, ref, labels=[7]) == {7: 1.0}        # absent from both


# -- HD95 ---------------------------------------------------------------------------------
def surface(mask):
    """Voxels of the mask with a face neighbour outside it (zero padding)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
        inner &= np.roll(padded, step, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return mask & ~inner


def brute_force_hd95(pred, ref, spacing_array_order):
    a = np.argwhere(surface(pred)) * spacing_array_order
    b = np.argwhere(surface(ref)) * spacing_array_order
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_hd95_of_shifted_squares_with_anisotropic_spacing():
    # Shift of 2 columns.  With x = 0.5 mm, y = 2 mm every surface voxel is within 1 mm of
    # the other surface and the farthest are exactly 1 mm (2 columns × 0.5 mm): HD95 = 1.
    pred, ref = two_squares()
    assert hd95(pred, ref, spacing_xyz=(0.5, 2.0)) == {1: pytest.approx(1.0, abs=1e-6)}
    # Swapped spacing: the shifted columns are now 2 × 2 mm = 4 mm apart, and 5 of the 16
    # surface voxels are 4 mm away, so the 95th percentile is 4 mm.
    assert hd95(pred, ref, spacing_xyz=(2.0, 0.5)) == {1: pytest.approx(4.0, abs=1e-6)}


def test_hd95_matches_brute_force_in_3d():
    zz, yy, xx = np.mgrid[:12, :14, :16]
    ref = ((zz - 6) / 4) ** 2 + ((yy - 7) / 5) ** 2 + ((xx - 8) / 6) ** 2 <= 1
    pred = ((zz - 5) / 3) ** 2 + ((yy - 8) / 5) ** 2 + ((xx - 7) / 5) ** 2 <= 1
    spacing_xyz = (0.7, 0.9, 2.5)
    expected = brute_force_hd95(pred, ref, np.array(spacing_xyz[::-1]))
    got = hd95(pred.astype(np.uint8), ref.astype(np.uint8), spacing_xyz)
    assert got == {1: pytest.approx(expected, abs=1e-4)}


def test_hd95_empty_conventions_and_bad_input():
    pred, ref = two_squares()
    empty = np.zeros_like(ref)
    assert hd95(empty, ref, (1.0, 1.0)) == {1: math.inf}
    assert hd95(pred, empty, (1.0, 1.0)) == {1: math.inf}
    assert math.isnan(hd95(empty, empty, (1.0, 1.0), labels=[1])[1])
    with pytest.raises(ValueError, match="spacing"):
        hd95(pred, ref, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(pred, ref, (1.0, 0.0))
    with pytest.raises(ValueError, match="same shape"):
        dice(pred, ref[:5])
    with pytest.raises(ValueError, match="whole numbers"):
        dice(pred * 0.5, ref)
