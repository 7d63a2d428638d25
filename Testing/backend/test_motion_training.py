"""Motion-correction training: the calcium consistency loss, the simulated cases and patches, the losses
and a short training run.

Cases are simulated on a coarse tiny grid (64² pixels of 2 mm, 8 slices of 6 mm, many large
plaques) so that each takes a few seconds and still holds calcium; the module builds one case
and one three-case cache and shares them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from meddiffusion.diffusion.bridge import BrownianBridge
from meddiffusion.nets.prodm import PRODM_CONFIGS, ProDMUNet
from meddiffusion.physics.motion_profiles import ALLOWED_VIEWS
from meddiffusion.tasks.motion.model import normalize
from meddiffusion.training import TrainConfig, Trainer
from meddiffusion.training.calcium_loss import (TAU_HU, calcium_consistency_loss, calcium_region,
                                                soft_calcium_mask, soft_volume_score)
from meddiffusion.tasks.motion.cases import MAX_MOTION_MM, MotionDataOptions, case_spec, make_case
from meddiffusion.tasks.motion.data import MotionPatches, build_cache, extract_patches, random_crops, read_case_info
from meddiffusion.tasks.motion.losses import calcium_ramp, focus_weight, make_loss_fn, make_val_fn
from meddiffusion.tasks.motion.recipe import default_model_id

TINY = MotionDataOptions(size=64, slices=8, pixel_mm=(2.0, 2.2), slice_mm=6.0, patch=40, jitter=4, plaques=(6, 12),
                         calcium_free=0.0, plaque_mm=(3.0, 12.0), noise_views=90)


def calcium_image(peak_hu: float = 500.0, size: int = 32, smear: int = 0) -> torch.Tensor:
    """(1, 1, size, size) HU: 40 HU tissue with a 4×4 calcium at ``peak_hu``, smeared over ``smear`` columns."""
    image = torch.full((1, 1, size, size), 40.0)
    image[..., 14:18, 14:18] = peak_hu
    if smear:
        kernel = torch.ones(1, 1, 1, 2 * smear + 1) / (2 * smear + 1)
        image = torch.nn.functional.conv2d(image, kernel, padding=(0, smear))
        image[..., :, :smear] = image[..., :, -smear:] = 40.0
    return image


# -- the calcium consistency loss ------------------------------------------------------------------
def test_tau_is_the_paper_slope_in_window_units():
    assert TAU_HU == pytest.approx(1000 / 60)
    mask = soft_calcium_mask(torch.tensor([130.0, 130.0 + TAU_HU, 40.0]))
    assert mask[0] == pytest.approx(0.5)
    assert mask[1] == pytest.approx(1 / (1 + math.exp(-1)))
    assert mask[2] < 0.01                                      # soft tissue barely counts (0.18 at a 60 HU tau)
    with pytest.raises(ValueError, match="tau_hu"):
        soft_calcium_mask(torch.zeros(1), tau_hu=0.0)


def test_soft_volume_score_counts_calcium_per_sample():
    images = torch.cat([calcium_image(800.0), torch.full((1, 1, 32, 32), 40.0)])
    score = soft_volume_score(normalize(images))
    assert score.shape == (2,)
    tissue = float(soft_calcium_mask(torch.tensor(40.0))) * 0.24   # 40 HU: 0.24 up the window, weight 0.0045
    assert score[0] == pytest.approx(16 * 1.0 + 1008 * tissue, rel=1e-4)   # 16 pixels of 800 HU weigh 1 each
    assert score[1] == pytest.approx(1024 * tissue, rel=1e-4) and score[1] < 0.1 * score[0]


def test_loss_is_zero_for_identical_images_and_grows_with_blur():
    reference = normalize(calcium_image())
    assert calcium_consistency_loss(reference, reference) == 0
    losses = [float(calcium_consistency_loss(normalize(calcium_image(smear=s)), reference)) for s in (1, 3, 6)]
    assert 0 < losses[0] < losses[1] < losses[2]
    missing = normalize(torch.full((1, 1, 32, 32), 40.0))
    assert float(calcium_consistency_loss(missing, reference)) > losses[2]


def test_loss_gradients_flow_through_the_soft_score():
    reference = calcium_image(400.0)
    predicted = reference.clone()
    predicted[..., 14:18, 14:18] = 300.0                    # the calcium came out too faint
    predicted[..., 2, 2] = 130.0                             # a pixel at the threshold
    predicted[..., 2, 28] = -100.0                           # a pixel far below it
    x0_hat = normalize(predicted).requires_grad_(True)
    loss = calcium_consistency_loss(x0_hat, normalize(reference))
    loss.backward()
    grad = x0_hat.grad[0, 0]
    assert loss > 0 and torch.isfinite(grad).all()
    assert grad[2, 2] < 0 and grad[15, 15] < 0               # raising them raises V towards the reference
    assert abs(float(grad[2, 28])) < 1e-5 * abs(float(grad[2, 2]))   # sigmoid(-230 / 16.7) ~ 1e-6
    assert abs(float(grad[2, 2])) > abs(float(grad[8, 8]))   # 40 HU tissue: small but nonzero


@pytest.fixture(scope="module")
def one_thread():
    """Simulation and training on one thread: on a shared, busy machine two threads mostly wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_region_scores_calcium_not_the_tissue_elsewhere():
    reference = normalize(calcium_image(400.0, size=64))
    corrupted = normalize(calcium_image(400.0, size=64, smear=4))
    region = calcium_region(reference, corrupted, margin_px=2)
    assert region.shape == reference.shape and not region.requires_grad
    assert region[0, 0, 12, 16] == 1 and region[0, 0, 11, 16] == 0    # the lesion starts at row 14, plus 2
    smeared = calcium_image(400.0, size=64, smear=4)[0, 0, 16] >= 130   # the smear's columns at or above 130 HU
    first = int(smeared.nonzero().min())
    assert first < 14 and region[0, 0, 16, first - 2] == 1 and region[0, 0, 16, first - 3] == 0
    darker = normalize(calcium_image(400.0, size=64) - 30.0)           # all tissue 30 HU darker, calcium too
    whole = float(calcium_consistency_loss(darker, reference))
    local = float(calcium_consistency_loss(darker, reference, region=region))
    assert whole > 20 * local                                          # the tissue lever is gone
    lost = normalize(torch.full((1, 1, 64, 64), 40.0))
    assert float(calcium_consistency_loss(lost, reference, region=region)) > 1.0
    with pytest.raises(ValueError, match="shape"):
        soft_volume_score(reference, region=region[..., :32])


