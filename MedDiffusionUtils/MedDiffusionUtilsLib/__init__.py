"""The shared Slicer layer of SlicerMedDiffusion, used by every task module.

  nodes         MRML nodes <-> files for the backend, geometry kept exactly
  outputs       new volume/segmentation/table/sequence nodes placed under the input's study
  inputs        checks of a task's input volume (CT, PET/SPECT, MR) and chosen output before a run
  processes     the backend child's command line, environment, start and stop (process tree)
  runner        one run of the child: state machine, JSON events, cancel, cleanup
  qtdriver      polls a run from a Qt timer on the GUI thread
  parameters    typed parameters on a vtkMRMLScriptedModuleNode
  binding       .ui widgets kept in step with the parameters
  messages      PanelMessages: a panel's status line, log and refused actions
  tasklogic     TaskLogic: a registered task's ports -> arguments, result files -> nodes by name
  compare       CompareTaskLogic: before/after views, fade and difference of a task's output
  taskpanel     TaskPanel: binding, Apply/Cancel, progress and log of a module's .ui
  comparepanel  ComparePanel: TaskPanel + model selector + the last run's before/after
  modulewidget  TaskModuleWidget: the Slicer widget of a task module (needs the application)
  selftest      the CT phantom of the modules' self-tests inside Slicer
  layouts       before/after views, fade, difference and checkerboard volumes, the nuclear display
  dependencies  ask-first installer for the backend's Python packages
  environment   package versions, device and model catalogue for display
  models        catalogue cards -> model selector entries; the selector kept in step
  sampledata    a module's bundled sample (one volume or a study), declared in one line, offered
                in Sample Data
  utilspanel    the MedDiffusionUtils module's panel

Submodules are imported explicitly (``from MedDiffusionUtilsLib import nodes``) so that
importing the package stays cheap and free of Qt.
"""

import importlib
import sys

#: in dependency order, for reload()
SUBMODULES = ("processes", "runner", "qtdriver", "nodes", "outputs", "inputs", "parameters", "binding",
              "messages", "layouts", "dependencies", "environment", "models", "sampledata", "tasklogic", "compare",
              "taskpanel", "comparepanel", "modulewidget", "selftest", "utilspanel")


def reload() -> None:
    """Reload the already imported submodules (Slicer's "Reload" for developers)."""
    reload_package(__name__)


def reload_package(name: str) -> None:
    """Reload the already imported submodules of package ``name`` in its ``SUBMODULES`` order
    (the shared layer's and each task module's library)."""
    package = sys.modules.get(name)
    for submodule in getattr(package, "SUBMODULES", ()):
        module = sys.modules.get(f"{name}.{submodule}")
        if module is not None:
            importlib.reload(module)
