"""Pairwise preference: win/tie/loss tables and Bradley–Terry scores with bootstrap intervals.

Ties ("equal") count as half a win for each side.  choix takes whole comparisons only, so every
decisive answer enters twice (winner over loser) and a tie once in each direction: the same
likelihood as half-weights.  A small ridge (``ALPHA``) keeps the scores finite when a method
never loses.  Scores are log-strengths centred on zero; exp(s_a − s_b) is the odds that a
reader prefers a over b.  Intervals resample cases (a reader's answers on one case stay
together), which is where the dependence between answers lies.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import choix
import numpy as np

from meddiffusion.study.stats.common import by_question, label, method_order, preferred

ALPHA = 0.01


def _methods(group: list[dict]) -> list[str]:
    return method_order([r["left"] for r in group] + [r["right"] for r in group])


def win_table(records: list[dict]) -> list[dict]:
    """Per question and pair of methods: how often each was preferred and how often neither."""
    rows = []
    for question, group in by_question(records).items():
        for a, b in combinations(_methods(group), 2):
            choices = [preferred(r) for r in group if {r["left"], r["right"]} == {a, b}]
            if choices:
                rows.append({"question": question, "criterion": label(group), "first": a, "second": b,
                             "n": len(choices), "first_wins": choices.count(a), "ties": choices.count("equal"),
                             "second_wins": choices.count(b)})
    return rows


def _comparisons(group: list[dict], index: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
    """choix's (winner, loser) tuples per case, with the tie rule of the module docstring."""
    per_case: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in group:
        left, right, choice = index[r["left"]], index[r["right"]], preferred(r)
        if choice == "equal":
            per_case[r["case"]] += [(left, right), (right, left)]
        else:
            winner = index[choice]
            per_case[r["case"]] += [(winner, left + right - winner)] * 2
    return dict(per_case)


def fit_scores(n_methods: int, comparisons: list[tuple[int, int]]) -> np.ndarray:
    """Bradley–Terry log-strengths (centred) by choix's iterative Luce spectral ranking."""
    scores = choix.ilsr_pairwise(n_methods, comparisons, alpha=ALPHA)
    return scores - scores.mean()


def bradley_terry(records: list[dict], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> list[dict]:
    """Per question and method: Bradley–Terry score, percentile bootstrap interval over cases, rank.

    ``p_vs_reference`` is the modelled probability that the method is preferred to the
    reference method (the first of :func:`method_order`) when ties are split.
    """
    rows = []
    rng = np.random.default_rng(seed)
    for question, group in by_question(records).items():
        methods = _methods(group)
        per_case = _comparisons(group, {m: i for i, m in enumerate(methods)})
        cases = sorted(per_case)
        scores = fit_scores(len(methods), [c for case in cases for c in per_case[case]])
        boot = np.array([
            fit_scores(len(methods), [c for k in rng.integers(0, len(cases), len(cases)) for c in per_case[cases[k]]])
            for _ in range(n_boot)
        ]).reshape(n_boot, len(methods))
        low, high = np.percentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0) if n_boot else (
            np.full(len(methods), np.nan), np.full(len(methods), np.nan))
        ranks = (-scores).argsort().argsort() + 1
        for i, method in enumerate(methods):
            rows.append({"question": question, "criterion": label(group), "method": method,
                         "score": float(scores[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
                         "rank": int(ranks[i]),
                         "p_vs_reference": float(1 / (1 + np.exp(scores[0] - scores[i]))), "n_cases": len(cases)})
    return rows
