"""Motion Correct: coronary calcium motion correction of non-gated chest CT with ProDM.

The widget (the shared TaskModuleWidget) runs MotionCorrect.ui through ``MotionCorrectLib.panel``;
the work is done by ``MotionCorrectLib.logic`` (a child process running ``meddiff motion-correct``).
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget
from MotionCorrectLib.logic import SAMPLE
from MotionCorrectLib.logic import MotionCorrectLogic as _Logic
from MotionCorrectLib.panel import MotionCorrectPanel


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
        SAMPLE.register_at_startup(__file__)


class MotionCorrectLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``MotionCorrectLogic().correct(ctNode, roi=roiNode)`` (see
    MotionCorrectLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class MotionCorrectWidget(TaskModuleWidget):
    logic_class = MotionCorrectLogic
    panel_class = MotionCorrectPanel


class MotionCorrectTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the full correction run needs an installed motion model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_refuses_an_roi_outside_the_volume()
        self.setUp()
        self.test_correction_makes_new_nodes_on_the_input_grid()

    def test_refuses_an_roi_outside_the_volume(self):
        from MedDiffusionUtilsLib.selftest import ct_phantom

        ct = ct_phantom("Non-gated phantom", calcium=True, noise_hu=10.0)
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
        from MedDiffusionUtilsLib.selftest import ct_phantom

        models, problem = environment.model_catalogue("motion")
        if not models:
            self.delayDisplay(f"No motion model installed; correction run skipped. {problem}")
            return
        ct = ct_phantom("Non-gated phantom", calcium=True, noise_hu=10.0)
        before = slicer.util.arrayFromVolume(ct).copy()
        logic = MotionCorrectLogic()
        created = logic.correct(ct, model=models[0].id, steps=1, device="cpu", timeout=600)
        corrected, calcium, summary = created["output"], created["seg"], created["summary"]
        self.assertEqual(corrected.GetName(), "Non-gated phantom motion corrected")
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(corrected), nodes.ijk_to_ras(ct)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(ct), before))
        table = summary.GetTable()
        self.assertEqual(table.GetNumberOfRows(), 4)
        lesions_reported = sum(int(table.GetColumnByName(scan).GetValue(2)) for scan in ("before", "after"))
        self.assertEqual(calcium.GetSegmentation().GetNumberOfSegments(), lesions_reported)
        logic.show_comparison(ct, corrected)
        self.delayDisplay("Corrected volume, calcium segments and Agatston tables created")
