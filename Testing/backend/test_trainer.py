"""The shared training loop: learning, EMA, exact resume, cancellation, clipping, DDP."""

from __future__ import annotations

import copy
import importlib.util
import json
from types import SimpleNamespace
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from meddiffusion.catalog import load_weights
from meddiffusion.progress import Cancelled, Progress
from meddiffusion.training import EMA, StepBatchSampler, TrainConfig, Trainer, latest_checkpoint
from meddiffusion.training import cache
from meddiffusion.training.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]


class LineData(torch.utils.data.Dataset):
    """Points on y = 2x + 1."""

    def __init__(self, n: int = 64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, generator=generator) * 2 - 1
        self.y = 2 * self.x + 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


def noisy_loss(model, batch, generator):
    """MSE with input jitter drawn from the step's generator (as diffusion losses draw noise)."""
    jitter = 0.01 * torch.randn(batch["x"].shape, generator=generator)
    loss = F.mse_loss(model(batch["x"] + jitter), batch["y"])
    return loss, {"mse": loss.detach()}


def plain_loss(model, batch, generator):
    return F.mse_loss(model(batch["x"]), batch["y"]), {}


def mse_metric(model, batch):
    return {"mse": F.mse_loss(model(batch["x"]), batch["y"])}


def small_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 1))


def config(tmp_path=None, **changes) -> TrainConfig:
    values = dict(steps=6, batch_size=8, lr=0.01, ema_decay=0.9, ema_every=1, log_every=1,
                  precision="fp32", out_dir=str(tmp_path) if tmp_path else None)
    return TrainConfig(**{**values, **changes})


def train_lines(out_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["split"] == "train"]


def test_slow_steps_are_logged_by_time(tmp_path):
    """Live curves keep moving when ten steps take long: a line after every step past log_seconds."""
    import time

    def slow_loss(model, batch, generator):
        time.sleep(0.12)
        return plain_loss(model, batch, generator)

    cfg = config(tmp_path, steps=12, log_every=100, log_seconds=0.2)
    Trainer(nn.Linear(1, 1), slow_loss, cfg, LineData(), device="cpu").fit()
    steps = [line["step"] for line in train_lines(tmp_path)]
    assert steps[-1] == 12 and 4 <= len(steps) <= 7                      # about every second step, and the last
    assert all(b - a <= 2 for a, b in zip([0] + steps, steps))
    cfg = config(tmp_path / "off", steps=6, log_every=100, log_seconds=0)
    Trainer(nn.Linear(1, 1), slow_loss, cfg, LineData(), device="cpu").fit()
    assert [line["step"] for line in train_lines(tmp_path / "off")] == [6]


