"""The agreement statistics of the benches against independent computations (scipy, by hand)."""

import numpy as np
import pytest
from scipy import stats

from meddiffusion.metrics.agreement import (agreement, bootstrap_interval, cut_interval, error_cut,
                                            mean_absolute_error, pearson)


def test_mae_and_pearson_match_a_hand_count_and_scipy():
    reference, values = [1.0, 2.0, 4.0, 8.0], [2.0, 2.0, 1.0, 9.0]
    assert mean_absolute_error(reference, values) == pytest.approx((1 + 0 + 3 + 1) / 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.6 * x + rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert np.isnan(pearson(x, np.full(50, 3.0)))               # r of a constant is undefined, not an error


def test_agreement_counts_classes_only_when_given_a_classifier():
    reference, values = [0.0, 5.0, 50.0, 150.0], [0.0, 12.0, 40.0, 160.0]
    tens = lambda score: int(score // 10)                        # noqa: E731 - 0, 0/1, 5/4, 15/16
    figures = agreement(reference, values, classify=tens)
    assert figures == {"mae": pytest.approx((0 + 7 + 10 + 10) / 4), "accuracy": 25.0,
                       "pearson": pytest.approx(stats.pearsonr(reference, values).statistic)}
    assert set(agreement(reference, values)) == {"mae", "pearson"}


def test_error_cut_works_along_the_last_axis_and_is_undefined_without_error():
    reference = np.array([[0.0, 10.0], [0.0, 10.0]])
    before = np.array([[4.0, 14.0], [0.0, 10.0]])               # MAE 4; then no error at all
    after = np.array([[1.0, 11.0], [1.0, 10.0]])                # MAE 1: a 75% cut; then undefined
    cut = error_cut(reference, before, after)
    assert cut[0] == pytest.approx(75.0) and not np.isfinite(cut[1])


def test_bootstrap_interval_equals_scipys_percentile_bootstrap():
    rng = np.random.default_rng(4)
    x = rng.exponential(10, 30)
    y = x + rng.normal(0, 3, 30)

    def mae(a, b, axis=-1):
        return np.abs(a - b).mean(axis=axis)

    ours = bootstrap_interval(mae, x, y, resamples=1000, seed=7, level=90)
    theirs = stats.bootstrap((x, y), mae, paired=True, vectorized=True, n_resamples=1000, confidence_level=0.9,
                             method="percentile", rng=np.random.default_rng(7)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), rel=1e-12)


def test_bootstrap_interval_leaves_out_undefined_resamples():
    reference = np.zeros(3)
    before, after = np.array([0.0, 0.0, 8.0]), np.array([0.0, 0.0, 2.0])
    low, high = cut_interval(reference, before, after)           # where case 3 is drawn the cut is 75%
    assert low == pytest.approx(75.0) and high == pytest.approx(75.0)
    assert cut_interval(reference, before, after) == bootstrap_interval(error_cut, reference, before, after)
    assert all(np.isnan(cut_interval(reference, np.zeros(3), after)))


def test_a_lower_level_gives_a_narrower_interval():
    x = np.random.default_rng(2).normal(size=40)
    mean = lambda a: a.mean(axis=-1)                             # noqa: E731
    low95, high95 = bootstrap_interval(mean, x, seed=3)
    low80, high80 = bootstrap_interval(mean, x, seed=3, level=80)
    assert low95 < low80 < x.mean() < high80 < high95
