"""Training logic: a ``meddiff train`` run started detached, followed in MRML, registered at the end.

The training itself is the backend's (``meddiff train <task> --detach``): a child that outlives
Slicer and writes everything into its run folder (``run.json``, ``events.jsonl``,
``metrics.jsonl``, checkpoints, ``preview/``, ``model.json``).  This logic only reads that
folder, so a run started yesterday, or before Slicer was closed, is followed the same way as a
new one::

    logic = TrainingLogic()
    logic.parameters().update(task="ldct", source="paired-folder", steps=200)
    logic.set_scene_volumes([(low_dose, normal_dose), ...])   # or dataFrom="folder"/"manifest"
    launch = logic.start()                  # the launcher child; the run folder is launch.folder
    monitor = logic.attach(launch.folder)   # table, chart and preview nodes of that run
    monitor.poll()                          # new curve rows, events, preview step, state
    logic.cancel(launch.folder)             # the run writes a checkpoint and stops

Volumes taken from the scene are written with their geometry into ``RUN/volumes/`` with a
manifest naming each volume's patient (``RUN/data`` is the backend's own cache).  MRML and
files only, no Qt.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer
import vtk

from meddiffusion.tasks import registry
from meddiffusion.training.recipe import DATA_SOURCES, LOWDOSE_FOLDER, PAIRED_FOLDER, PHANTOM, recipe_of

from MedDiffusionUtilsLib import environment, layouts, nodes
from MedDiffusionUtilsLib.parameters import Choice, Float, Int, ParameterSet, Text
from MedDiffusionUtilsLib.processes import backend_command, backend_environment, python_executable
from MedDiffusionUtilsLib.runner import TaskProcess

__all__ = ["MODULE", "DEFAULT_RUNS_FOLDER", "SCENE_FOLDER", "DATA_FROM", "SOURCE_LABELS", "TrainingParameters",
           "TaskChoice", "RunStatus", "RunMonitor", "TrainingCurves", "TrainingLogic", "training_tasks",
           "patient_of", "read_run", "list_runs", "cancel_run", "gate_verdict", "resume_command"]

MODULE = "Training"
#: where runs are created unless the user picks another folder (the module's setting)
DEFAULT_RUNS_FOLDER = Path.home() / ".meddiffusion" / "runs"
#: the run's sub-folder holding volumes taken from the scene (``data/`` is the backend's cache)
SCENE_FOLDER = "volumes"
#: where the user's volumes come from, besides the built-in phantom
DATA_FROM = ("scene", "folder", "manifest")
#: what the source combo box shows for each backend data source
SOURCE_LABELS = {
    PHANTOM: "Built-in phantom (simulated pairs)",
    PAIRED_FOLDER: "Pairs (input + target)",
    "clean-folder": "Clean volumes (pairs made by the task's physics)",
    LOWDOSE_FOLDER: "Low-dose volumes only (self-supervised)",
}
#: run states in which nothing changes any more
FINISHED = ("done", "failed", "cancelled", "stopped")
#: the view layout of a followed run: three linked axial views over the curves
LAYOUT_ID = 4217
LAYOUT_XML = """<layout type="vertical" split="true">
 <item splitSize="500"><layout type="horizontal">
  <item><view class="vtkMRMLSliceNode" singletontag="Red"><property name="orientation" action="default">Axial</property>
   <property name="viewlabel" action="default">R</property><property name="viewcolor" action="default">#F34A33</property></view></item>
  <item><view class="vtkMRMLSliceNode" singletontag="Yellow"><property name="orientation" action="default">Axial</property>
   <property name="viewlabel" action="default">Y</property><property name="viewcolor" action="default">#EDD54C</property></view></item>
  <item><view class="vtkMRMLSliceNode" singletontag="Green"><property name="orientation" action="default">Axial</property>
   <property name="viewlabel" action="default">G</property><property name="viewcolor" action="default">#6EB04B</property></view></item>
 </layout></item>
 <item splitSize="400"><view class="vtkMRMLPlotViewNode" singletontag="PlotView1">
  <property name="viewlabel" action="default">P</property></view></item>