def test_short_run_lowers_validation_loss(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    val = LineData(32, seed=1)
    with torch.no_grad():
        before = F.mse_loss(model(val.x), val.y).item()
    cfg = config(tmp_path, steps=150, batch_size=16, lr=0.05, val_every=50, log_every=10)
    summary = Trainer(model, plain_loss, cfg, LineData(), val_data=val, val_fn=mse_metric, device="cpu").fit()

    assert summary["step"] == 150 and summary["val"]["mse"] < 0.01 * before
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val_lines = [line for line in lines if line["split"] == "val"]
    assert [line["step"] for line in val_lines] == [50, 100, 150]
    assert val_lines[0]["mse"] > val_lines[-1]["mse"] == summary["val"]["mse"]
    assert [line["step"] for line in lines if line["split"] == "train"] == list(range(10, 151, 10))
    # the fitted line is y = 2x + 1
    assert model.weight.item() == pytest.approx(2.0, abs=0.05) and model.bias.item() == pytest.approx(1.0, abs=0.05)


def test_validation_uses_the_ema_model():
    torch.manual_seed(0)
    val = LineData(16, seed=1)
    trainer = Trainer(nn.Linear(1, 1), plain_loss, config(steps=5, ema_decay=0.8), LineData(),
                      val_data=val, val_fn=mse_metric, device="cpu")
    trainer.fit()
    with torch.no_grad():
        ema_mse = F.mse_loss(trainer.ema_model(val.x), val.y).item()
        raw_mse = F.mse_loss(trainer.model(val.x), val.y).item()
    assert trainer.last_val["mse"] == pytest.approx(ema_mse, rel=1e-5)
    assert abs(ema_mse - raw_mse) > 1e-4
    # without val_fn the metric is the training loss on the EMA model
    trainer.val_fn = None
    with torch.no_grad():
        expected = F.mse_loss(trainer.ema_model(val.x), val.y).item()
    assert trainer.validate()["loss"] == pytest.approx(expected, rel=1e-5)  # plain_loss ignores the noise


def test_ema_matches_a_hand_computed_average():
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    snapshots = [copy.deepcopy(model.state_dict())]
    trainer = Trainer(model, plain_loss, config(steps=2, ema_decay=0.9), LineData(), device="cpu")
    trainer.fit(callback=lambda done, total: snapshots.append(copy.deepcopy(model.state_dict())))

    w0, w1, w2 = snapshots
    for name, ema_value in trainer.ema_model.state_dict().items():
        expected = 0.9 * (0.9 * w0[name] + 0.1 * w1[name]) + 0.1 * w2[name]
        assert torch.allclose(ema_value, expected, atol=1e-7, rtol=0)
        assert not torch.allclose(ema_value, w2[name], atol=1e-4, rtol=0)


def test_ema_schedule_every_and_start():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5, every=2, start=2)
    values = []
    for step, weight in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], start=1):
        with torch.no_grad():
            model.weight.fill_(weight)
        ema.step(model, step)
        values.append(ema.model.weight.item())
    initial = values[0]  # step 1: untouched copy of the initial weight
    # step 2 (<= start): copy; 3: skipped; 4: 0.5*2 + 0.5*4 = 3; 5: skipped; 6: 0.5*3 + 0.5*6 = 4.5
    assert values == [initial, 2.0, 2.0, 3.0, 3.0, 4.5]


def test_resume_is_bitwise_exact(tmp_path):
    cfg = dict(optimizer="adamw", weight_decay=0.01, schedule="linear-warmup-cosine", warmup_steps=2,
               ema_every=2, grad_clip=1.0, ckpt_every=3)
    straight = Trainer(small_mlp(0), noisy_loss, config(tmp_path / "a", **cfg), LineData(), device="cpu")
    straight.fit()

    def stop_at_three(done, total):
        if done == 3:
            raise Cancelled("stop")

    first = Trainer(small_mlp(0), noisy_loss, config(tmp_path / "b", **cfg), LineData(), device="cpu")
    with pytest.raises(Cancelled):
        first.fit(callback=stop_at_three)
    checkpoint = latest_checkpoint(tmp_path / "b")
    assert checkpoint.name == "checkpoint_step3.safetensors"

    torch.manual_seed(123)  # disturb the global RNG: resume must restore it (dropout draws from it)
    resumed = Trainer(small_mlp(7), noisy_loss, config(tmp_path / "b", **cfg), LineData(), device="cpu")
    assert resumed.resume(checkpoint) == 3
    resumed.fit()

    for mine, theirs in [(resumed.model, straight.model), (resumed.ema_model, straight.ema_model)]:
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name
    state_a, state_b = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    for index in state_b:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_a[index][key], state_b[index][key])
    # the log holds each step once, with the same values as the uninterrupted run
    assert train_lines(tmp_path / "b") == train_lines(tmp_path / "a")


def test_checkpoint_layout_and_export(tmp_path):
    trainer = Trainer(small_mlp(0), noisy_loss, config(tmp_path, steps=2), LineData(), device="cpu")
    trainer.fit()
    tensors, info = read_checkpoint(tmp_path / "checkpoint_step2.json")
    assert info["step"] == 2 and info["config"]["steps"] == 2 and info["scheduler"]["last_epoch"] == 2
    model_keys = set(trainer.model.state_dict())
    assert {k[len("model/"):] for k in tensors if k.startswith("model/")} == model_keys
    assert {k[len("ema/"):] for k in tensors if k.startswith("ema/")} == model_keys
    assert tensors["rng/torch_cpu"].dtype == torch.uint8
    exp_avg = info["optimizer"]["state"]["0"]["exp_avg"]
    assert exp_avg["shape"] == list(trainer.model[0].weight.shape)
    assert torch.equal(tensors[exp_avg["tensor"]], trainer.optimizer.state_dict()["state"][0]["exp_avg"])

    exported = load_weights(trainer.export_weights(tmp_path / "model.safetensors", {"task": "demo"}))
    for name, value in trainer.ema_model.state_dict().items():
        assert torch.equal(exported[name], value)


