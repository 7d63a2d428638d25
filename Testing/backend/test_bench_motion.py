"""The agreement figures of ``meddiff bench motion`` against values worked out by hand."""

import numpy as np
import pytest

from meddiffusion.metrics.agreement import cut_interval
from meddiffusion.tasks.motion.bench import CASES, HELDOUT_SEED, SPLITS, largest_lesion_window
from meddiffusion.tasks.motion.bench import agatston_agreement as agreement
from meddiffusion.physics.motion_profiles import ALLOWED_VIEWS, PROFILES


def test_agreement_mae_risk_classes_and_pearson():
    reference = np.array([0.0, 5.0, 50.0, 200.0, 500.0])
    scores = np.array([0.0, 12.0, 60.0, 190.0, 520.0])      # 5 -> 12 crosses minimal -> mild
    result = agreement(reference, scores)
    assert result["mae"] == pytest.approx((0 + 7 + 10 + 10 + 20) / 5)
    assert result["accuracy"] == pytest.approx(80.0)
    assert result["pearson"] == pytest.approx(np.corrcoef(reference, scores)[0, 1])
    assert agreement(reference, reference) == {"mae": 0.0, "accuracy": 100.0, "pearson": pytest.approx(1.0)}


def test_heldout_set_covers_every_profile_and_view_count_and_is_not_training_data():
    from meddiffusion.tasks.motion.cases import MotionDataOptions, case_spec

    specs = [case_spec(HELDOUT_SEED, i, MotionDataOptions()) for i in range(CASES)]
    assert {s.profile for s in specs} == set(range(len(PROFILES)))
    assert {s.views for s in specs} == set(ALLOWED_VIEWS)
    training = {case_spec(0, i, MotionDataOptions()).phantom_seed for i in range(172)}
    assert not training & {s.phantom_seed for s in specs}


def test_lesion_window_centres_the_largest_lesion_in_the_region_on_its_widest_slice():
    calcium = np.zeros((5, 40, 40), bool)
    calcium[1:4, 20:24, 30:36] = True                         # the largest, widest on slice 2
    calcium[2, 21:23, 29:37] = True
    calcium[0:5, 2:10, 2:10] = True                           # larger, but outside the region
    region = np.zeros_like(calcium)
    region[:, 12:, 12:] = True
    z, rows, cols = largest_lesion_window(calcium, region, 16)
    assert z == 2 and (rows.start, rows.stop) == (14, 30)
    assert (cols.start, cols.stop) == (24, 40)                # centred at column 32.5, clipped at the edge
    assert largest_lesion_window(calcium, np.zeros_like(region), 16) is None


def test_validation_split_is_the_training_runs_validation_patients():
    from meddiffusion.cli import build_parser
    from meddiffusion.tasks.motion.cases import MotionDataOptions, case_spec

    args = build_parser().parse_args(["train", "motion", "--out", "x"])
    seed, first, count = SPLITS["validation"]
    assert (seed, first, count) == (args.seed, args.cases, args.val_cases) and count >= 40
    assert SPLITS["heldout"] == (HELDOUT_SEED, 0, CASES)
    held_out = {case_spec(HELDOUT_SEED, i, MotionDataOptions()).phantom_seed for i in range(CASES)}
    assert not held_out & {case_spec(seed, first + i, MotionDataOptions()).phantom_seed for i in range(count)}


def test_cut_interval_brackets_the_cut_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 800, 40)
    uncorrected = reference + rng.normal(0, 60, 40)
    halved = reference + (uncorrected - reference) / 2          # every error halved: a 50% cut
    low, high = cut_interval(reference, uncorrected, halved)
    assert low == pytest.approx(50) and high == pytest.approx(50)
    noisy = reference + rng.normal(0, 30, 40)
    cut = 100 * (1 - np.abs(noisy - reference).mean() / np.abs(uncorrected - reference).mean())
    low, high = cut_interval(reference, uncorrected, noisy)
    assert low < cut < high
    low4, high4 = cut_interval(np.tile(reference, 4), np.tile(uncorrected, 4), np.tile(noisy, 4))
    assert high4 - low4 < 0.7 * (high - low)


def test_cut_interval_without_any_motion_error_is_undefined():
    low, high = cut_interval([0.0, 10.0], [0.0, 10.0], [5.0, 10.0])
    assert np.isnan(low) and np.isnan(high)
