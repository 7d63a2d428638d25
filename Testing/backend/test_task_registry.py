"""The task registry: a task added at run time appears in every place that lists tasks."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys

import numpy as np
import pytest

from meddiffusion import cli
from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.tasks import registry


def run_cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:  # --help
            code = exit_.code
    return code, out.getvalue()


def ct_file(path, shape=(3, 16, 16)) -> str:
    array = np.full(shape, 40.0, np.float32)
    array[:, :, :3] = -1000.0  # air at one side
    write_volume(Volume(array, spacing=(0.7, 0.7, 2.5), modality="CT"), path)
    return str(path)


def test_the_shipped_tasks_are_registered_and_torch_free():
    code = ("import sys; from meddiffusion.tasks.registry import all_tasks; "
            "print([t.name for t in all_tasks()], 'torch' in sys.modules)")
    import subprocess
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['ldct', 'motion', 'spect', 'petmr', 'cardiac4d'] False"


def test_a_toy_task_appears_in_help_train_bench_and_info(toy_task):
    code, text = run_cli("--help")
    assert code == 0 and "toy-smooth" in text and "blend a CT towards" in text
    code, text = run_cli("train", "--help")
    assert code == 0 and "toy" in text.split("<task>", 1)[1]
    code, text = run_cli("bench", "--help")
    assert code == 0 and "toy" in text
    code, text = run_cli("info", "--json")
    info = json.loads(text)
    toy = next(t for t in info["tasks"] if t["name"] == "toy")
    assert toy["commands"] == ["toy-smooth"] and toy["default_model"] == "toy-constant"
    assert [o["name"] for o in toy["outputs"]] == ["output", "table"] and toy["training"] and toy["bench"]
    assert any(m["id"] == "toy-constant" and m["weights"] == "ok" for m in info["models"])


def test_a_toy_task_runs_through_the_one_command_path(toy_task, tmp_path):
    source = ct_file(tmp_path / "ct.nrrd")
    out, table = tmp_path / "toy.nrrd", tmp_path / "toy.csv"
    code, text = run_cli("toy-smooth", source, "-o", out, "--table", table, "--strength", "0.25", "--events", "none")
    assert code == 0, text
    result = read_volume(out)
    expected = 0.75 * read_volume(source).array + 0.25 * 100.0
    np.testing.assert_allclose(result.array, expected, rtol=1e-6)
    assert result.spacing == pytest.approx((0.7, 0.7, 2.5))
    rows = list(csv.DictReader(open(table)))
    assert [r["image"] for r in rows] == ["before", "after"]
    assert float(rows[1]["mean"]) == pytest.approx(float(expected.mean()), rel=1e-5)


def test_the_command_path_checks_paths_and_inputs_before_any_work(toy_task, tmp_path):
    source = ct_file(tmp_path / "ct.nrrd")
    code, _ = run_cli("toy-smooth", source, "-o", source, "--events", "none")
    assert code == 2
    link = tmp_path / "hard.nrrd"
    link.hardlink_to(source)
    code, _ = run_cli("toy-smooth", source, "-o", tmp_path / "a.nrrd", "--table", tmp_path / "x.txt",
                      "--events", "none")
    assert code == 2
    code, _ = run_cli("toy-smooth", source, "-o", link, "--events", "none")
    assert code == 2 and read_volume(source).array.min() == -1000.0
    mr = tmp_path / "mr.nrrd"
    write_volume(Volume(np.abs(np.random.default_rng(0).normal(300, 50, (3, 16, 16))).astype(np.float32)), mr)
    code, _ = run_cli("toy-smooth", mr, "-o", tmp_path / "b.nrrd", "--events", "none")
    assert code == 2 and not (tmp_path / "b.nrrd").exists()
    code, _ = run_cli("toy-smooth", mr, "-o", tmp_path / "b.nrrd", "--no-hu-check", "--events", "none")
    assert code == 0


def test_a_failing_task_leaves_no_output(toy_task, tmp_path):
    source = ct_file(tmp_path / "ct.nrrd")
    code, _ = run_cli("toy-smooth", source, "-o", tmp_path / "c.nrrd", "--table", tmp_path / "c.csv",
                      "--strength", "2", "--events", "none")
    assert code == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "models"]


def test_single_slice_ct_is_a_valid_input(toy_task, tmp_path):
    source = ct_file(tmp_path / "one.nrrd", shape=(1, 16, 16))
    code, _ = run_cli("toy-smooth", source, "-o", tmp_path / "one_out.nrrd", "--events", "none")
    assert code == 0 and read_volume(tmp_path / "one_out.nrrd").shape == (1, 16, 16)


def test_registering_a_taken_name_is_refused(toy_task):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(toy_task)


def test_help_and_the_task_catalogue_load_no_torch():
    import subprocess

    code = ("import sys; from meddiffusion import cli, catalog; cli.build_parser(); catalog.list_models(); "
            "print(sorted(m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_disk_error_while_writing_exits_2_with_the_reason_and_leaves_nothing(toy_task, tmp_path, monkeypatch):
    import errno

    import meddiffusion.io

    source = ct_file(tmp_path / "ct.nrrd")

    def full_disk(volume, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(meddiffusion.io, "write_volume", full_disk)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["toy-smooth", source, "-o", str(tmp_path / "o.nrrd"), "--table", str(tmp_path / "o.csv"),
                         "--events", "jsonl"])
    event = json.loads(out.getvalue().strip().splitlines()[-1])
    assert code == 2 and event["event"] == "error" and "No space left on device" in event["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "models"]