def test_learning_rate_schedule_is_logged(tmp_path):
    cfg = config(tmp_path, lr=0.1, schedule="linear-warmup-cosine", warmup_steps=2)
    Trainer(small_mlp(0), noisy_loss, cfg, LineData(), device="cpu").fit()
    # warm-up (s+1)/2, then 0.5 (1 + cos(pi (s-2)/4)) for s = 2..5
    expected = [0.05, 0.1, 0.1, 0.05 * (1 + math.sqrt(0.5)), 0.05, 0.05 * (1 - math.sqrt(0.5))]
    assert [line["lr"] for line in train_lines(tmp_path)] == pytest.approx(expected, rel=1e-6)


def test_cancel_leaves_a_resumable_checkpoint(tmp_path):
    progress = Progress()

    def cancel_after_two(done, total):
        if done == 2:
            progress.cancel()  # as a SIGINT would; noticed at the next step's report

    trainer = Trainer(small_mlp(0), noisy_loss, config(tmp_path, steps=8), LineData(), progress=progress,
                      device="cpu")
    with pytest.raises(Cancelled, match="step 3"):
        trainer.fit(callback=cancel_after_two)
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint == tmp_path / "checkpoint_step3.safetensors"
    assert read_checkpoint(checkpoint)[1]["step"] == 3

    resumed = Trainer(small_mlp(1), noisy_loss, config(tmp_path, steps=8), LineData(), device="cpu")
    resumed.resume(checkpoint)
    assert resumed.fit()["step"] == 8
    assert [line["step"] for line in train_lines(tmp_path)] == list(range(1, 9))


def test_time_limit_ends_the_run_like_a_last_step(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every reading of the clock is 10 s later
    monkeypatch.setattr("meddiffusion.training.trainer.time", SimpleNamespace(monotonic=lambda: next(clock)))
    val = LineData(16, seed=1)
    cfg = config(tmp_path, steps=100, log_every=2, time_limit_s=35.0, log_seconds=0)
    summary = Trainer(small_mlp(0), noisy_loss, cfg, LineData(), val_data=val, val_fn=mse_metric, device="cpu").fit()
    # start at 0 s, then 10, 20, 30, 40 s at the logging steps 2, 4, 6, 8: the limit is seen at step 8
    assert summary["timed_out"] and summary["step"] == 8
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_step8.safetensors"
    assert summary["val"]["mse"] >= 0
    unlimited = Trainer(small_mlp(0), noisy_loss, config(steps=5), LineData(), device="cpu").fit()
    assert not unlimited["timed_out"] and unlimited["step"] == 5


def test_grad_clipping_rescales_the_gradient():
    data = LineData(16)
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(-30.0)  # far from the optimum: a large gradient
    reference = copy.deepcopy(model)
    F.mse_loss(reference(data.x), data.y).backward()
    grads = [p.grad for p in reference.parameters()]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    assert norm > 10

    trainer = Trainer(model, plain_loss, config(steps=1, batch_size=16, grad_clip=0.5), data, device="cpu")
    summary = trainer.fit()
    assert summary["train"]["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)
    clipped = [p.grad for p in model.parameters()]
    assert torch.sqrt(sum((g ** 2).sum() for g in clipped)) <= 0.5 + 1e-6
    for got, full in zip(clipped, grads):
        assert torch.allclose(got, full * 0.5 / norm, rtol=1e-4, atol=1e-7)


def test_sampler_epochs_resume_and_rank_slices():
    sampler = StepBatchSampler(10, 4, seed=5, start=0, stop=5)
    flat = [i for batch in sampler for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]  # each epoch is a fresh permutation
    assert list(StepBatchSampler(10, 4, seed=5, start=3, stop=5)) == list(sampler)[3:]
    ranks = [StepBatchSampler(10, 4, seed=5, start=0, stop=5, rank=r, world_size=2) for r in (0, 1)]
    for step, batch in enumerate(sampler):
        assert ranks[0].indices(step) + ranks[1].indices(step) == batch
    assert list(StepBatchSampler(10, 4, seed=6, start=0, stop=5)) != list(sampler)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(steps=1, batch_size=1, optimizer="sgd")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, batch_size=1, schedule="linear-warmup-cosine")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"steps": 1, "batch_size": 1, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        Trainer(nn.Linear(1, 1), plain_loss, config(precision="bf16"), LineData(), device="cpu")
    with pytest.raises(ValueError, match="scalar loss"):
        Trainer(nn.Linear(1, 1), lambda m, b, g: m(b["x"]), config(), LineData(), device="cpu").fit()


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", Path(__file__).with_name("ddp_worker.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_matches_one_process_on_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path / "ddp")]
    (tmp_path / "ddp").mkdir()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"rank": 0, "world_size": 2}, {"rank": 1, "world_size": 2}]
    weights = [load_file(str(tmp_path / "ddp" / f"rank{r}.safetensors")) for r in (0, 1)]
    worker = _load_worker()
    initial = worker.make_model().state_dict()
    single = worker.train(tmp_path / "single")
    for name, value in single.items():
        assert torch.equal(weights[0][name], weights[1][name]), name
        assert torch.allclose(weights[0][name], value, atol=1e-6, rtol=0), name
        assert not torch.equal(value, initial[name])  # training moved the weights

    ddp_log, single_log = train_lines(tmp_path / "ddp" / "run"), train_lines(tmp_path / "single")
    assert [line["step"] for line in ddp_log] == list(range(1, worker.STEPS + 1))  # rank 0 alone wrote
    for key in ("loss", "grad_norm"):  # averaged over ranks = computed on the whole global batch
        assert [line[key] for line in ddp_log] == pytest.approx([line[key] for line in single_log], abs=1e-6)


