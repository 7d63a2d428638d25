"""Likert scores (1–5) per method: summaries, paired tests across methods and an ordinal model.

The case is the unit of the paired tests: each case's score for a method is the mean over
readers, so that a reader's many answers on one case do not count as independent evidence.
Reader differences are modelled instead by the cumulative-link (proportional-odds) model,
which keeps every answer and puts method and reader in as fixed effects.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.miscmodels.ordinal_model import OrderedModel

from meddiffusion.study.stats.common import by_question, holm, label, levels, method_order


def summarise(records: list[dict], scales: dict[str, int] | None = None, confidence: float = 0.95) -> list[dict]:
    """Per question and method: n, mean with a t interval, SD, median and the count of each level.

    ``scales``: number of levels per question id (the design's scale; default from the answers).
    """
    rows = []
    for question, group in by_question(records).items():
        for method in method_order(r["method"] for r in group):
            scores = np.array([r["answer"] for r in group if r["method"] == method], float)
            n = len(scores)
            sd = float(scores.std(ddof=1)) if n > 1 else float("nan")
            half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n) if n > 1 else float("nan")
            rows.append({
                "question": question, "criterion": label(group), "method": method, "n": n,
                "mean": float(scores.mean()), "ci_low": float(scores.mean() - half),
                "ci_high": float(scores.mean() + half), "sd": sd, "median": float(np.median(scores)),
                **{f"n_{level}": int((scores == level).sum()) for level in levels(group, scales)},
            })
    return rows


def case_means(group: list[dict]) -> dict[str, dict[str, float]]:
    """``{case: {method: mean score over readers}}`` for one question."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in group:
        sums[(r["case"], r["method"])].append(float(r["answer"]))
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (case, method), values in sums.items():
        table[case][method] = float(np.mean(values))
    return dict(table)


def compare(records: list[dict]) -> list[dict]:
    """Wilcoxon signed-rank for every pair of methods (Holm within a question), Friedman for 3+.

    ``difference`` is second minus first method (mean over cases of the case-mean scores), so
    a positive value means the second method scored higher.  Zero differences are dropped
    (Wilcoxon's rule); a pair whose differences are all zero gets p = 1.
    """
    rows = []
    for question, group in by_question(records).items():
        methods = method_order(r["method"] for r in group)
        table = case_means(group)
        pair_rows = []
        for a, b in combinations(methods, 2):
            d = np.array([t[b] - t[a] for t in table.values() if a in t and b in t])
            p, statistic = 1.0, float("nan")
            if np.any(d != 0):
                result = stats.wilcoxon(d)
                p, statistic = float(result.pvalue), float(result.statistic)
            pair_rows.append({
                "question": question, "criterion": label(group), "test": "Wilcoxon signed-rank",
                "first": a, "second": b, "n_cases": len(d), "difference": float(d.mean()) if len(d) else float("nan"),
                "sd_difference": float(d.std(ddof=1)) if len(d) > 1 else float("nan"), "statistic": statistic, "p": p,
            })
        for row, adjusted in zip(pair_rows, holm([r["p"] for r in pair_rows])):
            row["p_holm"] = adjusted
        rows += pair_rows
        complete = [t for t in table.values() if all(m in t for m in methods)]
        if len(methods) >= 3 and len(complete) >= 2:
            p, statistic = 1.0, float("nan")  # as for Wilcoxon: no case tells the methods apart
            if any(len({t[m] for m in methods}) > 1 for t in complete):
                result = stats.friedmanchisquare(*([t[m] for t in complete] for m in methods))
                p, statistic = float(result.pvalue), float(result.statistic)
            rows.append({
                "question": question, "criterion": label(group), "test": "Friedman",
                "first": "all methods", "second": None, "n_cases": len(complete), "difference": float("nan"),
                "statistic": statistic, "p": p, "p_holm": float("nan"),
            })
    return rows


def _fit(frame: pd.DataFrame, terms: list[str]):
    """Fit the proportional-odds model on dummy columns ``terms``; ``None`` when it fails."""
    exog = pd.get_dummies(frame[terms], drop_first=True, dtype=float)
    exog = exog.loc[:, exog.std() > 0]
    endog = pd.Series(pd.Categorical(frame["answer"], ordered=True))
    if endog.cat.categories.size < 2 or exog.shape[1] == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = OrderedModel(endog, exog, distr="logit").fit(method="bfgs", maxiter=2000, disp=False)
        except (ValueError, np.linalg.LinAlgError):
            return None
    if not fit.mle_retvals.get("converged", False) or not np.all(np.isfinite(fit.bse)):
        return None
    return fit


def ordinal(records: list[dict], alpha: float = 0.05) -> list[dict]:
    """Cumulative-link logit model per question: score ~ method (+ reader where it converges).

    ``log_odds`` is the log odds ratio of a higher score for a method against the reference
    method (the first of :func:`method_order`); positive means better-rated.  The model with
    reader effects is tried first; if a reader used one level only (perfect separation) or it
    does not converge (few answers) the method-only model is fitted and ``model`` says so; if
    that fails too, one row with ``model`` = "not fitted" records why no estimate is given.
    """
    rows = []
    for question, group in by_question(records).items():
        methods = method_order(r["method"] for r in group)
        frame = pd.DataFrame({
            "answer": [int(r["answer"]) for r in group],
            "method": pd.Categorical([r["method"] for r in group], categories=methods),
            "reader": [str(r["reader"]) for r in group],
        })
        model, fit = "method only (one reader)", None
        levels_per_reader = frame.groupby("reader")["answer"].nunique()
        # a reader who gave one level only separates perfectly: the reader model has no finite
        # estimate, whether or not the optimiser reports convergence
        if len(levels_per_reader) > 1 and levels_per_reader.min() == 1:
            model = "method only (a reader used one level)"
        elif len(levels_per_reader) > 1:
            model, fit = "method + reader", _fit(frame, ["method", "reader"])
            if fit is None:
                model = "method only (reader model did not converge)"
        if fit is None:
            fit = _fit(frame, ["method"])
        base = {"question": question, "criterion": label(group), "reference": methods[0]}
        if fit is None:
            rows.append({**base, "model": "not fitted (did not converge or too few levels)", "method": None})
            continue
        ci = fit.conf_int(alpha)
        for method in methods[1:]:
            term = f"method_{method}"
            if term not in fit.params.index:
                continue
            rows.append({
                **base, "model": model, "method": method, "log_odds": float(fit.params[term]),
                "ci_low": float(ci.loc[term].iloc[0]), "ci_high": float(ci.loc[term].iloc[1]),
                "p": float(fit.pvalues[term]),
            })
    return rows
