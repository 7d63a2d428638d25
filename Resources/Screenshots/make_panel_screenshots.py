"""Render module panels from their real .ui files (PySide6 offscreen) for the README.

    python Resources/Screenshots/make_panel_screenshots.py [NAME ...]

(NAME: a module, or ReaderStudyScreen; by default every picture.)

Each panel is shown as a user sees it after loading the module's bundled sample, with the
models the catalogue lists: LDCT Denoise with the low-dose chest CT, Motion Correct with the
non-gated chest CT, SPECT Attenuation with the NAC perfusion study, PET/MR Denoise with the
low-count brain PET and its MR.  Cardiac 4D Synth generates from a request and has no sample:
its panel holds the README's request (DCM, EDV 230 ml, ESV 170 ml), with the models that ship
(models registered in the user's own model folder are left out).  CTK/qMRML widgets are drawn by the test
stand-ins in Testing/widgets/standins: the layout, labels and defaults are the module's own,
the styling is plain Qt rather than Slicer's.

``reader_study_panel.png`` is the Reader Study reader's screen on a pairwise read of a study
made from the LDCT sample (low-dose vs. normal-dose): the panel beside the two views as the
hanging protocol sets them (A | B, one soft-tissue window), the views drawn from the shown
nodes' voxels and window/level rather than by Slicer's renderer.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]
for folder in ("Testing/widgets/shim", "Testing/widgets", "Testing/slicer"):
    sys.path.insert(0, str(REPO / folder))

import mrml_fixtures  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from standins import load_ui  # noqa: E402

from meddiffusion.io import read_volume  # noqa: E402

mrml_fixtures.add_module_paths()
from LDCTDenoiseLib.logic import LDCTDenoiseLogic  # noqa: E402
from LDCTDenoiseLib.panel import LDCTDenoisePanel  # noqa: E402
from MotionCorrectLib.logic import MotionCorrectLogic  # noqa: E402
from MotionCorrectLib.panel import MotionCorrectPanel  # noqa: E402
from ReaderStudyLib.logic import ReaderStudyLogic  # noqa: E402
from SPECTAttenuationLib.logic import SPECTAttenuationLogic  # noqa: E402
from SPECTAttenuationLib.panel import SPECTAttenuationPanel  # noqa: E402
from PETMRDenoiseLib.logic import PETMRDenoiseLogic  # noqa: E402
from PETMRDenoiseLib.panel import PETMRDenoisePanel  # noqa: E402
from ReaderStudyLib.panel import ReaderStudyPanel  # noqa: E402
from Cardiac4DSynthLib.logic import Cardiac4DSynthLogic  # noqa: E402
from Cardiac4DSynthLib.panel import Cardiac4DSynthPanel  # noqa: E402



def grab(widget, name: str) -> None:
    widget.resize(440, widget.sizeHint().height())
    widget.show()
    QApplication.processEvents()
    widget.grab().save(str(Path(__file__).parent / f"panel_{name}.png"))
    widget.close()


def screenshot(module: str, sample_name: str, logic_class, panel_class, companions: dict | None = None) -> None:
    """The module's panel with the first two slices of its sample loaded (the selector shows it);
    ``companions`` maps further parameters to the samples selected in them (a PET's MR)."""
    with mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as test:
        loaded = {}
        for parameter, name in {"inputVolume": sample_name, **(companions or {})}.items():
            sample = read_volume(REPO / "meddiffusion" / "data" / f"{name}.nrrd")
            loaded[parameter] = mrml_fixtures.add_volume(test.scene, sample.array[:2], name=name)
            mrml_fixtures.put_in_study(test.scene, loaded[parameter])
        root = load_ui(REPO / module / "Resources" / "UI" / f"{module}.ui")
        logic = logic_class(test.scene)
        panel = panel_class(root, logic.parameters(), logic)
        panel.set_scene(test.scene)
        panel.parameters.update(**loaded)
        grab(root, module)
        panel.cleanup()


def generator_screenshot(module: str, logic_class, panel_class, request: dict) -> None:
    """A generative module's panel (nothing to load) with ``request`` in its form, listing the models
    that ship (an empty user model folder)."""
    import tempfile

    saved = os.environ.get("MEDDIFF_MODEL_DIR")
    with tempfile.TemporaryDirectory() as models, mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as test:
        os.environ["MEDDIFF_MODEL_DIR"] = models
        try:
            root = load_ui(REPO / module / "Resources" / "UI" / f"{module}.ui")
            logic = logic_class(test.scene)
            panel = panel_class(root, logic.parameters(), logic)
            panel.set_scene(test.scene)
            panel.parameters.update(**request)
            grab(root, module)
            panel.cleanup()
        finally:
            if saved is None:
                os.environ.pop("MEDDIFF_MODEL_DIR", None)
            else:
                os.environ["MEDDIFF_MODEL_DIR"] = saved


def sample_study(folder: Path) -> Path:
    """A one-patient study: the LDCT sample's low-dose and normal-dose middle slices as two methods."""
    from meddiffusion.io import Volume, write_volume
    from meddiffusion.study.blinding import create_study
    from meddiffusion.study.design import Design, default_question
    from meddiffusion.study.sources import find_cases

    for method, sample in (("low-dose", "sample_ldct_chest"), ("normal-dose", "sample_ldct_chest_reference")):
        volume = read_volume(REPO / "meddiffusion" / "data" / f"{sample}.nrrd")
        write_volume(Volume(volume.array[5:8], volume.spacing, volume.origin, volume.direction),
                     folder / method / "chest.nrrd")
    design = Design(title="Low-dose CT denoising", seed=7, readers=["R1"], cases=[],
                    questions=[default_question("likert", "noise"), default_question("pairwise", "sharpness")])
    create_study(find_cases(folder / "low-dose", {"normal-dose": folder / "normal-dose"}), design, folder / "ldct-study")
    return folder / "ldct-study"


def view_image(volume, size: int):
    """One slice view as the protocol shows it: the middle slice at the node's window/level, its name in the corner."""
    import numpy as np
    import slicer
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QFont, QImage, QPainter

    array = slicer.util.arrayFromVolume(volume)
    display = volume.GetDisplayNode()
    low = display.GetLevel() - display.GetWindow() / 2
    grey = np.clip((array[array.shape[0] // 2] - low) / display.GetWindow() * 255, 0, 255).astype(np.uint8)
    grey = np.ascontiguousarray(grey)
    image = QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0], QImage.Format.Format_Grayscale8)
    image = image.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    canvas = image.convertToFormat(QImage.Format.Format_RGB32)
    painter = QPainter(canvas)
    painter.setPen(QColor("yellow"))
    painter.setFont(QFont("DejaVu Sans", 16))
    painter.drawText(12, 28, volume.GetName())
    painter.end()
    return canvas


def reader_study_screen() -> None:
    """The reader's screen on the pairwise read: panel | view A | view B, views as tall as the panel."""
    import contextlib
    import tempfile

    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QWidget
    from standins import ctkCollapsibleButton

    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder), \
            mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as test:
        study = sample_study(Path(folder))
        mrml_fixtures.add_slice_views(test)
        root = load_ui(REPO / "ReaderStudy" / "Resources" / "UI" / "ReaderStudy.ui")
        for section in root.findChildren(ctkCollapsibleButton):  # folded as CTK folds them
            if section.property("collapsed"):
                for child in section.findChildren(QWidget):
                    child.hide()
        logic = ReaderStudyLogic(test.scene)
        panel = ReaderStudyPanel(root, logic.parameters(), logic)
        panel.ui.studyPathLineEdit.setProperty("currentPath", study.name)  # as typed, relative
        panel.ui.openStudyButton.click()
        panel.ui.readerNameLineEdit.setText("R1")
        panel.ui.startButton.click()
        while "single" in logic.current().images:  # the likert reads come first
            question = logic.current().questions[0]
            panel.answer(question.id, 4)
        root.resize(460, root.minimumSizeHint().height())
        root.show()
        QApplication.processEvents()
        shot = root.grab().toImage()
        view_size = shot.height()
        views = [view_image(logic.shown.volumes[position], view_size) for position in ("left", "right")]
        screen = QImage(shot.width() + 2 * view_size + 12, max(shot.height(), view_size), QImage.Format.Format_RGB32)
        screen.fill(QColor(40, 40, 40))
        painter = QPainter(screen)
        painter.drawImage(0, 0, shot)
        for number, view in enumerate(views):
            painter.drawImage(shot.width() + 4 + number * (view_size + 4), 0, view)
        painter.end()
        screen.save(str(REPO / "Resources" / "Screenshots" / "reader_study_panel.png"))
        panel.cleanup()
        root.close()


PICTURES = {
    "LDCTDenoise": lambda: screenshot("LDCTDenoise", "sample_ldct_chest", LDCTDenoiseLogic, LDCTDenoisePanel),
    "MotionCorrect": lambda: screenshot("MotionCorrect", "sample_nongated_chest_ct", MotionCorrectLogic,
                                        MotionCorrectPanel),
    "SPECTAttenuation": lambda: screenshot("SPECTAttenuation", "sample_spect_nac", SPECTAttenuationLogic,
                                           SPECTAttenuationPanel),
    "PETMRDenoise": lambda: screenshot("PETMRDenoise", "sample_petmr_brain_pet_drf10", PETMRDenoiseLogic,
                                       PETMRDenoisePanel, companions={"mrVolume": "sample_petmr_brain_mr"}),
    "Cardiac4DSynth": lambda: generator_screenshot(
        "Cardiac4DSynth", Cardiac4DSynthLogic, Cardiac4DSynthPanel,
        {"diagnosis": "DCM", "edv": 230.0, "esv": 170.0, "ef": 26.1, "systole": "ESV", "seed": 3}),
    "ReaderStudyScreen": reader_study_screen,
}


def main(names=()) -> None:
    app = QApplication.instance() or QApplication([])  # noqa: F841 - keeps Qt alive
    unknown = sorted(set(names) - set(PICTURES))
    if unknown:
        raise SystemExit(f"unknown pictures {unknown}; known: {', '.join(PICTURES)}")
    for name, make in PICTURES.items():
        if not names or name in names:
            make()


if __name__ == "__main__":
    main(sys.argv[1:])