# -- the training data cache ------------------------------------------------------------------------
def describe(index: int) -> dict:
    return {"seed": 1, "index": index, "range": (0, 2)}


def test_cache_makes_each_item_once_with_json_meta(tmp_path):
    made = []

    def make(index):
        made.append(index)
        return {"values": np.full(3, index, np.int16)}, {"made": index}

    calls = []
    paths = cache.build_cache(tmp_path, "item", range(3), describe, make, lambda *done: calls.append(done))
    assert [p.name for p in paths] == ["item_0000.npz", "item_0001.npz", "item_0002.npz"] and calls[-1] == (3, 3)
    assert cache.read_meta(paths[2]) == ({"seed": 1, "index": 2, "range": [0, 2]}, {"made": 2})
    with np.load(paths[2]) as stored:                        # plain JSON text beside the arrays
        assert json.loads(str(stored["meta"]))["range"] == [0, 2] and stored["values"].tolist() == [2, 2, 2]
    stamps = [p.stat().st_mtime_ns for p in paths]
    again = cache.build_cache(tmp_path, "item", range(5), describe, make)
    assert again[:3] == paths and [p.stat().st_mtime_ns for p in paths] == stamps
    assert made == [0, 1, 2, 3, 4]                            # resumed: only the missing items were made
    with pytest.raises(ValueError, match="another seed or other data options"):
        cache.build_cache(tmp_path, "item", [1], lambda index: {**describe(index), "seed": 2}, make)


def test_cache_leaves_nothing_of_an_item_whose_writing_failed(tmp_path, monkeypatch):
    def full_disk(handle, **arrays):
        handle.write(b"half an item")
        raise OSError("no space left on device")

    cache.build_cache(tmp_path, "item", [0], describe, lambda index: ({"values": np.zeros(2)}, {}))
    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(OSError, match="no space"):
        cache.build_cache(tmp_path, "item", range(2), describe, lambda index: ({"values": np.zeros(2)}, {}))
    assert [p.name for p in tmp_path.iterdir()] == ["item_0000.npz"]   # no item 1, no temporary file
