"""Inputs outside the range where a result means something are refused, or run with a warning."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from meddiffusion import cli
from meddiffusion.checks import AGATSTON_SLICE_MM, Limits
from meddiffusion.io import Volume, write_volume


def chest(path, spacing=(0.7, 0.7, 3.0), slices=4):
    array = np.full((slices, 32, 32), -1000.0, np.float32)
    array[:, 6:26, 6:26] = 40.0
    array[:, 14:17, 14:17] = 400.0
    write_volume(Volume(array, spacing=spacing, modality="CT"), path)
    return str(path)


def meddiff(*argv) -> tuple[int, list[dict]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main([str(a) for a in argv] + ["--events", "jsonl"])
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def test_limits_refuse_and_warn():
    limits = Limits(min_slices=3, slice_mm=(0.5, 6.0), slice_mm_usual=(2.5, 3.5), why="a reason")
    with pytest.raises(ValueError, match=r"'ct' has 1 axial slice\(s\); at least 3 are needed \(a reason\)"):
        limits.check((1, 8, 8), (0.7, 0.7, 3.0), name="ct")
    with pytest.raises(ValueError, match="slice spacing of 50 mm; expected 0.5-6 mm"):
        limits.check((4, 8, 8), (0.7, 0.7, 50.0), name="ct")
    [warning] = limits.check((4, 8, 8), (0.7, 0.7, 5.0), name="ct")
    assert "outside the usual 2.5-3.5 mm" in warning
    assert limits.check((4, 8, 8), (0.7, 0.7, 3.0), name="ct") == []


def test_agatston_at_50_mm_slices_is_refused_and_at_5_mm_warned(tmp_path):
    code, events = meddiff("agatston", chest(tmp_path / "thick.nrrd", spacing=(0.7, 0.7, 50.0)), "-o", tmp_path / "a.csv")
    assert code == 2 and "defined for 3 mm slices" in events[-1]["message"] and not (tmp_path / "a.csv").exists()
    code, events = meddiff("agatston", chest(tmp_path / "five.nrrd", spacing=(0.7, 0.7, 5.0)), "-o", tmp_path / "b.csv")
    assert code == 0 and events[-1]["warnings"] and any("warning" in e.get("message", "") for e in events)
    assert AGATSTON_SLICE_MM.check((4, 8, 8), (0.7, 0.7, 3.0), name="x") == []


def test_a_dose_too_low_to_simulate_is_refused(tmp_path):
    code, events = meddiff("simulate-ldct", chest(tmp_path / "ct.nrrd"), "-o", tmp_path / "low.nrrd", "--dose", "1e-9")
    assert code == 2 and "--dose must be a fraction in [0.01, 1]" in events[-1]["message"]


@pytest.mark.parametrize("flag, value, message", [("--lr", "-1", "--lr must be a positive learning rate"),
                                                  ("--val-every", "-5", "--val-every must be >= 0")])
def test_training_settings_that_cannot_train_are_refused(tmp_path, flag, value, message):
    code, events = meddiff("train", "ldct", "--config", "tiny", "--out", tmp_path / "run", flag, value)
    assert code == 2 and message in events[-1]["message"] and not (tmp_path / "run").exists()
