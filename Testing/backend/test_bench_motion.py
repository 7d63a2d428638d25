"""The agreement figures of ``meddiff bench motion`` against values worked out by hand."""

import numpy as np
import pytest

from meddiffusion.benchmarks.motion import CASES, HELDOUT_SEED, agreement
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
    from meddiffusion.training.motion_data import MotionDataOptions, case_spec

    specs = [case_spec(HELDOUT_SEED, i, MotionDataOptions()) for i in range(CASES)]
    assert {s.profile for s in specs} == set(range(len(PROFILES)))
    assert {s.views for s in specs} == set(ALLOWED_VIEWS)
    training = {case_spec(0, i, MotionDataOptions()).phantom_seed for i in range(172)}
    assert not training & {s.phantom_seed for s in specs}
