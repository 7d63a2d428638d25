"""Pairwise preference: the win table counts answers, Bradley–Terry recovers the simulated order."""

from __future__ import annotations

import numpy as np
import pytest

from meddiffusion.study.stats import preference
from meddiffusion.study.stats.common import analysable

from simulated_readers import simulate


def answer(case, left, right, choice):
    return {"case": case, "question": "q", "criterion": "overall", "kind": "pairwise",
            "left": left, "right": right, "answer": choice}


def test_win_table_counts_preferences_whatever_side_they_were_shown_on():
    records = [answer("c1", "A", "B", "left"), answer("c2", "B", "A", "left"), answer("c3", "B", "A", "equal")]
    (row,) = preference.win_table(records)
    assert (row["first"], row["second"]) == ("A", "B")
    assert (row["first_wins"], row["ties"], row["second_wins"], row["n"]) == (1, 1, 1, 3)


def test_ties_count_half_a_win_each():
    """A beats B twice, ties once: with ties as halves A wins 2.5 of 3, so the maximum-likelihood
    P(A over B) = 2.5 / 3 (the small ridge moves it slightly towards 1/2)."""
    records = [answer("c1", "A", "B", "left"), answer("c2", "A", "B", "left"), answer("c3", "A", "B", "equal")]
    rows = {r["method"]: r for r in preference.bradley_terry(records, n_boot=0)}
    p = 1 / (1 + np.exp(rows["B"]["score"] - rows["A"]["score"]))
    assert p == pytest.approx(2.5 / 3, abs=0.01)
    assert rows["A"]["score"] + rows["B"]["score"] == pytest.approx(0, abs=1e-9)


def test_bradley_terry_recovers_the_simulated_order_with_intervals_over_cases():
    records = analysable(simulate(n_cases=60, seed=0), "pairwise")
    rows = {r["method"]: r for r in preference.bradley_terry(records, n_boot=200, seed=1)}
    assert rows["B"]["rank"] == 1
    assert rows["B"]["ci_low"] > max(rows["original"]["ci_high"], rows["C"]["ci_high"])
    assert rows["original"]["ci_low"] < rows["C"]["score"] < rows["original"]["ci_high"]
    assert rows["B"]["p_vs_reference"] > 0.8 and rows["original"]["p_vs_reference"] == 0.5
    assert all(r["n_cases"] == 60 for r in rows.values())
    again = {r["method"]: r for r in preference.bradley_terry(records, n_boot=200, seed=1)}
    assert again == rows  # the bootstrap is seeded
