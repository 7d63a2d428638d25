"""The SPECT Attenuation .ui and panel in PySide6 (offscreen): its widgets and bindings, the model
following the CT or μ-map, the polar-map line, and Apply through the real backend with the
untrained tiny PADM student."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import mrml_fixtures
import spect_phantom
from meddiffusion.tasks import registry
from SPECTAttenuationLib.logic import SPECT_ATTRIBUTE, SPECTAttenuationLogic
from SPECTAttenuationLib.panel import SPECTAttenuationPanel, polar_text

from standins import ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLWidget

if "spect" not in {spec.name for spec in registry.all_tasks()}:
    pytest.skip("the spect task is not registered in meddiffusion.tasks.registry yet", allow_module_level=True)


def card(model_id, *, teacher, rank, steps=10):
    return SimpleNamespace(id=model_id, version="1.0", description=f"{model_id} description", training_data="",
                           architecture={"network": "PADMNet", "kwargs": {"teacher": teacher},
                                         "diffusion": {"num_timesteps": 500}, "sampler": {"steps": steps}},
                           metrics={}, default_for={"cpu": rank})


#: a catalogue stand-in, in catalogue order: the teacher first, two CT-free models
MODELS = [card("padm-teacher", teacher=True, rank=1, steps=20), card("padm-student-b", teacher=False, rank=3),
          card("padm-student", teacher=False, rank=2)]


@pytest.fixture
def make_panel(module_panel, scene):
    def make(models=MODELS, stored: dict | None = None) -> SPECTAttenuationPanel:
        return module_panel(SPECTAttenuationPanel, SPECTAttenuationLogic(scene), models=models, stored=stored)
    return make


def add_nac(scene, name="Heart"):
    return mrml_fixtures.add_volume(scene, spect_phantom.heart_array(noise=1.0), name=name,
                                    ijk_to_ras=spect_phantom.ijk_to_ras())


def test_ui_has_every_widget_the_panel_uses(make_panel, ui_widgets):
    panel = make_panel()
    widgets = ui_widgets(panel.task_panel.root)
    assert isinstance(panel.task_panel.root, qMRMLWidget)
    assert [name for name in (*SPECTAttenuationPanel.WIDGETS, "applyButton", "progressBar", "statusLabel")
            if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Inputs", "Attenuation correction", "Outputs", "Polar map", "Compare NAC/AC", "Log"}
    assert isinstance(widgets["attenuationSelector"], qMRMLNodeComboBox)
    assert widgets["attenuationSelector"].property("noneEnabled") is True
    assert widgets["inputSelector"].property("noneEnabled") is False
    assert isinstance(widgets["fadeSlider"], ctkSliderWidget)
    device = widgets["deviceComboBox"]
    assert [device.itemText(i) for i in range(device.count())] == ["auto", "cpu", "cuda"]
    # what a run makes by default: polar map and short axis, not the μ estimate
    assert (widgets["polarMapCheckBox"].isChecked(), widgets["shortAxisCheckBox"].isChecked(),
            widgets["muEstimateCheckBox"].isChecked()) == (True, True, False)
    widgets["muEstimateCheckBox"].setChecked(True)
    widgets["polarMapCheckBox"].setChecked(False)
    assert (panel.parameters.muEstimate, panel.parameters.polarMap) == (True, False)
    assert not widgets["showPictureButton"].isEnabled() and not widgets["fadeSlider"].isEnabled()


def test_the_default_ct_free_model_is_shown_first(make_panel):
    panel = make_panel()
    combo = panel.ui.modelComboBox
    assert [combo.itemText(i) for i in range(combo.count())] == ["padm-student", "padm-student-b", "padm-teacher"]
    assert panel.parameters.model == "padm-student"
    assert panel.ui.modelInfoLabel.text().startswith("padm-student description")
    assert (panel.ui.stepsSpinBox.maximum(), panel.ui.stepsSpinBox.value()) == (500, 10)


def test_the_model_follows_the_ct(make_panel, scene):
    panel = make_panel()
    nac = add_nac(scene)
    ct = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((4, 16, 16)), name="CT")
    panel.parameters.inputVolume = nac
    panel.ui.attenuationSelector.setCurrentNode(ct)
    assert panel.parameters.attenuationVolume is ct
    assert panel.parameters.model == "padm-teacher" and panel.parameters.steps == 20
    panel.ui.attenuationSelector.setCurrentNode(None)
    assert panel.parameters.model == "padm-student" and panel.parameters.steps == 10
    panel.ui.modelComboBox.setCurrentIndex(1)  # the user's own CT-free choice is kept
    panel.parameters.steps = 7
    assert panel.parameters.model == "padm-student-b" and panel.parameters.steps == 7


def test_polar_text():
    assert polar_text(None) == "—"
    assert polar_text({"teacher": False}) == "—"
    assert polar_text({"changed_segments": []}) == "No segment changes category after correction"
    assert polar_text({"changed_segments": [4]}) == "1 of 17 segment changes category after correction: 4"
    assert polar_text({"changed_segments": [1, 7, 13]}) == \
        "3 of 17 segments change category after correction: 1, 7, 13"


def test_a_finished_run_shows_its_polar_map_and_picture(make_panel, scene):
    panel = make_panel()
    nac = add_nac(scene)
    ac = mrml_fixtures.add_volume(scene, spect_phantom.heart_array(), name="Heart AC",
                                  ijk_to_ras=spect_phantom.ijk_to_ras())
    picture = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "Heart bull's-eyes")
    for node in (ac, picture):
        node.SetNodeReferenceID("meddiffusionInput", nac.GetID())
    ac.SetAttribute(SPECT_ATTRIBUTE, '{"teacher": false, "changed_segments": [3, 10]}')

    panel._on_done({"output": ac, "png": picture})

    assert panel.result == (nac, ac) and panel.picture is picture
    assert panel.ui.polarSummaryLabel.text() == "2 of 17 segments change category after correction: 3, 10"
    assert panel.ui.showPictureButton.isEnabled() and panel.ui.fadeSlider.isEnabled()
    assert "comparison views not shown" in panel.ui.logText.toPlainText()  # no slice views in this scene
    scene.RemoveNode(picture)
    panel.ui.showPictureButton.click()  # gone: nothing happens
    scene.RemoveNode(ac)
    assert not panel.result_alive() and panel.ui.polarSummaryLabel.text() == "—"


@pytest.fixture
def tiny_student(tmp_path, monkeypatch):
    import tiny_models
    from meddiffusion import catalog

    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(tmp_path / "models"))
    return catalog.register_user_model(*tiny_models.spect_model()).id


def test_apply_runs_the_backend_and_shows_nac_and_ac(make_panel, scene, qtbot, tiny_student):
    from meddiffusion.catalog import default_model

    panel = make_panel(models=None)  # the catalogue: its default, the shipped student where installed
    assert panel.parameters.model == default_model("spect").id
    nac = add_nac(scene)
    panel.parameters.update(inputVolume=nac, model=tiny_student, steps=1, device="cpu", polarMap=False,
                            shortAxis=False)
    before = mrml_fixtures.volume_checksum(nac)

    panel.ui.applyButton.click()
    qtbot.waitUntil(lambda: bool(panel.done or panel.errors), timeout=60_000)

    assert panel.errors == []
    (created,) = panel.done
    assert created["output"].GetName() == "Heart AC"
    assert panel.result == (nac, created["output"])
    assert panel.ui.polarSummaryLabel.text() == "—" and not panel.ui.showPictureButton.isEnabled()
    assert mrml_fixtures.volume_checksum(nac) == before
