"""``analyze`` on a simulated study: every file written, the effects found, training and repeats kept out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from meddiffusion.study.analysis import TABLES, analyze
from meddiffusion.study.design import Case, Design, default_question

from simulated_readers import DESIGN, simulate


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, analyze(simulate(n_cases=60, seed=0), DESIGN, out, n_boot=100)


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_table_plot_and_the_report_are_written(result):
    out, found = result
    for name in TABLES:
        assert Path(found["files"][name]) == out / f"{name}.csv" and rows(out / f"{name}.csv"), name
    for stem in ("likert_noise", "preference_overall", "roc_lesion"):
        png = out / f"{stem}.png"
        assert found["files"][f"figure_{stem}"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    for heading in ("## Likert scores", "## Agreement", "## Pairwise preference", "## Diagnostic accuracy (ROC)",
                    "## Planning the next study (sample size)", "## Methods"):
        assert heading in text
    assert "](likert_noise.png)" in text and "| B | 240 |" in text
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{t}.csv" for t in TABLES] + ["report.md", "likert_noise.png", "preference_overall.png", "roc_lesion.png"])


def test_headline_orders_the_methods_and_finds_the_diagnostic_difference(result):
    _, found = result
    headline = found["headline"]
    assert headline["likert"] == {"noise": "B"}
    assert headline["preference"]["overall"][0] == "B"
    mrmc = headline["mrmc"]["lesion"]
    assert max(mrmc["aucs"], key=mrmc["aucs"].get) == "B" and mrmc["p"] < 0.01
    assert "report.md" in found["summary"] and any("cases" in line for line in headline["sample_size"])


def test_training_is_left_out_and_repeats_only_feed_intra_reader_agreement(result):
    out, found = result
    assert found["headline"]["training_answers"] > 0 and found["headline"]["repeat_answers"] > 0
    summary = {r["method"]: r for r in rows(out / "likert_summary.csv")}
    assert {int(r["n"]) for r in summary.values()} == {60 * 4}  # one first read per reader and case
    intra = [r for r in rows(out / "agreement.csv") if r["kind"] == "intra-reader"]
    assert intra and {int(r["n"]) for r in intra if r["question"] == "noise"} == {10 * 3}
    mrmc = {(r["first"], r["second"]): r for r in rows(out / "mrmc.csv") if r["comparison"] == "difference"}
    assert int(mrmc[("original", "B")]["n_cases"]) == 60
    assert float(mrmc[("original", "B")]["difference"]) > 0.05 and float(mrmc[("original", "B")]["p"]) < 0.01
    assert float(mrmc[("original", "C")]["p"]) > 0.05


def test_a_study_without_some_kinds_still_writes_every_table(tmp_path):
    """Only Likert answers, the design as the dataclass the study command passes; one reader, so
    agreement and MRMC have nothing to say and their tables are headers only."""
    likert_only = [r for r in simulate(n_cases=12, n_readers=1, seed=4) if r["kind"] == "likert"]
    design = Design(title="One reader", seed=1, questions=[default_question("likert", "noise")], readers=["reader1"],
                    cases=[Case(code=f"c{i}", images=[f"i{i}"]) for i in range(12)])
    found = analyze(likert_only, design, tmp_path, n_boot=10)
    for name in TABLES:
        assert (tmp_path / f"{name}.csv").exists()
    assert rows(tmp_path / "likert_summary.csv") and not rows(tmp_path / "roc.csv")
    assert "## Pairwise preference" not in (tmp_path / "report.md").read_text()
    assert found["headline"]["likert"] == {"noise": "B"}


def test_diagnostic_answers_without_truth_are_noted_not_analysed(tmp_path):
    records = [dict(r, truth=None) if r["kind"] == "diagnostic" else r for r in simulate(n_cases=10, seed=5)]
    analyze(records, DESIGN, tmp_path, n_boot=10)
    assert "no truth in the key" in (tmp_path / "report.md").read_text()
    assert not rows(tmp_path / "mrmc.csv")


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("size", [1, 5, 30, 150])
def test_partial_answers_give_a_report_without_errors_or_warnings(tmp_path, size):
    """An interim analysis sees any subset of the answers: one reader, one method, one class."""
    everything = simulate(n_cases=6, n_readers=2, n_repeats=2, seed=7)
    subset = [everything[i] for i in sorted(np.random.default_rng(size).choice(len(everything), size, replace=False))]
    found = analyze(subset, DESIGN, tmp_path, n_boot=5)
    assert Path(found["files"]["report"]).exists()
