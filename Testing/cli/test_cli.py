"""``meddiff`` end to end as a child process, the way Slicer and researchers run it."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meddiffusion.io import Volume, read_volume, write_volume

from cli_runner import jsonl, meddiff  # Testing/cli's one child-process runner


#: seconds any one of these quick commands may take
TIMEOUT = 120


@pytest.fixture
def calcium_ct(tmp_path):
    """A small CT: air around a water cylinder holding two calcified lesions, 3 mm slices.

    Lesion A: 2×2 mm, peak 250 HU, on one slice -> 4 mm² × 2 = 8.
    Lesion B: 3×2 mm on two slices, peaks 450 and 180 HU -> 6×4 + 6×1 = 30.  Total 38.
    """
    hu = np.full((6, 40, 40), -1000.0, np.float32)
    yy, xx = np.mgrid[:40, :40]
    hu[:, (yy - 20) ** 2 + (xx - 20) ** 2 < 18 ** 2] = 40.0
    hu[2, 10:12, 10:12] = 250.0
    hu[3, 25:28, 25:27] = 450.0
    hu[4, 25:28, 25:27] = 180.0
    path = write_volume(Volume(hu, spacing=(1.0, 1.0, 3.0), modality="CT"), tmp_path / "ct.nrrd")
    return path, hu


def test_help_lists_every_command_with_an_example():
    result = meddiff("--help", timeout=TIMEOUT)
    assert result.returncode == 0
    for name in ("info", "agatston", "phantom", "bench"):
        assert name in result.stdout
        sub = meddiff(name, "--help", timeout=TIMEOUT)
        assert sub.returncode == 0, sub.stderr
        assert "example" in sub.stdout


def test_info_reports_versions_and_device():
    result = meddiff("info", "--events", "jsonl", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert final["event"] == "result"
    assert final["versions"]["torch"].startswith("2.")
    assert final["device"] in ("cpu", "cuda", "mps")


def test_agatston_end_to_end(tmp_path, calcium_ct):
    ct, hu = calcium_ct
    table, lesions = tmp_path / "agatston.csv", tmp_path / "lesions.nrrd"
    result = meddiff("agatston", ct, "-o", table, "--lesions", lesions, "--events", "jsonl", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    events = jsonl(result.stdout)
    final = events[-1]
    assert final["event"] == "result"
    assert final["total"] == pytest.approx(38.0)
    assert final["category"] == "mild" and final["num_lesions"] == 2
    assert {e["stage"] for e in events if e["event"] == "progress"} == {"read", "score", "write"}
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 3                                  # two lesions + totals
    lesion_map = read_volume(lesions).array
    assert set(np.unique(lesion_map)) == {0, 1, 2}
    assert (lesion_map > 0).sum() == 4 + 6 + 6


def test_agatston_seg_restricts_scoring(tmp_path, calcium_ct):
    ct, hu = calcium_ct
    seg = np.zeros_like(hu)
    seg[:, 20:, 20:] = 3                                    # covers lesion B only
    seg_path = write_volume(Volume(seg, spacing=(1.0, 1.0, 3.0)), tmp_path / "seg.nrrd")
    result = meddiff("agatston", ct, "-o", tmp_path / "t.csv", "--seg", seg_path, "--events", "jsonl", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert jsonl(result.stdout)[-1]["total"] == pytest.approx(30.0)


def test_bad_input_exits_2_with_a_clear_message(tmp_path, calcium_ct):
    ct, hu = calcium_ct
    not_hu = write_volume(Volume((hu + 1000) / 3000, spacing=(1, 1, 3)), tmp_path / "norm.nrrd")
    result = meddiff("agatston", not_hu, "-o", tmp_path / "t.csv", "--events", "jsonl", timeout=TIMEOUT)
    assert result.returncode == 2
    error = jsonl(result.stdout)[-1]
    assert error["event"] == "error" and error["kind"] == "input"
    assert "Hounsfield" in error["message"]
    assert not (tmp_path / "t.csv").exists()

    wrong_grid = write_volume(Volume(np.zeros((6, 20, 20), np.float32)), tmp_path / "seg.nrrd")
    result = meddiff("agatston", ct, "-o", tmp_path / "t.csv", "--seg", wrong_grid, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "must be on the CT's grid" in result.stderr

    result = meddiff("agatston", tmp_path / "missing.nrrd", "-o", tmp_path / "t.csv", timeout=TIMEOUT)
    assert result.returncode == 2 and "input not found" in result.stderr


def test_bench_model_option_is_checked_before_any_work():
    result = meddiff("bench", "phantom", "--model", "motion-prodm-small", timeout=TIMEOUT)
    assert result.returncode == 2 and "--model and --split work with ldct, motion" in result.stderr
    result = meddiff("bench", "motion", "--quick", "--model", "no-such-model", timeout=TIMEOUT)
    assert result.returncode == 2 and "unknown model 'no-such-model'" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_cancels_cleanly_with_exit_130_and_no_output(tmp_path, sig):
    out = tmp_path / "cine.seq.nrrd"
    child = subprocess.Popen([sys.executable, "-m", "meddiffusion", "phantom", "--modality", "mr",
                              "--frames", "40", "--size", "96,96,48", "-o", str(out), "--events", "jsonl"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    events = []
    for line in child.stdout:                      # wait until the work has really started
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["done"] >= 1:
            break
    child.send_signal(sig)
    rest, _ = child.communicate(timeout=120)
    events += jsonl(rest)
    assert child.returncode == 130
    assert events[-1]["event"] == "cancelled"
    assert list(tmp_path.iterdir()) == []          # no output, no temp file


def test_main_job_on_the_bundled_sample_finds_the_phantom_plaques(tmp_path):
    """README's main job: every lesion found lies on a known plaque of the sample's phantom."""
    from meddiffusion.phantoms import Phantom

    data = Path(__file__).resolve().parents[2] / "meddiffusion" / "data"
    table = tmp_path / "agatston.csv"
    result = meddiff("agatston", data / "sample_chest_ct.nrrd", "--seg", data / "sample_chest_coronaries.nrrd",
                     "-o", table, "--lesions", tmp_path / "lesions.nrrd", "--events", "jsonl", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert final["num_lesions"] >= 1 and final["total"] > 0

    truth = json.loads((data / "sample_chest_truth.json").read_text())
    phantom = Phantom.sample("NOR", seed=truth["seed"], plaques=len(truth["plaques"]))
    plaques = phantom.plaque_positions(truth["sample"]["time_s"])
    for row in csv.DictReader(open(table)):
        if row["lesion"] == "total":
            continue
        centroid = np.array([float(row[f"centroid_{a}_mm"]) for a in "xyz"])
        assert np.linalg.norm(plaques - centroid, axis=1).min() < 3.0
