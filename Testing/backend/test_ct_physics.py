"""CT physics: parallel-beam projector and FBP against closed forms, low-dose noise insertion.

Reference values are computed here independently: the projection of a Gaussian blob
A exp(-|x - c|^2 / 2 sigma^2) is A sqrt(2 pi) sigma exp(-(s - <c, e_theta>)^2 / 2 sigma^2), and
a centred disk of radius r projects to the chord 2 mu sqrt(r^2 - s^2).
"""

from __future__ import annotations

import math

import pytest
import torch

from meddiffusion.physics import (
    MU_WATER_PER_MM,
    ParallelBeamGeometry,
    RadonTransform,
    calibrate_i0,
    hu_to_mu,
    mu_to_hu,
    noise_std_in_roi,
    simulate_low_dose,
)

# (amplitude 1/mm, centre x mm, centre y mm, sigma mm): an asymmetric smooth phantom.
BLOBS = [(0.020, -20.0, 10.0, 8.0), (0.010, 25.0, -15.0, 5.0), (-0.005, 5.0, 30.0, 6.0), (0.015, 0.0, 0.0, 14.0)]


def pixel_coordinates(size: int, pixel_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    centres = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * pixel_mm
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return x, y


def blob_image(size: int, pixel_mm: float, blobs=BLOBS) -> torch.Tensor:
    x, y = pixel_coordinates(size, pixel_mm)
    image = sum(a * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s)) for a, cx, cy, s in blobs)
    return image.float()


def blob_sinogram(geometry: ParallelBeamGeometry, blobs=BLOBS) -> torch.Tensor:
    theta = geometry.angles[:, None]
    s = (torch.arange(geometry.num_detectors, dtype=torch.float64) - (geometry.num_detectors - 1) / 2)
    s = s * geometry.pixel_size_mm
    sinogram = 0
    for a, cx, cy, w in blobs:
        centre = cx * theta.cos() + cy * theta.sin()
        sinogram = sinogram + a * math.sqrt(2 * math.pi) * w * torch.exp(-((s - centre) ** 2) / (2 * w * w))
    return sinogram.float()


def disk_image(size: int, pixel_mm: float, radius_mm: float, value: float, supersample: int = 8) -> torch.Tensor:
    """Disk with each pixel set to the covered area fraction (8 x 8 sub-samples)."""
    x, y = pixel_coordinates(size * supersample, pixel_mm / supersample)
    inside = (x**2 + y**2 <= radius_mm**2).double()
    return (inside.reshape(size, supersample, size, supersample).mean((1, 3)) * value).float()


def water_cylinder(size: int = 64, radius_px: float = 28.0) -> tuple[torch.Tensor, torch.Tensor]:
    """0 HU water disk in air, and a central disk ROI of radius 18 px."""
    x, y = pixel_coordinates(size, 1.0)
    radius = x**2 + y**2
    hu = torch.where(radius < radius_px**2, 0.0, -1000.0).float()
    return hu, radius < 18.0**2


# --------------------------------------------------------------------------- projector and FBP
@pytest.mark.parametrize("num_views", [90, 91])  # even views share grids across theta, theta + pi/2
def test_projection_of_gaussian_blobs_matches_closed_form(num_views):
    geometry = ParallelBeamGeometry(128, num_views, pixel_size_mm=1.0)
    sinogram = RadonTransform(geometry)(blob_image(128, 1.0)[None])[0]
    expected = blob_sinogram(geometry)
    # measured 0.12 % of the peak line integral
    assert (sinogram - expected).abs().max() < 0.005 * expected.abs().max()


def test_centred_disk_projects_to_chord_length():
    pixel, radius, mu = 1.5, 30.0, 0.02
    geometry = ParallelBeamGeometry(64, 30, pixel_size_mm=pixel)
    sinogram = RadonTransform(geometry)(disk_image(64, pixel, radius, mu)[None])[0]
    s = (torch.arange(geometry.num_detectors) - (geometry.num_detectors - 1) / 2) * pixel
    chord = 2 * mu * torch.sqrt((radius**2 - s**2).clamp(min=0))
    inner, outside = s.abs() <= 0.8 * radius, s.abs() > radius + 2 * pixel
    # measured 0.73 % of the central chord; near the rim the chord's slope is unbounded
    assert (sinogram - chord)[:, inner].abs().max() < 0.015 * chord.max()
    assert sinogram[:, outside].abs().max() == 0


def test_round_trip_of_smooth_phantom_inside_inscribed_circle():
    image = blob_image(128, 1.0)
    radon = RadonTransform(ParallelBeamGeometry(128, 180, pixel_size_mm=1.0))
    x, y = pixel_coordinates(128, 1.0)
    inside = x**2 + y**2 < 64.0**2
    for filter in ("ram-lak", "shepp-logan"):
        error = (radon.fbp(radon(image[None]), filter)[0] - image)[inside]
        # measured 1.2e-5 /mm for ram-lak (0.05 % of the 0.025 /mm peak)
        assert error.pow(2).mean().sqrt() < 1e-4