# -- cases and patches -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def case(one_thread):
    return make_case(0, 1, TINY)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("motion-cases")
    calls = []
    paths = build_cache(folder, 3, 0, TINY, lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3)
    return paths


def test_case_specs_cover_every_profile_and_view_count():
    specs = [case_spec(0, index, TINY) for index in range(105)]
    assert [s.profile for s in specs[:21]] == list(range(21))
    assert {(s.profile, s.views) for s in specs} == {(p, v) for p in range(21) for v in ALLOWED_VIEWS}
    assert case_spec(0, 22, TINY).profile == 1 and case_spec(0, 22, TINY).views == ALLOWED_VIEWS[2]
    assert case_spec(0, 3, TINY) == case_spec(0, 3, TINY)
    assert case_spec(1, 3, TINY).phantom_seed != case_spec(0, 3, TINY).phantom_seed   # another seed, other patients
    free = sum(not case_spec(0, i, MotionDataOptions()).plaques for i in range(400))
    assert 20 < free < 60                                    # ~10 % calcium-free cases
    sizes = [p.size_mm for i in range(50) for p in case_spec(0, i, MotionDataOptions()).plaques]
    assert 1.5 <= min(sizes) and max(sizes) <= 12.0 and max(sizes) > 9.0


def test_make_case_is_deterministic(case, cache):
    assert case.profile == 1 and case.views == ALLOWED_VIEWS[1]
    assert case.calcium_mask.any() and case.agatston("static") > 0
    assert case.corrupted.shape == case.static.shape == case.region.shape == (8, 64, 64)
    patches = extract_patches(case, TINY)
    with np.load(cache[1]) as stored:                        # the cache made case 1 again, independently
        np.testing.assert_array_equal(stored["corrupted"], patches["corrupted"])
        np.testing.assert_array_equal(stored["static"], patches["static"])


def test_static_and_corrupted_differ_only_near_the_moving_calcium(case):
    difference = np.abs(case.corrupted.array - case.static.array)
    still = [z for z in range(TINY.slices) if z not in case.slices_with_motion]
    assert difference[still].max() == 0 if still else True
    near = ndimage.binary_dilation(case.calcium_mask, np.ones((3, 3, 3), bool), iterations=2)
    assert difference[near].max() > 20                       # the calcium moved by millimetres
    far = difference[~near & (difference > 0)]
    assert np.percentile(far, 99) < 0.5 * difference[near].max()
    assert np.median(difference[~near]) < 1.0


