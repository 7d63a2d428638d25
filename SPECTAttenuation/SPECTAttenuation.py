"""SPECT Attenuation: CT-free attenuation correction of myocardial perfusion SPECT with PADM.

The widget (the shared TaskModuleWidget) runs SPECTAttenuation.ui through ``SPECTAttenuationLib.panel``;
the work is done by ``SPECTAttenuationLib.logic`` (a child process running ``meddiff spect-ac``).
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget
from SPECTAttenuationLib.logic import SAMPLE
from SPECTAttenuationLib.logic import SPECTAttenuationLogic as _Logic
from SPECTAttenuationLib.panel import SPECTAttenuationPanel


class SPECTAttenuation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SPECT Attenuation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Corrects the photon attenuation of a myocardial perfusion SPECT (Tc-99m) that was "
            "reconstructed without it (NAC) with PADM, a Brownian-bridge diffusion model whose "
            "network also estimates, per voxel, the attenuation coefficient and the path lengths "
            "towards the camera (Chang's correction factor). The default model needs no CT; with "
            "the patient's CT or attenuation map the teacher model runs, which attends to it."
            "<br><br>"
            "Pick the NAC volume (counts), optionally a CT (Hounsfield units) or attenuation map "
            "(1/cm), the model, the number of steps (10 by default) and the device, and tick what "
            "to make besides the corrected volume, then Apply. The computation runs in a separate "
            "process, so Slicer stays responsive and Cancel stops it at once. The results are new "
            "nodes under the input's study: &quot;&lt;input&gt; AC&quot; on the input's grid, in "
            "its units; the 17-segment AHA polar maps of NAC and AC (% of peak) with the segments "
            "whose category changes, and their bull's-eyes as a picture; the AC in short-axis "
            "slices from apex to base; the estimated attenuation map. The left ventricle is found "
            "automatically; the polar map fails with a clear message when it is not. The input is "
            "never modified. Afterwards the views show NAC and AC side by side, linked, in a "
            "nuclear colour table windowed to each study's peak, with a fade slider.<br><br>"
            "Method: PADM, a physics-aware diffusion model for CT-free attenuation correction of "
            "cardiac SPECT (<a href='https://arxiv.org/abs/2511.06948'>arXiv:2511.06948</a>). "
            "Polar map: M. D. Cerqueira et al., &quot;Standardized myocardial segmentation and "
            "nomenclature for tomographic imaging of the heart&quot;, Circulation 105(4), 2002.<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>"
            "documentation</a>. Research use only; not for diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. This module reimplements PADM's sampler, physics head and "
            "teacher-student networks with PyTorch and MONAI; the training studies are simulated "
            "with PyTomography. The sample NAC is a simulated study of a woman from the extension's "
            "procedural thorax phantom, with breast attenuation of the anterior wall.")
        SAMPLE.register_at_startup(__file__)


class SPECTAttenuationLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``SPECTAttenuationLogic().correct(nacNode, attenuation=ctNode)`` (see
    SPECTAttenuationLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class SPECTAttenuationWidget(TaskModuleWidget):
    logic_class = SPECTAttenuationLogic
    panel_class = SPECTAttenuationPanel


def heart_phantom(name, shape=(24, 32, 32), spacing_mm=6.4):
    """A crude NAC study: a hot ellipsoidal LV shell (about 60 x 60 x 80 mm) in a warm body,
    its inferior wall dimmed as attenuation dims it, on a 6.4 mm grid."""
    import numpy as np

    k, j, i = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    body = ((j - centre[1]) / 14) ** 2 + ((i - centre[2]) / 15) ** 2 < 1
    radius = np.sqrt(((k - centre[0]) / (40 / spacing_mm)) ** 2 + ((j - centre[1]) / (30 / spacing_mm)) ** 2
                     + ((i - centre[2]) / (30 / spacing_mm)) ** 2)
    wall = np.exp(-((radius - 1.0) / 0.18) ** 2)
    wall *= np.where(j > centre[1] + 1, 0.6, 1.0)
    array = (5.0 * body + 100.0 * wall).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(array, name=name)
    volume.SetSpacing(spacing_mm, spacing_mm, spacing_mm)
    return volume


class SPECTAttenuationTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the full correction run needs an installed SPECT model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_refuses_a_ct_as_the_nac()
        self.setUp()
        self.test_correction_makes_new_nodes_on_the_input_grid()

    def test_refuses_a_ct_as_the_nac(self):
        from MedDiffusionUtilsLib.selftest import ct_phantom

        ct = ct_phantom("CT, not SPECT")
        with self.assertRaisesRegex(ValueError, "has negative values"):
            SPECTAttenuationLogic().correct(ct)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)
        self.delayDisplay("A CT given as the NAC was refused with a clear message")

    def test_correction_makes_new_nodes_on_the_input_grid(self):
        import numpy as np

        from MedDiffusionUtilsLib import environment, nodes
        from SPECTAttenuationLib.logic import is_teacher

        models, problem = environment.model_catalogue("spect")
        ct_free = [model for model in models if not is_teacher(model)]
        if not ct_free:
            self.delayDisplay(f"No CT-free SPECT model installed; correction run skipped. {problem}")
            return
        nac = heart_phantom("SPECT phantom")
        before = slicer.util.arrayFromVolume(nac).copy()
        logic = SPECTAttenuationLogic()
        created = logic.correct(nac, model=ct_free[0].id, steps=1, device="cpu", polar_map=False,
                                short_axis=False, mu_estimate=True, timeout=600)
        corrected = created["output"]
        self.assertEqual(corrected.GetName(), "SPECT phantom AC")
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(corrected), nodes.ijk_to_ras(nac)))
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(created["mu_estimate"]), nodes.ijk_to_ras(nac)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(nac), before))
        logic.show_comparison(nac, corrected)
        self.delayDisplay("AC volume and estimated attenuation map created on the input's grid; NAC unchanged")
