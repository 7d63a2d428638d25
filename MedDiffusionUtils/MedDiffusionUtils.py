"""MedDiffusion Utilities: Python packages, compute device and installed models.

The module every other SlicerMedDiffusion module depends on.  Its panel shows whether the
backend's packages are installed (and installs them after asking), which device the backend
will use and which models are available.  Its library, MedDiffusionUtilsLib, is the shared
Slicer layer of all task modules.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

import MedDiffusionUtilsLib
from MedDiffusionUtilsLib import dependencies, environment


class MedDiffusionUtils(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedDiffusion Utilities")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Checks and installs the Python packages the MedDiffusion modules need, shows the "
            "compute device (CUDA GPU or CPU) and the installed diffusion models. "
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>"
            "documentation</a>.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. The backend builds on PyTorch and MONAI; models and "
            "methods are credited in each task module.")


class MedDiffusionUtilsWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MedDiffusionUtilsLib.utilspanel import UtilsPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedDiffusionUtils.ui"))
        self.layout.addWidget(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.panel = UtilsPanel(uiWidget, confirm=slicer.util.confirmOkCancelDisplay,
                                on_error=slicer.util.errorDisplay)

    def cleanup(self):
        self.panel.cleanup()

    def onReload(self):
        MedDiffusionUtilsLib.reload()
        ScriptedLoadableModuleWidget.onReload(self)


class MedDiffusionUtilsLogic(ScriptedLoadableModuleLogic):
    """Scripting access: ``MedDiffusionUtilsLogic().ensureDependencies()`` before a batch run."""

    def missingPackages(self):
        """Requirements that are not satisfied (Slicer's own packages excluded)."""
        plan = dependencies.plan()
        return ([plan.torch] if plan.torch else []) + plan.pip

    def ensureDependencies(self, askConfirmation=True):
        """Install what is missing; asks first unless ``askConfirmation`` is False."""
        confirm = slicer.util.confirmOkCancelDisplay if askConfirmation else (lambda text: True)
        return dependencies.DependencyInstaller().ensure(confirm, log=print)

    def models(self, task=None):
        """Catalogue entries (for ``task``), or an empty list with the reason printed."""
        entries, problem = environment.model_catalogue(task)
        if problem:
            print(problem)
        return entries


class MedDiffusionUtilsTest(ScriptedLoadableModuleTest):
    """Checks that run inside Slicer without network access or model weights."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_requirements_and_backend()
        self.setUp()
        self.test_volume_round_trip_keeps_geometry()
        self.setUp()
        self.test_runner_reads_child_events()

    def test_requirements_and_backend(self):
        names = {requirement.name for requirement in dependencies.load_requirements()}
        self.assertIn("monai", names)
        self.assertFalse(names & set(dependencies.SLICER_SHIPPED))
        available, detail = dependencies.backend_available()
        self.assertTrue(available, detail)

    def test_volume_round_trip_keeps_geometry(self):
        import tempfile
        from pathlib import Path

        import numpy as np

        from MedDiffusionUtilsLib import nodes

        matrix = np.array([[0.0, -0.8, 0.1, 10.0], [0.7, 0.0, 0.0, -5.0],
                           [0.0, 0.05, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
        array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
        volume = slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name="geometry test")
        with tempfile.TemporaryDirectory() as folder:
            path = nodes.write_volume(volume, Path(folder) / "volume.nrrd")
            copy = nodes.read_volume(path, reference=volume)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(copy), array))
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(copy), nodes.ijk_to_ras(volume)))
        self.delayDisplay("Volume round trip kept voxels and geometry")

    def test_runner_reads_child_events(self):
        from MedDiffusionUtilsLib.runner import RunState, TaskProcess, python_executable

        code = ("import json; print(json.dumps({'event': 'progress', 'stage': 's', 'done': 1, "
                "'total': 1})); print(json.dumps({'event': 'result', 'value': 42}))")
        events = []
        task = TaskProcess(on_event=events.append)
        task.start([python_executable(), "-c", code])
        self.assertEqual(task.wait(timeout=60), RunState.DONE)
        self.assertEqual(task.result, {"value": 42})
        self.assertEqual([event["event"] for event in events], ["progress", "result"])
        self.delayDisplay("Runner followed the child's events")