def test_patches_have_the_stored_shapes_and_centre_slices(case):
    patches = extract_patches(case, TINY)
    count = len(patches["static"])
    assert patches["corrupted"].shape == (count, 3, 40, 40) and patches["corrupted"].dtype == np.int16
    assert patches["static"].shape == (count, 1, 40, 40) and patches["static"].dtype == np.int16
    calcium = patches["calcium"]
    reach = math.ceil(MAX_MOTION_MM / TINY.slice_mm)          # calcium this many slices away can move in
    assert calcium.sum() >= 1 and 0 < (~calcium).sum() <= calcium.sum()   # ~15 % calcium-free patches
    for n, (z, row, col) in enumerate(patches["position"].tolist()):
        z, top, left = int(z), min(max(round(row - 20), 0), 24), min(max(round(col - 20), 0), 24)
        np.testing.assert_array_equal(patches["corrupted"][n, 1],     # the middle channel is slice z
                                      np.rint(case.corrupted.array[z, top : top + 40, left : left + 40]))
        nearby = case.calcium_mask[max(z - reach, 0) : z + reach + 1, top : top + 40, left : left + 40].any()
        assert nearby == calcium[n]                          # calcium patches hold calcium, the others none
        if calcium[n]:
            assert z in case.slices_with_motion


def test_cache_resumes_and_refuses_other_options(cache):
    stamps = [p.stat().st_mtime_ns for p in cache]
    again = build_cache(cache[0].parent, 3, 0, TINY)
    assert again == cache and [p.stat().st_mtime_ns for p in cache] == stamps
    info = read_case_info(cache[2])
    assert info["profile"] == 2 and info["views"] == ALLOWED_VIEWS[2] and info["patches"] > 0
    with pytest.raises(ValueError, match="other data options"):
        build_cache(cache[0].parent, 1, 0, MotionDataOptions(size=64, slices=8, patch=40))
    with pytest.raises(ValueError, match="seed"):
        build_cache(cache[0].parent, 1, 1, TINY)


# -- crops, losses and training ----------------------------------------------------------------------
def test_random_crops_are_seeded_and_normalised(cache):
    data = MotionPatches(cache[:1])
    batch = {k: torch.stack([data[i][k] for i in range(3)]) for k in ("corrupted", "static")}
    condition, target = random_crops(batch, 32, torch.Generator().manual_seed(1))
    again, _ = random_crops(batch, 32, torch.Generator().manual_seed(1))
    assert condition.shape == (3, 3, 32, 32) and target.shape == (3, 1, 32, 32)
    assert torch.equal(condition, again)
    assert condition.min() >= -1 and condition.max() <= 1
    with pytest.raises(ValueError, match="larger than the patches"):
        random_crops(batch, 48, torch.Generator())


@pytest.mark.parametrize("objective", ["bridge", "regression"])
def test_losses_log_the_calcium_term(cache, objective):
    torch.manual_seed(0)
    data = MotionPatches(cache[:1])
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("corrupted", "static")}
    net = ProDMUNet(3, **PRODM_CONFIGS["tiny"])
    bridge = BrownianBridge(1000)
    plain = make_loss_fn(objective, bridge, 0.0, 32)(net, batch, torch.Generator().manual_seed(2))
    weighted = make_loss_fn(objective, bridge, 20.0, 32)(net, batch, torch.Generator().manual_seed(2))
    assert set(plain[1]) == {"l1", "calcium", "calcium_weight", "hu_mae"}
    assert float(weighted[0].detach()) == pytest.approx(float(plain[0].detach() + 20 * plain[1]["calcium"]), rel=1e-5)
    step = [0]
    ramped = make_loss_fn(objective, bridge, 20.0, 32, warmup=10, step=lambda: step[0])
    held = ramped(net, batch, torch.Generator().manual_seed(2))[0]
    assert float(held.detach()) == pytest.approx(float(plain[0].detach()))
    step[0] = 15
    assert ramped(net, batch, torch.Generator().manual_seed(2))[1]["calcium_weight"] == 10.0
    if objective == "regression":                            # zero-initialised output: x0_hat = y at first
        condition, target = random_crops(batch, 32, torch.Generator().manual_seed(2))
        assert float(plain[0].detach()) == pytest.approx(float((condition[:, 1:2] - target).abs().mean()), rel=1e-5)
    with pytest.raises(ValueError, match="objective"):
        make_loss_fn("gan", bridge, 0.0, 32)


