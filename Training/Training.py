"""Model Training: train or fine-tune any task's model on the user's own data, followed live in Slicer.

The widget runs Training.ui through ``TrainingLib.panel``; ``TrainingLib.logic`` starts
``meddiff train <task> --detach`` (a child that outlives Slicer) and follows its run folder
into a curve table, Plots charts and preview volumes.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget
from TrainingLib.logic import TrainingLogic as _Logic
from TrainingLib.panel import TrainingPanel


class Training(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Model Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Train or fine-tune a task's model on your own scans, on this computer's GPU (or CPU), and "
            "see whether it got better before using it.<br><br>"
            "Choose the <b>task</b>, a catalogue model to <b>fine-tune</b> (or a new network), and the "
            "<b>data</b>: the built-in phantom, or your own volumes, loaded in the scene, in a folder or "
            "listed in a CSV manifest, as pairs (e.g. low + normal dose, with a SPECT study's CT or "
            "μ-map) or as clean or low-dose volumes alone. The validation split is by patient. The "
            "task's own choices (its variant, the models a stage builds on) and numbers are offered as "
            "its recipe declares them. <b>Start</b> runs the training in a process of "
            "its own: Slicer can be closed, and reopening the module reconnects to the run.<br><br>"
            "While it trains, the training and validation curves grow in a Plots chart, a fixed "
            "validation case is shown every few steps (before | current model | reference) and the "
            "remaining time is estimated. <b>Cancel</b> writes a checkpoint that <b>Resume</b> continues "
            "exactly. At the end the new model is compared with its parent on your validation patients; "
            "<b>Register</b> adds it (with its provenance) to the model list of every module. The same "
            "runs are the command <i>meddiff train &lt;task&gt;</i>.<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>documentation</a>. "
            "Research use only; not for diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. Learns from MONAI Label's training from Slicer, careamics-napari's "
            "live curves and nnU-Net's checkpoints.")


class TrainingLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``logic.select_task("ldct"); logic.start()`` (see TrainingLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class TrainingWidget(TaskModuleWidget):
    """The task modules' widget with what differs for training: a run outlives the scene and
    the module, and a registered model is announced to the other modules' model selectors."""

    logic_class = TrainingLogic
    panel_class = TrainingPanel

    def setup(self):
        TaskModuleWidget.setup(self)
        self.panel.confirm = lambda question: slicer.util.confirmYesNoDisplay(question, windowTitle=self.logic.title)
        self.panel.on_registered = self.refreshModelSelectors

    def onSceneStartClose(self, caller, event):
        self.panel.timer.stop()  # the run goes on; its nodes are about to go
        self.logic.monitor = None

    def enter(self):
        if self.panel is not None and self.panel.binding is None:
            self.panel.set_parameters(self.logic.parameters())

    def refreshModelSelectors(self, model_id):
        """Every MedDiffusion module's model list reads the catalogue again, so ``model_id`` is
        offered at once, without a restart."""
        manager = slicer.app.moduleManager()
        for name in manager.modulesNames():
            module = manager.module(name)
            if name == self.moduleName or "MedDiffusion" not in list(module.categories):
                continue
            panel = getattr(module.widgetRepresentation().self(), "panel", None)
            if panel is not None and hasattr(panel, "refresh_models"):
                panel.refresh_models()


class TrainingTest(ScriptedLoadableModuleTest):
    """A tiny phantom run of the LDCT network, followed in the scene, then registered."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_tiny_run_followed_and_registered()

    def test_tiny_run_followed_and_registered(self):
        import os
        import tempfile
        import time
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            os.environ["MEDDIFF_MODEL_DIR"] = str(Path(folder) / "models")
            logic = TrainingLogic()
            logic.select_task("ldct")
            logic.parameters().update(config="tiny", steps=6, batchSize=2, device="cpu", previewEvery=2,
                                      runsFolder=folder, extraOptions="--size 48 --slices 3 --slabs 1 "
                                      "--val-slabs 1 --crop 32 --val-every 2 --ckpt-every 2")
            launch = logic.start()
            self.assertEqual(launch.task.wait(timeout=120).value, "done", launch.task.error)
            monitor = logic.attach(launch.folder)
            deadline = time.monotonic() + 300
            while not monitor.poll().finished and time.monotonic() < deadline:
                slicer.app.processEvents()
                time.sleep(0.5)
            self.assertEqual(monitor.status.state, "done")
            self.assertGreater(monitor.curves.row_count, 1)
            self.delayDisplay("Run finished; curves and preview in the scene")
            registering = logic.register(launch.folder, "selftest-ldct")
            self.assertEqual(registering.wait(timeout=120).value, "done", registering.error)
            from MedDiffusionUtilsLib import environment

            self.assertIn("selftest-ldct", [entry.id for entry in environment.model_catalogue("ldct")[0]])
            del os.environ["MEDDIFF_MODEL_DIR"]
