"""Motion Correct: coronary calcium motion correction of non-gated chest CT with ProDM.

The widget binds MotionCorrect.ui to the module's parameter node through
``MotionCorrectLib.panel``; the work is done by ``MotionCorrectLib.logic`` (a child process
running ``meddiff motion-correct``).
"""

import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

import MedDiffusionUtilsLib
import MotionCorrectLib
from MotionCorrectLib import sampledata
from MotionCorrectLib.logic import MotionCorrectLogic as _Logic


class MotionCorrect(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Motion Correct")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Corrects the motion blur of coronary calcifications in a non-gated (not ECG-triggered) "
            "chest CT with ProDM, a Brownian-bridge diffusion model that starts from the blurred "
            "slices themselves and uses the neighbouring slices as context, and reports the "
            "Agatston calcium score before and after.<br><br>"
            "Pick the CT volume (Hounsfield units), optionally a box around the heart (a Markups "
            "ROI; without one the heart region is found automatically), the model, the number of "
            "steps (10 by default) and the device, then Apply. The computation runs in a separate "
            "process, so Slicer stays responsive and Cancel stops it at once. The results are new "
            "nodes under the input's study: the corrected volume on the input's grid (unchanged "
            "outside the corrected region), a segmentation with one segment per calcified lesion "
            "before and after, a per-lesion Agatston table and a before/after summary table with "
            "the risk categories; the input is never modified. Afterwards the views show input and "
            "result side by side, linked, with a fade slider, centred on the largest lesion."
            "<br><br>"
            "Method: ProDM, a progressive diffusion model for motion correction of coronary "
            "calcium in non-gated chest CT "
            "(<a href='https://arxiv.org/abs/2512.24948'>arXiv:2512.24948</a>). Agatston score: "
            "A. S. Agatston et al., JACC 15(4), 1990.<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>"
            "documentation</a>. Research use only; not for diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. This module reimplements ProDM's Brownian-bridge sampler "
            "and 2.5D network with PyTorch and MONAI. The sample non-gated chest CT is a simulated, "
            "motion-corrupted scan of the extension's procedural thorax phantom.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer the sample non-gated chest CT in the Sample Data module (when both exist)."""
    sampledata.register_sample_data(os.path.dirname(os.path.abspath(__file__)))


class MotionCorrectWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MotionCorrectLib.panel import MotionCorrectPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MotionCorrect.ui"))
        self.layout.addWidget(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MotionCorrectLogic()
        self.panel = MotionCorrectPanel(uiWidget, self.logic.parameters(), self.logic,
                                        install=self.installDependencies, on_error=self.showError)
        self.panel.set_scene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def installDependencies(self):
        """Runs as the first step of Apply: asks, then installs what the backend needs."""
        from MedDiffusionUtilsLib import dependencies

        installed = dependencies.DependencyInstaller().ensure(slicer.util.confirmOkCancelDisplay,
                                                              log=print)
        if installed:
            self.panel.refresh_models()

    def showError(self, message):
        slicer.util.errorDisplay(message, windowTitle=_("Motion Correct"))

    def onSceneStartClose(self, caller, event):
        self.panel.task_panel.cleanup()  # stops a run whose input is about to disappear

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.panel.set_parameters(self.logic.parameters())

    def enter(self):
        if self.panel is not None and self.panel.task_panel.binding is None:
            self.panel.set_parameters(self.logic.parameters())

    def cleanup(self):
        self.removeObservers()
        if self.panel is not None:
            self.panel.cleanup()

    def onReload(self):
        MedDiffusionUtilsLib.reload()
        MotionCorrectLib.reload()
        ScriptedLoadableModuleWidget.onReload(self)


class MotionCorrectLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``MotionCorrectLogic().correct(ctNode, roi=roiNode)`` (see
    MotionCorrectLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class MotionCorrectTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the full correction run needs an installed motion model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_refuses_an_roi_outside_the_volume()
        self.setUp()
        self.test_correction_makes_new_nodes_on_the_input_grid()

    def phantom(self, name="Non-gated phantom"):
        """A small CT-like volume on an oblique grid: air, a soft-tissue disc, one calcification."""
        import numpy as np

        rng = np.random.default_rng(0)
        k, j, i = np.mgrid[0:6, 0:64, 0:64]
        array = np.where((j - 32) ** 2 + (i - 32) ** 2 < 24 ** 2, 40.0, -1000.0)
        array[2:4, 30:34, 30:34] = 450.0
        array = (array + rng.normal(0, 10, array.shape)).astype(np.int16)
        matrix = np.array([[0.0, -0.7, 0.1, 10.0], [0.7, 0.0, 0.0, -5.0],
                           [0.0, 0.05, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
        return slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name=name)

    def test_refuses_an_roi_outside_the_volume(self):
        ct = self.phantom()
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far away")
        roi.SetCenter(500.0, 500.0, 500.0)
        roi.SetSize(20.0, 20.0, 20.0)
        with self.assertRaisesRegex(ValueError, "does not overlap"):
            MotionCorrectLogic().correct(ct, roi=roi)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)
        self.delayDisplay("An ROI outside the volume was refused with a clear message")

    def test_correction_makes_new_nodes_on_the_input_grid(self):
        import numpy as np

        from MedDiffusionUtilsLib import environment, nodes

        models, problem = environment.model_catalogue("motion")
        if not models:
            self.delayDisplay(f"No motion model installed; correction run skipped. {problem}")
            return
        ct = self.phantom()
        before = slicer.util.arrayFromVolume(ct).copy()
        logic = MotionCorrectLogic()
        corrected, calcium, lesions, summary = logic.correct(ct, model=models[0].id, steps=1,
                                                             device="cpu", timeout=600)
        self.assertEqual(corrected.GetName(), "Non-gated phantom motion corrected")
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(corrected), nodes.ijk_to_ras(ct)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(ct), before))
        table = summary.GetTable()
        self.assertEqual(table.GetNumberOfRows(), 4)
        lesions_reported = sum(int(table.GetColumnByName(scan).GetValue(2)) for scan in ("before", "after"))
        self.assertEqual(calcium.GetSegmentation().GetNumberOfSegments(), lesions_reported)
        logic.show_comparison(ct, corrected)
        self.delayDisplay("Corrected volume, calcium segments and Agatston tables created")
