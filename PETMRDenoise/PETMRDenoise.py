"""PET/MR Denoise: MR-guided denoising of low-count PET with CSRD, and a lesion SUV readout.

The widget (the shared TaskModuleWidget) runs PETMRDenoise.ui through ``PETMRDenoiseLib.panel``;
the work is done by ``PETMRDenoiseLib.logic`` (a child process running ``meddiff pet-denoise``).
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget
from PETMRDenoiseLib.logic import SAMPLE
from PETMRDenoiseLib.logic import PETMRDenoiseLogic as _Logic
from PETMRDenoiseLib.panel import PETMRDenoisePanel


class PETMRDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PET/MR Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Denoises a low-count FDG PET (reduced dose or short frame) with CSRD, a 3D residual "
            "diffusion model (EDM) whose network sees the low-count PET, the patient's MR and the "
            "position of each voxel in the volume. With the MR of the same PET/MR session, the "
            "MR-guided model runs (the MR is registered rigidly onto the PET when it is off by more "
            "than 1 mm or 1°); without one, a PET-only model denoises the PET alone."
            "<br><br>"
            "Pick the PET (SUV or Bq/ml), optionally the MR (T1), the model, the number of Heun steps "
            "and the device, then Apply. The computation runs in a separate process, so Slicer stays "
            "responsive and Cancel stops it at once, leaving nothing behind. The result is a new "
            "volume &quot;&lt;input&gt; denoised&quot; on the input's grid, in its units, with the "
            "same total activity (within 1 %); the inputs are never modified. Afterwards the views "
            "show input and denoised PET side by side, linked, in one SUV window and a nuclear colour "
            "table, fused over the MR in grey when there was one (PET opacity slider), with a fade "
            "slider.<br><br>"
            "Lesion SUV: place a point on each lesion (Markups point list) or an ROI around one, "
            "select it and press Measure SUV: SUVmax and SUVmean before and after, in a sphere of "
            "the given radius around each point or inside the ROI, go into the table "
            "&quot;&lt;denoised&gt; lesion SUV&quot; with their change in %.<br><br>"
            "Method: CSRD, coordinate-guided spatial residual diffusion for MR-guided PET denoising "
            "(<a href='https://arxiv.org/abs/2410.00184'>arXiv:2410.00184</a>); EDM: T. Karras et "
            "al., &quot;Elucidating the design space of diffusion-based generative models&quot;, "
            "NeurIPS 2022.<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>"
            "documentation</a>. Research use only; not for diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. This module reimplements CSRD's network, normalisation and "
            "sampler with PyTorch and MONAI; the training studies are simulated from the MNI152 "
            "template (nilearn) and the extension's thorax phantom with an attenuated projection, "
            "binomial thinning and OSEM. The sample is a simulated brain FDG PET at 1/10 of the "
            "counts with its T1 MR.")
        SAMPLE.register_at_startup(__file__)


class PETMRDenoiseLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``PETMRDenoiseLogic().denoise(petNode, mr=mrNode)`` (see
    PETMRDenoiseLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class PETMRDenoiseWidget(TaskModuleWidget):
    logic_class = PETMRDenoiseLogic
    panel_class = PETMRDenoisePanel


def brain_phantom(name, shape=(24, 40, 40), spacing_mm=3.0, lesion_suv=12.0):
    """A crude brain FDG PET in SUV: a warm ellipsoidal brain (SUV 6) in a cool head (SUV 1), a hot
    lesion of ``lesion_suv`` (radius 6 mm) right of centre, on a ``spacing_mm`` grid; returns the
    volume and the lesion's centre in RAS."""
    import numpy as np

    k, j, i = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    head = ((k - centre[0]) / (0.45 * shape[0])) ** 2 + ((j - centre[1]) / (0.45 * shape[1])) ** 2 \
        + ((i - centre[2]) / (0.4 * shape[2])) ** 2 < 1
    brain = ((k - centre[0]) / (0.38 * shape[0])) ** 2 + ((j - centre[1]) / (0.38 * shape[1])) ** 2 \
        + ((i - centre[2]) / (0.33 * shape[2])) ** 2 < 1
    lesion_kji = centre + np.array([0.0, 0.0, 6.0])
    lesion = np.linalg.norm((np.stack([k, j, i], -1) - lesion_kji) * spacing_mm, axis=-1) <= 6.0
    rng = np.random.default_rng(0)
    array = (1.0 * head + 5.0 * brain).astype(np.float32)
    array[lesion] = lesion_suv
    array = np.clip(array * rng.gamma(25.0, 1 / 25.0, shape), 0, None).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(array, name=name)
    volume.SetSpacing(spacing_mm, spacing_mm, spacing_mm)
    ras = np.array(volume.GetOrigin()) + spacing_mm * lesion_kji[::-1]  # identity directions
    return volume, tuple(float(x) for x in ras)


class PETMRDenoiseTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the denoising run needs an installed PET-only model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_refuses_a_ct_as_the_pet()
        self.setUp()
        self.test_lesion_readout_reads_the_hot_sphere()
        self.setUp()
        self.test_denoising_makes_a_new_volume_on_the_input_grid()

    def test_refuses_a_ct_as_the_pet(self):
        from MedDiffusionUtilsLib.selftest import ct_phantom

        ct = ct_phantom("CT, not PET")
        with self.assertRaisesRegex(ValueError, "has negative values"):
            PETMRDenoiseLogic().denoise(ct)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)
        self.delayDisplay("A CT given as the PET was refused with a clear message")

    def test_lesion_readout_reads_the_hot_sphere(self):
        pet, centre = brain_phantom("PET phantom")
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "lesions")
        points.AddControlPointWorld(*centre, "L1")
        table = PETMRDenoiseLogic().measure_lesions(pet, pet, points, radius_mm=5.0)
        values = table.GetTable()
        self.assertEqual(values.GetNumberOfRows(), 1)
        self.assertGreater(values.GetColumnByName("SUVmean before").GetValue(0), 8.0)
        self.assertEqual(values.GetColumnByName("SUVmax change %").GetValue(0), 0.0)
        self.delayDisplay("Lesion SUV read in a 5 mm sphere")

    def test_denoising_makes_a_new_volume_on_the_input_grid(self):
        import numpy as np

        from MedDiffusionUtilsLib import environment, nodes
        from PETMRDenoiseLib.logic import reads_mr

        models, problem = environment.model_catalogue("petmr")
        pet_only = [model for model in models if not reads_mr(model)]
        if not pet_only:
            self.delayDisplay(f"No PET-only model installed; denoising run skipped. {problem}")
            return
        pet, _centre = brain_phantom("PET phantom")
        before = slicer.util.arrayFromVolume(pet).copy()
        logic = PETMRDenoiseLogic()
        created = logic.denoise(pet, model=pet_only[0].id, steps=1, device="cpu", timeout=600)
        denoised = created["output"]
        self.assertEqual(denoised.GetName(), "PET phantom denoised")
        self.assertTrue(np.array_equal(nodes.ijk_to_ras(denoised), nodes.ijk_to_ras(pet)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(pet), before))
        logic.show_comparison(pet, denoised)
        self.delayDisplay("Denoised PET created on the input's grid; input unchanged")
