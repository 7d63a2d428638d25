"""The Training panel's table of scene volumes: one row of combo boxes per (input, target) row.

Each row lists the scene's volumes (kept up to date as nodes are added or removed); a choice is
stored in the parameter node at once through the logic.  A task whose pairs bring further
volumes (the recipe's ``extras``: a SPECT study's CT or μ-map) gets a column for each.  GUI code
in the subset of Qt that PythonQt and PySide6 share.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VolumeRows", "current_data", "COLUMNS"]

#: the headers of the input and target columns; the task's further volumes follow
COLUMNS = ("Input", "Target")


class VolumeRows:
    """Mixin of TrainingPanel for ``ui.volumesTable`` and its Add/Remove buttons.

    The panel has ``ui``, ``logic``, ``parameters``, ``_filling`` and ``update_buttons``.
    """

    def set_scene(self, scene) -> None:
        """The volume rows list the scene's volumes, kept up to date."""
        self._scene_observers = [scene.AddObserver(event, lambda caller, event: self._show_volume_rows())
                                 for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent)]
        self._scene = scene

    def _volumes(self) -> list:
        scene = self.logic.scene
        return [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
                if not scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetHideFromEditors()
                and not scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetAttribute("Training.run")]

    def _show_volume_rows(self) -> None:
        """One row of combo boxes per stored row, listing the scene's volumes; a column per further volume."""
        import qt

        if self.parameters is None:
            return
        table, volumes = self.ui.volumesTable, self._volumes()
        rows = self.logic.scene_volumes()
        headers = [*COLUMNS, *self.logic.extras().values()]
        self._filling = True
        try:
            table.setColumnCount(len(headers))
            table.setHorizontalHeaderLabels(headers)
            table.setRowCount(len(rows))
            for row, chosen in enumerate(rows):
                for column in range(len(headers)):
                    combo = table.cellWidget(row, column)
                    if combo is None:
                        combo = qt.QComboBox()
                        combo.currentIndexChanged.connect(self._on_volume_chosen)
                        table.setCellWidget(row, column, combo)
                    combo.clear()
                    combo.addItem("(choose)", "")
                    for node in volumes:
                        combo.addItem(node.GetName(), node.GetID())
                    node = chosen[column]
                    combo.setCurrentIndex(max(combo.findData(node.GetID()) if node is not None else 0, 0))
        finally:
            self._filling = False
        self.update_buttons()

    def _rows_shown(self) -> list[tuple[Any, ...]]:
        table, scene = self.ui.volumesTable, self.logic.scene
        rows = []
        for row in range(table.property("rowCount")):
            ids = [current_data(table.cellWidget(row, column)) for column in range(table.property("columnCount"))]
            rows.append(tuple(scene.GetNodeByID(node_id) if node_id else None for node_id in ids))
        return rows

    def _on_volume_chosen(self, *_args) -> None:
        if not self._filling:
            self.logic.set_scene_volumes(self._rows_shown())
            self.update_buttons()

    def add_row(self, *_args) -> None:
        self.logic.set_scene_volumes([*self._rows_shown(), (None, None)])
        self._show_volume_rows()

    def remove_row(self, *_args) -> None:
        rows = self._rows_shown()
        if rows:
            selected = self.ui.volumesTable.currentRow()
            del rows[selected if 0 <= selected < len(rows) else -1]
            self.logic.set_scene_volumes(rows)
            self._show_volume_rows()


def current_data(combo) -> Any:
    """The chosen item's data ("" without a combo box or a choice); ``currentData`` is a property
    in PythonQt and a method in PySide6."""
    if combo is None or combo.property("currentIndex") < 0:
        return ""
    return combo.itemData(combo.property("currentIndex")) or ""
