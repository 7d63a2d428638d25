"""Selecting and grouping answer records; shared by every statistics module."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
from statsmodels.stats.multitest import multipletests

#: the method listed first (the reference of comparisons) when a study has one
REFERENCE_NAMES = ("original", "reference", "baseline")


def analysable(records: Iterable[dict], kind: str | None = None, repeats: bool = False) -> list[dict]:
    """Records that enter the analysis: never training cases; repeats only when asked for.

    Repeated reads exist to measure intra-reader agreement; counting them in the method
    comparisons would weight the repeated cases twice.
    """
    return [
        r for r in records
        if not r.get("training") and (repeats or not r.get("repeat")) and (kind is None or r["kind"] == kind)
    ]


def by_question(records: Iterable[dict]) -> dict[str, list[dict]]:
    """Records grouped by question id, in the order the questions first appear."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["question"]].append(r)
    return dict(groups)


def method_order(names: Iterable[str | None]) -> list[str]:
    """Method names with the reference (``original``) first, the rest alphabetical.

    A fixed order makes tables and plots comparable between reports and says which method
    the ordinal model and the win tables compare against.
    """
    unique = sorted({n for n in names if n is not None})
    first = [n for n in unique if n.lower() in REFERENCE_NAMES]
    return first + [n for n in unique if n not in first]


def label(records: list[dict]) -> str:
    """The criterion of a question's records (``noise``), or its id when it has none."""
    return records[0].get("criterion") or records[0]["question"]


def levels(group: list[dict], scales: dict[str, int] | None = None) -> tuple[int, ...]:
    """A Likert question's levels 1..n: n from the design's scale, else the largest answer (at least 5)."""
    n = (scales or {}).get(group[0]["question"]) or max([5] + [int(r["answer"]) for r in group])
    return tuple(range(1, n + 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values; NaN (a test that could not run) stays NaN and is not counted."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def preferred(record: dict) -> str:
    """The method a pairwise answer prefers, or ``"equal"``: independent of the side shown."""
    answer = record["answer"]
    return record[answer] if answer in ("left", "right") else "equal"
