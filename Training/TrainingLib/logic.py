"""Training logic: a ``meddiff train`` run started detached, followed in MRML, registered at the end.

The training itself is the backend's (``meddiff train <task> --detach``): a child that outlives
Slicer and writes everything into its run folder (``run.json``, ``events.jsonl``,
``metrics.jsonl``, checkpoints, ``preview/``, ``model.json``).  This logic only reads that
folder, so a run started yesterday, or before Slicer was closed, is followed the same way as a
new one::

    logic = TrainingLogic()
    logic.parameters().update(task="ldct", source="paired-folder", steps=200)
    logic.set_task_option("--dose", 0.1)    # the task's own options (TaskChoice.options)
    logic.set_scene_volumes([(low_dose, normal_dose), ...])   # or dataFrom="folder"/"manifest"
    launch = logic.start()                  # the launcher child; the run folder is launch.folder
    monitor = logic.attach(launch.folder)   # table, chart and preview nodes of that run
    monitor.poll()                          # new curve rows, events, preview step, state
    logic.cancel(launch.folder)             # the run writes a checkpoint and stops

Volumes taken from the scene are written with their geometry into ``RUN/volumes/`` with a
manifest naming each volume's patient and, for a task whose pairs bring further volumes (a
SPECT study's CT or μ-map, the recipe's ``extras``), those in columns of their own
(``RUN/data`` is the backend's own cache).  MRML and files only, no Qt.  The work is done by
the sibling modules:

  choices     the parameters, the trainable tasks, their defaults and own options
  runs        a run folder's run.json, the runs listed, cancel, the gate verdict
  command     the ``meddiff train ... --detach`` launcher, its resume, registering the model
  scenedata   scene volumes kept as rows and written with their geometry and a manifest
  curves      metrics.jsonl as a table node and charts
  monitor     RunMonitor: one run folder followed into MRML (curves, preview views, ETA)

Their public names are importable from here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import slicer

from meddiffusion.training.recipe import LOWDOSE_FOLDER, PAIRED_FOLDER, PHANTOM

from MedDiffusionUtilsLib import environment
from MedDiffusionUtilsLib.runner import TaskProcess

from . import command, scenedata
from .choices import (DATA_FROM, DEFAULT_RUNS_FOLDER, MODULE, SCENE_FOLDER, SOURCE_LABELS, TaskChoice, TaskOption,
                      TrainingParameters, find_task, option_problems, option_values, options_read, task_values,
                      training_tasks)
from .command import REGISTER_SCRIPT, Launch, resume_command
from .curves import RUN_ATTRIBUTE, TrainingCurves
from .monitor import LAYOUT_ID, LAYOUT_XML, PREVIEW_VIEWS, RunMonitor, RunStatus, show_run_layout
from .runs import FINISHED, cancel_run, gate_verdict, list_runs, read_run
from .scenedata import patient_of

__all__ = ["MODULE", "DEFAULT_RUNS_FOLDER", "SCENE_FOLDER", "DATA_FROM", "SOURCE_LABELS", "TrainingParameters",
           "TaskChoice", "RunStatus", "RunMonitor", "TrainingCurves", "TrainingLogic", "training_tasks",
           "patient_of", "read_run", "list_runs", "cancel_run", "gate_verdict", "resume_command"]

#: re-exported for the panel and scripts that import them from here
_REEXPORTED = (LOWDOSE_FOLDER, PAIRED_FOLDER, PHANTOM, REGISTER_SCRIPT, RUN_ATTRIBUTE, LAYOUT_ID, LAYOUT_XML,
               PREVIEW_VIEWS, FINISHED, show_run_layout)


class TrainingLogic:
    """Start, follow, cancel, resume and register training runs (see the module doc).

    ``backend`` replaces ``[python, -m, meddiffusion]`` for the child processes (tests).
    """

    title = "Model Training"
    ROLES = scenedata.ROLES

    def __init__(self, scene=None, *, backend: Sequence[str] | None = None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.backend = list(backend) if backend else None
        self.monitor: RunMonitor | None = None

    def parameters(self) -> TrainingParameters:
        return TrainingParameters.for_module(self.scene, MODULE)

    # -- choices -----------------------------------------------------------------------------
    @staticmethod
    def tasks() -> list[TaskChoice]:
        return training_tasks()

    def task_choice(self, name: str | None = None) -> TaskChoice:
        return find_task(name if name is not None else self.parameters().task)

    @staticmethod
    def base_models(task: str) -> tuple[list[Any], str]:
        """(catalogue entries of ``task``, why none could be read): what can be fine-tuned."""
        return environment.model_catalogue(task)

    def select_task(self, name: str) -> TaskChoice:
        """Make ``name`` the task, with its recipe's defaults (network size, steps, batch, learning rate)
        and a data source it accepts; a base model of another task is dropped."""
        choice = self.task_choice(name)
        parameters = self.parameters()
        models, _ = self.base_models(name)
        parameters.update(**task_values(choice, parameters, (entry.id for entry in models)))
        return choice

    def runs_folder(self) -> Path:
        return Path(self.parameters().runsFolder or DEFAULT_RUNS_FOLDER).expanduser()

    # -- the task's own options --------------------------------------------------------------
    def task_options(self) -> dict[str, Any]:
        """The task's own options set away from their defaults, by flag (what the command line adds)."""
        return option_values(self.parameters())

    def set_task_option(self, flag: str, value: Any) -> None:
        """Set one of the task's own options (``TaskChoice.options``); its default (or "" for a model)
        removes it, so the command line carries only what the user changed."""
        options = self.task_choice().options
        option = next((option for option in options if option.flag == flag), None)
        if option is None:
            raise ValueError(f"{self.parameters().task} has no option {flag} to set here")
        values = {**self.task_options(), flag: option.check(value)}
        if values[flag] == option.default:
            del values[flag]
        ordered = {o.flag: values[o.flag] for o in options if o.flag in values}
        self.parameters().taskOptions = json.dumps(ordered) if ordered else ""

    def read_options(self) -> list[TaskOption]:
        """The task's options the run reads with the values set (``--vae`` only for an LDM variant, say)."""
        return options_read(self.task_choice().options, self.task_options())

    # -- volumes from the scene --------------------------------------------------------------
    def extras(self) -> dict[str, str]:
        """The further volumes a row of the chosen task and source may bring, by manifest column, with their
        words (a SPECT pair's CT or μ-map); none unless the source is pairs."""
        return self._pair_extras() if self.parameters().source == PAIRED_FOLDER else {}

    def _pair_extras(self) -> dict[str, str]:
        try:
            return dict(self.task_choice().extras)
        except ValueError:  # no task chosen yet
            return {}

    def set_scene_volumes(self, rows: Sequence[Sequence[Any] | Any]) -> None:
        """The scene's training volumes: (input, target, *extras) rows, or single volumes (clean or low-dose).

        Each row keeps its own node references (``trainingVolume3``, ``trainingTarget3``), so a
        row still being filled in (one side empty) is kept with the scene.
        """
        scenedata.set_scene_volumes(self.parameters(), rows, tuple(self.extras()))

    def scene_volumes(self) -> list[tuple[Any, ...]]:
        """The stored rows: (input, target) and the volumes of the task's ``extras`` columns."""
        return scenedata.scene_volumes(self.parameters(), tuple(self.extras()))

    def write_scene_data(self, folder: str | os.PathLike, source: str,
                         rows: Sequence[Sequence[Any]] | None = None) -> Path:
        """Write the scene's volumes (or ``rows``) with their geometry and a manifest; returns the
        manifest (see :func:`scenedata.write_scene_data`)."""
        return scenedata.write_scene_data(folder, source, self.scene_volumes() if rows is None else rows,
                                          tuple(self._pair_extras()) if source == PAIRED_FOLDER else ())

    # -- starting ----------------------------------------------------------------------------
    def missing(self) -> list[str]:
        """What keeps Start disabled, in words (empty when a run can start)."""
        parameters, problems = self.parameters(), []
        try:
            choice = self.task_choice()
        except ValueError:
            return ["choose a task"]
        if parameters.source not in choice.sources:
            return [f"{choice.name} cannot learn from {SOURCE_LABELS[parameters.source].lower()}"]
        if parameters.source != PHANTOM:
            if parameters.dataFrom == "scene":
                rows = self.scene_volumes()
                complete = [row for row in rows if row[0] is not None
                            and (row[1] is not None or parameters.source != PAIRED_FOLDER)]
                if len(complete) < 2 or len(complete) < len(rows):
                    problems.append("choose at least two complete rows of scene volumes")
                problems += self._extras_problems(rows)
            elif not parameters.dataPath.strip():
                problems.append("choose a folder" if parameters.dataFrom == "folder" else "choose a CSV manifest")
            elif parameters.dataFrom == "manifest" and not parameters.dataPath.lower().endswith(".csv"):
                problems.append("the manifest must be a .csv file")
        if parameters.config and parameters.config not in choice.configs:
            problems.append(f"unknown network size '{parameters.config}'")
        return problems + option_problems(choice.options, self.task_options(), choice.name)

    def _extras_problems(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """What the task's reader would refuse of the CT / μ-map volumes the scene's pairs bring (the recipe's
        ``check_extras``), so Start refuses it instead of the run a moment later."""
        from types import SimpleNamespace

        from meddiffusion.tasks.registry import get_task
        from meddiffusion.training.recipe import recipe_of

        columns = tuple(self.extras())
        check = recipe_of(get_task(self.parameters().task)).check_extras
        if check is None or not columns:
            return []
        choice, values = self.task_choice(), self.task_options()
        options = {option.flag: values.get(option.flag, option.default) for option in choice.options}
        args = SimpleNamespace(**{flag.lstrip("-").replace("-", "_"): value for flag, value in options.items()})
        pairs = [(f"row {index + 1}", {column for column, node in zip(columns, row[2:]) if node is not None})
                 for index, row in enumerate(rows)]
        return check(pairs, args)

    def new_run_folder(self) -> Path:
        return command.new_run_folder(self.runs_folder(), self.parameters().task)

    def train_arguments(self, folder: Path, data: str | None = None) -> list[str]:
        """``meddiff train`` arguments (after ``train``) for the parameters and run folder ``folder``."""
        return command.train_arguments(self.parameters(), folder, data, self.task_choice().options)

    def start(self, *, folder: str | os.PathLike | None = None, install=None, on_event=None,
              on_state=None) -> Launch:
        """Write the scene's volumes if they are the data, then launch ``meddiff train --detach``.

        The launcher child returns once the detached run is under way; follow the run with
        :meth:`attach` on ``Launch.folder`` (also when the launcher has finished).
        """
        problems = self.missing()
        if problems:
            raise ValueError("; ".join(problems))
        p = self.parameters()
        folder = Path(folder) if folder is not None else self.new_run_folder()
        data = None
        if p.source != PHANTOM:
            data = str(self.write_scene_data(folder, p.source)) if p.dataFrom == "scene" else p.dataPath.strip()
        return Launch(self._launch(self.train_arguments(folder, data), folder, install, on_event, on_state), folder)

    def _launch(self, arguments: Sequence[str], folder: Path, install, on_event, on_state) -> TaskProcess:
        return command.launch(arguments, folder, self.backend, install, on_event, on_state)

    def resume(self, folder: str | os.PathLike, *, install=None, on_event=None, on_state=None) -> Launch:
        """Continue a stopped run from its last checkpoint with exactly its own command."""
        folder = Path(folder)
        info = read_run(folder)
        if info.get("state") == "running":
            raise ValueError("the run is still running")
        return Launch(self._launch(resume_command(info), folder, install, on_event, on_state), folder)

    # -- following ---------------------------------------------------------------------------
    def attach(self, folder: str | os.PathLike) -> RunMonitor:
        """Follow the run in ``folder`` (new, running or finished): its curves so far, its preview."""
        self.monitor = RunMonitor(self.scene, folder)
        self.monitor.poll()
        return self.monitor

    def runs(self) -> list[dict]:
        return list_runs(self.runs_folder())

    @staticmethod
    def cancel(folder: str | os.PathLike) -> None:
        cancel_run(folder)

    # -- registering -------------------------------------------------------------------------
    def register(self, folder: str | os.PathLike, model_id: str, *, anyway: bool = False,
                 overwrite: bool = False, on_state=None) -> TaskProcess:
        """Register a finished run's model (``model.json`` + ``model.safetensors``) under ``model_id``
        in the user model folder, in a child process (checking safetensors imports torch).

        Refused when the run failed its gate (worse than its parent) unless ``anyway``.
        Every model selector that reads the catalogue again then lists it.
        """
        return command.register_model(folder, model_id, anyway=anyway, overwrite=overwrite, on_state=on_state)