</layout>"""
#: preview image -> (node name, slice view): before | current model | reference
PREVIEW_VIEWS = {"input": ("Training preview: before", "Red"), "model": ("Training preview: current model", "Yellow"),
                 "reference": ("Training preview: reference", "Green")}
#: marks the nodes a run's curves and preview are shown in (value: the run folder)
RUN_ATTRIBUTE = "Training.run"
STEP_FILE = re.compile(r"step_(\d+)\.nrrd$")


class TrainingParameters(ParameterSet):
    """What the module remembers with the scene; scene volumes are node references (see ``scene_volumes``)."""

    task = Text("")
    baseModel = Text("")  #: a catalogue model to fine-tune, "" to train from scratch
    source = Choice(PHANTOM, choices=tuple(DATA_SOURCES))
    dataFrom = Choice("scene", choices=DATA_FROM)
    dataPath = Text("")  #: a folder, or a CSV manifest
    valPatients = Float(0.2, minimum=0.0)
    config = Text("")
    steps = Int(200, minimum=1, maximum=10_000_000)
    batchSize = Int(4, minimum=1, maximum=4096)
    learningRate = Float(1e-3, minimum=1e-9, maximum=1.0)
    device = Choice("auto", choices=("auto", "cpu", "cuda", "mps"))
    precision = Choice("auto", choices=("auto", "fp32", "bf16", "fp16"))
    gpus = Int(1, minimum=1, maximum=64)
    sceneRows = Int(0, minimum=0)  #: rows of scene volumes (see TrainingLogic.set_scene_volumes)
    previewEvery = Int(20, minimum=0, maximum=1_000_000)
    extraOptions = Text("")  #: further flags of ``meddiff train <task>`` (e.g. ``--dose 0.1``)
    runsFolder = Text("")
    registerId = Text("")


# -- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskChoice:
    """A registry task that has a training recipe, as the task selector shows it."""

    name: str
    title: str
    description: str
    configs: dict[str, str]
    sources: tuple[str, ...]
    defaults: dict[str, Any]

    @property
    def default_config(self) -> str:
        return "small" if "small" in self.configs else next(iter(self.configs))

    def config_label(self, config: str) -> str:
        return f"{config} ({self.configs[config]})"


def training_tasks() -> list[TaskChoice]:
    """Every registered task with a recipe, in registry order (a new task appears by registering)."""
    found = []
    for spec in registry.all_tasks():
        if not spec.recipe:
            continue
        recipe = recipe_of(spec)
        found.append(TaskChoice(spec.name, spec.title, recipe.description, dict(recipe.configs),
                                tuple(recipe.sources), dict(recipe.defaults)))
    return found


# -- the run folder, read without the backend's help where it has none yet -----------------------
def _runs_module():
    """``meddiffusion.training.runs`` where the backend has it (None before it landed)."""
    try:
        from meddiffusion.training import runs
    except ImportError:
        return None
    return runs


def _as_dict(value: Any) -> dict:
    """A backend ``RunStatus`` (or a plain record) as a dict with ``folder`` as text."""
    if isinstance(value, dict):
        return value
    return value.to_dict() if hasattr(value, "to_dict") else {k: str(v) if isinstance(v, Path) else v
                                                             for k, v in vars(value).items()}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_run(folder: str | os.PathLike) -> dict:
    """``run.json`` of a run folder as a dict (``{}`` before the child wrote it).

    A run recorded as running whose process is gone (the machine restarted, the child was
    killed) reads as ``stopped``: it can be resumed from its last checkpoint.
    """
    folder = Path(folder)
    runs = _runs_module()
    if runs is not None and hasattr(runs, "read_run"):
        try:
            return _as_dict(runs.read_run(folder))
        except (OSError, ValueError):
            return {}
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if info.get("state") == "running" and not _alive(info.get("pid")):
        info["state"] = "stopped"
    return info


def list_runs(parent: str | os.PathLike) -> list[dict]:
    """The runs under ``parent``, newest first: each ``run.json`` with ``folder`` added."""
    parent = Path(parent)
    runs = _runs_module()
    if runs is not None and hasattr(runs, "list_runs"):
        found = [_as_dict(run) for run in runs.list_runs(parent)]
        for run in found:
            run.setdefault("folder", str(parent / run.get("name", "")))
    else:
        found = [{**read_run(run_json.parent), "folder": str(run_json.parent)}
                 for run_json in parent.glob("*/run.json")] if parent.is_dir() else []
    return sorted(found, key=lambda run: str(run.get("started", "")), reverse=True)


def cancel_run(folder: str | os.PathLike) -> None:
    """Ask a running run to stop; it writes a resumable checkpoint first (the backend's SIGTERM)."""
    runs = _runs_module()
    if runs is not None and hasattr(runs, "cancel_run"):
        if not runs.cancel_run(Path(folder)):
            raise ValueError(f"the run in {folder} is not running")
        return
    info = read_run(folder)
    if info.get("state") != "running":
        raise ValueError(f"the run in {folder} is not running ({info.get('state', 'no run.json')})")
    os.kill(int(info["pid"]), signal.SIGTERM)


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


def gate_verdict(folder: str | os.PathLike, info: dict | None = None) -> tuple[str, bool]:
    """(one sentence on the registration gate, whether the new model passed it) of a finished run.

    The gate compares the new model with its parent on the validation patients by the task's
    metric; a run from scratch on the phantom has no gate and passes.
    """
    from meddiffusion.training.finetune import gate_words

    info = info if info is not None else read_run(folder)
    gate = (info.get("result") or {}).get("gate")
    if gate is None:
        try:
            card = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "the run has not written its model yet", False
        gate = (card.get("provenance") or {}).get("gate")
    if not gate:
        return "no parent to compare with (trained from scratch)", True
    return gate_words(gate, registering=False, anyway=False), bool(gate.get("passed", True))


# -- curves --------------------------------------------------------------------------------------
class TrainingCurves:
    """A run's ``metrics.jsonl`` as a table node (step, train loss, val loss, val <metric> ...)
    drawn by plot series in a loss chart and one chart per validation metric.

    Rows are keyed by step (a train and a val line of the same step share a row; a value not
    logged at a step is NaN, drawn as a gap).  The table grows as lines are added.
    """

    X = "step"
    TRAIN, VAL = "train loss", "val loss"

    def __init__(self, scene, run_name: str, folder: str):
        self.scene = scene
        self.folder = folder
        self.run_name = run_name
        self.table = self._node("vtkMRMLTableNode", f"Training curves ({run_name})")
        self.table.RemoveAllColumns()
        self.rows: dict[int, int] = {}
        for name in (self.X, self.TRAIN, self.VAL):
            self._add_column(name)
        self.loss_chart = self._chart(f"Training loss ({run_name})", "loss", (self.TRAIN, self.VAL))
        self.loss_chart.SetYAxisLogScale(True)
        self.metric_charts: dict[str, Any] = {}

    def _node(self, class_name: str, name: str):
        """The node of this run with ``name`` (re-attaching reuses it), else a new one."""
        for index in range(self.scene.GetNumberOfNodesByClass(class_name)):
            node = self.scene.GetNthNodeByClass(index, class_name)
            if node.GetName() == name and node.GetAttribute(RUN_ATTRIBUTE) == self.folder:
                return node
        node = self.scene.AddNewNodeByClass(class_name, name)
        node.SetAttribute(RUN_ATTRIBUTE, self.folder)
        return node

    def _chart(self, name: str, y_title: str, columns: Sequence[str]):
        chart = self._node("vtkMRMLPlotChartNode", name)
        chart.SetTitle(name)
        chart.SetXAxisTitle(self.X)
        chart.SetYAxisTitle(y_title)
        chart.RemoveAllPlotSeriesNodeIDs()
        colors = ((0.12, 0.47, 0.71), (0.85, 0.37, 0.01), (0.17, 0.63, 0.17))
        for column, color in zip(columns, colors):
            series = self._node("vtkMRMLPlotSeriesNode", f"{column} ({name})")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName(self.X)
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetMarkerStyle(series.MarkerStyleCircle)
            series.SetMarkerSize(5)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart

    def _add_column(self, name: str) -> None:
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfTuples(self.table.GetTable().GetNumberOfRows())
        column.Fill(math.nan)
        self.table.GetTable().AddColumn(column)

    def _column(self, name: str):
        return self.table.GetTable().GetColumnByName(name)

    @property
    def row_count(self) -> int:
        return self.table.GetTable().GetNumberOfRows()

    def clear(self) -> None:
        """Empty the table (``metrics.jsonl`` was rewritten: a resume drops lines after its checkpoint)."""
        self.table.GetTable().SetNumberOfRows(0)
        self.rows.clear()
        self.table.Modified()

    def add(self, records: Sequence[dict]) -> int:
        """Put ``metrics.jsonl`` records into the table; returns how many were used."""
        table, used = self.table.GetTable(), 0
        for record in records:
            split, step = record.get("split"), record.get("step")
            if split not in ("train", "val") or not isinstance(step, (int, float)):
                continue
            values = {self.TRAIN if split == "train" else self.VAL: record.get("loss")}
            if split == "val":
                values.update({f"val {key}": value for key, value in record.items()
                               if key not in ("split", "step", "loss") and isinstance(value, (int, float))})
            for name in values:
                if self._column(name) is None:
                    self._add_column(name)
                    self.metric_charts[name] = self._chart(f"Validation {name[4:]} ({self.run_name})", name[4:], (name,))
            row = self.rows.get(int(step))
            if row is None:
                row = self.rows[int(step)] = table.GetNumberOfRows()
                table.SetNumberOfRows(row + 1)
                for index in range(table.GetNumberOfColumns()):
                    table.GetColumn(index).SetValue(row, math.nan)
                self._column(self.X).SetValue(row, float(step))
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self._column(name).SetValue(row, float(value))
            used += 1
        if used:
            for index in range(table.GetNumberOfColumns()):
                table.GetColumn(index).Modified()
            table.Modified()
            self.table.Modified()
        return used

    def values(self, name: str) -> np.ndarray:
        column = self._column(name)
        return np.array([column.GetValue(i) for i in range(self.row_count)], dtype=float)


# -- following one run ---------------------------------------------------------------------------
@dataclass
class RunStatus:
    """What one poll of a run folder found."""

    folder: Path
    state: str  #: starting, running, done, failed, cancelled or stopped (the process died)
    info: dict = field(default_factory=dict)  #: run.json
    progress: dict | None = None  #: the last progress event of the training stage
    events: list = field(default_factory=list)  #: events that arrived since the last poll
    new_rows: int = 0
    preview_step: int | None = None  #: the step shown as "current model", if any

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def message(self) -> str:
        return str(self.info.get("message") or "")


class _Lines:
    """New complete JSON lines of a growing file (a line still being written waits)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read(self) -> tuple[list[dict], bool]:
        """(new records, whether the file was rewritten from the start)."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return [], False
        rewritten = size < self.offset
        if rewritten:
            self.offset = 0
        if size == self.offset:
            return [], rewritten
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        records = []
        for line in chunk[:complete].decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records, rewritten


class RunMonitor:
    """Follows one run folder into MRML: curves table and charts, preview volumes, state.

    Each :meth:`poll` reads only what was appended since the previous one, so polling every
    second costs little however long the run.
    """

    def __init__(self, scene, folder: str | os.PathLike):
        self.scene = scene
        self.folder = Path(folder).absolute()
        self.curves = TrainingCurves(scene, self.folder.name, str(self.folder))
        self.metrics = _Lines(self.folder / "metrics.jsonl")
        self.events = _Lines(self.folder / "events.jsonl")
        self.preview: dict[str, Any] = {}
        self.preview_step: int | None = None
        self.progress: dict | None = None
        #: the latest events of the run (its log, for a panel that reconnects)
        self.events_seen: deque = deque(maxlen=500)
        self.status = RunStatus(self.folder, "starting")

    def poll(self) -> RunStatus:
        info = read_run(self.folder)
        state = info.get("state") or ("starting" if not self.status.finished else self.status.state)
        records, rewritten = self.metrics.read()
        if rewritten:
            self.curves.clear()
        new_rows = self.curves.row_count
        self.curves.add(records)
        events, _ = self.events.read()
        self.events_seen.extend(events)
        for event in events:
            if event.get("event") == "progress" and event.get("stage") == "train":
                self.progress = event
        self._update_preview()
        self.status = RunStatus(self.folder, state, info, self.progress, events,
                                self.curves.row_count - new_rows, self.preview_step)
        return self.status

    def eta_s(self) -> float | None:
        """Seconds left by the last progress event, less the time since it was written."""
        if not self.progress or self.progress.get("eta_s") is None or self.status.finished:
            return None
        try:
            elapsed = max(0.0, time.time() - self.events.path.stat().st_mtime)
        except OSError:
            elapsed = 0.0
        return max(0.0, float(self.progress["eta_s"]) - elapsed)

    # -- preview: before | current model | reference -------------------------------------------
    def _update_preview(self) -> None:
        folder = self.folder / "preview"
        if not folder.is_dir():
            return
        steps = sorted((int(match.group(1)), path) for path in folder.glob("step_*.nrrd")
                       if (match := STEP_FILE.search(path.name)))
        first = not self.preview
        for kind in ("input", "reference"):
            if kind not in self.preview and (folder / f"{kind}.nrrd").is_file():
                self._show(kind, folder / f"{kind}.nrrd")
        if steps and steps[-1][0] != self.preview_step:
            try:
                self._show("model", steps[-1][1])
                self.preview_step = steps[-1][0]
            except (OSError, ValueError):
                pass  # still being written: the next poll reads it
        if first and self.preview:
            self.show_views()

    def _show(self, kind: str, path: Path) -> None:
        name = PREVIEW_VIEWS[kind][0]
        node = self.preview.get(kind) or self._preview_node(name)
        fresh = nodes.read_volume(path, scene=self.scene, name=f"{name} (reading)")
        try:
            if node is None:
                node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
                node.CreateDefaultDisplayNodes()
            image = vtk.vtkImageData()
            image.DeepCopy(fresh.GetImageData())
            node.SetAndObserveImageData(image)
            nodes.copy_geometry(node, fresh)
        finally:
            self.scene.RemoveNode(fresh)
        node.SetAttribute(RUN_ATTRIBUTE, str(self.folder))
        self.preview[kind] = node
        self._match_window()

    def _preview_node(self, name: str):
        node = self.scene.GetFirstNodeByName(name)
        return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None

    def _match_window(self) -> None:
        """The reference's window/level on every preview image, so the three compare fairly."""
        shown = [node for node in self.preview.values() if node.GetDisplayNode() is not None]
        reference = self.preview.get("reference") or self.preview.get("input")
        if reference is None or not shown:
            return
        values = slicer.util.arrayFromVolume(reference)
        low, high = np.percentile(values, (1.0, 99.0))
        for node in shown:
            display = node.GetDisplayNode()
            display.AutoWindowLevelOff()
            display.SetWindowLevel(float(max(high - low, 1e-6)), float((high + low) / 2))

    def show_views(self) -> None:
        """The run's layout (three linked axial views over the curves) with the preview and chart."""
        show_run_layout(self.scene, self.curves.loss_chart)
        group = None
        for kind, (_, view) in PREVIEW_VIEWS.items():
            try:
                composite, slice_node = layouts.composite_node(view, self.scene), layouts.slice_node(view, self.scene)
            except ValueError:
                continue  # no slice views (a scene without the application's layout)
            slice_node.SetOrientation("Axial")
            group = slice_node.GetViewGroup() if group is None else group
            slice_node.SetViewGroup(group)
            node = self.preview.get(kind)
            composite.SetBackgroundVolumeID(node.GetID() if node is not None else None)
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
        layouts.fit_views()


def show_run_layout(scene, chart) -> None:
    """Switch to the training layout and show ``chart`` in its plot view."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        if not layout.IsLayoutDescription(LAYOUT_ID):
            layout.AddLayoutDescription(LAYOUT_ID, LAYOUT_XML)
        layout.SetViewArrangement(LAYOUT_ID)
    selection = scene.GetFirstNodeByClass("vtkMRMLSelectionNode")
    if selection is not None and hasattr(selection, "SetActivePlotChartID"):
        selection.SetActivePlotChartID(chart.GetID())
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode")):
        scene.GetNthNodeByClass(index, "vtkMRMLPlotViewNode").SetPlotChartNodeID(chart.GetID())


# -- scene volumes -------------------------------------------------------------------------------
def patient_of(node) -> str:
    """The patient a volume belongs to in Subject Hierarchy (as a DICOM load places it), else its name.

    The backend's validation split is drawn over these, so two series of one patient never
    end up on both sides.
    """
    hierarchy = node.GetScene().GetSubjectHierarchyNode() if node.GetScene() is not None else None
    if hierarchy is not None:
        item = hierarchy.GetItemByDataNode(node)
        while item and item != hierarchy.GetSceneItemID():
            if hierarchy.GetItemLevel(item) == "Patient":
                return hierarchy.GetItemName(item)
            item = hierarchy.GetItemParent(item)
    return node.GetName()


def _file_name(index: int, node) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", node.GetName()).strip("._") or "volume"
    return f"{index + 1:03d}-{safe}.nrrd"


# -- the module's logic --------------------------------------------------------------------------
@dataclass
class Launch:
    """A started ``meddiff train --detach``: its launcher child and the run folder it trains in."""

    task: TaskProcess
    folder: Path


class TrainingLogic:
    """Start, follow, cancel, resume and register training runs (see the module doc).

    ``backend`` replaces ``[python, -m, meddiffusion]`` for the child processes (tests).
    """

    title = "Model Training"
    ROLES = ("trainingVolume", "trainingTarget")

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
        name = name if name is not None else self.parameters().task
        for choice in training_tasks():
            if choice.name == name:
                return choice
        raise ValueError(f"no trainable task '{name}'; choose one of {', '.join(t.name for t in training_tasks())}")

    @staticmethod
    def base_models(task: str) -> tuple[list[Any], str]:
        """(catalogue entries of ``task``, why none could be read): what can be fine-tuned."""
        return environment.model_catalogue(task)

    def select_task(self, name: str) -> TaskChoice:
        """Make ``name`` the task, with its recipe's defaults (network size, steps, batch, learning rate)
        and a data source it accepts; a base model of another task is dropped."""
        choice = self.task_choice(name)
        parameters = self.parameters()
        values = {"task": name, "config": choice.default_config}
        for key, parameter in (("steps", "steps"), ("batch_size", "batchSize"), ("lr", "learningRate")):
            if key in choice.defaults:
                values[parameter] = choice.defaults[key]
        if parameters.source not in choice.sources:
            values["source"] = choice.sources[0]
        models, _ = self.base_models(name)
        if parameters.baseModel and parameters.baseModel not in {entry.id for entry in models}:
            values["baseModel"] = ""
        parameters.update(**values)
        return choice

    def runs_folder(self) -> Path:
        return Path(self.parameters().runsFolder or DEFAULT_RUNS_FOLDER).expanduser()

    # -- volumes from the scene --------------------------------------------------------------
    def set_scene_volumes(self, rows: Sequence[tuple[Any, Any] | Any]) -> None:
        """The scene's training volumes: (input, target) pairs, or single volumes (clean or low-dose).

        Each row keeps its own node references (``trainingVolume3``, ``trainingTarget3``), so a
        row still being filled in (one side empty) is kept with the scene.
        """
        parameters = self.parameters()
        node = parameters.node
        was_modifying = node.StartModify()
        for index in range(parameters.sceneRows):
            for role in self.ROLES:
                node.RemoveNodeReferenceIDs(f"{role}{index}")
        for index, row in enumerate(rows):
            for role, volume in zip(self.ROLES, row if isinstance(row, (tuple, list)) else (row, None)):
                node.SetNodeReferenceID(f"{role}{index}", volume.GetID() if volume is not None else None)
        parameters.sceneRows = len(rows)
        node.EndModify(was_modifying)

    def scene_volumes(self) -> list[tuple[Any, Any]]:
        parameters = self.parameters()
        return [tuple(parameters.node.GetNodeReference(f"{role}{index}") for role in self.ROLES)
                for index in range(parameters.sceneRows)]

    def write_scene_data(self, folder: str | os.PathLike, source: str,
                         rows: Sequence[tuple[Any, Any]] | None = None) -> Path:
        """Write the scene's volumes into ``folder/volumes/{input,target}/`` with their geometry and
        a manifest (``input,target,patient`` or ``volume,patient``); returns the manifest.

        Pairs are checked to share their grid here, so a mismatch is named by the nodes' names
        (the backend then checks intensities and alignment).
        """
        rows = list(self.scene_volumes() if rows is None else rows)
        paired = source == PAIRED_FOLDER
        if paired and any(volume is None or target is None for volume, target in rows):
            raise ValueError("every pair needs an input and a target volume")
        rows = [(volume, target if paired else None) for volume, target in rows if volume is not None]
        if len(rows) < 2:
            raise ValueError("choose at least two volumes (or pairs) from different patients: one is kept "
                             "for validation")
        patients = {patient_of(volume) for volume, _ in rows}
        if len(patients) < 2:
            raise ValueError(f"all chosen volumes belong to patient '{patients.pop()}'; the validation split is "
                             "by patient, so volumes of at least two patients are needed")
        for volume, target in rows:
            if target is not None:
                nodes.check_same_geometry(target, volume, f"target '{target.GetName()}' of '{volume.GetName()}'")
        data = Path(folder) / SCENE_FOLDER
        manifest = data / "manifest.csv"
        lines = []
        for index, (volume, target) in enumerate(rows):
            name = _file_name(index, volume)
            kind = "input" if paired or source == LOWDOSE_FOLDER else "target"
            nodes.write_volume(volume, data / kind / name)
            line = {"input" if paired else "volume": f"{kind}/{name}", "patient": patient_of(volume)}
            if paired:
                nodes.write_volume(target, data / "target" / name)
                line["target"] = f"target/{name}"
            lines.append(line)
        columns = ["input", "target", "patient"] if paired else ["volume", "patient"]
        with open(manifest, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(lines)
        return manifest

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
            elif not parameters.dataPath.strip():
                problems.append("choose a folder" if parameters.dataFrom == "folder" else "choose a CSV manifest")
            elif parameters.dataFrom == "manifest" and not parameters.dataPath.lower().endswith(".csv"):
                problems.append("the manifest must be a .csv file")
        if parameters.config and parameters.config not in choice.configs:
            problems.append(f"unknown network size '{parameters.config}'")
        return problems

    def new_run_folder(self) -> Path:
        task = self.parameters().task or "run"
        folder = self.runs_folder() / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while folder.exists():
            suffix += 1
            folder = folder.with_name(f"{folder.name.rsplit('~', 1)[0]}~{suffix}")
        return folder

    def train_arguments(self, folder: Path, data: str | None = None) -> list[str]:
        """``meddiff train`` arguments (after ``train``) for the parameters and run folder ``folder``."""
        p = self.parameters()
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
        return [*arguments, *shlex.split(p.extraOptions), "--detach"]

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
        """The launcher child, run in the runs folder: the detached run inherits its working
        folder, and the launcher's own temporary folder is removed when it returns."""
        command = backend_command("train", *arguments)
        if self.backend:
            command = [*self.backend, *command[3:]]
        task = TaskProcess(on_event=on_event, on_state=on_state)
        if install is not None and not task.install(install):
            return task
        folder.parent.mkdir(parents=True, exist_ok=True)
        task.start(command, env=backend_environment(), cwd=folder.parent)
        return task

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
