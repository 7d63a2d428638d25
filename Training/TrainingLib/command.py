"""The child processes of a run: ``meddiff train ... --detach``, its resume, and registering the model.

The launcher child runs in the runs folder and returns once the detached run is under way;
the run itself records its command, so a resume repeats it exactly.  No MRML and no Qt.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from meddiffusion.training.recipe import PHANTOM

from MedDiffusionUtilsLib.processes import backend_command, backend_environment, python_executable
from MedDiffusionUtilsLib.runner import TaskProcess

from .choices import TaskOption, option_values, options_read
from .runs import gate_verdict

__all__ = ["Launch", "new_run_folder", "train_arguments", "resume_command", "launch", "register_model",
           "REGISTER_SCRIPT"]


@dataclass
class Launch:
    """A started ``meddiff train --detach``: its launcher child and the run folder it trains in."""

    task: TaskProcess
    folder: Path


def new_run_folder(runs_folder: Path, task: str) -> Path:
    """A fresh ``<task>-<date>-<time>`` folder under ``runs_folder`` (``~2``, ``~3`` ... if taken)."""
    folder = runs_folder / f"{task or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = folder.with_name(f"{folder.name.rsplit('~', 1)[0]}~{suffix}")
    return folder


def train_arguments(p, folder: Path, data: str | None = None, options: Sequence[TaskOption] = ()) -> list[str]:
    """``meddiff train`` arguments (after ``train``) for the parameters ``p`` and run folder ``folder``.

    ``options`` are the task's own (``TaskChoice.options``): each one set and read with the others'
    values is written, in the recipe's order, before the further options (which may override it).
    """
    arguments = [p.task, "--out", str(folder), "--steps", str(p.steps), "--batch-size", str(p.batchSize),
                 "--lr", f"{p.learningRate:g}", "--device", p.device, "--precision", p.precision]
    if p.config:
        arguments += ["--config", p.config]
    if p.baseModel:
        arguments += ["--from-model", p.baseModel]
    if p.source != PHANTOM:
        arguments += ["--source", p.source, "--data", str(data), "--val-patients", f"{p.valPatients:g}"]
    if p.gpus > 1:
        arguments += ["--gpus", str(p.gpus)]
    if p.previewEvery:
        arguments += ["--preview-every", str(p.previewEvery)]
    values = option_values(p)
    for option in options_read(options, values):
        if option.flag in values:
            arguments += option.words(values[option.flag])
    return [*arguments, *shlex.split(p.extraOptions), "--detach"]


def resume_command(info: dict) -> list[str]:
    """The ``meddiff train`` arguments (after ``train``) that continue a run exactly: its own
    command with ``--resume``, detached again."""
    command = info.get("command")
    if not command:
        raise ValueError("the run does not record its command, so it cannot be resumed from here")
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if "train" not in argv:
        raise ValueError(f"the run's command is not a meddiff train command: {command}")
    argv = argv[argv.index("train") + 1:]
    drop = {"--resume", "--detach", "--run-child"}
    argv = [part for part in argv if part not in drop]
    if "--events" in argv:  # the launcher's own reporting is added again
        at = argv.index("--events")
        del argv[at:at + 2]
    return [*argv, "--resume", "--detach"]


def launch(arguments: Sequence[str], folder: Path, backend: Sequence[str] | None, install, on_event,
           on_state) -> TaskProcess:
    """The launcher child, run in the runs folder: the detached run inherits its working
    folder, and the launcher's own temporary folder is removed when it returns.

    ``backend`` replaces ``[python, -m, meddiffusion]`` (tests)."""
    command = backend_command("train", *arguments)
    if backend:
        command = [*backend, *command[3:]]
    task = TaskProcess(on_event=on_event, on_state=on_state)
    if install is not None and not task.install(install):
        return task
    folder.parent.mkdir(parents=True, exist_ok=True)
    task.start(command, env=backend_environment(), cwd=folder.parent)
    return task


def register_model(folder: str | os.PathLike, model_id: str, *, anyway: bool = False, overwrite: bool = False,
                   on_state=None) -> TaskProcess:
    """Register a finished run's model (``model.json`` + ``model.safetensors``) under ``model_id``
    in the user model folder, in a child process (checking safetensors imports torch).

    Refused when the run failed its gate (worse than its parent) unless ``anyway``.
    """
    folder = Path(folder)
    model_id = model_id.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model_id):
        raise ValueError("the model id may hold letters, digits, '.', '_' and '-' and must start with a "
                         f"letter or digit; got '{model_id}'")
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ValueError(f"the run in {folder} has no model yet (model.json and model.safetensors)")
    words, passed = gate_verdict(folder)
    if not passed and not anyway:
        raise ValueError(f"not registered: {words}")
    command = [python_executable(), "-c", REGISTER_SCRIPT, str(folder), model_id, "1" if overwrite else "0"]
    task = TaskProcess(on_state=on_state)
    task.start(command, env=backend_environment())
    return task


#: the child that registers a run's model (the card keeps the run's provenance and gate)
REGISTER_SCRIPT = """
import json, sys
from pathlib import Path
from meddiffusion.catalog import ModelEntry, register_user_model
folder, model_id, overwrite = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
try:
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card.pop("schema_version", None)
    entry = ModelEntry.from_dict({**card, "id": model_id})
    registered = register_user_model(entry, folder / "model.safetensors", overwrite=overwrite)
except (OSError, ValueError) as error:
    print(json.dumps({"event": "error", "message": str(error)}))
    sys.exit(2)
print(json.dumps({"event": "result", "model_id": registered.id, "card": str(registered.folder / (registered.id + ".json"))}))
"""
