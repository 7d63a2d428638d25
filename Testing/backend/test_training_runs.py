"""Training runs without a GPU: the memory estimate, the out-of-memory fallback (the error simulated), gradient
checkpointing, ``--gpus N`` (refused here; the torchrun command it would run), the single-patient split,
and the run folder readers on hand-made folders. Tiny LDCT networks, in process; the detached child
processes are exercised in ``Testing/cli/test_train_detach_cli.py``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import pytest
import torch

from meddiffusion import cli
from meddiffusion.commands import train as train_command
from meddiffusion.progress import Progress
from meddiffusion.training import memory, runs, userdata

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
from test_train_detach_cli import one_patient  # noqa: E402 - the same synthetic patient

FAST = ("--config", "tiny", "--crop", "64", "--val-every", "0", "--ckpt-every", "0", "--events", "jsonl")


def meddiff(*argv) -> tuple[int, dict | None, list[dict]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main([str(a) for a in argv])
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return code, next((e for e in events if e["event"] == "result"), None), events


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    before = os.environ.get("MEDDIFF_THREADS")
    os.environ["MEDDIFF_THREADS"] = "1"
    yield one_patient(tmp_path_factory.mktemp("pair"), slices=10)
    os.environ.pop("MEDDIFF_THREADS") if before is None else os.environ.__setitem__("MEDDIFF_THREADS", before)


def oom_loss(monkeypatch, fits):
    """Make the LDCT loss raise CUDA's out-of-memory error for a training step that ``fits(batch)`` refuses."""
    from meddiffusion.tasks.ldct import data

    real = data.make_loss_fn

    def make(diffusion, crop, *rest, **options):
        loss_fn = real(diffusion, crop, *rest, **options)

        def guarded(model, batch, generator):
            if torch.is_grad_enabled() and not fits(batch["ld"].shape[0], crop):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return loss_fn(model, batch, generator)

        return guarded

    monkeypatch.setattr(data, "make_loss_fn", make)


def test_out_of_memory_halves_the_batch_and_the_crop_and_continues(patient, tmp_path, monkeypatch):
    oom_loss(monkeypatch, lambda batch, crop: batch == 1 and crop <= 32)
    code, result, events = meddiff("train", "ldct", "--source", "paired-folder", "--data", patient, "--steps", 3,
                                   "--batch-size", 4, *FAST, "--out", tmp_path)
    assert code == 0, events[-1]
    changes = json.loads((tmp_path / "model.json").read_text())["metrics"]["memory_fallback"]
    assert [c["change"] for c in changes] == ["batch size halved to 2", "batch size halved to 1",
                                              "gradient checkpointing turned on", "training crop halved to 32"]
    assert all(c["step"] == 0 for c in changes) and changes[-1] | {"change": ""} == \
        {"step": 0, "batch_size": 1, "crop": 32, "checkpointing": True, "change": ""}
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert sum("out of memory on cpu at step 1" in m and "retrying the step" in m for m in logs) == 4
    assert result["steps"] == 3 and "--batch-size 4" in json.loads((tmp_path / "model.json").read_text())[
        "training_command"]


def test_out_of_memory_at_the_smallest_step_gives_up_clearly(patient, tmp_path, monkeypatch):
    oom_loss(monkeypatch, lambda batch, crop: False)
    code, result, events = meddiff("train", "ldct", "--source", "paired-folder", "--data", patient, "--steps", 3,
                                   "--batch-size", 2, *FAST, "--out", tmp_path)
    assert code == 2 and result is None
    assert "even at batch 1, crop 32, gradient checkpointing: the network does not fit" in events[-1]["message"]
    assert any("memory estimate on cpu failed: OutOfMemoryError" in e.get("message", "") for e in events)


def test_gradient_checkpointing_wraps_the_monai_blocks_and_keeps_the_gradients():
    from meddiffusion.nets.clearnet import CLEARNet
    from meddiffusion.tasks.ldct.recipe import _tiny_config

    torch.manual_seed(0)
    plain, wrapped = CLEARNet(**_tiny_config()), CLEARNet(**_tiny_config())
    wrapped.load_state_dict(plain.state_dict())
    count = memory.checkpoint_blocks(wrapped)
    assert count >= 6 and memory.checkpoint_blocks(wrapped) == count      # every conv block, wrapped once
    assert wrapped.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    for net in (plain, wrapped):
        net(x, torch.tensor([3, 5]), x[:, :2]).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), wrapped.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    assert memory.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))


