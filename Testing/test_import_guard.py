"""The backend never imports Slicer or Qt: ``meddiff`` runs in a plain Python, and Slicer
runs it as a child process.  Every module of ``meddiffusion`` is imported in a fresh
interpreter, and none may bring in slicer, vtk's Slicer parts, qt, ctk or a Qt binding."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import meddiffusion

FORBIDDEN = ("slicer", "qt", "ctk", "PythonQt", "PySide6", "PyQt5", "PyQt6", "MedDiffusionUtilsLib")


def test_meddiffusion_never_imports_slicer_qt_or_ctk():
    names = sorted(module.name for module in pkgutil.walk_packages(meddiffusion.__path__, "meddiffusion.")
                   if not module.name.rsplit(".", 1)[-1].startswith("__main__"))
    assert names, "no backend module found"
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            f"loaded = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
            "sys.exit(f'imported: {loaded}' if loaded else 0)\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                               cwd=Path(meddiffusion.__file__).resolve().parents[1], timeout=300)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