def test_focus_weight_marks_what_the_motion_changed_and_the_calcium():
    static = calcium_image(500.0, size=48)
    moved = torch.roll(static, 6, dims=-1)                  # the plaque moved 6 pixels: both places changed
    weight = focus_weight(normalize(static), normalize(moved), 20.0)
    assert weight.shape == static.shape and set(weight.unique().tolist()) == {1.0, 21.0}
    assert weight[..., 16, 16] == 21 and weight[..., 16, 22] == 21    # the plaque, and where it went
    assert weight[..., 16, 12] == 21                        # two pixels of margin
    assert weight[..., 16, 9] == 1 and weight[..., 40, 40] == 1       # identical tissue counts once
    tissue = torch.full((1, 1, 16, 16), 40.0)
    unchanged = focus_weight(normalize(tissue), normalize(tissue + 15.0), 5.0)
    assert torch.equal(unchanged, torch.ones_like(unchanged))   # 15 HU apart, no calcium: no focus
    with pytest.raises(ValueError, match="focus weight"):
        focus_weight(normalize(static), normalize(moved), -1.0)


def test_focus_weight_changes_the_l1_only():
    static = calcium_image(500.0, size=32)
    moved = torch.roll(calcium_image(500.0, size=32, smear=2), 3, dims=-1)
    batch = {"corrupted": moved.repeat(2, 3, 1, 1).short(), "static": static.repeat(2, 1, 1, 1).short()}
    net = ProDMUNet(3, **PRODM_CONFIGS["tiny"])          # zero-initialised output: x0_hat = y
    plain = make_loss_fn("regression", BrownianBridge(1000), 0.0, 32)(net, batch, torch.Generator().manual_seed(2))
    focused = make_loss_fn("regression", BrownianBridge(1000), 0.0, 32, focus=20.0)(
        net, batch, torch.Generator().manual_seed(2))
    condition, target = random_crops(batch, 32, torch.Generator().manual_seed(2))
    weight = focus_weight(target, condition[:, 1:2], 20.0)
    expected = (weight * (condition[:, 1:2] - target).abs()).sum() / weight.sum()
    assert float(focused[1]["l1"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(focused[1]["l1"]) > 5 * float(plain[1]["l1"])   # the changed pixels are where the error is
    assert float(focused[1]["calcium"]) == pytest.approx(float(plain[1]["calcium"]))


def test_calcium_weight_is_held_then_ramped():
    assert [calcium_ramp(s, 100) for s in (0, 100, 150, 200, 5000)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert calcium_ramp(0, 0) == 1.0


def test_default_model_ids():
    assert default_model_id("bridge", 20.0, "small") == "motion-prodm-small"
    assert default_model_id("bridge", 0.0, "small") == "motion-prodm-nocal-small"
    assert default_model_id("regression", 0.0, "small") == "motion-unet-l1-small"


def test_short_training_lowers_validation_loss(cache, one_thread):
    torch.manual_seed(0)
    config = TrainConfig(steps=40, batch_size=4, lr=3e-3, ema_decay=0.0, seed=0)
    bridge, current = BrownianBridge(1000), []
    loss_fn = make_loss_fn("bridge", bridge, 20.0, 32, warmup=20, step=lambda: current[0].step)
    trainer = Trainer(ProDMUNet(3, **PRODM_CONFIGS["tiny"]), loss_fn, config, MotionPatches(cache[:2]),
                      MotionPatches(cache[2:]), val_fn=make_val_fn("bridge", bridge, 20.0, 32), device="cpu")
    current.append(trainer)
    before = trainer.validate()
    trainer.fit()
    after = trainer.validate()
    assert after["loss"] < 0.5 * before["loss"] and after["calcium"] < 0.5 * before["calcium"]
    assert after["hu_mae"] < before["hu_mae"]
    assert after["l1"] < 1.5 * before["l1"]                  # 40 steps settle the calcium term, not yet the L1
    assert trainer.last_train["calcium_weight"] == 19.0     # the last step, 39: (39 - 20) / 20 of lambda
