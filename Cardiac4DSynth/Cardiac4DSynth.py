"""Cardiac 4D Synth: a labelled short-axis cine MRI of a chosen diagnosis and LV function, generated
by cascaded latent diffusion.

The widget (the shared TaskModuleWidget) runs Cardiac4DSynth.ui through ``Cardiac4DSynthLib.panel``;
the work is done by ``Cardiac4DSynthLib.logic`` (a child process running ``meddiff synth-cardiac``).
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from Cardiac4DSynthLib.logic import Cardiac4DSynthLogic as _Logic
from Cardiac4DSynthLib.panel import Cardiac4DSynthPanel
from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget


class Cardiac4DSynth(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Cardiac 4D Synth")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Generates a short-axis cine MRI (bSSFP) of a whole cardiac cycle with its labels (right "
            "ventricle, myocardium, left ventricle), for a chosen diagnosis (ACDC's groups NOR, MINF, DCM, "
            "HCM, RV) and left-ventricular function: the end-diastolic volume (EDV) with the end-systolic "
            "volume (ESV) or the ejection fraction (EF; ESV and EF follow each other from the EDV).<br><br>"
            "A static anatomy model draws the end-diastolic heart, a residual-motion model then draws every "
            "frame's motion from it, all frames from the same noise so the heart stays one heart; both are "
            "latent diffusion models sampled with DDIM and classifier-free guidance. Hearts whose labels are "
            "implausible are redrawn. With &quot;use the loaded cine's end-diastolic frame as anatomy&quot;, "
            "the chosen volume (e.g. a loaded cine's proxy at end-diastole) is kept as the heart and only "
            "its motion is generated.<br><br>"
            "Set the request, the number of slices and frames and the seed, then Apply. The computation runs "
            "in a separate process, so Slicer stays responsive and Cancel stops it at once, leaving nothing "
            "behind; a request no heart of the group could have (an ESV above the EDV, a dilated normal "
            "heart) is refused with the reason. The result: the cine &quot;Synthetic cine &lt;request&gt;&quot; "
            "(a volume sequence) and its labels (a segmentation sequence) played together by one sequence "
            "browser, the table &quot;Volumes &lt;request&gt;&quot; of the LV, RV and myocardial volumes of "
            "every frame, and a plot of the LV and RV volume curves measured on the labels against the "
            "requested EDV and ESV.<br><br>"
            "Method: cascaded latent diffusion for controllable 4D cardiac MRI synthesis "
            "(<a href='https://arxiv.org/abs/2606.26764'>arXiv:2606.26764</a>, MICCAI 2026); groups and "
            "labels of the ACDC challenge (O. Bernard et al., IEEE TMI 37:2514, 2018).<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>documentation</a>. "
            "Research use only: synthetic images for method development and data augmentation, not for "
            "diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. This module reimplements the cascade (dual-decoder VAE, anatomy and "
            "residual-motion LDMs) with PyTorch and MONAI; the training cines are simulated short-axis "
            "studies of the extension's cardiac phantom.")


class Cardiac4DSynthLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``Cardiac4DSynthLogic().synthesize("DCM", edv=230, esv=170)`` (see
    Cardiac4DSynthLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class Cardiac4DSynthWidget(TaskModuleWidget):
    logic_class = Cardiac4DSynthLogic
    panel_class = Cardiac4DSynthPanel


class Cardiac4DSynthTest(ScriptedLoadableModuleTest):
    """Checks inside Slicer; the generating run needs an installed cascade."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_esv_and_ef_follow_each_other()
        self.setUp()
        self.test_an_impossible_request_is_refused_with_the_reason()
        self.setUp()
        self.test_a_cine_with_labels_browser_table_and_plot()

    def test_esv_and_ef_follow_each_other(self):
        from Cardiac4DSynthLib.logic import link_systole

        parameters = Cardiac4DSynthLogic().parameters()
        parameters.edv = 200.0
        link_systole(parameters, "esv", 150.0)
        self.assertEqual((parameters.systole, parameters.ef), ("ESV", 25.0))
        link_systole(parameters, "ef", 60.0)
        self.assertEqual((parameters.systole, parameters.esv), ("EF", 80.0))
        self.delayDisplay("ESV and EF follow each other through the EDV")

    def test_an_impossible_request_is_refused_with_the_reason(self):
        from MedDiffusionUtilsLib.runner import TaskFailed

        with self.assertRaisesRegex(TaskFailed, "end-systolic volume must be smaller than end-diastolic"):
            Cardiac4DSynthLogic().synthesize("DCM", edv=230, esv=240, timeout=300)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSequenceNode"), 0)
        self.delayDisplay("An ESV above the EDV was refused with the backend's reason")

    def test_a_cine_with_labels_browser_table_and_plot(self):
        from Cardiac4DSynthLib.logic import model_choices
        from MedDiffusionUtilsLib import environment

        models, problem = environment.model_catalogue("cardiac4d")
        if not model_choices(models):
            self.delayDisplay(f"No 4D cardiac model installed; generating run skipped. {problem}")
            return
        logic = Cardiac4DSynthLogic()
        created = logic.synthesize("NOR", edv=140, ef=60, slices=8, frames=10, steps=2, device="cpu",
                                   keep_implausible=True, max_attempts=1, timeout=900)
        self.assertEqual(created["output"].GetNumberOfDataNodes(), 10)
        self.assertEqual(created["labels"].GetNumberOfDataNodes(), 10)
        self.assertEqual(created["table"].GetTable().GetNumberOfRows(), 10)
        logic.show(created)
        self.delayDisplay("Cine and labels play together; the volume curves are in the plot view")
