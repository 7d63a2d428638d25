"""``meddiff bench training --quick``: a detached LDCT fine-tune watched as the Training module watches it."""

from __future__ import annotations

import json

from cli_runner import meddiff  # Testing/cli's one child-process runner


def test_training_bench_times_the_run_and_its_curve_updates(tmp_path):
    out = tmp_path / "bench_training.md"
    result = meddiff("bench", "training", "--quick", "--threads", "1", "-o", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.with_suffix(".json").read_text())
    assert figures["steps"] == 20 and figures["parent"] == "ldct-corediff-small"
    assert 0 < figures["first_curve_s"] < figures["wall_s"]
    assert figures["curve_updates"] >= 2 and 0 < figures["longest_curve_gap_s"] < figures["wall_s"]
    gate = figures["gate"]
    assert gate["metric"] == "psnr" and set(gate["parent"]) == set(gate["model"])
    assert figures["improves"] == (gate["model"]["psnr"] > gate["parent"]["psnr"])
    assert "one CT pair 128² × 16" in out.read_text() and "validation PSNR parent → fine-tuned" in out.read_text()
