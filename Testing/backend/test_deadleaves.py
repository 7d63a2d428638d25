"""Procedural dead-leaves CT slabs: reproducible, CT values, sharp edges and natural-image statistics."""

import numpy as np
import pytest

from meddiffusion.phantoms.deadleaves import DeadLeavesOptions, render_dead_leaves


@pytest.fixture(scope="module")
def slab():
    return render_dead_leaves((3, 128, 128), pixel_mm=0.7, slice_mm=1.0, seed=4)


def test_same_seed_same_slab_and_another_seed_differs(slab):
    np.testing.assert_array_equal(slab, render_dead_leaves((3, 128, 128), 0.7, 1.0, seed=4))
    assert np.abs(slab - render_dead_leaves((3, 128, 128), 0.7, 1.0, seed=5)).mean() > 50


def test_values_span_ct_tissues_within_the_hu_scale(slab):
    assert slab.dtype == np.float32 and slab.shape == (3, 128, 128)
    assert -1024 <= slab.min() and slab.max() <= 3071
    values = np.array([render_dead_leaves((1, 96, 96), 0.7, 1.0, seed=s) for s in range(6)]).ravel()
    for low, high in ((-1024, -600), (-150, -50), (-20, 90), (300, 3071)):  # air/lung, fat, soft tissue, bone
        assert ((values >= low) & (values <= high)).mean() > 0.01, (low, high)


def test_edges_are_sharp_at_every_scale(slab):
    step = np.abs(np.diff(slab, axis=2))
    assert np.percentile(step, 99.5) > 300  # high-contrast borders jump hundreds of HU within a pixel
    assert (step < 20).mean() > 0.2  # and much of the image is flat inside leaves


def test_power_spectrum_falls_like_natural_images():
    image = render_dead_leaves((1, 256, 256), 0.7, 1.0, seed=2)[0]
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    yy, xx = np.indices(spectrum.shape) - 128
    radius = np.hypot(yy, xx).astype(int)
    power = np.bincount(radius.ravel(), spectrum.ravel()) / np.bincount(radius.ravel())
    frequencies = np.arange(4, 64)  # below the blur's cut-off
    slope = np.polyfit(np.log(frequencies), np.log(power[frequencies]), 1)[0]
    assert -3.0 < slope < -1.3, slope  # natural images: about -2; white noise 0, a smooth phantom much steeper


def test_neighbouring_slices_share_structure(slab):
    near = np.corrcoef(slab[0].ravel(), slab[1].ravel())[0, 1]
    thick = render_dead_leaves((2, 128, 128), 0.7, 20.0, seed=4)
    far = np.corrcoef(thick[0].ravel(), thick[1].ravel())[0, 1]
    assert near > 0.6 and near > far + 0.2


def test_bad_geometry_and_options_are_refused():
    with pytest.raises(ValueError, match="positive"):
        render_dead_leaves((0, 16, 16), 0.7, 1.0, seed=0)
    with pytest.raises(ValueError, match="cover"):
        DeadLeavesOptions(cover=1.0)
