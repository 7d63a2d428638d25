"""LDCT Denoise: low-dose CT denoising with CoreDiff.

The widget (the shared TaskModuleWidget) runs LDCTDenoise.ui through ``LDCTDenoiseLib.panel``;
the work is done by ``LDCTDenoiseLib.logic`` (a child process running ``meddiff ldct-denoise``).
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from LDCTDenoiseLib.logic import SAMPLE
from LDCTDenoiseLib.logic import LDCTDenoiseLogic as _Logic
from LDCTDenoiseLib.panel import LDCTDenoisePanel
from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget


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
        SAMPLE.register_at_startup(__file__)


class LDCTDenoiseLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``LDCTDenoiseLogic().denoise(ctNode, steps=5)`` (see LDCTDenoiseLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class LDCTDenoiseWidget(TaskModuleWidget):
    logic_class = LDCTDenoiseLogic
    panel_class = LDCTDenoisePanel


class LDCTDenoiseTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the full denoising run needs an installed LDCT model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_refuses_volumes_that_are_not_ct()
        self.setUp()
        self.test_denoise_makes_a_new_volume_on_the_input_grid()

    def test_refuses_volumes_that_are_not_ct(self):
        from MedDiffusionUtilsLib.selftest import ct_phantom

        mr_like = ct_phantom("MR-like", air=0.0)
        with self.assertRaisesRegex(ValueError, "does not look like CT"):
            LDCTDenoiseLogic().denoise(mr_like)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)
        self.delayDisplay("A volume without air or fat was refused with a clear message")

    def test_denoise_makes_a_new_volume_on_the_input_grid(self):
        import numpy as np

        from MedDiffusionUtilsLib import environment, nodes
        from MedDiffusionUtilsLib.selftest import ct_phantom

        models, problem = environment.model_catalogue("ldct")
        if not models:
            self.delayDisplay(f"No LDCT model installed; denoising run skipped. {problem}")
            return
        ct = ct_phantom("LDCT phantom")
        before = slicer.util.arrayFromVolume(ct).copy()
        logic = LDCTDenoiseLogic()
        denoised = logic.denoise(ct, model=models[0].id, steps=1, device="cpu", timeout=600)
        self.assertNotEqual(denoised.GetID(), ct.GetID())
        self.assertEqual(denoised.GetName(), "LDCT phantom denoised")
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(denoised), nodes.ijk_to_ras(ct)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(ct), before))
        logic.show_comparison(ct, denoised)
        self.delayDisplay("Denoised volume created on the input's grid; input unchanged")
