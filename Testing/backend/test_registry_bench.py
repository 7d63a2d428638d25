"""A task's bench joins ``meddiff bench`` through the registry alone: the toy task's, end to end."""

import json
import sys
from pathlib import Path

import pytest

from meddiffusion.cli import main
from meddiffusion.tasks import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def toy_bench():
    import toy_task

    registry.register(toy_task.SPEC)
    yield toy_task.SPEC
    registry.unregister(toy_task.SPEC.name)


def bench_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_task_bench_and_the_general_ones_are_listed(capsys):
    listed = bench_help(capsys)
    for name in ("precision", "phantom", "ldct", "motion"):
        assert f"  {name} " in listed
    assert "  toy " not in listed


def test_a_registered_task_brings_its_bench(toy_bench, capsys):
    assert f"  toy        {toy_bench.bench_summary}" in bench_help(capsys)


def test_the_toy_bench_runs_and_writes_its_table_json_and_picture(toy_bench, tmp_path, capsys):
    out = tmp_path / "t.md"
    assert main(["bench", "toy", "-o", str(out), "--events", "none"]) == 0
    table = out.read_text(encoding="utf-8")
    assert "| method | mean-HU MAE | MAE cut vs input (95% CI) | Pearson r | µs/case |" in table
    assert "| input | " in table and "| blend 0.9 | " in table
    figures = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert table.rstrip().endswith(figures["machine"])
    assert set(figures["rows"]) == {"input", "blend 0.5", "blend 0.9"}
    rows = figures["rows"]
    assert rows["blend 0.9"]["mae"] < rows["blend 0.5"]["mae"] < rows["input"]["mae"]
    assert rows["input"]["cut_ci"] == [0.0, 0.0]
    assert "pictures" not in figures and (tmp_path / "t_cases.png").stat().st_size > 0
    assert figures["table"] in capsys.readouterr().out               # the summary printed to the terminal


def test_model_and_split_are_refused_by_a_bench_that_does_not_take_them(toy_bench, tmp_path, capsys):
    assert main(["bench", "toy", "--model", "toy-constant", "--events", "none"]) == 2
    assert "bench 'toy' scores its own models on its own cases; --model and --split work with ldct, motion" in \
        capsys.readouterr().err