def test_gpus_are_refused_without_them_and_launch_torchrun_with_them(patient, tmp_path, monkeypatch):
    base = ("train", "ldct", "--source", "paired-folder", "--data", patient, "--steps", 3, *FAST, "--out", tmp_path)
    code, _, events = meddiff(*base, "--gpus", 2)
    assert code == 2 and "--gpus 2 needs 2 CUDA GPUs; this machine has 0" in events[-1]["message"]
    assert not (tmp_path / "run.json").exists()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    code, _, events = meddiff(*base, "--gpus", 2, "--batch-size", 3)
    assert code == 2 and "--batch-size 3 is split evenly over --gpus 2" in events[-1]["message"]

    launched = []
    monkeypatch.setattr(train_command, "_become", lambda command: launched.append(command) or sys.exit(0))
    args = cli.build_parser().parse_args([str(a) for a in (*base, "--gpus", 2, "--lr", 3e-4)])
    with pytest.raises(SystemExit):
        train_command.run(args, Progress())
    command = launched[0]
    assert command[:8] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "meddiffusion"]
    assert command[8:10] == ["train", "ldct"] and command[command.index("--lr") + 1] == "0.0003"
    assert command[-4:] == ["--gpus", "2", "--events", "jsonl"] and "--run-child" not in command
    args.detach = True
    assert train_command.child_command(args)[-5:] == ["--gpus", "2", "--run-child", "--events", "jsonl"]
    assert "--gpus" not in train_command.command_line(args)               # the card's command is unchanged


def test_one_patient_is_split_into_slice_blocks_two_slices_apart(patient, tmp_path):
    assert userdata.split_slices(50, None, "a") == (range(0, 38), range(40, 50))
    assert userdata.split_slices(10, None, "a") == (range(0, 5), range(7, 10))
    assert userdata.split_slices(50, 0.1, "a") == (range(0, 43), range(45, 50))
    with pytest.raises(ValueError, match="'a' has 7 slices, too few to hold out 3 validation slices"):
        userdata.split_slices(7, None, "a")
    with pytest.raises(ValueError, match="--val-patients then takes a fraction"):
        userdata.split_slices(50, 2, "a")

    code, result, events = meddiff("train", "ldct", "--source", "paired-folder", "--data", patient, "--steps", 2,
                                   *FAST, "--out", tmp_path)
    assert code == 0, events[-1]
    split = result["provenance"]["data"]["split"]
    assert split == {"train": ["patient0"], "val": ["patient0"], "by": "slices", "gap": 2,
                     "slices": {"patient0": {"train": [0, 5], "val": [7, 10]}},
                     "note": "validation on held-out slices of the only patient"}
    card = json.loads((tmp_path / "model.json").read_text())
    assert "5 slices" in card["training_data"] and "held-out slices of the only patient" in card["training_data"]
    assert result["gate"]["metric"] == "psnr"                               # scored on the held-out block


def test_run_folder_readers(tmp_path):
    with pytest.raises(ValueError, match="not a training run folder"):
        runs.read_run(tmp_path)
    (tmp_path / "a").mkdir()
    own = runs.update_run(tmp_path / "a", task="ldct", pid=os.getpid(), started="2024-01-02T00:00:00+00:00",
                          state="running")
    (tmp_path / "a" / "events.jsonl").write_text(
        '{"event": "progress", "stage": "train", "done": 5, "total": 10, "eta_s": 1e6, "message": ""}\n{"event": "lo')
    status = runs.read_run(tmp_path / "a")
    assert status.state == "running" and status.alive and status.progress["done"] == 5 and 9e5 < status.eta_s <= 1e6
    assert own["pid"] == os.getpid() and "train 5/10" in status.describe()
    (tmp_path / "b").mkdir()
    runs.update_run(tmp_path / "b", task="ldct", pid=2**22 + 1, started="2024-01-01T00:00:00+00:00", state="running")
    assert [s.folder.name for s in runs.list_runs(tmp_path)] == ["b", "a"]       # oldest first
    assert runs.read_run(tmp_path / "b").state == "stopped" and not runs.cancel_run(tmp_path / "b")


def test_the_motion_preview_corrects_the_first_calcium_patch(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from meddiffusion.tasks.motion.recipe import RECIPE

    args = SimpleNamespace(config="tiny", objective="bridge", timesteps=1000)
    corrupted = np.stack([np.full((3, 64, 64), value, np.int16) for value in (-100, 400)])
    val = SimpleNamespace(calcium=np.array([False, True]), corrupted=corrupted, static=corrupted[:, 1:2] - 50)
    volumes = RECIPE.preview(args, RECIPE.make_model(args), SimpleNamespace(val=val), torch.device("cpu"))
    assert [v.shape for v in volumes] == [(1, 64, 64)] * 3
    assert volumes[0].array.max() == 400 and volumes[2].array.max() == 350       # the calcium patch, not the first
    runs.write_preview(tmp_path, 7, *volumes)
    assert json.loads((tmp_path / "preview" / "index.json").read_text())["steps"] == [7]
