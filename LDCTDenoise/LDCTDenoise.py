"""LDCT Denoise: low-dose CT denoising with CoreDiff.

The widget binds LDCTDenoise.ui to the module's parameter node through
``LDCTDenoiseLib.panel``; the work is done by ``LDCTDenoiseLib.logic`` (a child process
running ``meddiff ldct-denoise``).
"""

import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

import LDCTDenoiseLib
import MedDiffusionUtilsLib
from LDCTDenoiseLib import sampledata
from LDCTDenoiseLib.logic import LDCTDenoiseLogic as _Logic


class LDCTDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LDCT Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Denoises a low-dose CT volume with CoreDiff, a diffusion model that starts from the "
            "low-dose image itself and restores the normal-dose image in a few steps (10 by "
            "default), using the neighbouring slices as context.<br><br>"
            "Pick the CT volume (Hounsfield units), a model trained for a similar dose, the number "
            "of steps and the device, then Apply. The computation runs in a separate process, so "
            "Slicer stays responsive and Cancel stops it at once. The result is a new volume "
            "(&quot;&lt;input&gt; denoised&quot;) on the input's grid, placed in the input's study; "
            "the input is never modified. Afterwards the views show input and result side by side, "
            "linked, with a fade slider and an optional difference volume.<br><br>"
            "Method: Q. Gao, Z. Li, J. Zhang, Y. Zhang, H. Shan, &quot;CoreDiff: Contextual "
            "Error-Modulated Generalized Diffusion Model for Low-Dose CT Denoising and "
            "Generalization&quot;, IEEE Transactions on Medical Imaging 43(2), 2024 "
            "(<a href='https://arxiv.org/abs/2304.01814'>arXiv:2304.01814</a>).<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>"
            "documentation</a>. Research use only; not for diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. CoreDiff is the work of Gao et al. (IEEE TMI 2024); this "
            "module reimplements its sampler and network with PyTorch and MONAI. The sample "
            "low-dose chest CT is a simulated scan of the extension's procedural thorax phantom.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer the sample low-dose chest CT in the Sample Data module (when both exist)."""
    sampledata.register_sample_data(os.path.dirname(os.path.abspath(__file__)))


class LDCTDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from LDCTDenoiseLib.panel import LDCTDenoisePanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LDCTDenoise.ui"))
        self.layout.addWidget(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LDCTDenoiseLogic()
        self.panel = LDCTDenoisePanel(uiWidget, self.logic.parameters(), self.logic,
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
        slicer.util.errorDisplay(message, windowTitle=_("LDCT Denoise"))

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
        LDCTDenoiseLib.reload()
        ScriptedLoadableModuleWidget.onReload(self)


class LDCTDenoiseLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``LDCTDenoiseLogic().denoise(ctNode, steps=5)`` (see LDCTDenoiseLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class LDCTDenoiseTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the full denoising run needs an installed LDCT model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_refuses_volumes_that_are_not_ct()
        self.setUp()
        self.test_denoise_makes_a_new_volume_on_the_input_grid()

    def phantom(self, name="LDCT phantom", air=-1000.0):
        """A small noisy CT-like volume on an oblique grid: air around a soft-tissue disc."""
        import numpy as np

        rng = np.random.default_rng(0)
        k, j, i = np.mgrid[0:6, 0:64, 0:64]
        array = np.where((j - 32) ** 2 + (i - 32) ** 2 < 24 ** 2, 40.0, air)
        array = (array + rng.normal(0, 30, array.shape)).astype(np.int16)
        matrix = np.array([[0.0, -0.7, 0.1, 10.0], [0.7, 0.0, 0.0, -5.0],
                           [0.0, 0.05, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
        return slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name=name)

    def test_refuses_volumes_that_are_not_ct(self):
        logic = LDCTDenoiseLogic()
        mr_like = self.phantom("MR-like", air=0.0)
        with self.assertRaisesRegex(ValueError, "does not look like CT"):
            logic.denoise(mr_like)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)
        self.delayDisplay("A volume without air or fat was refused with a clear message")

    def test_denoise_makes_a_new_volume_on_the_input_grid(self):
        import numpy as np

        from MedDiffusionUtilsLib import environment, nodes

        models, problem = environment.model_catalogue("ldct")
        if not models:
            self.delayDisplay(f"No LDCT model installed; denoising run skipped. {problem}")
            return
        ct = self.phantom()
        before = slicer.util.arrayFromVolume(ct).copy()
        logic = LDCTDenoiseLogic()
        denoised = logic.denoise(ct, model=models[0].id, steps=1, device="cpu", timeout=600)
        self.assertNotEqual(denoised.GetID(), ct.GetID())
        self.assertEqual(denoised.GetName(), "LDCT phantom denoised")
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(denoised), nodes.ijk_to_ras(ct)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(ct), before))
        logic.show_comparison(ct, denoised)
        self.delayDisplay("Denoised volume created on the input's grid; input unchanged")
