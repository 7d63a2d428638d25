"""``meddiff train ldct`` on the user's own data: paired, clean and low-dose folders, a manifest, ``--from-model``,
the registration gate, exact resume and the refusals, through the real command (in process, tiny network).

The data are small phantom CTs (4 patients, 6 × 64 × 64, simulated quarter dose) written as NRRD;
the parent is a tiny CLEAR-Net registered in a temporary user model folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from meddiffusion import cli
from meddiffusion.catalog import get_model
from meddiffusion.io import Volume, read_volume, write_volume

from cli_runner import jsonl  # the JSON events among stdout's lines, as the child-process suites read them

FAST = ("--config", "tiny", "--crop", "32", "--val-every", "0", "--ckpt-every", "0", "--events", "jsonl")


def meddiff(*argv) -> tuple[int, dict | None, str]:
    """(exit code, the result event, stderr) of one in-process command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    events = jsonl(out.getvalue())
    results = [e for e in events if e.get("event") == "result"]
    errors = "".join(e.get("message", "") + "\n" for e in events if e.get("event") == "error")
    return code, results[-1] if results else None, err.getvalue() + errors


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A temporary user model folder holding 'parent-tiny', a tiny CLEAR-Net far from trained."""
    from meddiffusion.catalog import ModelEntry, register_user_model
    from meddiffusion.nets.clearnet import CLEARNet
    from meddiffusion.tasks.ldct.recipe import _tiny_config, architecture

    folder = tmp_path_factory.mktemp("models")
    before = {name: os.environ.get(name) for name in ("MEDDIFF_MODEL_DIR", "MEDDIFF_THREADS")}
    # one thread: the CI's two cores are shared, and competing torch threads spin instead of working
    os.environ.update(MEDDIFF_MODEL_DIR=str(folder), MEDDIFF_THREADS="1")
    torch.manual_seed(0)
    args = type("Args", (), {"config": "tiny", "timesteps": 10, "cpu_steps": None})()
    register_user_model(ModelEntry(id="parent-tiny", task="ldct", version="1", architecture=architecture(args)),
                        CLEARNet(**_tiny_config()).state_dict())
    yield folder
    for name, value in before.items():
        if value is None:
            os.environ.pop(name)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from meddiffusion.tasks.ldct.data import DataOptions, render_slab, slab_spec

    root = tmp_path_factory.mktemp("pairs")
    options = DataOptions(size=64, slices=6, pixel_mm=(4.0, 5.0), nd_noise_hu=(10.0, 20.0), num_views=72)
    for i in range(4):
        spec = slab_spec(7, i, options)
        slab = render_slab(spec, options)
        for role, key in (("input", "ld"), ("target", "nd")):
            write_volume(Volume(slab[key], (spec.pixel_mm, spec.pixel_mm, 2.0), modality="CT"),
                         root / role / f"patient{i}.nrrd")
    return root


@pytest.fixture(scope="module")
def fine_tuned(models, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "good"
    code, result, err = meddiff("train", "ldct", "--source", "paired-folder", "--data", pairs, "--from-model",
                                "parent-tiny", "--steps", "30", "--lr", "3e-3", "--out", out, "--register", "ft-good",
                                *FAST, "--ckpt-every", "15")
    assert code == 0, err
    return out, result


def test_a_paired_fine_tune_lowers_validation_loss_and_registers_through_the_gate(fine_tuned, pairs):
    out, result = fine_tuned
    # the noise-weighted loss is each crop's error relative to its low-dose error: measured 0.76 here
    assert result["registered"] and result["val_loss_end"] < 0.85 * result["val_loss_start"]
    gate = result["gate"]
    assert gate["metric"] == "psnr" and gate["passed"] and gate["model"]["psnr"] > gate["parent"]["psnr"]
    assert "against the parent's" in result["summary"] and "(at least as good)" in result["summary"]
    card = json.loads((out / "model.json").read_text())
    parent = get_model("parent-tiny")
    assert card["architecture"] == parent.architecture and card["description"].startswith("CoreDiff CLEAR-Net "
                                                                                          "fine-tuned from parent-tiny")
    facts = card["provenance"]
    assert facts["parent"] == {"id": "parent-tiny", "sha256": parent.sha256} and facts["seed"] == 0
    split = facts["data"]["split"]
    assert sorted(split["train"] + split["val"]) == [f"patient{i}" for i in range(4)] and len(split["val"]) == 1
    assert len(facts["data"]["manifest_sha256"]) == 64 and facts["config"]["steps"] == 30
    assert {"torch", "numpy", "python", "meddiffusion"} <= set(facts["versions"])
    command = card["training_command"]
    assert "--from-model parent-tiny" in command and "--source paired-folder" in command
    assert (out / "checkpoint_step15.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    assert get_model("ft-good").user


def test_the_gate_refuses_a_worse_model_unless_asked(fine_tuned, pairs, tmp_path):
    worse = ("train", "ldct", "--source", "paired-folder", "--data", pairs, "--from-model", "ft-good", "--steps", "2",
             "--lr", "0.5", *FAST)
    code, result, err = meddiff(*worse, "--out", tmp_path / "a", "--register", "ft-worse")
    assert code == 0, err
    assert not result["registered"] and not result["gate"]["passed"]
    assert "worse: not registered; pass --register-anyway" in result["summary"]
    with pytest.raises(ValueError, match="unknown model 'ft-worse'"):
        get_model("ft-worse")
    assert (tmp_path / "a" / "model.json").is_file()                     # the run folder keeps the model
    code, result, err = meddiff(*worse, "--out", tmp_path / "b", "--register", "ft-worse", "--register-anyway")
    assert code == 0 and result["registered"] and "registered anyway" in result["summary"], err


def test_resume_is_exact(models, pairs, tmp_path):
    argv = ("train", "ldct", "--source", "paired-folder", "--data", pairs, "--from-model", "parent-tiny", "--steps",
            "6", "--lr", "3e-3", *FAST, "--ckpt-every", "3", "--val-every", "3")
    assert meddiff(*argv, "--out", tmp_path / "straight")[0] == 0
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    for name in ("checkpoint_step6.safetensors", "checkpoint_step6.json", "model.safetensors", "model.json"):
        (tmp_path / "resumed" / name).unlink()
    code, _, err = meddiff(*argv, "--out", tmp_path / "resumed", "--resume")
    assert code == 0, err
    straight, resumed = (load_file(tmp_path / run / "model.safetensors") for run in ("straight", "resumed"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    lines = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("straight", "resumed")]
    assert lines[0] == lines[1]


def test_a_manifest_clean_volumes_and_low_dose_volumes_train(models, pairs, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("input,target,patient\n" + "".join(
        f"{pairs}/input/patient{i}.nrrd,{pairs}/target/patient{i}.nrrd,{'AB'[i % 2]}\n" for i in range(4)))
    base = ("train", "ldct", "--from-model", "parent-tiny", "--steps", "2", *FAST)
    code, result, err = meddiff(*base, "--source", "paired-folder", "--data", manifest, "--out", tmp_path / "m")
    assert code == 0, err
    assert sorted(sum(result["provenance"]["data"]["split"].values(), [])) == ["A", "B"]

    yy, xx = np.mgrid[:64, :64] - 31.5
    disk = np.where(yy**2 + xx**2 < 30**2, 40.0, -1000.0)       # wide soft tissue: the noise is measured there
    for i in range(2):
        noisy = disk + np.random.default_rng(i).normal(0, 10, (6, 64, 64))
        write_volume(Volume(noisy.astype(np.float32), (1.0, 1.0, 2.0), modality="CT"), tmp_path / "clean" / f"{i}.nrrd")
    code, result, err = meddiff(*base, "--source", "clean-folder", "--data", tmp_path / "clean", "--dose", "0.1",
                                "--out", tmp_path / "c")
    assert code == 0, err
    card = json.loads((tmp_path / "c" / "model.json").read_text())
    assert card["metrics"]["dose"] == 0.1 and "normal-dose volumes paired at dose 0.1" in card["training_data"]
    with np.load(tmp_path / "c" / "data" / "clean_0000.npz") as item:
        target = read_volume(tmp_path / "clean" / "0.nrrd").array
        added = (item["ld"] - item["nd"])[:, 24:40, 24:40].std()
        assert np.abs(item["nd"] - target).max() <= 0.5 and 10 * 2 < added < 10 * 4   # dose 0.1 adds 3x the noise

    code, result, err = meddiff(*base, "--source", "lowdose-folder", "--data", pairs / "input", "--out", tmp_path / "l")
    assert code == 0, err
    gate = result["gate"]
    assert gate["metric"] == "neighbour_rmse_hu" and not gate["higher_is_better"] and not gate["passed"]
    assert "self-supervised proxy that cannot vouch" in result["summary"]
    assert "self-supervised" in json.loads((tmp_path / "l" / "model.json").read_text())["training_data"]


def test_bad_data_and_options_are_refused_before_training(models, pairs, tmp_path):
    shifted = tmp_path / "shifted"
    shutil.copytree(pairs, shifted)
    target = read_volume(shifted / "target" / "patient2.nrrd")
    write_volume(target.with_array(np.roll(target.array, 3, axis=2)), shifted / "target" / "patient2.nrrd")
    base = ("train", "ldct", "--steps", "2", *FAST)
    cases = [
        (("--source", "paired-folder", "--data", shifted), "pair 'patient2': input and target are not aligned"),
        (("--source", "paired-folder", "--data", pairs / "input"), "lacks input/ and target/"),
        (("--source", "clean-folder"), "--source clean-folder needs --data"),
        (("--data", pairs), "--data and --val-patients are read with --source paired-folder"),
        (("--source", "paired-folder", "--data", pairs, "--val-patients", "4"), "leaves no training patient"),
        (("--from-model", "motion-prodm-small"), "is a 'motion' model; meddiff train ldct fine-tunes only ldct"),
        (("--register-anyway",), "--register-anyway applies only with --register ID"),
        (("--from-model", "parent-tiny", "--timesteps", "20"), "trained with T=10 diffusion steps"),
    ]
    for extra, message in cases:
        out = tmp_path / f"out{len(extra)}"
        code, result, err = meddiff(*base, *extra, "--out", out)
        assert code == 2 and message in err and result is None, (extra, err)
        assert not (out / "model.json").exists()
    one = tmp_path / "one"
    for role in ("input", "target"):
        (one / role).mkdir(parents=True)
        shutil.copy(pairs / role / "patient0.nrrd", one / role)
    code, _, err = meddiff(*base, "--source", "paired-folder", "--data", one, "--out", tmp_path / "o")
    # one patient validates on its own held-out slices (test_train_detach_cli); 6 slices are too few for that
    assert code == 2 and "'patient0' has 6 slices, too few to hold out 3 validation slices" in err
