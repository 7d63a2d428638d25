"""Detached ``meddiff train ldct ... --detach`` runs, through the real command and real child processes:
the run folder contract (run.json, events, metrics, previews), Cancel with a resumable checkpoint and an
exact resume, a killed child reported as stopped unexpectedly, and ``meddiff runs``.

The data are one synthetic CT patient (12 × 64 × 64, a low-/normal-dose pair): the issue's target is a
fine-tune on one scan, validated on its held-out slices. Tiny network, batch 1, one CPU thread.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from meddiffusion.io import Volume, write_volume
from meddiffusion.training import runs
from test_train_userdata_cli import meddiff  # the same in-process command

STEPS = 150
RUN = ("train", "ldct", "--source", "paired-folder", "--config", "tiny", "--crop", "32", "--batch-size", "1",
       "--steps", STEPS, "--val-every", "0", "--ckpt-every", "0", "--preview-every", 75, "--events", "jsonl")


def one_patient(root, slices=12):
    """A CT-like pair: an ellipse of soft tissue with lung and bone, the input 40 HU noisier than the target."""
    yy, xx = np.mgrid[:64, :64] - 31.5
    image = np.where((yy / 26) ** 2 + (xx / 29) ** 2 < 1, 40.0, -1000.0)
    image[(yy + 6) ** 2 + (xx - 12) ** 2 < 36] = -850.0
    image[(yy - 9) ** 2 + (xx + 9) ** 2 < 16] = 900.0
    rng = np.random.default_rng(0)
    target = image[None] + rng.normal(0, 5, (slices, 64, 64))
    for role, array in (("input", target + rng.normal(0, 40, target.shape)), ("target", target)):
        write_volume(Volume(array.astype(np.float32), (1.0, 1.0, 2.0), modality="CT"), root / role / "patient0.nrrd")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    before = {name: os.environ.get(name) for name in ("MEDDIFF_MODEL_DIR", "MEDDIFF_THREADS")}
    # the children inherit one thread: the CI's two cores are shared, and the runs must match bit for bit
    os.environ.update(MEDDIFF_MODEL_DIR=str(tmp_path_factory.mktemp("models")), MEDDIFF_THREADS="1")
    yield one_patient(tmp_path_factory.mktemp("pair"))
    for name, value in before.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def wait_for(condition, timeout=90.0, what="the run"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def training_started(out):
    """The first progress event of the training stage, once the child has written it."""
    return next((e for e in runs._tail(out / runs.EVENTS_FILE) if e.get("stage") == "train" and e["done"] >= 1), None)


def detach(out, data) -> dict:
    code, result, err = meddiff(*RUN, "--data", data, "--out", out, "--detach")
    assert code == 0, err
    assert result["run"] == str(out) and result["pid"] > 0
    return result


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    started = detach(out, data)
    status = wait_for(lambda: (s := runs.read_run(out)).state != "running" and s, what="the run to end")
    return out, started, status


def test_a_detached_run_writes_the_run_folder_and_ends_done(finished):
    out, started, status = finished
    assert status.state == "done", (status.message, (out / "stderr.log").read_text()[-2000:])
    record = json.loads((out / "run.json").read_text())
    assert record["task"] == "ldct" and record["pid"] == started["pid"]
    wait_for(lambda: not runs.pid_alive(started["pid"]), what="the child to exit")   # even unreaped (a zombie)
    assert record["command"][1:3] == ["-m", "meddiffusion"] and "--run-child" in record["command"]
    assert record["started"].endswith("+00:00") and record["ended"] >= record["started"]
    assert record["result"]["steps"] == STEPS and status.result["model_id"] == "ldct-corediff-tiny"
    memory = record["memory"]
    assert memory["device"] == "cpu" and memory["activations_per_sample_mb"] > 0 and memory["rss_mb"] > 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "result" and {"progress", "log"} <= {e["event"] for e in events}
    assert any("memory" in e.get("message", "") and "estimate" in e["message"] for e in events)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {m["split"] for m in metrics} == {"train", "val"} and metrics[-1]["step"] == STEPS
    assert status.metrics[-1] == metrics[-1] and status.progress["done"] == STEPS
    index = json.loads((out / "preview" / "index.json").read_text())
    assert index == {"input": "input.nrrd", "reference": "reference.nrrd", "steps": [75, 150]}
    from meddiffusion.io import read_volume

    shapes = {name: read_volume(out / "preview" / name).shape for name in
              ("input.nrrd", "reference.nrrd", "step_000075.nrrd", "step_000150.nrrd")}
    assert set(shapes.values()) == {(1, 64, 64)}
    card = json.loads((out / "model.json").read_text())
    assert card["provenance"]["data"]["split"]["by"] == "slices"         # the only patient: held-out slices
    assert "--preview-every" not in card["training_command"] and "--detach" not in card["training_command"]


def test_cancel_writes_a_checkpoint_and_resume_continues_exactly(finished, data, tmp_path):
    out = tmp_path / "cancelled"
    detach(out, data)
    wait_for(lambda: training_started(out), what="training to start")
    assert runs.cancel_run(out)
    status = wait_for(lambda: (s := runs.read_run(out)).state != "running" and s, what="the cancel")
    assert status.state == "cancelled", (status.message, (out / "stderr.log").read_text()[-2000:])
    assert "resume from" in status.message and not (out / "model.json").exists()
    step = int(status.message.split("cancelled at step ")[1].split(";")[0])
    assert 0 < step < STEPS and (out / f"checkpoint_step{step}.safetensors").is_file()
    assert json.loads((out / "events.jsonl").read_text().splitlines()[-1])["event"] == "cancelled"
    assert not runs.cancel_run(out)                                       # nothing runs there any more

    code, result, err = meddiff(*RUN, "--data", data, "--out", out, "--resume")
    assert code == 0, err
    straight, resumed = (load_file(folder / "model.safetensors") for folder in (finished[0], out))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert (out / "metrics.jsonl").read_text() == (finished[0] / "metrics.jsonl").read_text()


def test_a_killed_run_is_reported_as_stopped_unexpectedly(finished, data, tmp_path):
    out = tmp_path / "killed"
    started = detach(out, data)
    wait_for(lambda: training_started(out), what="training to start")
    code, _, err = meddiff(*RUN, "--data", data, "--out", out, "--detach")
    assert code == 2 and "a run is still running in" in err             # one run per folder
    os.kill(started["pid"], signal.SIGKILL)
    status = wait_for(lambda: (s := runs.read_run(out)).state != "running" and s, what="the kill to show")
    assert status.state == "stopped" and "stopped unexpectedly" in status.message and "--resume" in status.message
    assert json.loads((out / "run.json").read_text())["state"] == "running"  # nobody recorded an end

    code, result, err = meddiff("runs", finished[0].parent, out, "--events", "jsonl")
    assert code == 0, err
    states = {item["folder"]: item["state"] for item in result["runs"]}
    assert states == {str(finished[0]): "done", str(out): "stopped"}
    assert "stopped unexpectedly" in result["summary"]
    code, _, err = meddiff("runs", data, "--events", "jsonl")
    assert code == 2 and "no training run in" in err
