"""The Motion Correct .ui and panel in PySide6 (offscreen), run against fake_motion.py."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import slicer

import mrml_fixtures
from MedDiffusionUtilsLib.taskpanel import TaskPanel
from MotionCorrectLib.logic import MotionCorrectLogic
from MotionCorrectLib.panel import MotionCorrectPanel

from standins import ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLWidget

FAKE_MOTION = Path(mrml_fixtures.__file__).resolve().parent / "fake_motion.py"

#: a catalogue stand-in: what meddiffusion.catalog.list_models(task="motion") returns
MODELS = [
    SimpleNamespace(id="fake-motion-prodm", version="1.0", description="ProDM, calcium-aware loss",
                    training_data="thorax phantom", metrics={"ms_per_slice_cpu": 600},
                    architecture={"network": "ProDMUNet", "objective": "bridge",
                                  "diffusion": {"num_timesteps": 1000}, "sampler": {"steps": 10}}),
    SimpleNamespace(id="fake-motion-l1", version="1.0", description="plain L1 regression baseline",
                    training_data="", metrics={},
                    architecture={"network": "ProDMUNet", "objective": "regression",
                                  "diffusion": {"num_timesteps": 1000}, "sampler": {"steps": 10}}),
]


def ct_array(calcium: bool = True) -> np.ndarray:
    """Air, a soft-tissue body and two lesions: 400 HU with a 200 HU rim, and 200 HU only."""
    array = mrml_fixtures.chest_array((6, 16, 18), noise_hu=5.0, seed=5)
    if calcium:
        array[2:4, 5:9, 5:9] = 200
        array[2:4, 6:8, 6:8] = 400
        array[4, 11:13, 11:13] = 200
    return array


def volume_count(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


@pytest.fixture
def make_panel(module_panel, scene):
    def make(models=MODELS, slice_s: float = 0.0, stored: dict | None = None) -> MotionCorrectPanel:
        logic = MotionCorrectLogic(scene, backend=[sys.executable, str(FAKE_MOTION)],
                                   environment={"FAKE_MOTION_SLICE_S": str(slice_s)})
        return module_panel(MotionCorrectPanel, logic, models=models, stored=stored)
    return make


@pytest.fixture
def ct(scene):
    node = mrml_fixtures.add_volume(scene, ct_array(), name="Chest")
    mrml_fixtures.put_in_study(scene, node)
    return node


def test_ui_has_every_widget_the_panel_uses(make_panel, ui_widgets):
    panel = make_panel()
    widgets = ui_widgets(panel.task_panel.root)
    assert isinstance(panel.task_panel.root, qMRMLWidget)
    assert [name for name in (*MotionCorrectPanel.WIDGETS, "applyButton", "progressBar", "statusLabel")
            if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Inputs", "Motion correction", "Outputs", "Calcium score (Agatston)",
                        "Compare before/after", "Log"}
    assert isinstance(widgets["inputSelector"], qMRMLNodeComboBox)
    assert isinstance(widgets["fadeSlider"], ctkSliderWidget)
    assert widgets["inputSelector"].property("noneEnabled") is False
    assert widgets["roiSelector"].property("noneEnabled") is True  # the ROI is optional
    assert widgets["roiSelector"].property("nodeTypes") == ["vtkMRMLMarkupsROINode"]
    assert widgets["outputSelector"].property("noneEnabled") is True  # "Create new volume"
    device = widgets["deviceComboBox"]
    assert [device.itemText(i) for i in range(device.count())] == ["auto", "cpu", "cuda"]
    steps = widgets["stepsSpinBox"]
    assert (steps.minimum(), steps.maximum(), steps.value()) == (1, 1000, 10)
    assert widgets["beforeScoreLabel"].text() == widgets["afterScoreLabel"].text() == "—"
    assert not widgets["fadeSlider"].isEnabled() and not widgets["centreButton"].isEnabled()


def test_apply_is_enabled_only_once_an_input_is_chosen(make_panel, scene):
    panel = make_panel()
    ui = panel.ui
    assert panel.parameters.inputVolume is None
    assert not ui.applyButton.isEnabled()
    assert "inputVolume" in ui.applyButton.toolTip()

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "heart")  # an ROI alone is not enough
    assert panel.parameters.roi is None and not ui.applyButton.isEnabled()
    ui.roiSelector.setCurrentNode(roi)
    assert panel.parameters.roi is roi and not ui.applyButton.isEnabled()

    ct = mrml_fixtures.add_volume(scene, ct_array(), name="Chest")  # loaded: the selector picks it
    assert ui.inputSelector.currentNode() is ct and panel.parameters.inputVolume is ct
    assert ui.applyButton.isEnabled() and ui.applyButton.text() == TaskPanel.APPLY_TEXT

    scene.RemoveNode(ct)
    assert not ui.applyButton.isEnabled()


def test_model_selector_shows_descriptions_and_steps(make_panel):
    panel = make_panel()
    ui, parameters = panel.ui, panel.parameters
    combo = ui.modelComboBox
    assert [combo.itemText(i) for i in range(combo.count())] == ["fake-motion-prodm", "fake-motion-l1"]
    assert combo.itemData(0, 3) == ("fake-motion-prodm (version 1.0)\nabout 600 ms per slice on CPU\n"
                                    "ProDM, calcium-aware loss\n"
                                    "Training data: thorax phantom")
    assert parameters.model == "fake-motion-prodm"
    assert ui.modelInfoLabel.text() == "ProDM, calcium-aware loss · about 600 ms per slice on CPU · 10 steps"
    ui.stepsSpinBox.setValue(50)
    assert parameters.steps == 50 and ui.stepsSpinBox.isEnabled()

    combo.setCurrentIndex(1)  # the regression baseline runs in one pass
    assert parameters.model == "fake-motion-l1" and parameters.steps == 10
    assert ui.modelInfoLabel.text() == "plain L1 regression baseline · one pass (steps unused)"
    assert not ui.stepsSpinBox.isEnabled()



def test_a_stored_model_and_step_count_are_kept(make_panel):
    panel = make_panel(stored={"model": "fake-motion-l1", "steps": 25})  # as in a saved scene
    assert (panel.ui.modelComboBox.currentText(), panel.ui.stepsSpinBox.value()) == ("fake-motion-l1", 25)


def test_without_a_catalogue_the_backend_default_is_used(make_panel):
    panel = make_panel(models=[])
    assert not panel.ui.modelComboBox.isEnabled() and panel.parameters.model == ""
    assert panel.ui.modelInfoLabel.text().startswith("No motion-correction model found")
    assert panel.ui.stepsSpinBox.isEnabled() and panel.ui.stepsSpinBox.maximum() == 1000


def test_apply_turns_into_cancel_which_stops_the_run(make_panel, scene, ct, qtbot):
    panel = make_panel(slice_s=0.4)
    ui = panel.ui
    assert ui.inputSelector.currentNode() is ct
    volumes = volume_count(scene)

    ui.applyButton.click()
    assert ui.applyButton.text() == TaskPanel.CANCEL_TEXT and ui.applyButton.isEnabled()
    qtbot.waitUntil(lambda: ui.progressBar.value() > 0, timeout=20000)
    assert ui.statusLabel.text().startswith("correct 1/6")

    ui.applyButton.click()  # Cancel
    qtbot.waitUntil(lambda: not panel.task_panel.running, timeout=20000)
    assert panel.task_panel.task.state.value == "cancelled"
    assert ui.applyButton.text() == TaskPanel.APPLY_TEXT and ui.applyButton.isEnabled()
    assert volume_count(scene) == volumes
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0
    assert panel.done == [] and panel.errors == [] and panel.result is None
    assert ui.beforeScoreLabel.text() == "—"


def test_apply_corrects_and_shows_the_scores_and_views(make_panel, mrml, scene, ct, qtbot):
    views = mrml_fixtures.add_slice_views(mrml)
    red, yellow = views["Red"][1], views["Yellow"][1]
    panel = make_panel()
    ui = panel.ui
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("cpu"))
    ui.stepsSpinBox.setValue(3)

    ui.applyButton.click()
    qtbot.waitUntil(lambda: not panel.task_panel.running, timeout=20000)

    (created,) = panel.done
    corrected, calcium = created["output"], created["seg"]
    result = panel.task_panel.task.result  # what the backend reported
    assert ui.statusLabel.text() == "Done" and ui.progressBar.value() == 100
    assert corrected.GetName() == "Chest motion corrected" and calcium.GetName() == "Chest calcium"
    assert corrected.GetAttribute("MedDiffusion.steps") == "3"
    assert "fake-motion-prodm, 3 steps on cpu" in ui.logText.toPlainText()
    # the totals and categories the backend reported
    before, after = result["before"], result["after"]
    assert (before["lesions"], after["lesions"]) == (2, 1)
    assert ui.beforeScoreLabel.text() == (f"Agatston {before['agatston']:.1f} ({before['category']}) · "
                                          f"2 lesions · {before['volume_mm3']:.1f} mm³")
    assert ui.afterScoreLabel.text() == (f"Agatston {after['agatston']:.1f} ({after['category']}) · "
                                         f"1 lesion · {after['volume_mm3']:.1f} mm³")
    assert before["agatston"] > after["agatston"] > 0
    # before | after, centred on the largest lesion
    assert (red.GetBackgroundVolumeID(), yellow.GetBackgroundVolumeID()) == (ct.GetID(), corrected.GetID())
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    red_slice = views["Red"][0]
    centre = slicer.util.arrayFromVTKMatrix(red_slice.GetSliceToRAS())[:3, 3].copy()
    lesion_ijk = np.argwhere(ct_array()[2:4, 5:9, 5:9] >= 130).mean(axis=0)[::-1] + (5, 5, 2)
    matrix = mrml_fixtures.oblique_ijk_to_ras()
    np.testing.assert_allclose(centre, (matrix @ np.append(lesion_ijk, 1.0))[:3], atol=1e-3)

    assert ui.fadeSlider.isEnabled()
    ui.fadeSlider.setValue(0.5)
    assert (red.GetForegroundVolumeID(), red.GetForegroundOpacity()) == (corrected.GetID(), 0.5)
    red_slice.JumpSliceByCentering(0.0, 0.0, 0.0)  # the user scrolls away ...
    assert ui.centreButton.isEnabled()
    ui.centreButton.click()  # ... and comes back
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(red_slice.GetSliceToRAS())[:3, 3], centre)

    scene.RemoveNode(corrected)  # a result that is gone disables the compare controls
    ui.fadeSlider.setValue(0.2)
    assert not ui.fadeSlider.isEnabled() and ui.beforeScoreLabel.text() == "—"


def test_an_roi_outside_the_volume_is_refused_with_a_clear_message(make_panel, scene, ct):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far away")
    roi.SetCenter(500.0, 500.0, 500.0)
    roi.SetSize(10.0, 10.0, 10.0)
    panel = make_panel()
    panel.ui.roiSelector.setCurrentNode(roi)
    panel.ui.applyButton.click()

    (message,) = panel.errors
    assert message.startswith("ROI 'far away' does not overlap 'Chest'")
    assert panel.ui.statusLabel.text().startswith("Failed: ROI 'far away' does not overlap")
    assert panel.task_panel.task is None  # nothing was started
    assert volume_count(scene) == 1
