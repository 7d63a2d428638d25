"""Load a Slicer module's .ui file with the stand-ins in place of CTK/qMRML widgets."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QFile, QIODevice
from PySide6.QtUiTools import QUiLoader

from . import ctk, mrml

STANDINS = (ctk.ctkCollapsibleButton, ctk.ctkCollapsibleGroupBox, ctk.ctkCheckBox,
            ctk.ctkComboBox, ctk.ctkDoubleSpinBox, ctk.ctkSliderWidget, ctk.ctkPathLineEdit,
            mrml.qMRMLWidget, mrml.qMRMLNodeComboBox)


class UiLoader(QUiLoader):
    """QUiLoader that knows the stand-ins (what ``qt.QUiLoader`` is in the test shim)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        for widget_class in STANDINS:
            self.registerCustomWidget(widget_class)


def load_ui(path: str | Path, parent=None):
    """The root widget of ``path``; raises if the file is missing or does not load."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no .ui file at {path}")
    handle = QFile(str(path))
    if not handle.open(QIODevice.OpenModeFlag.ReadOnly):
        raise OSError(f"cannot open {path}")
    try:
        widget = UiLoader().load(handle, parent)
    finally:
        handle.close()
    if widget is None:
        raise RuntimeError(f"QUiLoader could not build {path}")
    return widget
