"""How well a method's scores agree with reference scores, and how sure a difference is.

A bench compares, case by case, a score from a method's output (an Agatston score of a
corrected CT, say) with the score of the truth: :func:`agreement` gives the mean absolute
error, Pearson r and, given a classifier, the share of cases put in the right class. On tens
of cases a few large ones carry most of the error, so a difference between methods comes with
a :func:`bootstrap_interval` over cases; :func:`cut_interval` is the one for an error cut.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["mean_absolute_error", "pearson", "agreement", "error_cut", "bootstrap_interval", "cut_interval"]

#: resamples of a bootstrap interval: enough for stable 2.5 / 97.5 percentiles
RESAMPLES = 2000


def mean_absolute_error(reference, values) -> float:
    return float(np.abs(np.asarray(values, float) - np.asarray(reference, float)).mean())


def pearson(reference, values) -> float:
    """Pearson r; NaN when either side is constant (r is undefined there)."""
    reference, values = np.asarray(reference, float), np.asarray(values, float)
    if reference.std() == 0 or values.std() == 0:
        return float("nan")
    return float(np.corrcoef(reference, values)[0, 1])


def agreement(reference, values, classify: Callable[[float], object] | None = None) -> dict[str, float]:
    """``mae`` and ``pearson`` of ``values`` against ``reference``; with ``classify`` also
    ``accuracy``, the percentage of cases whose value falls in the reference's class."""
    reference, values = np.asarray(reference, float), np.asarray(values, float)
    figures = {"mae": mean_absolute_error(reference, values)}
    if classify is not None:
        figures["accuracy"] = 100.0 * float(np.mean([classify(a) == classify(b) for a, b in zip(reference, values)]))
    figures["pearson"] = pearson(reference, values)
    return figures


def error_cut(reference: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Percent by which ``after`` cuts the mean absolute error of ``before``, along the last axis.

    ``1 - MAE(after) / MAE(before)``; not finite where ``before`` has no error (nothing to cut).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (1 - np.abs(after - reference).mean(axis=-1) / np.abs(before - reference).mean(axis=-1))


def bootstrap_interval(statistic: Callable[..., np.ndarray], *samples, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = 95.0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)``, the cases resampled in pairs.

    The samples are per-case values of one set of cases (one entry per case in each), so each
    resample draws the same cases from all of them. ``statistic`` gets the resampled samples
    as (resamples, cases) arrays and returns one value per row; resamples where it is not
    finite (undefined on the cases drawn) are left out. (NaN, NaN) when none is finite.
    """
    arrays = [np.asarray(sample, float) for sample in samples]
    picks = np.random.default_rng(seed).integers(0, len(arrays[0]), size=(resamples, len(arrays[0])))
    values = np.asarray(statistic(*(array[picks] for array in arrays)), float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (100.0 - level) / 2
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def cut_interval(reference, before, after, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 95.0) -> tuple[float, float]:
    """Interval (percent) of the :func:`error_cut` from ``before`` to ``after``, cases resampled in pairs.

    Resamples whose ``before`` has no error (only error-free cases drawn) have no cut and are left out.
    """
    return bootstrap_interval(error_cut, reference, before, after, resamples=resamples, seed=seed, level=level)
