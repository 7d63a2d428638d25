"""The LDCT noise-level gain: card parsing, the measured gain per slice, and its exact inverse in inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
from meddiffusion.io import Volume
from meddiffusion.tasks.ldct.infer import denoise_volume
from meddiffusion.tasks.ldct.model import LDCTModel, build_model
from meddiffusion.tasks.ldct.noisegain import NoiseGain
from test_ldct_task import TINY, ContextMean  # the tiny network and the linear stand-in of the LDCT tests


class Identity(ContextMean):
    """x0_hat = x_t: a network that changes nothing."""

    def forward(self, x, t, emm_input=None):
        return x[:, 1:2]


def tissue_volume(noise_hu, size: int = 96, seed: int = 0) -> np.ndarray:
    """Slices of air with a 64² square of 40 HU tissue carrying white noise of the given std (one per slice)."""
    rng = np.random.default_rng(seed)
    array = np.full((len(noise_hu), size, size), -1000.0, np.float32)
    for k, sigma in enumerate(noise_hu):
        array[k, 16:80, 16:80] = 40.0 + rng.normal(0, sigma, (64, 64))
    return array


def test_card_settings_are_parsed_and_checked():
    assert NoiseGain.from_card(None) is None and NoiseGain.from_card({}) is None
    gain = NoiseGain.from_card({"target_noise_hu": 15, "max_gain": 2.5})
    assert gain == NoiseGain(15.0, 2.5, 2.0) and NoiseGain.from_card(gain.to_card()) == gain
    with pytest.raises(ValueError, match="target_noise"):
        NoiseGain.from_card({"target": 15})
    with pytest.raises(ValueError, match="target_noise_hu must be > 0"):
        NoiseGain(0.0)
    with pytest.raises(ValueError, match="max_gain must be >= 1"):
        NoiseGain(15.0, max_gain=0.5)
    model = build_model({"network": "CLEARNet", "kwargs": TINY, "noise_gain": {"target_noise_hu": 12}})
    assert model.noise_gain == NoiseGain(12.0)
    assert build_model({"network": "CLEARNet", "kwargs": TINY}).noise_gain is None


def test_gain_is_target_over_measured_noise_capped_and_one_without_tissue():
    array = tissue_volume([5.0, 10.0, 30.0])
    array = np.concatenate([array, np.full((1, 96, 96), -1000.0, np.float32)])  # an all-air slice
    k = NoiseGain(15.0, max_gain=2.5).gains(array)
    assert k[0] == 2.5                       # 15 / 5 = 3, capped
    assert k[1] == pytest.approx(1.5, rel=0.1)
    assert k[2] == 1.0 and k[3] == 1.0       # noisier than the target; nothing to measure


def test_gain_is_smoothed_along_z():
    k = NoiseGain(15.0, max_gain=3.0).gains(tissue_volume([10.0, 10.0, 2.0, 10.0, 10.0, 10.0]))
    assert np.all(np.abs(k - 1.5) < 0.25)   # the odd quiet slice (alone: k = 3) takes its neighbours' gain


def test_restore_inverts_amplify_and_commutes_with_the_smoother():
    gain = NoiseGain(15.0, smooth_px=2.0)
    stack = tissue_volume([5.0, 5.0, 5.0])[None]
    k = np.array([2.0])
    amplified = gain.amplify(stack, k)
    assert amplified[0, 1, 24:72, 24:72].std() > 1.5 * stack[0, 1, 24:72, 24:72].std()
    # a network that changes nothing changes nothing
    np.testing.assert_allclose(gain.restore(stack[:, 1], amplified[:, 1], amplified[:, 1], k), stack[:, 1], atol=1e-4)
    # a network that returns the smooth part returns the same smooth part through the gain
    smooth = ndimage.gaussian_filter(stack[0, 1], 2.0)
    np.testing.assert_allclose(gain.restore(stack[:, 1], amplified[:, 1], smooth[None], k), smooth[None], atol=1e-3)
    assert gain.amplify(stack, np.array([1.0])) is stack


def test_denoise_volume_applies_each_centre_slices_gain():
    array = tissue_volume([4.0, 5.0, 6.0, 40.0], seed=1)
    volume = Volume(array, (0.7, 0.7, 2.0), modality="CT")
    gain = NoiseGain(15.0, max_gain=3.0)
    plain = LDCTModel(ContextMean(), MeanPreservingDiffusion(10), 1, 1)
    gained = LDCTModel(ContextMean(), MeanPreservingDiffusion(10), 1, 1, noise_gain=gain)

    out_plain = denoise_volume(volume, plain, steps=1).array
    out = denoise_volume(volume, gained, steps=1).array
    k = gain.gains(array)
    assert k[0] > 1 and k[3] == 1.0
    for index in range(4):
        above, below = max(index - 1, 0), min(index + 1, 3)
        stack = np.clip(gain.amplify(np.stack([array[above], array[index], array[below]])[None], k[index:index + 1]),
                        -1024, 3072)
        expected = gain.restore(array[index][None], stack[:, 1], stack[0].mean(axis=0)[None], k[index:index + 1])[0]
        np.testing.assert_allclose(out[index, 16:80, 16:80], expected[16:80, 16:80], atol=0.05)
    # a linear network is nearly blind to the gain (only the slices' smooth parts differ): still not identical
    assert np.abs(out[0] - out_plain[0]).max() > 0.2
    np.testing.assert_array_equal(volume.array, tissue_volume([4.0, 5.0, 6.0, 40.0], seed=1))  # input untouched


def test_identity_network_returns_the_input_through_the_gain():
    array = tissue_volume([4.0, 5.0, 6.0])   # the amplified air-tissue edge overshoots -1024 HU and is clipped
    model = LDCTModel(Identity(), MeanPreservingDiffusion(10), 10, 10, noise_gain=NoiseGain(15.0))
    out = denoise_volume(Volume(array, (0.7, 0.7, 2.0), modality="CT"), model, steps=10).array
    np.testing.assert_allclose(out, array, atol=5e-3)


def test_adaptation_trajectory_goes_through_the_same_gain():
    from meddiffusion.tasks.ldct.adapt import trajectory
    from meddiffusion.tasks.ldct.model import normalize

    low = torch.from_numpy(tissue_volume([4.0, 5.0, 6.0]))
    gain = NoiseGain(15.0)
    assert gain.gains(low[1:2].numpy())[0] > 1
    for net, same in ((Identity(), True), (ContextMean(), False)):
        gained = trajectory(LDCTModel(net, MeanPreservingDiffusion(10), 3, 3, noise_gain=gain), low, steps=3)
        plain = trajectory(LDCTModel(net, MeanPreservingDiffusion(10), 3, 3), low, steps=3)
        assert gained.shape == plain.shape == (3, 1, 96, 96)
        if same:
            np.testing.assert_allclose(gained[-1, 0], normalize(low[1]), atol=1e-5)
        else:
            assert not np.allclose(gained, plain, atol=1e-6)


def test_precomputed_gains_are_checked_and_described():
    from meddiffusion.tasks.ldct.infer import _gain_line

    array = tissue_volume([4.0, 40.0])
    model = LDCTModel(Identity(), MeanPreservingDiffusion(10), 1, 1, noise_gain=NoiseGain(15.0))
    with pytest.raises(ValueError, match="one value per axial slice"):
        denoise_volume(Volume(array, (0.7, 0.7, 2.0), modality="CT"), model, steps=1, gains=np.ones(3))
    line = _gain_line(model.noise_gain.gains(array), 15.0)
    assert "1 of 2 slice(s) quieter than 15 HU" in line and "×3.00" in line
    assert "no slice is quieter" in _gain_line(np.ones(2), 15.0)


# -- training on what the gain shows ---------------------------------------------------------------
def test_training_crops_are_amplified_like_inference_and_noisy_ones_kept():
    from meddiffusion.tasks.ldct.data import amplify_crop

    rng = np.random.default_rng(2)
    nd = 40.0 + ndimage.gaussian_filter(rng.normal(0, 30, (64, 64)), 4)        # smooth anatomy
    gain = NoiseGain(15.0)
    for sigma in (2.0, 10.0):
        ld = nd + rng.normal(0, sigma, (3, 64, 64))
        pair = torch.from_numpy(np.concatenate([ld, nd[None]]).astype(np.float32))
        out = amplify_crop(pair, gain).numpy()
        k = min(15.0 / np.sqrt(np.mean((ld[1] - nd) ** 2)), 3.0)
        assert (k == 3.0) == (sigma == 2.0)
        np.testing.assert_allclose(out[:3], gain.amplify(pair[:3].numpy()[None], np.array([k]))[0], atol=1e-3)
        np.testing.assert_allclose(out[1] - out[3], k * (ld[1] - nd), atol=1e-3)   # the noise, amplified k times
    noisy = torch.from_numpy(np.concatenate([nd + rng.normal(0, 30, (3, 64, 64)), nd[None]]).astype(np.float32))
    assert amplify_crop(noisy, gain) is noisy


def test_validation_with_a_gain_inverts_it_exactly():
    from meddiffusion.metrics.image import image_quality
    from meddiffusion.tasks.ldct.data import make_val_fn

    array = tissue_volume([4.0, 5.0, 6.0])
    batch = {"ld": torch.from_numpy(array[None]), "nd": torch.from_numpy(np.full((1, 1, 96, 96), 40.0, np.float32))}
    batch["nd"][0, 0][array[1] < -500] = -1000.0
    arch = {"network": "CLEARNet", "kwargs": TINY, "noise_gain": {"target_noise_hu": 15}}
    figures = make_val_fn(arch)(Identity(), batch)
    expected = image_quality(array[1:2], batch["nd"][:, 0].numpy())
    assert figures["psnr"] == pytest.approx(expected["psnr"], abs=0.05)


def test_recipe_puts_the_gain_on_the_card_and_refuses_it_without_targets():
    from types import SimpleNamespace

    from meddiffusion.tasks.ldct import recipe

    args = SimpleNamespace(config="tiny", timesteps=10, cpu_steps=None, noise_gain=None, source=None, crop=32,
                           loss_weighting="noise")
    assert "noise_gain" not in recipe.architecture(args)
    args.noise_gain = 12.0
    assert recipe.architecture(args)["noise_gain"] == {"target_noise_hu": 12.0, "max_gain": 3.0, "smooth_px": 2.0}
    parent = {**recipe.architecture(args), "noise_gain": {"target_noise_hu": 14.0}}
    args.start_architecture, args.noise_gain = parent, None
    assert recipe.architecture(args)["noise_gain"] == {"target_noise_hu": 14.0}    # a parent's gain is kept
    args.noise_gain, args.source = 12.0, "lowdose-folder"
    with pytest.raises(ValueError, match="lowdose-folder"):
        recipe.make_loss(args, 0)
