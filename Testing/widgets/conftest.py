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
"""

from __future__ import annotations

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

from MedDiffusionUtilsLib.parameters import named_widgets  # noqa: E402
from standins import load_ui as _load_ui  # noqa: E402


@pytest.fixture
def repo_root() -> Path:
    return mrml_fixtures.REPO_ROOT


@pytest.fixture
def mrml():
    with mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as test_scene:
        yield test_scene


@pytest.fixture
def scene(mrml):
    return mrml.scene


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
