"""The shared bench harness: case loop with progress and cancellation, timing, table, result, -o files."""

import json

import numpy as np
import pytest
import torch

from meddiffusion.benchmarks.harness import clocked, each_case, machine, markdown_table, result, timed, write
from meddiffusion.progress import Cancelled, Progress


class Events:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


def test_each_case_reports_every_case_and_stops_when_cancelled():
    sink = Events()
    progress = Progress(sink, min_interval_s=0.0)
    assert list(each_case(progress, "cases", iter("abc"))) == ["a", "b", "c"]
    assert [(e["done"], e["total"]) for e in sink.events] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert list(each_case(None, "cases", range(2))) == [0, 1]     # a bench called as a library

    done = []
    with pytest.raises(Cancelled):
        for case in each_case(progress, "cases", range(5)):
            done.append(case)
            if case == 1:
                progress.cancel()
    assert done == [0, 1]                                          # the case in hand finishes, no other starts


def test_timing_helpers():
    calls = []
    assert timed(lambda: calls.append(1), repeats=3, warmup=2) >= 0 and len(calls) == 5
    value, seconds = clocked(sum, [1, 2, 3])
    assert value == 6 and seconds >= 0


def test_markdown_table_writes_cells_as_given():
    assert markdown_table(("method", "MAE"), [("input", "9.50"), ("model", "")]) == [
        "| method | MAE |", "|---|---|", "| input | 9.50 |", "| model |  |"]


def test_result_closes_the_table_with_the_machine_unless_the_bench_placed_it():
    cpu = torch.device("cpu")
    closed = result(["| a |", "|---|"], cpu, rows=[1])
    assert closed == {"table": f"| a |\n|---|\n\n{machine(cpu)}", "machine": machine(cpu), "rows": [1]}
    assert result([f"on {machine(cpu)}", "| a |"], cpu, machine_line=False)["table"] == f"on {machine(cpu)}\n| a |"


def test_write_puts_the_table_json_and_pictures_beside_each_other(tmp_path):
    figures = {"table": "| a |\n|---|", "machine": "here", "rows": {"x": (1.0, float("nan"))}}
    picture = np.zeros((4, 6, 3), np.uint8)
    paths = write(figures, tmp_path / "out" / "bench.md", {"lesions": picture})
    assert [p.name for p in paths] == ["bench.md", "bench.json", "bench_lesions.png"]
    assert (tmp_path / "out" / "bench.md").read_text() == "| a |\n|---|\n"
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["machine"] == "here"
    assert (tmp_path / "out" / "bench_lesions.png").stat().st_size > 0
