"""The shared Slicer layer of SlicerMedDiffusion, used by every task module.

  nodes         MRML nodes <-> files for the backend, geometry kept exactly
  outputs       new volume/segmentation/table/sequence nodes placed under the input's study
  inputs        checks of a task's input CT volume and chosen output before a run
  runner        the backend child process: state machine, JSON events, cancel, Qt driver
  parameters    typed parameters on a vtkMRMLScriptedModuleNode, bound to .ui widgets
  modulebase    TaskLogic, TaskPanel, ComparePanel: what a task module subclasses / instantiates
  layouts       before/after views, fade, difference and checkerboard volumes
  dependencies  ask-first installer for the backend's Python packages
  environment   package versions, device and model catalogue for display
  models        catalogue cards -> model selector entries; the selector kept in step
  sampledata    a module's bundled sample registered with Slicer's Sample Data module
  utilspanel    the MedDiffusionUtils module's panel

Submodules are imported explicitly (``from MedDiffusionUtilsLib import nodes``) so that
importing the package stays cheap and free of Qt.
"""

import importlib
import sys

#: in dependency order, for reload()
SUBMODULES = ("runner", "nodes", "outputs", "inputs", "parameters", "layouts", "dependencies",
              "environment", "models", "sampledata", "modulebase", "utilspanel")


def reload() -> None:
    """Reload the already imported submodules (Slicer's "Reload" for developers)."""
    for name in SUBMODULES:
        module = sys.modules.get(f"{__name__}.{name}")
        if module is not None:
            importlib.reload(module)
