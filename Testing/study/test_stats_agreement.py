"""Agreement statistics against independent computations and textbook examples."""

from __future__ import annotations

import krippendorff
import numpy as np
import pingouin
import pytest

from meddiffusion.study.stats import agreement
from meddiffusion.study.stats.common import analysable

from simulated_readers import simulate


def kappa_by_hand(a, b, levels=(1, 2, 3, 4, 5)) -> float:
    """Quadratic-weighted kappa from its definition: 1 − Σ w·observed / Σ w·expected."""
    k = len(levels)
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[levels.index(x), levels.index(y)] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    i, j = np.indices((k, k))
    w = (i - j) ** 2
    return 1 - (w * observed).sum() / (w * expected).sum()


def icc21_by_hand(x: np.ndarray) -> float:
    """Shrout & Fleiss ICC(2,1) from the two-way ANOVA mean squares of ``x[target, rater]``."""
    n, k = x.shape
    grand = x.mean()
    msr = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((x.mean(0) - grand) ** 2).sum() / (k - 1)
    mse = ((x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + grand) ** 2).sum() / ((n - 1) * (k - 1))
    return (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)


def test_weighted_kappa_matches_the_definition():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 6, 50)
    b = np.clip(a + rng.integers(-1, 2, 50), 1, 5)
    assert agreement.weighted_kappa(a, b) == pytest.approx(kappa_by_hand(list(a), list(b)), abs=1e-12)
    assert agreement.weighted_kappa(a, a) == pytest.approx(1.0)
    assert np.isnan(agreement.weighted_kappa([3], [3]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pingouin_icc_matches_the_hand_formula_on_the_wine_example():
    wine = pingouin.read_dataset("icc")
    table = wine.pivot(index="Wine", columns="Judge", values="Scores").to_numpy(float)
    long = wine.rename(columns={"Wine": "target", "Judge": "reader", "Scores": "score"})
    icc = pingouin.intraclass_corr(long, targets="target", raters="reader", ratings="score").set_index("Type")
    found = icc.loc[next(t for t in agreement.ICC_TYPES if t in icc.index), "ICC"]
    assert found == pytest.approx(icc21_by_hand(table), abs=1e-10)
    assert found == pytest.approx(0.728, abs=5e-4)  # Shrout & Fleiss (1979) data, as in pingouin's docs


def test_krippendorff_alpha_matches_krippendorffs_textbook_example():
    """Krippendorff (2011) 'Computing Krippendorff's alpha-reliability', 4 coders, 12 units,
    missing values: ordinal alpha 0.815, interval 0.849, nominal 0.743."""
    nan = np.nan
    data = np.array([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ])
    assert krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff.alpha(reliability_data=data, level_of_measurement="nominal") == pytest.approx(0.743, abs=5e-4)


@pytest.fixture(scope="module")
def study():
    return simulate(n_cases=40, n_readers=3, n_repeats=20, seed=2)


def test_inter_reader_rows_agree_with_independent_computations(study):
    records = analysable(study, "likert")
    rows = agreement.inter_reader(records)
    kappas = {r["readers"]: r for r in rows if r["statistic"].startswith("weighted kappa")}
    assert set(kappas) == {"reader1 vs reader2", "reader1 vs reader3", "reader2 vs reader3"}
    items = {}
    for r in records:
        items.setdefault((r["case"], r["method"]), {})[r["reader"]] = r["answer"]
    a = [v["reader1"] for v in items.values()]
    b = [v["reader2"] for v in items.values()]
    assert kappas["reader1 vs reader2"]["value"] == pytest.approx(kappa_by_hand(a, b), abs=1e-12)
    assert kappas["reader1 vs reader2"]["n"] == 120
    icc = next(r for r in rows if r["statistic"].startswith("ICC"))
    table = np.array([[v[f"reader{j}"] for j in (1, 2, 3)] for v in items.values()], float)
    assert icc["value"] == pytest.approx(icc21_by_hand(table), abs=1e-10)
    assert icc["ci_low"] < icc["value"] < icc["ci_high"]
    alpha = next(r for r in rows if r["statistic"].startswith("Krippendorff"))
    assert 0.4 < alpha["value"] < 0.9  # readers share the case quality but add their own noise


def test_intra_reader_pairs_each_repeat_with_its_first_read(study):
    rows = agreement.intra_reader(study)
    likert_rows = [r for r in rows if r["question"] == "noise"]
    assert [r["readers"] for r in likert_rows] == ["reader1", "reader2", "reader3"]
    assert all(r["n"] == 20 * 3 for r in likert_rows)  # 20 repeated cases × 3 methods
    first = {(r["case"], r["method"]): r["answer"] for r in study
             if r["reader"] == "reader1" and r["question"] == "noise" and not r["repeat"]}
    again = [(first[(r["case"], r["method"])], r["answer"]) for r in study
             if r["reader"] == "reader1" and r["question"] == "noise" and r["repeat"]]
    assert likert_rows[0]["value"] == pytest.approx(kappa_by_hand(*zip(*again)), abs=1e-12)
    preference = {r["statistic"]: r for r in rows if r["question"] == "overall" and r["readers"] == "reader1"}
    assert preference["agreement (same preference)"]["n"] == 20 * 3
    assert 0 < preference["Cohen kappa (preference)"]["value"] < 1
    assert any(r["statistic"] == "Spearman rho (confidence)" for r in rows)


def test_a_repeat_with_sides_swapped_agrees_when_the_same_method_is_preferred():
    base = {"case": "c", "question": "q", "kind": "pairwise", "criterion": "q", "method": None,
            "reader": "r", "training": False}
    first = dict(base, left="A", right="B", answer="left", repeat=False)
    again = dict(base, left="B", right="A", answer="right", repeat=True)
    rows = agreement.intra_reader([first, again])
    assert next(r for r in rows if r["statistic"].startswith("agreement"))["value"] == 1.0
