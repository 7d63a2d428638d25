"""The MedDiffusionUtils .ui and panel, and the shared TaskPanel, in PySide6 (offscreen)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import slicer

import mrml_fixtures
from fake_module import AddOneLogic, AddOneParameters
from MedDiffusionUtilsLib import dependencies
from MedDiffusionUtilsLib.taskpanel import TaskPanel
from MedDiffusionUtilsLib.utilspanel import UtilsPanel
from packaging.requirements import Requirement

from standins import ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLWidget


@pytest.fixture
def utils_ui(load_ui, repo_root):
    return load_ui(repo_root / "MedDiffusionUtils" / "Resources" / "UI" / "MedDiffusionUtils.ui")


# -- MedDiffusionUtils -----------------------------------------------------------------------
def test_utils_ui_has_every_widget_the_panel_uses(utils_ui, ui_widgets):
    widgets = ui_widgets(utils_ui)
    assert isinstance(utils_ui, qMRMLWidget)
    missing = [name for name in UtilsPanel.WIDGETS if name not in widgets]
    assert missing == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Python packages", "Compute device", "Installed models", "Log"}
    assert widgets["packagesTable"].columnCount() == 4
    assert widgets["modelsTable"].columnCount() == 5


def test_module_code_can_load_ui_through_the_qt_shim(qtbot, repo_root):
    """``slicer.util.loadUI`` (what a module's setup() calls) works on the qt shim."""
    root = slicer.util.loadUI(str(repo_root / "MedDiffusionUtils" / "Resources" / "UI"
                                  / "MedDiffusionUtils.ui"))
    qtbot.addWidget(root)
    assert isinstance(root, qMRMLWidget)
    assert isinstance(root.findChild(ctkCollapsibleButton, "packagesCollapsibleButton"),
                      ctkCollapsibleButton)


def fake_info_command(info: dict) -> list[str]:
    """A child that answers like ``meddiff info --events jsonl``."""
    event = json.dumps({"event": "result", **info})
    return [sys.executable, "-c", f"print({event!r})"]


@pytest.fixture
def fake_site(monkeypatch):
    site = {"torch": "2.13.0", "monai": None, "numpy": "2.0.0", "SimpleITK": "2.4.0"}
    monkeypatch.setattr(dependencies, "installed_version", lambda name: site.get(name))
    return site


def test_utils_panel_lists_packages_and_installs_after_asking(utils_ui, qtbot, fake_site):
    calls = []

    def pip_install(requirements, constraints, log):
        calls.append([str(r) for r in requirements])
        log("pip: installed monai")
        fake_site["monai"] = "1.6.0"

    installer = dependencies.DependencyInstaller(
        [Requirement("torch>=2.1"), Requirement("monai>=1.4")], pip_install=pip_install,
        torch_install=lambda requirement, log: pytest.fail("torch is already recent enough"))
    answers = [False, True]
    questions = []
    panel = UtilsPanel(utils_ui, installer=installer,
                       confirm=lambda text: questions.append(text) or answers.pop(0))

    table = panel.ui.packagesTable
    cells = {table.item(r, 0).text(): [table.item(r, c).text() for c in range(1, 4)]
             for r in range(table.rowCount())}
    assert cells["monai"] == [">=1.4", "not installed", "no"]
    assert cells["torch"] == [">=2.1", "2.13.0", "yes"]
    assert cells["numpy"] == ["ships with Slicer", "2.0.0", "yes"]
    assert panel.ui.installButton.isEnabled()

    panel.ui.installButton.click()  # the user declines
    assert calls == [] and panel.ui.statusLabel.text() == "Nothing was installed"
    panel.ui.installButton.click()  # the user agrees
    assert calls == [["monai>=1.4"]] and len(questions) == 2
    assert "monai>=1.4" in questions[0]
    assert "pip: installed monai" in panel.ui.logText.toPlainText()
    assert not panel.ui.installButton.isEnabled()  # nothing left to install


def test_utils_panel_check_shows_device_and_models(utils_ui, qtbot):
    info = {"device": "cuda", "device_description": "NVIDIA H100 (80 GiB)",
            "models": [{"id": "ldct-corediff", "task": "ldct", "version": "1.0",
                        "description": "CoreDiff low-dose CT", "metrics": {"psnr": 43.125}},
                       {"id": "prodm", "task": "motion", "version": "0.2", "description": "ProDM"}]}
    panel = UtilsPanel(utils_ui, confirm=lambda text: False, info_command=fake_info_command(info))
    panel.ui.checkButton.click()
    assert not panel.ui.checkButton.isEnabled()  # one check at a time
    qtbot.waitUntil(lambda: not panel.checking and panel.ui.checkButton.isEnabled(), timeout=20000)

    assert panel.ui.deviceLabel.text() == "cuda: NVIDIA H100 (80 GiB)"
    models = panel.ui.modelsTable
    assert models.rowCount() == 2
    assert [models.item(0, c).text() for c in range(5)] == [
        "ldct-corediff", "ldct", "1.0", "CoreDiff low-dose CT", "psnr 43.12"]


def test_utils_panel_reports_a_backend_that_cannot_start(utils_ui, qtbot):
    errors = []
    panel = UtilsPanel(utils_ui, confirm=lambda text: False, on_error=errors.append,
                       info_command=[sys.executable, "-c", "import sys; sys.exit('no torch here')"])
    panel.ui.checkButton.click()
    qtbot.waitUntil(lambda: not panel.checking and panel.ui.checkButton.isEnabled(), timeout=20000)
    assert panel.ui.deviceLabel.text().startswith("unknown")
    assert len(errors) == 1 and "no torch here" in errors[0]


# -- the shared task panel -------------------------------------------------------------------
@pytest.fixture
def task_panel(load_ui, scene, repo_root):
    root = load_ui(repo_root / "Testing" / "widgets" / "fake_task.ui")
    parameters = AddOneParameters.for_module(scene, "AddOne")
    done, errors = [], []
    panel = TaskPanel(root, parameters, AddOneLogic(scene), on_done=done.append,
                      on_error=errors.append)
    panel.set_scene(scene)
    panel.done, panel.errors = done, errors
    yield panel
    panel.cleanup()


@pytest.fixture
def ct(scene):
    rng = np.random.default_rng(1)
    return mrml_fixtures.add_volume(scene, rng.normal(0, 50, (6, 7, 8)).astype(np.float32))


def test_widgets_follow_the_parameter_schema(task_panel, ct):
    ui, parameters = task_panel.ui, task_panel.parameters
    assert isinstance(ui.inputSelector, qMRMLNodeComboBox)
    assert isinstance(ui.stepSecondsSlider, ctkSliderWidget)
    assert (ui.stepsSpinBox.minimum(), ui.stepsSpinBox.maximum(), ui.stepsSpinBox.value()) == (1, 100, 5)
    assert ui.stepSecondsSlider.property("maximum") == 5.0
    assert ui.stepSecondsSlider.property("value") == pytest.approx(0.02)
    assert [ui.suffixComboBox.itemText(i) for i in range(ui.suffixComboBox.count())] == [
        "plus one", "incremented"]

    ui.stepsSpinBox.setValue(17)  # widget -> parameter node
    ui.suffixComboBox.setCurrentIndex(1)
    ui.failCheckBox.setChecked(True)
    ui.stepSecondsSlider.setValue(0.25)
    assert (parameters.steps, parameters.suffix, parameters.fail) == (17, "incremented", True)
    assert parameters.stepSeconds == pytest.approx(0.25)
    assert parameters.node.GetParameter("steps") == "17"

    parameters.update(steps=42, fail=False)  # parameter node -> widget
    assert ui.stepsSpinBox.value() == 42 and not ui.failCheckBox.isChecked()


def test_apply_is_enabled_only_with_an_input(task_panel, ct):
    ui, parameters = task_panel.ui, task_panel.parameters
    ui.inputSelector.setCurrentNode(None)
    assert parameters.inputVolume is None
    assert not ui.applyButton.isEnabled()
    assert "inputVolume" in ui.applyButton.toolTip()

    ui.inputSelector.setCurrentNode(ct)  # the user picks the input
    assert parameters.inputVolume is ct
    assert ui.applyButton.isEnabled() and ui.applyButton.text() == "Apply"

    parameters.inputVolume = None  # e.g. the node was deleted
    assert not ui.applyButton.isEnabled()


def test_connecting_the_scene_keeps_a_stored_input_and_fills_an_empty_one(load_ui, scene, repo_root):
    first = mrml_fixtures.add_volume(scene, np.zeros((2, 3, 4)), name="first")
    second = mrml_fixtures.add_volume(scene, np.ones((2, 3, 4)), name="second")
    for stored, expected in ((second, second), (None, first)):
        root = load_ui(repo_root / "Testing" / "widgets" / "fake_task.ui")
        root.findChild(qMRMLNodeComboBox, "inputSelector").setProperty("noneEnabled", False)
        parameters = AddOneParameters.for_module(scene, "AddOne")
        parameters.inputVolume = stored
        panel = TaskPanel(root, parameters, AddOneLogic(scene))
        panel.set_scene(scene)  # the selector fills up and selects its first node
        assert parameters.inputVolume is expected
        assert panel.ui.inputSelector.currentNode() is expected
        assert panel.ui.applyButton.isEnabled()
        panel.cleanup()


def test_apply_runs_and_turns_into_cancel_which_stops_it(task_panel, ct, scene, qtbot):
    ui, parameters = task_panel.ui, task_panel.parameters
    ui.inputSelector.setCurrentNode(ct)
    parameters.update(steps=100, stepSeconds=0.05)
    volumes_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    ui.applyButton.click()
    assert ui.applyButton.text() == "Cancel" and ui.applyButton.isEnabled()
    qtbot.waitUntil(lambda: ui.progressBar.value() > 0, timeout=20000)
    assert "add-one" in ui.statusLabel.text()

    ui.applyButton.click()  # Cancel
    qtbot.waitUntil(lambda: not task_panel.running, timeout=20000)
    assert task_panel.task.state.value == "cancelled"
    assert ui.applyButton.text() == "Apply" and ui.applyButton.isEnabled()
    assert ui.progressBar.value() == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes_before
    assert task_panel.done == [] and task_panel.errors == []
    assert "cancelled" in ui.logText.toPlainText()


def test_apply_success_reports_the_new_node(task_panel, ct, qtbot):
    ui = task_panel.ui
    ui.inputSelector.setCurrentNode(ct)
    ui.stepsSpinBox.setValue(3)
    ui.applyButton.click()
    qtbot.waitUntil(lambda: not task_panel.running, timeout=20000)

    assert ui.progressBar.value() == 100 and ui.statusLabel.text() == "Done"
    ((result,),) = task_panel.done
    assert result.GetName() == f"{ct.GetName()} plus one"
    assert np.array_equal(slicer.util.arrayFromVolume(result), slicer.util.arrayFromVolume(ct) + 1)
    assert ui.applyButton.text() == "Apply"


def test_apply_failure_shows_the_backend_message(task_panel, ct, qtbot):
    ui = task_panel.ui
    ui.inputSelector.setCurrentNode(ct)
    ui.failCheckBox.setChecked(True)
    ui.applyButton.click()
    qtbot.waitUntil(lambda: not task_panel.running, timeout=20000)

    assert task_panel.errors == ["'input.nrrd' is not a CT volume; expected Hounsfield units"]
    assert ui.statusLabel.text().startswith("Failed: 'input.nrrd' is not a CT volume")
    assert ui.logText.toPlainText().count("is not a CT volume") == 1
    assert task_panel.done == []
