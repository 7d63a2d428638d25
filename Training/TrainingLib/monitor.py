"""Following one run folder into MRML: appended metrics and events, curves, preview views, ETA.

MRML and files only, no Qt.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from MedDiffusionUtilsLib import layouts, nodes

from .curves import RUN_ATTRIBUTE, TrainingCurves
from .runs import FINISHED, read_run

__all__ = ["LAYOUT_ID", "LAYOUT_XML", "PREVIEW_VIEWS", "RunStatus", "RunMonitor", "show_run_layout"]

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
STEP_FILE = re.compile(r"step_(\d+)\.nrrd$")


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
        shown = set(self.preview)
        for kind in ("input", "reference"):
            if kind not in self.preview and (folder / f"{kind}.nrrd").is_file():
                self._show(kind, folder / f"{kind}.nrrd")
        if steps and steps[-1][0] != self.preview_step:
            try:
                self._show("model", steps[-1][1])
                self.preview_step = steps[-1][0]
            except (OSError, ValueError):
                pass  # still being written: the next poll reads it
        if set(self.preview) != shown:  # a preview image appeared: put it in its view (the model often comes last)
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
