"""``meddiff motion-correct`` end to end as a child process, with a tiny ProDM network registered in a
temporary user model folder, on the bundled non-gated sample (256×256×40)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiffusion.catalog import ModelEntry, register_user_model
from meddiffusion.io import Volume, read_segmentation, read_volume, write_volume
from meddiffusion.nets import PRODM_CONFIGS, ProDMUNet

from cli_runner import jsonl, meddiff  # Testing/cli's one child-process runner

SAMPLE = Path(__file__).resolve().parents[2] / "meddiffusion" / "data" / "sample_nongated_chest_ct.nrrd"
MODEL = "tiny-motion-cli"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = PRODM_CONFIGS["tiny"]
    architecture = {
        "network": "ProDMUNet",
        "kwargs": {"context_slices": 3, "channels": list(config["channels"]),
                   "num_res_blocks": config["num_res_blocks"], "norm_num_groups": config["norm_num_groups"]},
        "objective": "bridge",
        "diffusion": {"kind": "brownian_bridge", "num_timesteps": 1000, "schedule": "linear", "max_var": 1.0},
        "sampler": {"steps": 10, "eta": 0.0}, "patch_size": 64, "calcium_loss": {"lambda": 20.0, "tau_hu": 60.0},
    }
    entry = ModelEntry(id=MODEL, task="motion", version="1.0", architecture=architecture,
                       normalization={"kind": "hu_window", "min_hu": -200, "max_hu": 800, "range": [-1, 1]},
                       description="untrained tiny ProDM network for tests")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDIFF_MODEL_DIR", str(folder))
        register_user_model(entry, ProDMUNet(**config).state_dict())
    # one thread: on a shared 2-core machine two OpenMP threads stall each other on a tiny network
    return {**os.environ, "MEDDIFF_MODEL_DIR": str(folder), "MEDDIFF_THREADS": "1"}


def same_grid(a, b):
    return (a.shape == b.shape and np.allclose(a.spacing, b.spacing) and np.allclose(a.origin, b.origin)
            and np.allclose(a.direction, b.direction))


def test_motion_correct_writes_ct_segmentation_and_table(tmp_path, env):
    out, seg, table = tmp_path / "corrected.nrrd", tmp_path / "calcium.seg.nrrd", tmp_path / "agatston.csv"
    result = meddiff("motion-correct", SAMPLE, "-o", out, "--seg", seg, "--table", table, "--model", MODEL,
                     "--steps", "2", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    events = jsonl(result.stdout)
    final = events[-1]
    assert final["event"] == "result" and final["model"] == MODEL and final["steps"] == 2
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert {"read", "region", "correct", "score", "write"} <= set(stages)
    correct = [e for e in events if e["event"] == "progress" and e["stage"] == "correct"]
    assert correct[-1]["done"] == correct[-1]["total"] == final["windows"] > 0

    source, corrected = read_volume(SAMPLE), read_volume(out)
    assert same_grid(source, corrected)
    inside = np.zeros(source.shape, bool)
    for i0, i1, j0, j1, k0, k1 in final["boxes"]:
        inside[k0:k1, j0:j1, i0:i1] = True
    assert inside.any() and np.array_equal(corrected.array[~inside], source.array[~inside])
    assert final["corrected_slices"] == [int(np.flatnonzero(inside.any(axis=(1, 2)))[0]),
                                         int(np.flatnonzero(inside.any(axis=(1, 2)))[-1]) + 1]
    assert final["region"] == "auto"

    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["scan", "lesion", "first_slice", "last_slice", "area_mm2", "peak_hu", "weight",
                             "agatston", "volume_mm3", "category"]
    totals = {r["scan"]: r for r in rows if r["lesion"] == "total"}
    for scan in ("before", "after"):
        assert float(totals[scan]["agatston"]) == pytest.approx(final[scan]["agatston"])
        assert totals[scan]["category"] == final[scan]["category"]
        assert sum(1 for r in rows if r["scan"] == scan and r["lesion"] != "total") == final[scan]["lesions"]
    assert final["before"]["agatston"] > 0 and len(final["largest_lesion_lps"]) == 3

    layers, segments, grid = read_segmentation(seg)
    assert len(layers) == 2 and same_grid(grid, source)
    names = [s["name"] for s in segments]
    assert names[:final["before"]["lesions"]] == [f"before L{i + 1}" for i in range(final["before"]["lesions"])]
    assert sum(n.startswith("after ") for n in names) == final["after"]["lesions"]
    assert int(layers[0].max()) == final["before"]["lesions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agatston.csv", "calcium.seg.nrrd", "corrected.nrrd"]


def test_motion_correct_rejects_bad_input(tmp_path, env, monkeypatch, capsys):
    """In process (``cli.main``), so the four refusals cost no interpreter start-ups."""
    from meddiffusion.cli import main

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", env["MEDDIFF_MODEL_DIR"])

    def refused(*args) -> str:
        code = main(["motion-correct", *map(str, args), "--events", "jsonl"])
        event = jsonl(capsys.readouterr().out)[-1]
        assert code == 2 and event["event"] == "error" and event["kind"] == "input"
        return event["message"]

    out = tmp_path / "o.nrrd"
    assert "outside the volume" in refused(SAMPLE, "-o", out, "--roi", 0, 300, 0, 10, 0, 5, "--model", MODEL)
    assert "empty along K" in refused(SAMPLE, "-o", out, "--roi", 0, 10, 0, 10, 5, 5, "--model", MODEL)
    mr = write_volume(Volume(np.full((3, 16, 16), 300.0, np.float32), modality="MR"), tmp_path / "mr.nrrd")
    assert "Hounsfield" in refused(mr, "-o", out, "--model", MODEL)
    assert "unknown model" in refused(SAMPLE, "-o", out, "--model", "no-such-motion-model")
    assert ".csv" in refused(SAMPLE, "-o", out, "--table", tmp_path / "t.txt", "--model", MODEL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mr.nrrd"]


def test_motion_correct_cancel_leaves_no_output(tmp_path, env):
    out, seg, table = tmp_path / "out.nrrd", tmp_path / "calcium.seg.nrrd", tmp_path / "agatston.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "meddiffusion", "motion-correct", str(SAMPLE), "-o", str(out), "--seg", str(seg),
         "--table", str(table), "--roi", "0", "256", "0", "256", "0", "40", "--model", MODEL, "--steps", "20",
         "--batch-size", "1", "--events", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env)
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1].get("stage") == "correct" and events[-1]["done"] > 0:
            process.send_signal(signal.SIGINT)
            break
    events += [json.loads(line) for line in process.stdout if line.strip()]
    assert process.wait(timeout=120) == 130
    assert events[-1]["event"] == "cancelled"
    assert list(tmp_path.iterdir()) == []


def test_motion_correct_help_has_an_example(capsys):
    from meddiffusion.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["motion-correct", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and "examples:" in text and "--roi I0 I1 J0 J1 K0 K1" in text
