"""``meddiff train motion --source paired-folder`` end to end in a child process: three small phantom patients
(non-gated input, gated target) written as NRRD, a tiny ProDM UNet registered as the parent, 20 steps, then the
run folder, the gate and the card's provenance; and a misaligned pair refused before training.

About 15 s: the patients are simulated here (2 s), the command reads and checks them, finds their calcium,
trains and scores the model and its parent on the validation patient.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch

from meddiffusion.io import read_volume, write_volume

from cli_runner import run_events  # (exit code, JSON events, stderr) of meddiff in a child process

PATIENTS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(paired folder, environment with a model folder holding 'parent-tiny', an untrained tiny ProDM UNet)."""
    from meddiffusion.catalog import ModelEntry, register_user_model
    from meddiffusion.nets.prodm import PRODM_CONFIGS, ProDMUNet
    from meddiffusion.tasks.motion.cases import MotionDataOptions, make_case
    from meddiffusion.tasks.motion.recipe import architecture

    root, models = tmp_path_factory.mktemp("pairs"), tmp_path_factory.mktemp("models")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    options = MotionDataOptions(size=96, slices=12, pixel_mm=(1.3, 1.5), slice_mm=5.0, noise_views=120,
                                plaques=(8, 12), calcium_free=0.0, plaque_mm=(3.0, 10.0))
    for i in range(PATIENTS):
        case = make_case(3, i, options)
        write_volume(case.corrupted, root / "input" / f"patient{i}.nrrd")
        write_volume(case.static, root / "target" / f"patient{i}.nrrd")
    torch.set_num_threads(previous)
    env = {**os.environ, "MEDDIFF_MODEL_DIR": str(models), "MEDDIFF_THREADS": "1"}
    before = os.environ.get("MEDDIFF_MODEL_DIR")
    os.environ["MEDDIFF_MODEL_DIR"] = str(models)
    try:
        args = argparse.Namespace(config="tiny", objective="bridge", calcium_weight=None, calcium_warmup=None,
                                  steps=20, focus=None, timesteps=1000)
        torch.manual_seed(0)
        register_user_model(ModelEntry(id="parent-tiny", task="motion", version="1", architecture=architecture(args)),
                            ProDMUNet(3, **PRODM_CONFIGS["tiny"]).state_dict())
    finally:
        if before is None:
            os.environ.pop("MEDDIFF_MODEL_DIR")
        else:
            os.environ["MEDDIFF_MODEL_DIR"] = before
    return root, env


def test_a_paired_fine_tune_runs_end_to_end_and_lowers_the_validation_loss(setup, tmp_path):
    root, env = setup
    out = tmp_path / "run"
    code, events, err = run_events("train", "motion", "--source", "paired-folder", "--data", root, "--from-model",
                                   "parent-tiny", "--steps", "20", "--lr", "3e-3", "--crop", "32", "--val-every", "10",
                                   "--ckpt-every", "0", "--preview-every", "20", "--out", out, "--register",
                                   "ft-motion", "--events", "jsonl", env=env)
    assert code == 0, err
    result = events[-1]
    assert result["event"] == "result" and result["steps"] == 20
    # the parent is untrained (its output starts at zero), so its validation loss is the bridge's and the calcium
    # term's full error; 20 steps at 3e-3 take off more than half of it (measured: 4.93 -> 1.95)
    assert result["val_loss_end"] < 0.7 * result["val_loss_start"]
    gate = result["gate"]
    assert gate["metric"] == "calcium_hu_mae" and not gate["higher_is_better"] and "parent" in gate
    assert result["registered"] == gate["passed"]                        # the gate decides
    logs = [e["message"] for e in events if e.get("event") == "log"]
    assert any("training patches" in line and "validation patches of 1" in line for line in logs)

    assert {"model.json", "model.safetensors", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "data").glob("pair_*.npz")) == [f"pair_{i:04d}.npz" for i in range(3)]
    assert any((out / "preview").iterdir())
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert card["task"] == "motion" and card["architecture"]["kwargs"]["channels"] == [8, 8, 16]
    assert card["description"].startswith("ProDM 2.5D UNet fine-tuned from parent-tiny on the user's CT")
    assert "non-gated CTs paired with gated CTs" in card["training_data"]
    facts = card["provenance"]
    assert facts["parent"]["id"] == "parent-tiny" and facts["data"]["source"] == "paired-folder"
    split = facts["data"]["split"]
    assert sorted(split["train"] + split["val"]) == [f"patient{i}" for i in range(PATIENTS)] and len(split["val"]) == 1
    assert len(facts["data"]["manifest_sha256"]) == 64 and facts["gate"]["metric"] == "calcium_hu_mae"
    command = card["training_command"]
    assert "--source paired-folder" in command and "--from-model parent-tiny" in command


def test_a_misaligned_pair_is_refused_before_training(setup, tmp_path):
    root, env = setup
    shifted = tmp_path / "shifted"
    for role in ("input", "target"):
        for i in range(PATIENTS):
            volume = read_volume(root / role / f"patient{i}.nrrd")
            if role == "target" and i == 1:
                volume = volume.with_array(np.roll(volume.array, 3, axis=1))
            write_volume(volume, shifted / role / f"patient{i}.nrrd")
    out = tmp_path / "run"
    code, events, err = run_events("train", "motion", "--source", "paired-folder", "--data", shifted, "--from-model",
                                   "parent-tiny", "--steps", "2", "--crop", "32", "--out", out, "--events", "jsonl",
                                   env=env)
    errors = [e["message"] for e in events if e.get("event") == "error"]
    assert code == 2 and errors, err
    assert "pair 'patient1': input and target are not aligned" in errors[0] and "register the target" in errors[0]
    assert not (out / "model.json").exists()
