"""Likert statistics recover simulated method effects: B one point better, C equal to the original."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from meddiffusion.study.stats import likert
from meddiffusion.study.stats.common import analysable, holm, method_order

from simulated_readers import simulate


@pytest.fixture(scope="module")
def records():
    return analysable(simulate(n_cases=60, seed=0), "likert")


def test_training_cases_and_repeats_are_left_out_of_the_comparisons():
    everything = simulate(n_cases=10, n_readers=2, n_repeats=4, n_training=2, seed=0)
    kept = analysable(everything, "likert")
    assert not any(r["training"] or r["repeat"] for r in kept)
    assert len(kept) == 10 * 2 * 3
    assert len(analysable(everything, "likert", repeats=True)) == (10 + 4) * 2 * 3


def test_method_order_puts_the_original_first():
    assert method_order(["zeta", "B", "original", None, "B"]) == ["original", "B", "zeta"]


def test_summary_orders_the_methods_and_its_interval_is_the_t_interval(records):
    rows = {r["method"]: r for r in likert.summarise(records)}
    assert rows["B"]["mean"] > rows["original"]["mean"] + 0.7
    assert abs(rows["C"]["mean"] - rows["original"]["mean"]) < 0.2
    scores = [r["answer"] for r in records if r["method"] == "B"]
    low, high = stats.t.interval(0.95, len(scores) - 1, np.mean(scores), stats.sem(scores))
    assert (rows["B"]["ci_low"], rows["B"]["ci_high"]) == pytest.approx((low, high))
    assert sum(rows["B"][f"n_{level}"] for level in range(1, 6)) == rows["B"]["n"] == len(scores)


def test_paired_tests_find_the_large_effect_and_not_the_zero_one(records):
    rows = {(r["test"], r["first"], r["second"]): r for r in likert.compare(records)}
    better = rows[("Wilcoxon signed-rank", "original", "B")]
    same = rows[("Wilcoxon signed-rank", "original", "C")]
    assert better["difference"] > 0.7 and better["p_holm"] < 1e-6
    assert same["p_holm"] > 0.05 and abs(same["difference"]) < 0.2
    assert rows[("Friedman", "all methods", None)]["p"] < 1e-6
    assert better["n_cases"] == 60


def test_holm_matches_the_step_down_rule_by_hand():
    p = [0.01, 0.04, 0.03, float("nan")]
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 with running maximum: 0.03, 0.06, 0.06
    assert holm(p)[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm(p)[3])


def test_ordinal_model_with_reader_effects_finds_b_better_and_c_equal(records):
    rows = {r["method"]: r for r in likert.ordinal(records)}
    assert rows["B"]["model"] == "method + reader" and rows["B"]["reference"] == "original"
    assert rows["B"]["log_odds"] > 1 and rows["B"]["p"] < 1e-6
    assert rows["C"]["ci_low"] < 0 < rows["C"]["ci_high"]


def test_ordinal_model_falls_back_and_says_so():
    few = analysable(simulate(n_cases=8, n_readers=2, seed=1), "likert")
    one_level_reader = [dict(r, answer=5) if r["reader"] == "reader2" else r for r in few]
    rows = likert.ordinal(one_level_reader)
    assert all(r["model"].startswith("method only") for r in rows)
    constant = likert.ordinal([dict(r, answer=3) for r in few])
    assert constant == [{"question": "noise", "criterion": "noise", "reference": "original",
                         "model": "not fitted (did not converge or too few levels)", "method": None}]