@pytest.mark.parametrize("filter", ["ram-lak", "shepp-logan", "cosine", "hann"])
@pytest.mark.parametrize("pixel", [0.7, 2.0])
def test_uniform_disk_reconstructs_to_its_attenuation(filter, pixel):
    mu = 0.0192
    disk = disk_image(64, pixel, 25 * pixel, mu)
    radon = RadonTransform(ParallelBeamGeometry(64, 120, pixel_size_mm=pixel))
    centre = radon.fbp(radon(disk[None]), filter)[0, 27:37, 27:37]
    assert centre.mean() == pytest.approx(mu, rel=0.02)


def test_fbp_of_the_analytic_sinogram_recovers_the_phantom():
    geometry = ParallelBeamGeometry(128, 180, pixel_size_mm=1.0)
    image = RadonTransform(geometry).fbp(blob_sinogram(geometry)[None])[0]
    x, y = pixel_coordinates(128, 1.0)
    error = (image - blob_image(128, 1.0))[x**2 + y**2 < 64.0**2]
    assert error.pow(2).mean().sqrt() < 1e-4  # measured 6e-6 /mm


@pytest.mark.parametrize("num_views", [24, 25])
def test_project_views_of_identical_images_equals_forward(num_views):
    images = torch.rand(2, 48, 48)
    radon = RadonTransform(ParallelBeamGeometry(48, num_views))
    per_view = radon.project_views(images[:, None].expand(2, num_views, 48, 48).contiguous())
    torch.testing.assert_close(per_view, radon(images), atol=1e-5, rtol=1e-5)


def test_project_views_sees_a_moving_blob_at_each_view():
    geometry = ParallelBeamGeometry(96, 60, pixel_size_mm=1.0)
    radon = RadonTransform(geometry)
    centres_x = torch.linspace(-20.0, 20.0, 60)  # the blob travels 40 mm along x during the scan
    blobs = [[(0.02, float(cx), 5.0, 6.0)] for cx in centres_x]
    frames = torch.stack([blob_image(96, 1.0, blob) for blob in blobs])
    expected = torch.stack([blob_sinogram(geometry, blob)[v] for v, blob in enumerate(blobs)])
    sinogram = radon.project_views(frames)
    assert (sinogram - expected).abs().max() < 0.01 * expected.max()  # measured 0.3 %
    # a block of views by index gives the same rows
    block = [7, 8, 30, 59]
    torch.testing.assert_close(radon.project_views(frames[block], view_indices=block), sinogram[block])


def test_gradients_flow_through_projection_and_fbp():
    radon = RadonTransform(ParallelBeamGeometry(32, 20), chunk_mb=0.05)  # several checkpointed chunks
    image = torch.rand(1, 32, 32, requires_grad=True)
    weights = torch.rand(1, 32, 32)
    loss = (radon.fbp(radon(image), "hann") * weights).sum()
    loss.backward()
    # the map is linear, so <grad, v> equals the change of the loss along v
    direction = torch.rand(1, 32, 32)
    with torch.no_grad():
        change = (radon.fbp(radon(image + direction), "hann") * weights).sum() - loss
    assert image.grad.abs().sum() > 0
    assert (image.grad * direction).sum() == pytest.approx(change.item(), rel=1e-3)


def test_projector_rejects_bad_shapes():
    radon = RadonTransform(ParallelBeamGeometry(32, 10))
    with pytest.raises(ValueError, match="32 x 32"):
        radon(torch.zeros(1, 32, 30))
    with pytest.raises(ValueError, match="shape"):
        radon(torch.zeros(32, 32))
    with pytest.raises(ValueError, match="sinogram"):
        radon.fbp(torch.zeros(1, 10, 5))
    with pytest.raises(ValueError, match="filter"):
        radon.fbp(torch.zeros(1, 10, radon.geometry.num_detectors), "butterworth")
    with pytest.raises(ValueError, match="view_indices"):
        radon.project_views(torch.zeros(2, 32, 32), view_indices=[0, 10])
    with pytest.raises(ValueError, match="num_views"):
        ParallelBeamGeometry(32, 0)


# ---------------------------------------------------------------------------------- low dose
def test_hu_mu_conversion():
    hu = torch.tensor([-3024.0, -1000.0, 0.0, 1000.0])
    mu = hu_to_mu(hu)
    torch.testing.assert_close(mu, torch.tensor([0.0, 0.0, MU_WATER_PER_MM, 2 * MU_WATER_PER_MM]))
    torch.testing.assert_close(mu_to_hu(mu[1:]), hu[1:])


