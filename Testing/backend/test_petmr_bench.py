"""The PET/MR bench's figures on arrays whose answers are known (the bench itself runs for minutes)."""

import numpy as np
import pytest

from meddiffusion.tasks.petmr import bench


def lesion_scene(noise: float = 0.0, seed: int = 0):
    """A 24³ background of SUV 2 with a hot cube (SUV 8) and a cold one (SUV 1), and a background sphere."""
    rng = np.random.default_rng(seed)
    image = np.full((24, 24, 24), 2.0, np.float32)
    labels = np.zeros(image.shape, np.int16)
    image[4:8, 4:8, 4:8], labels[4:8, 4:8, 4:8] = 8.0, 1
    image[14:18, 14:18, 14:18], labels[14:18, 14:18, 14:18] = 1.0, 2
    labels[16:22, 2:8, 2:8] = 100
    records = [{"label": 1, "suv": 8.0, "background_suv": 2.0}, {"label": 2, "suv": 1.0, "background_suv": 2.0}]
    noisy = image + noise * rng.standard_normal(image.shape).astype(np.float32)
    return image, noisy, labels, records


def test_lesion_figures_of_the_reference_itself_are_unbiased_with_full_contrast():
    image, _, labels, records = lesion_scene()
    hot, cold = bench.lesion_figures(image, image, labels, records)
    assert hot["hyper"] and not cold["hyper"]
    assert hot["suvmax_bias"] == pytest.approx(0.0) and hot["suvmean_bias"] == pytest.approx(0.0)
    assert cold["suvmax_bias"] is None                       # SUVmax means nothing in a cold lesion
    assert hot["contrast_recovery"] == pytest.approx(100.0) and cold["contrast_recovery"] == pytest.approx(100.0)


def test_a_flattened_lesion_shows_a_negative_suvmax_bias_and_lost_contrast():
    from scipy.ndimage import gaussian_filter

    image, _, labels, records = lesion_scene()
    hot = bench.lesion_figures(gaussian_filter(image, 1.5), image, labels, records)[0]
    assert hot["suvmax_bias"] < -20 and hot["contrast_recovery"] < 80


def test_background_cov_is_the_noise_over_the_mean_of_the_uniform_sphere():
    _, noisy, labels, _ = lesion_scene(noise=0.2)
    assert bench.background_cov(noisy, labels, 100) == pytest.approx(10.0, rel=0.2)
    assert bench.background_cov(noisy, labels, 77) is None    # no such region


@pytest.mark.parametrize("name", list(bench.CLASSICAL))
def test_each_classical_filter_lowers_the_noise_and_keeps_the_scale(name):
    image, noisy, labels, _ = lesion_scene(noise=0.3, seed=1)
    fn, grid, _ = bench.CLASSICAL[name]
    out = fn(noisy, (2.0, 2.0, 2.0), grid[-1])      # the strongest setting tried
    assert out.shape == noisy.shape
    assert np.abs(out - image).mean() < 0.8 * np.abs(noisy - image).mean()
    assert out[labels == 100].mean() == pytest.approx(2.0, rel=0.1)


def test_the_held_out_subjects_come_from_their_own_dataset_seed():
    from meddiffusion.tasks.petmr.data import subject_seed

    assert bench.HELDOUT_SEED != 0
    heldout = {subject_seed(bench.HELDOUT_SEED, i) for i in range(bench.SUBJECTS)}
    training = {subject_seed(0, i) for i in range(100_000)}
    assert not heldout & training
    assert [bench.kind_of(i) for i in range(4)] == ["brain", "thorax", "brain", "thorax"]
