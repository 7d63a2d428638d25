"""The Cardiac 4D Synth .ui and panel in PySide6 (offscreen): its widgets and bindings, ESV and EF
linked through the EDV, Apply enabled without an input (and waiting for the anatomy once asked for),
the model list, and Apply through the real backend with the untrained tiny cascade: the form's
request reaches the backend, the result shows, a refused request shows the backend's message."""

from __future__ import annotations

import numpy as np
import pytest

import mrml_fixtures
from meddiffusion.tasks import registry
from meddiffusion.tasks.cardiac4d import GUIDANCE

if "cardiac4d" not in {spec.name for spec in registry.all_tasks()}:
    pytest.skip("the cardiac4d task is not registered in meddiffusion.tasks.registry yet", allow_module_level=True)

from Cardiac4DSynthLib.logic import DIAGNOSES, Cardiac4DSynthLogic  # noqa: E402
from Cardiac4DSynthLib.panel import Cardiac4DSynthPanel  # noqa: E402
from standins import ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget  # noqa: E402


def card(model_id, network="MotionLDM", rank=None):
    return {"id": model_id, "version": "1.0", "description": f"{model_id} description",
            "architecture": {"network": network, "diffusion": {"num_train_timesteps": 1000},
                             "sampler": {"steps": {"cpu": 20, "cuda": 30}}},
            "metrics": {}, "default_for": {"cpu": rank} if rank else {}}


#: a catalogue stand-in: a cascade's three cards and a second motion card ranked first
MODELS = [card("c4d-vae", "DualDecoderVAE"), card("c4d-anatomy", "AnatomyLDM"), card("c4d-motion", rank=2),
          card("c4d-motion-b", rank=1)]


@pytest.fixture
def make_panel(module_panel, scene):
    def make(models=MODELS, stored: dict | None = None) -> Cardiac4DSynthPanel:
        return module_panel(Cardiac4DSynthPanel, Cardiac4DSynthLogic(scene), models=models, stored=stored)
    return make


def test_ui_has_every_widget_the_panel_uses(make_panel, ui_widgets):
    panel = make_panel()
    widgets = ui_widgets(panel.task_panel.root)
    assert isinstance(panel.task_panel.root, qMRMLWidget)
    assert [name for name in (*Cardiac4DSynthPanel.WIDGETS, "applyButton", "progressBar") if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Request", "Anatomy (optional)", "Generation", "Advanced", "Result", "Log"}
    diagnosis = widgets["diagnosisComboBox"]
    assert [diagnosis.itemText(i) for i in range(diagnosis.count())] == list(DIAGNOSES) == [
        "NOR", "MINF", "DCM", "HCM", "RV"]
    device = widgets["deviceComboBox"]
    assert [device.itemText(i) for i in range(device.count())] == ["auto", "cpu", "cuda"]
    assert isinstance(widgets["anatomySelector"], qMRMLNodeComboBox)
    assert widgets["anatomySelector"].property("noneEnabled") is True
    assert (widgets["edvSpinBox"].value(), widgets["efSpinBox"].value(), widgets["esvSpinBox"].value()) == \
        (140.0, 60.0, 56.0)
    assert (widgets["slicesSpinBox"].value(), widgets["framesSpinBox"].value(), widgets["seedSpinBox"].value()) == \
        (10, 25, 0)
    assert (widgets["slicesSpinBox"].minimum(), widgets["slicesSpinBox"].maximum()) == (6, 16)
    assert (widgets["framesSpinBox"].minimum(), widgets["framesSpinBox"].maximum()) == (10, 50)
    assert widgets["guidanceSpinBox"].value() == pytest.approx(GUIDANCE)
    assert not widgets["keepImplausibleCheckBox"].isChecked() and not widgets["useAnatomyCheckBox"].isChecked()
    assert not widgets["showResultButton"].isEnabled() and widgets["resultLabel"].text() == "—"
    widgets["diagnosisComboBox"].setCurrentIndex(2)
    widgets["framesSpinBox"].setValue(12)
    widgets["seedSpinBox"].setValue(7)
    widgets["guidanceSpinBox"].setValue(5.0)
    widgets["keepImplausibleCheckBox"].setChecked(True)
    assert (panel.parameters.diagnosis, panel.parameters.frames, panel.parameters.seed, panel.parameters.guidance,
            panel.parameters.keepImplausible) == ("DCM", 12, 7, 5.0, True)


def test_esv_and_ef_follow_each_other_through_the_edv(make_panel):
    panel = make_panel()
    ui, parameters = panel.ui, panel.parameters
    assert parameters.systole == "EF" and "gives the EF" in ui.systoleLabel.text()
    ui.edvSpinBox.setValue(200.0)  # the EF was given: it stays, the ESV follows
    assert (ui.efSpinBox.value(), ui.esvSpinBox.value()) == (60.0, 80.0)
    ui.esvSpinBox.setValue(150.0)  # now the ESV is given, the EF follows
    assert ui.efSpinBox.value() == 25.0
    assert (parameters.systole, parameters.esv, parameters.ef) == ("ESV", 150.0, 25.0)
    assert "gives the ESV" in ui.systoleLabel.text()
    ui.edvSpinBox.setValue(250.0)  # the ESV stays
    assert (ui.esvSpinBox.value(), ui.efSpinBox.value()) == (150.0, 40.0)
    ui.efSpinBox.setValue(30.0)
    assert (parameters.systole, ui.esvSpinBox.value()) == ("EF", 175.0)
    ui.esvSpinBox.setValue(260.0)  # above the EDV: a negative EF, for the backend to refuse
    assert ui.efSpinBox.value() == -4.0 and parameters.systole == "ESV"


def test_apply_needs_no_input_but_waits_for_the_anatomy_once_asked_for(make_panel, scene):
    panel = make_panel()
    ui, button = panel.ui, panel.task_panel.ui.applyButton
    assert button.isEnabled()  # generated from the request alone
    assert not ui.anatomySelector.isEnabled() and ui.edvSpinBox.isEnabled() and ui.slicesSpinBox.isEnabled()
    cine_frame = mrml_fixtures.add_volume(scene, np.full((8, 16, 16), 100.0, np.float32), name="ED frame")
    assert panel.parameters.anatomyVolume is None  # a "None" entry: not taken by itself
    ui.useAnatomyCheckBox.setChecked(True)
    assert panel.parameters.useAnatomy and not button.isEnabled()
    assert "anatomyVolume" in button.toolTip()
    assert ui.anatomySelector.isEnabled() and not ui.edvSpinBox.isEnabled() and not ui.slicesSpinBox.isEnabled()
    assert "(the anatomy's)" in ui.systoleLabel.text()
    ui.anatomySelector.setCurrentNode(cine_frame)
    assert panel.parameters.anatomyVolume is cine_frame and button.isEnabled()
    ui.useAnatomyCheckBox.setChecked(False)
    assert button.isEnabled() and ui.edvSpinBox.isEnabled()


def test_the_model_list_holds_the_motion_cards_by_rank(make_panel):
    panel = make_panel()
    combo = panel.ui.modelComboBox
    assert [combo.itemText(i) for i in range(combo.count())] == ["c4d-motion-b", "c4d-motion"]
    assert panel.parameters.model == "c4d-motion-b"
    assert panel.ui.stepsSpinBox.maximum() == 1000
    assert panel.ui.modelInfoLabel.text() == "c4d-motion-b description · 30 steps (20 on CPU)"


def test_without_models_the_info_line_says_so(make_panel):
    panel = make_panel(models=[card("c4d-vae", "DualDecoderVAE")])
    assert panel.ui.modelComboBox.count() == 0
    assert panel.ui.modelInfoLabel.text().startswith("No 4D cardiac synthesis model found")


@pytest.fixture
def tiny_cascade(tmp_path, monkeypatch):
    import tiny_models
    from meddiffusion import catalog

    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(tmp_path / "models"))
    for entry, state in tiny_models.cardiac4d_models():
        catalog.register_user_model(entry, state)
    return "tiny-c4d-motion"


