"""The PET/MR Denoise .ui and panel in PySide6 (offscreen): its widgets and bindings, the model
following the MR, the fusion opacity, the lesion readout of the last run, and Apply through the
real backend with the untrained tiny PET-only CSRD."""

from __future__ import annotations

import numpy as np
import pytest

import mrml_fixtures
import pet_phantom
from meddiffusion.tasks import registry
from PETMRDenoiseLib.logic import PETMRDenoiseLogic
from PETMRDenoiseLib.panel import PETMRDenoisePanel, lesion_text

from standins import ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLWidget

if "petmr" not in {spec.name for spec in registry.all_tasks()}:
    pytest.skip("the petmr task is not registered in meddiffusion.tasks.registry yet", allow_module_level=True)


def card(model_id, *, use_mr, rank, steps=None):
    return {"id": model_id, "version": "1.0", "description": f"{model_id} description",
            "architecture": {"network": "CSRDUNet3D", "kwargs": {"use_mr": use_mr},
                             "sampler": {"steps": steps or {"cpu": 4, "cuda": 32}}},
            "metrics": {}, "default_for": {"cpu": rank}}


#: a catalogue stand-in: the MR-guided model ranked first, two PET-only ones
MODELS = [card("csrd-nomr-b", use_mr=False, rank=3), card("csrd", use_mr=True, rank=1, steps={"cpu": 6, "cuda": 20}),
          card("csrd-nomr", use_mr=False, rank=2)]


@pytest.fixture
def make_panel(module_panel, scene):
    def make(models=MODELS, stored: dict | None = None) -> PETMRDenoisePanel:
        return module_panel(PETMRDenoisePanel, PETMRDenoiseLogic(scene), models=models, stored=stored)
    return make


def add_pet(scene, name="Brain", array=None):
    return mrml_fixtures.add_volume(scene, pet_phantom.brain_pet() if array is None else array, name=name,
                                    ijk_to_ras=pet_phantom.ijk_to_ras())


def add_mr(scene, name="MR"):
    return mrml_fixtures.add_volume(scene, pet_phantom.brain_mr(), name=name, ijk_to_ras=pet_phantom.ijk_to_ras())


