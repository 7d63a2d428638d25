"""``meddiff train``: one subcommand per registered task with a recipe, one loop, recorded command lines.

The toy task (``toy_task/``, registered by the ``toy_task`` fixture of ``conftest.py``) trains
through the real command in about a second.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import subprocess
import sys

import pytest

from meddiffusion import cli
from meddiffusion.catalog import get_model, shipped_models
from meddiffusion.training.loop import ema_decay
from meddiffusion.training.recipe import CLEAN_FOLDER, PAIRED_FOLDER, PHANTOM, Recipe


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:  # --help
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def test_the_toy_task_trains_to_a_registered_model(toy_task, tmp_path):
    code, text, _ = run_cli("train", "--help")
    assert code == 0 and "toy" in text.split("<task>", 1)[1] and "meddiff train toy" in text
    code, text, _ = run_cli("train", "toy", "--help")
    assert code == 0 and "--target" in text and "small (any device)" in text and "toy accepts phantom" in text

    out = tmp_path / "run"
    code, text, err = run_cli("train", "toy", "--out", out, "--register", "toy-trained", "--events", "none")
    assert code == 0, err
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "toy" and card["id"] == "toy-trained"
    assert card["training_command"] == f"meddiff train toy --config small --steps 40 --out {out} --register " \
                                       "toy-trained --batch-size 8 --lr 10 --seed 0 --val-every 0 --ckpt-every 0 " \
                                       "--target 100 --pairs 32"
    assert card["metrics"]["steps"] == 40 and card["metrics"]["val_loss_end"] < card["metrics"]["val_loss_start"]
    assert sorted(p.name for p in (out / "data").iterdir()) == ["pairs_0000.npz", "pairs_0001.npz"]
    assert (out / "checkpoint_step40.safetensors").exists() or any(out.glob("checkpoint_step40*"))

    from toy_task.core import load_model

    model = load_model("toy-trained")
    assert get_model("toy-trained").user and abs(model.constant - 100.0) < 20.0


def test_an_unsupported_data_source_is_refused_with_the_accepted_ones(toy_task, tmp_path):
    code, _, err = run_cli("train", "toy", "--out", tmp_path / "run", "--source", CLEAN_FOLDER, "--events", "none")
    assert code == 2
    assert "toy training does not take 'clean-folder'; it accepts: phantom (pairs simulated from" in err
    assert not (tmp_path / "run").exists()                    # refused before anything was made
    from toy_task.recipe import RECIPE

    with pytest.raises(ValueError, match="unknown data source 'dicom'"):
        RECIPE.check_source("dicom")
    RECIPE.check_source(PHANTOM)
    with pytest.raises(ValueError, match="sources must be some of"):
        Recipe(**{**RECIPE.__dict__, "sources": (PAIRED_FOLDER, "scanner")})


def test_command_lines_reproduce_the_shipped_cards():
    parser = cli.build_parser()
    from meddiffusion.commands.train import command_line

    commands = [m.training_command for m in shipped_models() if m.training_command.startswith("meddiff train ")]
    assert len(commands) >= 2
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert command_line(args) == command
    args = parser.parse_args(["train", "motion", "--out", "x", "--resume"])
    assert args.steps == 6000 and args.lr == 5e-4 and "--resume" not in command_line(args)


def test_the_recipes_declare_their_options_without_torch():
    code = ("import json, sys; from meddiffusion.commands.train import recipes; "
            "print(json.dumps([{r.name: [o.flags[0] for o in r.options] for r in recipes()}, 'torch' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    options, torch_loaded = json.loads(result.stdout)
    assert list(options) == ["ldct", "motion", "spect", "petmr", "cardiac4d"] and not torch_loaded
    assert [len(options[name]) for name in ("ldct", "motion", "spect")] == [19, 12, 8]
    assert {"--no-mr", "--subjects", "--val-subjects", "--kind", "--patch", "--data"} <= set(options["petmr"])
    assert {"--variant", "--vae", "--anatomy", "--studies", "--cfg-dropout", "--perceptual-weight"} <= set(
        options["cardiac4d"])


def test_one_ema_rule_for_every_task():
    assert ema_decay(100) == pytest.approx(0.9) and ema_decay(1000) == pytest.approx(0.99)
    assert ema_decay(3500) == ema_decay(150000) == 0.995 and ema_decay(5) == 0.0
