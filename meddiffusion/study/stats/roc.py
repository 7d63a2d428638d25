"""Empirical ROC: the AUC of a reader's confidences, ROC points, and the method × reader × case array.

The AUC is the Mann–Whitney probability that a positive case scores higher than a negative
one, ties counting one half: the area under the empirical (trapezoidal) ROC curve, and the
figure of merit the Obuchowski–Rockette analysis of :mod:`.mrmc` works on.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from meddiffusion.study.stats.common import method_order


def auc(scores, truth) -> float:
    """Empirical AUC of ``scores`` against 0/1 ``truth``; NaN without both classes."""
    scores, truth = np.asarray(scores, float), np.asarray(truth).astype(bool)
    pos, neg = scores[truth], scores[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean())


def auc_array(ratings: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """AUCs of every method and reader of a ``[method, reader, case]`` array, shape ``[method, reader]``."""
    return np.array([[auc(r, truth) for r in per_method] for per_method in ratings])


def roc_points(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive fractions of the empirical ROC, from (0, 0) to (1, 1).

    One point per distinct score used as threshold ("positive if score ≥ t"), so tied scores
    make one diagonal step, as the trapezoidal AUC assumes.
    """
    scores, truth = np.asarray(scores, float), np.asarray(truth).astype(bool)
    thresholds = np.unique(scores)[::-1]
    tpf = [0.0] + [float((scores[truth] >= t).mean()) for t in thresholds]
    fpf = [0.0] + [float((scores[~truth] >= t).mean()) for t in thresholds]
    return np.array(fpf), np.array(tpf)


def rating_array(records: list[dict]) -> dict:
    """Diagnostic answers of one question as ``ratings[method, reader, case]`` and ``truth[case]``.

    The OR analysis needs the fully crossed design (every reader reads every case under every
    method); cases missing any reading are left out and counted in ``dropped_cases``.
    """
    methods = method_order(r["method"] for r in records)
    readers = sorted({r["reader"] for r in records})
    answers: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    truth: dict[str, int] = {}
    for r in records:
        answers[r["case"]][(r["method"], r["reader"])] = float(r["answer"])
        truth[r["case"]] = int(r["truth"])
    complete = sorted(c for c, a in answers.items() if len(a) == len(methods) * len(readers))
    ratings = np.array([[[answers[c][(m, j)] for c in complete] for j in readers] for m in methods])
    return {"methods": methods, "readers": readers, "cases": complete,
            "ratings": ratings.reshape(len(methods), len(readers), len(complete)),
            "truth": np.array([truth[c] for c in complete], int), "dropped_cases": len(answers) - len(complete)}
