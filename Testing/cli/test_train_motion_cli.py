"""``meddiff train motion`` end to end in a child process: a few steps of the tiny ProDM UNet on two small
simulated cases, then the model card and weights it exports and registers.

About 20 s: the command simulates its two cases (phantom, noise, motion) before it trains, and
that is the path under test."""

import json
import os

import torch

from meddiffusion.catalog import get_model, load_state_dict

from cli_runner import meddiff  # Testing/cli's one child-process runner


def test_train_motion_exports_a_card_and_loadable_weights(tmp_path, monkeypatch):
    models, out, data = tmp_path / "models", tmp_path / "run", tmp_path / "cases"
    env = {**os.environ, "MEDDIFF_MODEL_DIR": str(models), "MEDDIFF_THREADS": "1"}
    result = meddiff("train", "motion", "--config", "tiny", "--steps", "5", "--batch-size", "2", "--cases", "1",
                     "--val-cases", "1", "--size", "96", "--slices", "6", "--data", data, "--out", out, "--register",
                     "tiny-motion", "--val-every", "0", "--ckpt-every", "0", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["event"] == "result" and final["steps"] == 5 and final["registered"]
    assert final["model_id"] == "tiny-motion" and final["cases"] == 1
    assert sorted(p.name for p in data.glob("case_*.npz")) == ["case_0000.npz", "case_0001.npz"]

    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "motion" and card["weights"] == "model.safetensors"
    assert card["training_command"].startswith("meddiff train motion --config tiny --steps 5 --out")
    assert "--batch-size 2" in card["training_command"] and "--objective bridge" in card["training_command"]
    arch = card["architecture"]
    assert arch["network"] == "ProDMUNet" and arch["objective"] == "bridge"
    assert arch["kwargs"] == {"context_slices": 3, "channels": [8, 8, 16], "num_res_blocks": 1, "norm_num_groups": 4}
    assert arch["diffusion"] == {"kind": "brownian_bridge", "num_timesteps": 1000, "schedule": "linear",
                                 "max_var": 1.0}
    assert arch["sampler"] == {"steps": 10, "eta": 0.0} and arch["patch_size"] == 64
    assert arch["calcium_loss"]["lambda"] == 20.0 and abs(arch["calcium_loss"]["tau_hu"] - 1000 / 60) < 1e-3
    assert arch["calcium_loss"]["warmup_steps"] == 0          # min(300, steps / 10)
    assert card["normalization"] == {"kind": "hu_window", "min_hu": -200, "max_hu": 800, "range": [-1, 1]}
    metrics = card["metrics"]
    assert metrics["steps"] == 5 and metrics["val_loss_start"] > 0 and metrics["val_loss_end"] > 0
    assert metrics["cases"] == 1 and len(metrics["agatston_range"]) == 2

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(models))
    entry = get_model("tiny-motion")
    from meddiffusion.nets.prodm import ProDMUNet

    net = ProDMUNet(**entry.architecture["kwargs"])
    net.load_state_dict(load_state_dict(entry))           # strict: every weight present, none left over
    with torch.no_grad():
        output = net(torch.zeros(1, 1, 64, 64), torch.tensor([999]), torch.zeros(1, 3, 64, 64))
    assert output.shape == (1, 1, 64, 64) and torch.isfinite(output).all()
