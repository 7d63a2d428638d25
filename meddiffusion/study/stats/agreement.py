"""Agreement between readers (inter-reader) and of a reader with themselves (intra-reader).

Inter-reader, on first reads of Likert questions (an item is a case shown with one method):
quadratic-weighted Cohen's kappa for every pair of readers, the ICC of pingouin and
Krippendorff's ordinal alpha over all readers (which tolerates items a reader did not rate).
Intra-reader, on repeated reads: quadratic kappa (Likert), agreement and Cohen's kappa on the
preferred method (pairwise, so a repeat shown with the sides swapped still matches) and
Spearman's rho of the confidences (diagnostic).
"""

from __future__ import annotations

import warnings
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd
import pingouin
from scipy import stats
from statsmodels.stats.inter_rater import cohens_kappa

from meddiffusion.study.stats.common import by_question, label, levels, preferred
#: the ICC reported: two-way random effects, absolute agreement, single reader (Shrout–Fleiss
#: ICC(2,1)), under its names in pingouin ≥ 0.6 and before
ICC_TYPES = ("ICC(A,1)", "ICC2")


def weighted_kappa(a, b, levels=(1, 2, 3, 4, 5), weights: str | None = "quadratic") -> float:
    """Cohen's kappa of two raters' paired answers (quadratic weights by default; None = unweighted).

    NaN when it is undefined (fewer than two items, or both raters gave a single level).
    """
    index = {level: i for i, level in enumerate(levels)}
    table = np.zeros((len(levels), len(levels)))
    for x, y in zip(a, b):
        table[index[x], index[y]] += 1
    if table.sum() < 2:
        return float("nan")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        kappa = cohens_kappa(table, wt=weights, return_results=False)
    return float(kappa)


def _item(record: dict) -> tuple:
    """What makes two answers comparable: the same case, question and image(s) shown."""
    sides = frozenset((record.get("left"), record.get("right")))
    return record["case"], record["question"], record.get("method"), sides


def ratings_table(group: list[dict]) -> pd.DataFrame:
    """Items × readers table of first-read Likert scores (NaN where a reader gave none)."""
    frame = pd.DataFrame({"item": [(r["case"], r["method"]) for r in group], "reader": [r["reader"] for r in group],
                          "answer": [float(r["answer"]) for r in group]})
    return frame.pivot_table(index="item", columns="reader", values="answer", aggfunc="first")


def inter_reader(records: list[dict], scales: dict[str, int] | None = None) -> list[dict]:
    """Per Likert question: kappa for each reader pair, ICC(2,1) with its 95 % CI, ordinal alpha.

    ``scales``: number of levels per question id (the design's scale; default from the answers).
    """
    rows = []
    for question, group in by_question(records).items():
        table, scale = ratings_table(group), levels(group, scales)
        base = {"question": question, "criterion": label(group), "kind": "inter-reader"}
        for a, b in combinations(table.columns, 2):
            both = table[[a, b]].dropna()
            rows.append({**base, "statistic": "weighted kappa (quadratic)", "readers": f"{a} vs {b}",
                         "value": weighted_kappa(both[a].astype(int), both[b].astype(int), scale), "n": len(both)})
        complete = table.dropna()
        if table.shape[1] >= 2 and len(complete) >= 3 and complete.to_numpy().std() > 0:
            long = complete.reset_index(drop=True).rename_axis("target").reset_index().melt(
                id_vars="target", var_name="reader", value_name="score")
            with warnings.catch_warnings():  # pandas deprecations inside pingouin
                warnings.simplefilter("ignore")
                icc = pingouin.intraclass_corr(long, targets="target", raters="reader", ratings="score")
            icc = icc.set_index("Type")
            icc = icc.loc[next(t for t in ICC_TYPES if t in icc.index)]
            low, high = icc["CI95%"] if "CI95%" in icc else icc["CI95"]
            rows.append({**base, "statistic": "ICC(2,1) absolute agreement", "readers": "all",
                         "value": float(icc["ICC"]), "ci_low": float(low), "ci_high": float(high),
                         "n": len(complete)})
        pairable = table[table.notna().sum(axis=1) >= 2].to_numpy()
        if np.unique(pairable[~np.isnan(pairable)]).size >= 2:  # alpha needs items rated twice, not all alike
            alpha = krippendorff.alpha(reliability_data=table.to_numpy().T, value_domain=list(scale),
                                       level_of_measurement="ordinal")
            rows.append({**base, "statistic": "Krippendorff alpha (ordinal)", "readers": "all",
                         "value": float(alpha), "n": len(table)})
    return rows


def _repeat_pairs(records: list[dict]) -> dict[tuple, list[tuple[dict, dict]]]:
    """``{(reader, question): [(first read, repeated read), ...]}``."""
    first = {(r["reader"], _item(r)): r for r in records if not r.get("repeat") and not r.get("training")}
    pairs: dict[tuple, list[tuple[dict, dict]]] = {}
    for r in records:
        if r.get("repeat") and not r.get("training") and (r["reader"], _item(r)) in first:
            pairs.setdefault((r["reader"], r["question"]), []).append((first[(r["reader"], _item(r))], r))
    return pairs


def intra_reader(records: list[dict], scales: dict[str, int] | None = None) -> list[dict]:
    """Per reader and question: how well the repeated reads agree with the first reads."""
    rows = []
    for (reader, question), pairs in sorted(_repeat_pairs(records).items()):
        kind = pairs[0][0]["kind"]
        base = {"question": question, "criterion": label([pairs[0][0]]), "kind": "intra-reader",
                "readers": reader, "n": len(pairs)}
        if kind == "likert":
            scale = levels([a for a, _ in pairs] + [b for _, b in pairs], scales)
            value = weighted_kappa([int(a["answer"]) for a, _ in pairs], [int(b["answer"]) for _, b in pairs], scale)
            rows.append({**base, "statistic": "weighted kappa (quadratic)", "value": value})
        elif kind == "pairwise":
            a, b = [preferred(x) for x, _ in pairs], [preferred(y) for _, y in pairs]
            choices = sorted(set(a) | set(b))
            rows.append({**base, "statistic": "agreement (same preference)",
                         "value": float(np.mean([x == y for x, y in zip(a, b)]))})
            rows.append({**base, "statistic": "Cohen kappa (preference)",
                         "value": weighted_kappa(a, b, choices, weights=None)})
        elif len(pairs) >= 3:
            rho = stats.spearmanr([float(a["answer"]) for a, _ in pairs], [float(b["answer"]) for _, b in pairs])
            rows.append({**base, "statistic": "Spearman rho (confidence)", "value": float(rho.statistic)})
    return rows
