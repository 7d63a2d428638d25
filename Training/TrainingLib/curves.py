"""A run's ``metrics.jsonl`` as a table node drawn in a loss chart and one chart per validation metric.

MRML only, no Qt.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import vtk

__all__ = ["RUN_ATTRIBUTE", "TrainingCurves"]

#: marks the nodes a run's curves and preview are shown in (value: the run folder)
RUN_ATTRIBUTE = "Training.run"


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