def apply(panel, qtbot):
    panel.ui.applyButton.click()
    qtbot.waitUntil(lambda: bool(panel.done or panel.errors), timeout=120_000)


def test_apply_sends_the_form_to_the_backend_and_shows_the_result(make_panel, scene, qtbot, tiny_cascade):
    panel = make_panel(models=None)  # the catalogue: the shipped cascade ranks first, the tiny one is listed
    ui = panel.ui
    assert tiny_cascade in [ui.modelComboBox.itemText(i) for i in range(ui.modelComboBox.count())]
    panel.parameters.model = tiny_cascade
    ui.diagnosisComboBox.setCurrentIndex(ui.diagnosisComboBox.findText("DCM"))
    ui.edvSpinBox.setValue(230.0)
    ui.esvSpinBox.setValue(170.0)
    ui.slicesSpinBox.setValue(8)
    ui.framesSpinBox.setValue(10)
    ui.seedSpinBox.setValue(3)
    ui.stepsSpinBox.setValue(1)
    ui.maxAttemptsSpinBox.setValue(1)
    ui.keepImplausibleCheckBox.setChecked(True)
    panel.parameters.device = "cpu"

    apply(panel, qtbot)

    assert panel.errors == []
    (created,) = panel.done
    cine = created["output"]
    assert cine.GetName() == "Synthetic cine DCM EDV 230 ESV 170"
    assert cine.GetNumberOfDataNodes() == 10 and created["labels"].GetNumberOfDataNodes() == 10
    report = panel.logic.report_of(cine)
    requested = report["requested"]
    assert (requested["diagnosis"], requested["edv_ml"], requested["esv_ml"], requested["slices"],
            requested["frames"]) == ("DCM", 230.0, 170.0, 8, 10)
    assert report["attempts"] == 1 and report["plausible"] is False  # the untrained heart, kept
    assert panel.result is created
    assert panel.ui.resultLabel.text().startswith("LV: EDV ") and "(asked 230)" in panel.ui.resultLabel.text()
    assert panel.ui.showResultButton.isEnabled()
    assert "implausible labels kept" in panel.ui.logText.toPlainText()
    assert panel.ui.statusLabel.text() == "Done"
    scene.RemoveNode(created["browser"])
    panel.ui.showResultButton.click()  # gone: the result is forgotten
    assert panel.result is None and not panel.ui.showResultButton.isEnabled()


def test_a_refused_request_shows_the_backend_message(make_panel, scene, qtbot, tiny_cascade):
    panel = make_panel(models=None)
    panel.ui.diagnosisComboBox.setCurrentIndex(panel.ui.diagnosisComboBox.findText("DCM"))
    panel.ui.edvSpinBox.setValue(230.0)
    panel.ui.esvSpinBox.setValue(240.0)
    before = mrml_fixtures.node_ids(scene)

    apply(panel, qtbot)

    assert panel.done == []
    (error,) = panel.errors
    assert error == "end-systolic volume must be smaller than end-diastolic: ESV 240 ml ≥ EDV 230 ml"
    assert panel.ui.statusLabel.text() == f"Failed: {error}"
    assert mrml_fixtures.node_ids(scene) == before
    assert panel.task_panel.ui.applyButton.text() == "Apply" and panel.task_panel.ui.applyButton.isEnabled()