def test_noise_grows_as_one_over_root_dose_and_mean_hu_is_kept():
    hu, roi = water_cylinder()
    stacks = {}
    for dose in (1.0, 0.25):
        generator = torch.Generator().manual_seed(5)
        stacks[dose] = simulate_low_dose(hu.expand(16, 64, 64), dose, pixel_size_mm=2.0, i0=1e5,
                                         num_views=180, generator=generator)
    noise = {dose: sum(noise_std_in_roi(s, roi) for s in stack) / 16 for dose, stack in stacks.items()}
    # measured 4.0 HU and 7.9 HU: ratio 1.96
    assert noise[0.25] / noise[1.0] == pytest.approx(2.0, rel=0.2)
    assert 1.0 < noise[1.0] < 20.0
    for stack in stacks.values():
        assert abs((stack - hu)[:, roi].mean()) < 1.0  # HU; measured 0.002 and 0.16
        assert (stack - hu)[:, ~roi].abs().max() < 500  # noise only: no bias or ring elsewhere


def test_noisy_input_gets_only_the_missing_variance():
    hu, roi = water_cylinder()
    kwargs = dict(pixel_size_mm=2.0, i0=1e5, num_views=180)
    full = simulate_low_dose(hu.expand(16, 64, 64), 1.0, generator=torch.Generator().manual_seed(1), **kwargs)
    added = simulate_low_dose(hu.expand(16, 64, 64), 0.25, input_is_noisy=True,
                              generator=torch.Generator().manual_seed(2), **kwargs)
    full_noise = sum(noise_std_in_roi(s, roi) for s in full) / 16
    added_noise = sum(noise_std_in_roi(s, roi) for s in added) / 16
    # full-dose variance s^2 plus the added (1/a - 1) s^2 makes s^2 / a: added std is sqrt(3) s
    assert added_noise / full_noise == pytest.approx(math.sqrt(3), rel=0.1)
    no_change = simulate_low_dose(hu, 1.0, input_is_noisy=True, **kwargs)
    torch.testing.assert_close(no_change, hu)


def test_low_dose_is_deterministic_given_the_seed():
    hu, _ = water_cylinder()
    run = lambda seed: simulate_low_dose(hu, 0.1, pixel_size_mm=2.0, i0=1e5, num_views=90,  # noqa: E731
                                         generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert (run(3) - run(4)).abs().max() > 1.0


def test_calibrate_i0_reaches_the_requested_noise():
    hu, roi = water_cylinder()
    i0 = calibrate_i0(hu, 5.0, roi, pixel_size_mm=2.0, num_views=180)
    stack = simulate_low_dose(hu.expand(16, 64, 64), 1.0, pixel_size_mm=2.0, i0=i0, num_views=180,
                              generator=torch.Generator().manual_seed(9))
    noise = sum(noise_std_in_roi(s, roi) for s in stack) / 16
    assert noise == pytest.approx(5.0, rel=0.1)  # measured 5.09 HU
    with pytest.raises(ValueError, match="i0_range"):
        calibrate_i0(hu, 5.0, roi, pixel_size_mm=2.0, num_views=180, i0_range=(1e8, 1e9))
    # clip: the bound nearest to the unreachable target (more noise than 1e8 photons give: the lower bound)
    assert calibrate_i0(hu, 5.0, roi, pixel_size_mm=2.0, num_views=180, i0_range=(1e8, 1e9), clip=True) == 1e8
    assert calibrate_i0(hu, 5.0, roi, pixel_size_mm=2.0, num_views=180, i0_range=(1e1, 1e2), clip=True) == 1e2


def test_noise_std_in_roi_with_slices_and_mask():
    image = torch.zeros(8, 8)
    image[2:4, 2:4] = torch.tensor([[1.0, 3.0], [1.0, 3.0]])
    assert noise_std_in_roi(image, (slice(2, 4), slice(2, 4))) == pytest.approx(math.sqrt(4 / 3))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2] = True
    assert noise_std_in_roi(image, mask) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        noise_std_in_roi(image, (slice(0, 1), slice(0, 1)))


@pytest.mark.parametrize("dose", [0.0, -0.5, 1.5])
def test_low_dose_rejects_dose_outside_zero_one(dose):
    with pytest.raises(ValueError, match="dose_fraction"):
        simulate_low_dose(torch.zeros(32, 32), dose, pixel_size_mm=1.0)


@pytest.mark.parametrize("shape, message", [((32, 30), "square"), ((32,), "shape"), ((1, 1, 32, 32), "shape")])
def test_low_dose_rejects_bad_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        simulate_low_dose(torch.zeros(shape), 0.5, pixel_size_mm=1.0)


@pytest.mark.parametrize("option, message", [(dict(pixel_size_mm=0.0), "pixel_size_mm"), (dict(i0=-1.0), "i0"),
                                             (dict(filter="ramp"), "filter"),
                                             (dict(electronic_noise_std=-1.0), "electronic_noise_std")])
def test_low_dose_rejects_bad_options(option, message):
    with pytest.raises(ValueError, match=message):
        simulate_low_dose(torch.zeros(32, 32), 0.5, **{"pixel_size_mm": 1.0, **option})
