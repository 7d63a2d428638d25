"""``meddiff train spect --source paired-folder`` end to end in a child process: three patients simulated at a
coarse protocol (NAC, AC and the CT, one folder each), tiny PADM parents registered in a temporary model folder;
a student fine-tune through the gate, a teacher fine-tune reading μ from the CTs, and a teacher refused before
training when a patient has no CT.

About 35 s of CPU: the studies are simulated here (4 s); each command reads and checks them, resamples them onto
the model's grid, trains a few steps and scores the model and its parent on the validation patient.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from meddiffusion.io import write_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
import tiny_models  # noqa: E402
from cli_runner import run_events  # noqa: E402 - (exit code, JSON events, stderr) of meddiff in a child process

PATIENTS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(patient folders with nac, ac and ct, environment with 'parent-student' and 'parent-teacher' registered)."""
    from meddiffusion.catalog import register_user_model
    from meddiffusion.phantoms import Phantom
    from meddiffusion.physics.spect import SpectProtocol, sample_spect_patient, simulate_study

    root, models = tmp_path_factory.mktemp("studies"), tmp_path_factory.mktemp("models")
    protocol = SpectProtocol(matrix=32, pixel_mm=12.8, slices=16, views=16, iterations=2, subsets=4, frames=1,
                             ct_pixel_mm=6.4, counts=1e6)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    for i in range(PATIENTS):
        study = simulate_study(Phantom(sample_spect_patient(40 + i)), protocol, stress=i % 2 == 0, seed=40 + i)
        for name, volume in (("nac", study.nac), ("ac", study.ac), ("ct", study.ct)):
            write_volume(volume, root / f"patient{i}" / f"{name}.nrrd")
    torch.set_num_threads(previous)
    env = {**os.environ, "MEDDIFF_MODEL_DIR": str(models), "MEDDIFF_THREADS": "1"}
    before = os.environ.get("MEDDIFF_MODEL_DIR")
    os.environ["MEDDIFF_MODEL_DIR"] = str(models)
    try:
        register_user_model(*tiny_models.spect_model("parent-student"))
        register_user_model(*tiny_models.spect_teacher_model("parent-teacher"))
    finally:
        if before is None:
            os.environ.pop("MEDDIFF_MODEL_DIR")
        else:
            os.environ["MEDDIFF_MODEL_DIR"] = before
    return root, env


def fine_tune(root, out, parent, env, *extra):
    return run_events("train", "spect", "--source", "paired-folder", "--data", root, "--from-model", parent,
                      "--steps", "20", "--batch-size", "8", "--lr", "3e-3", "--val-every", "10", "--ckpt-every", "0",
                      "--out", out, "--events", "jsonl", *extra, env=env)


def test_a_student_fine_tune_records_its_validation_and_the_gate_decides(setup, tmp_path):
    root, env = setup
    out = tmp_path / "run"
    code, events, err = fine_tune(root, out, "parent-student", env, "--at-weight", "0", "--preview-every", "20",
                                  "--register", "ft-spect")
    assert code == 0, err
    result = events[-1]
    assert result["event"] == "result" and result["steps"] == 20
    assert result["val_loss_end"] < result["val_loss_start"]          # 20 steps from an untrained parent
    gate = result["gate"]
    assert gate["metric"] == "psnr" and gate["higher_is_better"] and set(gate) >= {"model", "parent", "passed"}
    assert result["registered"] == gate["passed"]                      # the gate decides
    assert "against the parent's" in result["summary"]
    logs = [e["message"] for e in events if e.get("event") == "log"]
    assert any("training slices of 2 patients" in line and "validation slices of 1" in line for line in logs)
    assert any("slice spacing of 12.8 mm" in line for line in logs)   # the coarse protocol is outside the usual

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["step"] for row in rows if row["split"] == "val"] == [0, 10, 20]
    assert sorted(p.name for p in (out / "data").glob("pair_*.npz")) == [f"pair_{i:04d}.npz" for i in range(3)]
    assert any((out / "preview").iterdir())
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert card["task"] == "spect" and card["architecture"]["kwargs"]["teacher"] is False
    assert "fine-tuned from parent-student on the user's studies" in card["description"]
    assert "μ from the patient's CT" in card["training_data"]
    facts = card["provenance"]
    assert facts["parent"]["id"] == "parent-student" and facts["data"]["source"] == "paired-folder"
    split = facts["data"]["split"]
    assert sorted(split["train"] + split["val"]) == [f"patient{i}" for i in range(PATIENTS)] and len(split["val"]) == 1
    assert facts["gate"]["metric"] == "psnr" and "--from-model parent-student" in card["training_command"]


def test_the_teacher_reads_mu_from_the_ct_and_is_refused_without_it(setup, tmp_path):
    root, env = setup
    code, events, err = fine_tune(root, tmp_path / "teacher", "parent-teacher", env, "--variant", "teacher",
                                  "--steps", "6", "--val-every", "0")
    assert code == 0, err
    assert events[-1]["val_loss_end"] is not None and "parent" in events[-1]["gate"]
    card = json.loads((tmp_path / "teacher" / "model.json").read_text(encoding="utf-8"))
    assert card["architecture"]["kwargs"]["teacher"] is True

    partial = tmp_path / "partial"
    shutil.copytree(root, partial)
    (partial / "patient1" / "ct.nrrd").unlink()
    code, events, err = fine_tune(partial, tmp_path / "refused", "parent-teacher", env, "--variant", "teacher")
    errors = [e["message"] for e in events if e.get("event") == "error"]
    assert code == 2 and errors, err
    assert "the teacher variant attends to each patient's attenuation map" in errors[0]
    assert "1 of 3 studies have no CT or μ-map (patient1)" in errors[0]
    assert not (tmp_path / "refused" / "model.json").exists()
