"""Reader Study: blinded, randomised reader studies of the methods' outputs, read inside Slicer.

The widget runs ReaderStudy.ui through ``ReaderStudyLib.panel``; ``ReaderStudyLib.logic``
shows each read under a locked hanging protocol and hands the answers to the backend's
``meddiffusion.study`` session, which appends them to the reader's log on disk at once.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from MedDiffusionUtilsLib.modulewidget import TaskModuleWidget
from ReaderStudyLib.logic import ReaderStudyLogic as _Logic
from ReaderStudyLib.panel import ReaderStudyPanel


class ReaderStudy(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Reader Study")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MedDiffusion")]
        self.parent.dependencies = ["MedDiffusionUtils"]
        self.parent.contributors = ["SlicerMedDiffusion contributors"]
        self.parent.helpText = _(
            "Blinded, randomised reader studies: radiologists judge whether a method's outputs "
            "(denoised, motion-corrected, ...) are as good as or better than the originals.<br><br>"
            "<b>Readers</b>: open the study folder the study lead gave you, enter your reader code "
            "and press Start reading. Each case appears under a fixed hanging protocol (one view, "
            "or two linked views A | B, the same window/level on both, cine for 4D images) with "
            "nothing else of the scene visible. Answer with the large buttons or their keys "
            "(1-5 for a rating, the keys shown for a preference); every answer is saved on disk "
            "at once, with the time spent on the case and the window/level you set. A case can "
            "be skipped with a reason. After a break, a crash or a closed Slicer, Start reading "
            "continues exactly where you stopped.<br><br>"
            "<b>Study lead</b>: create a study from a folder of originals and a folder of a "
            "method's outputs (the same file names); readers get seeded, counterbalanced reading "
            "orders, and the key naming the methods is written beside the study folder, never in "
            "it. Follow each reader's progress and run the analysis (Wilcoxon/Friedman, agreement, "
            "Bradley-Terry, MRMC ROC), whose tables are loaded into the scene. The same steps are "
            "the commands <i>meddiff study create / status / analyze</i>.<br>"
            "See the <a href='https://github.com/SlicerMedDiffusion/SlicerMedDiffusion'>"
            "documentation</a>. Research use only; not for diagnosis.")
        self.parent.acknowledgementText = _(
            "Part of SlicerMedDiffusion. The reading screen learns from PerkLab's "
            "SegmentationComparison, SlicerCaseIterator and Image Quizzer; the statistics use "
            "scipy, statsmodels, pingouin, krippendorff and choix.")


class ReaderStudyLogic(ScriptedLoadableModuleLogic, _Logic):
    """Scripting access, e.g. ``logic.open_study(folder); logic.start("R1")`` (see ReaderStudyLib.logic)."""

    def __init__(self, scene=None, **options):
        ScriptedLoadableModuleLogic.__init__(self)
        _Logic.__init__(self, scene, **options)


class ReaderStudyWidget(TaskModuleWidget):
    """The task modules' widget (.ui, logic, panel, error dialog, scene close, reload), with
    what differs for a study: closing the scene ends a reading (every answer is on disk)."""

    logic_class = ReaderStudyLogic
    panel_class = ReaderStudyPanel

    def onSceneStartClose(self, caller, event):
        self.panel.on_stop()

    def enter(self):
        if self.panel is not None and self.panel.binding is None:
            self.panel.set_parameters(self.logic.parameters())


class ReaderStudyTest(ScriptedLoadableModuleTest):
    """A tiny two-patient study made by the backend, read blind inside Slicer, then resumed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_read_blind_and_resume()

    def _make_study(self, folder):
        import numpy as np

        from meddiffusion.io import Volume, write_volume
        from meddiffusion.study.blinding import create_study
        from meddiffusion.study.design import Design, default_question
        from meddiffusion.study.sources import find_cases

        rng = np.random.default_rng(0)
        for method, scale in (("originals", 1.0), ("denoised", 0.9)):
            for patient in ("first", "second"):
                array = np.where(rng.random((3, 24, 24)) < 0.5, -1000.0, 40.0) * scale
                write_volume(Volume(array.astype(np.float32), (0.8, 0.8, 2.5)), folder / method / f"{patient}.nrrd")
        design = Design(title="self-test", seed=1, readers=["R1"], cases=[],
                        questions=[default_question("likert", "noise"), default_question("pairwise", "preference")])
        create_study(find_cases(folder / "originals", {"denoised": folder / "denoised"}), design, folder / "study")
        return folder / "study"

    def test_read_blind_and_resume(self):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            study = self._make_study(Path(folder))
            logic = ReaderStudyLogic()
            logic.open_study(study)
            read = logic.start("R1")
            names = sorted(n for n in ("A", "B", "Image") if slicer.mrmlScene.GetFirstNodeByName(n) is not None)
            self.assertTrue(names in (["Image"], ["A", "B"]))
            self.assertIsNone(slicer.mrmlScene.GetFirstNodeByName("denoised"))
            for question in read.questions:
                logic.answer(question.id, "left" if question.kind == "pairwise" else 4)
            expected = logic.current()
            logic.stop()
            self.delayDisplay("First case read and answered; reading stopped")
            again = ReaderStudyLogic()
            again.open_study(study)
            self.assertEqual(again.start("R1").index, expected.index)
            self.assertEqual(again.progress()[0], 1)
            again.stop()
            self.delayDisplay("Reopened: the reader continues at the second case")
