"""Widget tests: real module .ui files in PySide6 (offscreen) with CTK/qMRML stand-ins.

Module code is written for Slicer's PythonQt (``import qt``); ``shim/`` provides ``qt`` and
``ctk`` modules mapped onto PySide6 and the stand-ins, so the same code runs here.  The MRML
scene is a real one (see ``Testing/slicer/mrml_fixtures.py``).

Fixtures:
  mrml, scene   as in Testing/slicer (real scene, slicer.mrmlScene set)
  load_ui       load_ui(path) -> root widget of a .ui file, stand-ins registered, shown
                offscreen and closed after the test
  ui_widgets    ui_widgets(root) -> {objectName: widget}
  repo_root     the repository root (Path)
  module_panel  module_panel(panel_class, logic, models=..., stored=...) -> the module's panel on
                its own .ui, bound to the scene, with ``done``/``errors`` lists of what it reported
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

HERE = Path(__file__).resolve().parent
for folder in (HERE / "shim", HERE, HERE.parent / "slicer"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import mrml_fixtures  # noqa: E402
import pytest  # noqa: E402

mrml_fixtures.add_module_paths()


def _keep_true_alive(reserve: int = 1 << 16) -> None:
    """Guard against PySide6 6.12's ``SignalInstance.emit``, which returns ``True`` without
    a new reference: every signal the stand-ins emit from Python takes one reference from
    ``True``.  On Python < 3.12, where ``True`` is not immortal, a session with enough emits
    aborts at interpreter shutdown ("bool_dealloc: deallocating True or False").  When the
    leak is present, ``True`` gets a reserve of references (immortal in effect, as on 3.12+).
    """
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        fired = Signal()

    if sys.version_info >= (3, 12):
        return
    probe, before = Probe(), sys.getrefcount(True)
    for _ in range(32):
        probe.fired.emit()
    if sys.getrefcount(True) < before:
        for _ in range(reserve + before - sys.getrefcount(True)):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))




_keep_true_alive()

from MedDiffusionUtilsLib.binding import named_widgets  # noqa: E402
from standins import load_ui as _load_ui  # noqa: E402


@pytest.fixture
def repo_root() -> Path:
    return mrml_fixtures.REPO_ROOT


from mrml_fixtures import mrml, scene  # noqa: E402,F401 - shared fixtures


@pytest.fixture
def load_ui(qtbot):
    def load(path):
        widget = _load_ui(path)
        qtbot.addWidget(widget)
        widget.show()
        return widget
    return load


@pytest.fixture
def ui_widgets():
    return named_widgets


@pytest.fixture
def module_panel(load_ui, scene, repo_root):
    panels = []

    def make(panel_class, logic, *, models=None, stored: dict | None = None):
        module = logic.spec.module
        root = load_ui(repo_root / module / "Resources" / "UI" / f"{module}.ui")
        parameters = logic.parameters()
        parameters.update(**(stored or {}))
        done, errors = [], []
        panel = panel_class(root, parameters, logic, models=models, on_done=done.append, on_error=errors.append)
        panel.set_scene(scene)
        panel.done, panel.errors = done, errors
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.cleanup()