def test_ui_has_every_widget_the_panel_uses(make_panel, ui_widgets):
    panel = make_panel()
    widgets = ui_widgets(panel.task_panel.root)
    assert isinstance(panel.task_panel.root, qMRMLWidget)
    assert [name for name in (*PETMRDenoisePanel.WIDGETS, "applyButton", "progressBar") if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Inputs", "Denoising", "Outputs", "Compare input/denoised", "Lesion SUV", "Log"}
    assert isinstance(widgets["mrSelector"], qMRMLNodeComboBox)
    assert widgets["mrSelector"].property("noneEnabled") is True
    assert widgets["inputSelector"].property("noneEnabled") is False
    assert set(widgets["lesionsSelector"].property("nodeTypes")) == {"vtkMRMLMarkupsFiducialNode",
                                                                      "vtkMRMLMarkupsROINode"}
    assert isinstance(widgets["fadeSlider"], ctkSliderWidget) and isinstance(widgets["opacitySlider"], ctkSliderWidget)
    device = widgets["deviceComboBox"]
    assert [device.itemText(i) for i in range(device.count())] == ["auto", "cpu", "cuda"]
    assert widgets["opacitySlider"].property("value") == pytest.approx(0.5)
    assert widgets["radiusSpinBox"].value() == pytest.approx(10.0)
    widgets["radiusSpinBox"].setValue(7.5)
    widgets["opacitySlider"].setValue(0.3)
    assert (panel.parameters.radiusMm, panel.parameters.opacity) == pytest.approx((7.5, 0.3))
    assert panel.logic.opacity == pytest.approx(0.3)
    for name in ("measureButton", "showComparisonButton", "fadeSlider", "opacitySlider"):
        assert not widgets[name].isEnabled(), name
    assert widgets["lesionSummaryLabel"].text() == "—"


def test_the_model_follows_the_mr(make_panel, scene):
    panel = make_panel()
    combo = panel.ui.modelComboBox
    assert [combo.itemText(i) for i in range(combo.count())] == ["csrd", "csrd-nomr", "csrd-nomr-b"]
    assert panel.parameters.model == "csrd-nomr"  # no MR yet: the first PET-only model
    panel.parameters.inputVolume = add_pet(scene)
    mr = add_mr(scene)
    panel.ui.mrSelector.setCurrentNode(mr)
    assert panel.parameters.mrVolume is mr
    assert panel.parameters.model == "csrd" and panel.parameters.steps == 20  # its GPU/auto count
    panel.ui.mrSelector.setCurrentNode(None)
    assert panel.parameters.model == "csrd-nomr" and panel.parameters.steps == 32
    panel.ui.modelComboBox.setCurrentIndex(2)  # the user's own PET-only choice is kept
    panel.parameters.device = "cpu"
    panel.parameters.steps = 3
    assert panel.parameters.model == "csrd-nomr-b" and panel.parameters.steps == 3


def test_without_a_fitting_model_the_log_says_so(make_panel, scene):
    panel = make_panel(models=[card("csrd-nomr", use_mr=False, rank=1)])
    panel.parameters.mrVolume = add_mr(scene)
    assert panel.parameters.model == "csrd-nomr"
    assert "No installed model reads an MR" in panel.ui.logText.toPlainText()


def test_lesion_text():
    assert lesion_text([]) == "—"
    row = {"lesion": "L1", "SUVmax before": 11.7, "SUVmax after": 10.9, "SUVmax change %": -6.8,
           "SUVmean before": 8.02, "SUVmean after": 8.1, "SUVmean change %": 1.0}
    assert lesion_text([row]) == "L1: SUVmax 11.70 → 10.90 (-7 %), SUVmean 8.02 → 8.10 (+1 %)"
    assert "(n/a)" in lesion_text([{**row, "SUVmax change %": float("nan")}])


def finished_run(panel, scene, *, with_mr=True):
    pet = add_pet(scene)
    denoised = add_pet(scene, "Brain denoised", pet_phantom.brain_pet(noise=0.0))
    denoised.SetNodeReferenceID("meddiffusionInput", pet.GetID())
    mr = add_mr(scene) if with_mr else None
    if mr is not None:
        denoised.SetNodeReferenceID("meddiffusionMR", mr.GetID())
    panel._on_done({"output": denoised})
    return pet, denoised, mr


def test_a_finished_run_reads_the_lesions_before_and_after(make_panel, scene):
    panel = make_panel()
    pet, denoised, _mr = finished_run(panel, scene)
    assert panel.result == (pet, denoised)
    assert panel.ui.opacitySlider.isEnabled() and panel.ui.showComparisonButton.isEnabled()
    assert not panel.ui.measureButton.isEnabled()  # no lesions selected yet
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "lesions")
    points.AddControlPointWorld(*pet_phantom.lesion_centre_ras(), "L1")
    panel.ui.lesionsSelector.setCurrentNode(points)
    panel.ui.radiusSpinBox.setValue(6.0)
    assert panel.parameters.lesions is points and panel.ui.measureButton.isEnabled()

    panel.ui.measureButton.click()

    table = scene.GetFirstNodeByName("Brain denoised lesion SUV")
    assert table is not None and panel.lesion_table is table
    text = panel.ui.lesionSummaryLabel.text()
    assert text.startswith("L1: SUVmax ") and f"→ {pet_phantom.LESION_SUV:.2f}" in text
    assert panel.ui.statusLabel.text() == "1 lesion measured into 'Brain denoised lesion SUV'"
    assert panel.errors == []


def test_a_lesion_outside_the_volume_is_reported(make_panel, scene):
    panel = make_panel()
    finished_run(panel, scene, with_mr=False)
    assert not panel.ui.opacitySlider.isEnabled()  # nothing to fuse
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far")
    far.AddControlPointWorld(900.0, 0.0, 0.0, "F")
    panel.parameters.lesions = far
    panel.ui.measureButton.click()
    (error,) = panel.errors
    assert "lies outside 'Brain' (lesion 'F')" in error
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0
    assert panel.ui.lesionSummaryLabel.text() == "—"


def test_a_removed_result_disables_the_readout(make_panel, scene):
    panel = make_panel()
    _pet, denoised, _mr = finished_run(panel, scene)
    panel.parameters.lesions = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    assert panel.ui.measureButton.isEnabled()
    scene.RemoveNode(denoised)
    panel.ui.measureButton.click()  # gone: nothing happens
    assert panel.result is None and not panel.ui.measureButton.isEnabled()
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0


@pytest.fixture
def tiny_pet_only(tmp_path, monkeypatch):
    import tiny_models
    from meddiffusion import catalog

    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(tmp_path / "models"))
    return catalog.register_user_model(*tiny_models.petmr_model()).id


def test_apply_runs_the_backend_and_shows_input_and_denoised(make_panel, scene, qtbot, tiny_pet_only):
    panel = make_panel(models=None)  # the catalogue
    pet = add_pet(scene)
    panel.parameters.update(inputVolume=pet, model=tiny_pet_only, steps=1, device="cpu")
    before = mrml_fixtures.volume_checksum(pet)

    panel.ui.applyButton.click()
    qtbot.waitUntil(lambda: bool(panel.done or panel.errors), timeout=60_000)

    assert panel.errors == []
    (created,) = panel.done
    denoised = created["output"]
    assert denoised.GetName() == "Brain denoised"
    assert panel.result == (pet, denoised)
    assert np.array_equal(mrml_fixtures._ijk_to_ras(denoised), mrml_fixtures._ijk_to_ras(pet))
    assert mrml_fixtures.volume_checksum(pet) == before
