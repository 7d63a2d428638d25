"""The LDCT Denoise .ui and panel in PySide6 (offscreen), run against fake_ldct.py."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import slicer

import mrml_fixtures
from LDCTDenoiseLib.logic import LDCTDenoiseLogic
from LDCTDenoiseLib.panel import LDCTDenoisePanel
from MedDiffusionUtilsLib.taskpanel import TaskPanel

from standins import ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLWidget

FAKE_LDCT = Path(mrml_fixtures.__file__).resolve().parent / "fake_ldct.py"
ct_array = partial(mrml_fixtures.chest_array, (5, 10, 12), noise_hu=25.0, seed=5)


#: a catalogue stand-in: what meddiffusion.catalog.list_models(task="ldct") returns
MODELS = [
    SimpleNamespace(id="fake-ldct-25", version="1.0", description="quarter dose",
                    training_data="thorax phantom", architecture={"network": "CLEARNet"},
                    metrics={"dose": 0.25, "ms_per_slice_cpu": 150}),
    SimpleNamespace(id="fake-ldct-10", version="0.2", description="tenth dose", training_data="",
                    architecture={"network": "CLEARNet", "diffusion": {"num_timesteps": 5},
                                  "sampler": {"steps": 3, "cpu_steps": 2}},
                    metrics={"dose": 0.1, "ms_per_slice_cpu": 90}),
]


def volume_count(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


@pytest.fixture
def make_panel(module_panel, scene):
    def make(models=MODELS, slice_s: float = 0.0, stored: dict | None = None) -> LDCTDenoisePanel:
        logic = LDCTDenoiseLogic(scene, backend=[sys.executable, str(FAKE_LDCT)],
                                 environment={"FAKE_LDCT_SLICE_S": str(slice_s)})
        return module_panel(LDCTDenoisePanel, logic, models=models, stored=stored)
    return make


@pytest.fixture
def ct(scene):
    node = mrml_fixtures.add_volume(scene, ct_array(), name="LDCT")
    mrml_fixtures.put_in_study(scene, node)
    return node


def test_ui_has_every_widget_the_panels_use(make_panel, ui_widgets):
    panel = make_panel()
    widgets = ui_widgets(panel.task_panel.root)
    assert isinstance(panel.task_panel.root, qMRMLWidget)
    assert [name for name in (*LDCTDenoisePanel.WIDGETS, "applyButton", "progressBar", "statusLabel")
            if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Inputs", "Denoising", "Outputs", "Compare before/after", "Log"}
    assert isinstance(widgets["inputSelector"], qMRMLNodeComboBox)
    assert isinstance(widgets["fadeSlider"], ctkSliderWidget)
    assert widgets["outputSelector"].property("noneEnabled") is True  # "Create new volume"
    assert widgets["inputSelector"].property("noneEnabled") is False
    device = widgets["deviceComboBox"]
    assert [device.itemText(i) for i in range(device.count())] == ["auto", "cpu", "cuda"]
    assert (widgets["stepsSpinBox"].minimum(), widgets["stepsSpinBox"].value()) == (1, 10)


def test_apply_is_enabled_only_once_an_input_is_chosen(make_panel, scene):
    panel = make_panel()
    ui = panel.ui
    assert panel.parameters.inputVolume is None
    assert not ui.applyButton.isEnabled()
    assert "inputVolume" in ui.applyButton.toolTip()

    ct = mrml_fixtures.add_volume(scene, ct_array(), name="LDCT")  # loaded: the selector picks it
    assert ui.inputSelector.currentNode() is ct and panel.parameters.inputVolume is ct
    assert ui.applyButton.isEnabled() and ui.applyButton.text() == TaskPanel.APPLY_TEXT

    scene.RemoveNode(ct)
    assert not ui.applyButton.isEnabled()


def test_model_selector_is_filled_from_the_catalogue_and_sets_the_steps_range(make_panel):
    panel = make_panel()
    ui, parameters = panel.ui, panel.parameters
    combo = ui.modelComboBox
    assert [combo.itemText(i) for i in range(combo.count())] == ["fake-ldct-25", "fake-ldct-10"]
    assert combo.itemData(0, 3) == ("fake-ldct-25 (version 1.0)\n25 % dose, about 150 ms per slice on CPU\n"
                                    "quarter dose\nTraining data: thorax phantom")
    assert combo.itemData(1, 3).startswith("fake-ldct-10 (version 0.2)\n10 % dose, about 90 ms per slice on CPU\n")
    assert parameters.model == "fake-ldct-25" and combo.currentText() == "fake-ldct-25"
    assert ui.modelInfoLabel.text() == "trained for 25 % dose · about 150 ms per slice on CPU · 10 steps"
    assert (ui.stepsSpinBox.maximum(), ui.stepsSpinBox.value()) == (10, 10)

    combo.setCurrentIndex(1)  # a model sampled in at most 5 steps, 3 by default
    assert parameters.model == "fake-ldct-10"
    assert (ui.stepsSpinBox.maximum(), ui.stepsSpinBox.value(), parameters.steps) == (5, 3, 3)
    assert "10 % dose" in ui.modelInfoLabel.text()
    ui.stepsSpinBox.setValue(9)  # beyond the model: held at its maximum
    assert parameters.steps == 5

    combo.setCurrentIndex(0)
    assert (ui.stepsSpinBox.maximum(), parameters.steps) == (10, 10)

    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("cpu"))
    combo.setCurrentIndex(1)  # on the CPU this model's card asks for fewer steps
    assert (ui.stepsSpinBox.maximum(), parameters.steps) == (5, 2)


def test_a_stored_model_and_step_count_are_kept(make_panel):
    panel = make_panel(stored={"model": "fake-ldct-10", "steps": 2})
    assert panel.ui.modelComboBox.currentText() == "fake-ldct-10"
    assert (panel.ui.stepsSpinBox.maximum(), panel.ui.stepsSpinBox.value()) == (5, 2)


def test_without_a_catalogue_the_backend_default_is_used(make_panel):
    panel = make_panel(models=[])
    assert not panel.ui.modelComboBox.isEnabled()
    assert panel.parameters.model == ""
    assert panel.ui.modelInfoLabel.text().startswith("No low-dose CT model found")


def test_apply_turns_into_cancel_which_stops_the_run(make_panel, scene, ct, qtbot):
    panel = make_panel(slice_s=0.4)
    ui = panel.ui
    assert ui.inputSelector.currentNode() is ct
    volumes = volume_count(scene)

    ui.applyButton.click()
    assert ui.applyButton.text() == TaskPanel.CANCEL_TEXT and ui.applyButton.isEnabled()
    qtbot.waitUntil(lambda: ui.progressBar.value() > 0, timeout=20000)
    assert ui.statusLabel.text().startswith("denoise 1/5")

    ui.applyButton.click()  # Cancel
    qtbot.waitUntil(lambda: not panel.task_panel.running, timeout=20000)
    assert panel.task_panel.task.state.value == "cancelled"
    assert ui.applyButton.text() == TaskPanel.APPLY_TEXT and ui.applyButton.isEnabled()
    assert volume_count(scene) == volumes
    assert panel.done == [] and panel.errors == [] and panel.result is None
    assert not ui.fadeSlider.isEnabled()


def test_apply_denoises_and_shows_before_and_after(make_panel, mrml, scene, ct, qtbot):
    views = mrml_fixtures.add_slice_views(mrml)
    red, yellow = views["Red"][1], views["Yellow"][1]
    panel = make_panel()
    ui = panel.ui
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("cpu"))
    ui.modelComboBox.setCurrentIndex(1)
    ui.stepsSpinBox.setValue(3)
    assert not ui.fadeSlider.isEnabled()

    ui.applyButton.click()
    qtbot.waitUntil(lambda: not panel.task_panel.running, timeout=20000)

    (created,) = panel.done
    denoised = created["output"]
    assert ui.statusLabel.text() == "Done" and ui.progressBar.value() == 100
    assert denoised.GetName() == "LDCT denoised"
    assert (denoised.GetAttribute("MedDiffusion.model"), denoised.GetAttribute("MedDiffusion.steps")) \
        == ("fake-ldct-10", "3")
    assert "fake-ldct-10, 3 steps on cpu: 5 slices" in ui.logText.toPlainText()
    assert (red.GetBackgroundVolumeID(), yellow.GetBackgroundVolumeID()) == (ct.GetID(), denoised.GetID())
    assert red.GetLinkedControl() and yellow.GetLinkedControl()

    assert ui.fadeSlider.isEnabled()
    ui.fadeSlider.setValue(0.5)
    assert (red.GetForegroundVolumeID(), red.GetForegroundOpacity()) == (denoised.GetID(), 0.5)

    ui.differenceCheckBox.setChecked(True)  # on request, after the run
    assert panel.parameters.differenceVolume is True
    difference = slicer.util.getFirstNodeByClassByName("vtkMRMLScalarVolumeNode",
                                                       "LDCT denoised difference")
    assert difference is not None and yellow.GetBackgroundVolumeID() == difference.GetID()
    assert np.allclose(slicer.util.arrayFromVolume(difference),
                       slicer.util.arrayFromVolume(denoised) - slicer.util.arrayFromVolume(ct))
    ui.differenceCheckBox.setChecked(False)
    assert yellow.GetBackgroundVolumeID() == denoised.GetID()
    ui.differenceCheckBox.setChecked(True)  # the same difference volume again, not a new one
    assert volume_count(scene) == 3


def test_input_that_is_not_ct_is_refused_with_a_clear_message(make_panel, scene):
    mr = mrml_fixtures.add_volume(scene, ct_array(air=0.0) + 300, name="T1 MR")
    panel = make_panel()
    assert panel.ui.inputSelector.currentNode() is mr
    panel.ui.applyButton.click()

    (message,) = panel.errors
    assert message.startswith("'T1 MR' does not look like CT")
    assert panel.ui.statusLabel.text().startswith("Failed: 'T1 MR' does not look like CT")
    assert panel.task_panel.task is None  # nothing was started
    assert panel.ui.applyButton.text() == TaskPanel.APPLY_TEXT and volume_count(scene) == 1
