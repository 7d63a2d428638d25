"""PET/MR Denoise logic on a real MRML scene against the real backend (``meddiff pet-denoise`` with
the untrained tiny CSRD models of tiny_models): the denoised PET on the input's grid in its units,
the MR-guided run, refusals before anything starts, the fused display, the lesion SUV readout
against a plain numpy computation, and the sample."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import slicer

import mrml_fixtures
import pet_phantom
import tiny_models
from meddiffusion.tasks import registry
from MedDiffusionUtilsLib import layouts, nodes
from PETMRDenoiseLib import suv
from PETMRDenoiseLib.logic import SAMPLE, PETMRDenoiseLogic, model_choices, reads_mr

MODULE_DIR = mrml_fixtures.REPO_ROOT / "PETMRDenoise"
DATA_DIR = mrml_fixtures.REPO_ROOT / "meddiffusion" / "data"

if "petmr" not in {spec.name for spec in registry.all_tasks()}:
    pytest.skip("the petmr task is not registered in meddiffusion.tasks.registry yet", allow_module_level=True)


def suv_units():
    """The coded quantity and units Slicer's DICOM PET reader gives an SUVbw series."""
    quantity, units = slicer.vtkCodedEntry(), slicer.vtkCodedEntry()
    quantity.SetValueSchemeMeaning("126400", "DCM", "Standardized Uptake Value")
    units.SetValueSchemeMeaning("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight")
    return quantity, units


@pytest.fixture
def pet(scene):
    node = mrml_fixtures.add_volume(scene, pet_phantom.brain_pet(), name="Brain", ijk_to_ras=pet_phantom.ijk_to_ras())
    quantity, units = suv_units()
    node.SetVoxelValueQuantity(quantity)
    node.SetVoxelValueUnits(units)
    mrml_fixtures.put_in_study(scene, node, study="PET/MR Study")
    return node


@pytest.fixture
def mr(scene):
    """The MR on a finer grid of its own, in the same place as the PET."""
    grid = np.diag([-1.5, -1.5, 1.5, 1.0])
    grid[:3, 3] = pet_phantom.ijk_to_ras()[:3, 3] + np.array([0.75, 0.75, -0.75])  # voxel corners aligned
    array = np.repeat(np.repeat(np.repeat(pet_phantom.brain_mr(), 2, 0), 2, 1), 2, 2)
    node = mrml_fixtures.add_volume(scene, array, name="MR", ijk_to_ras=grid)
    mrml_fixtures.put_in_study(scene, node, study="PET/MR Study")
    return node


@pytest.fixture
def guided(real_backend):
    """The tiny MR-guided CSRD, registered beside the tiny PET-only one (once per session)."""
    from meddiffusion import catalog

    if not any(entry.id == "tiny-petmr-mr" for entry in catalog.list_models("petmr")):
        catalog.register_user_model(*tiny_models.petmr_mr_model())
    return "tiny-petmr-mr"


def table_rows(table_node) -> list[dict]:
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    return [{column.GetName(): column.GetValue(r) for column in columns} for r in range(table.GetNumberOfRows())]


# -- runs ------------------------------------------------------------------------------------
def test_a_pet_only_run_makes_the_denoised_pet_on_the_input_grid_in_its_units(scene, pet, real_backend,
                                                                              run_folder):
    checksum = mrml_fixtures.volume_checksum(pet)
    before = mrml_fixtures.node_ids(scene)
    logic = PETMRDenoiseLogic(scene)

    created = logic.denoise(pet, model=real_backend["petmr"], steps=1, device="cpu", timeout=120)

    assert list(created) == ["output"]
    denoised = created["output"]
    assert denoised.GetID() not in before and denoised.GetName() == "Brain denoised"
    assert np.array_equal(nodes.ijk_to_ras(denoised), nodes.ijk_to_ras(pet))
    assert nodes.dimensions(denoised) == nodes.dimensions(pet)
    assert denoised.GetVoxelValueUnits().GetCodeValue() == "{SUVbw}g/ml"
    assert denoised.GetVoxelValueQuantity().GetCodeMeaning() == "Standardized Uptake Value"
    values, inputs = slicer.util.arrayFromVolume(denoised), slicer.util.arrayFromVolume(pet)
    assert values.dtype == np.float32 and values.min() >= 0
    assert abs(values.sum(dtype=np.float64) / inputs.sum(dtype=np.float64) - 1) <= 0.01 + 1e-4  # SUV kept
    assert mrml_fixtures.volume_checksum(pet) == checksum
    assert logic.input_of(denoised) is pet and logic.mr_of(denoised) is None
    report = logic.report_of(denoised)
    assert report["mr_guided"] is False and "registration" not in report
    assert denoised.GetAttribute("MedDiffusion.mr") == "none (PET only)"
    assert denoised.GetAttribute("MedDiffusion.model") == real_backend["petmr"]
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(denoised)) == \
        hierarchy.GetItemParent(hierarchy.GetItemByDataNode(pet))
    assert denoised.GetDisplayNode().GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert list(run_folder.iterdir()) == []


def test_an_mr_guided_run_registers_the_mr_and_leaves_it_alone(scene, pet, mr, guided, run_folder):
    checksums = {node.GetID(): mrml_fixtures.volume_checksum(node) for node in (pet, mr)}
    logic = PETMRDenoiseLogic(scene)

    created = logic.denoise(pet, mr=mr, model=guided, steps=1, device="cpu", timeout=180)

    denoised = created["output"]
    assert np.array_equal(nodes.ijk_to_ras(denoised), nodes.ijk_to_ras(pet))
    assert logic.mr_of(denoised) is mr
    assert denoised.GetAttribute("MedDiffusion.mr") == "'MR'"
    report = logic.report_of(denoised)
    assert report["mr_guided"] is True
    assert set(report["registration"]) == {"translation_mm", "shift_mm", "rotation_deg", "registered"}
    assert {node.GetID(): mrml_fixtures.volume_checksum(node) for node in (pet, mr)} == checksums
    assert list(run_folder.iterdir()) == []


def test_the_command_line_names_the_mr_and_the_output(scene, pet, mr, tmp_path):
    logic = PETMRDenoiseLogic(scene)
    parameters = logic.parameters()
    parameters.update(inputVolume=pet, mrVolume=mr, steps=3, device="cpu", model="tiny-petmr-mr")
    run = parameters.snapshot()
    logic.check(run)
    arguments = [str(a) for a in logic.write_inputs(logic.prepare(run), tmp_path)]
    assert arguments == [str(tmp_path / "input.nrrd"), "--mr", str(tmp_path / "mr.nrrd"),
                         "-o", str(tmp_path / "output.nrrd"), "--steps", "3", "--device", "cpu",
                         "--model", "tiny-petmr-mr"]
    written = nodes.read_volume(tmp_path / "mr.nrrd", scene=scene, name="written MR")
    assert np.allclose(nodes.ijk_to_ras(written), nodes.ijk_to_ras(mr), atol=1e-4)  # on its own grid


def test_bad_inputs_are_refused_before_anything_starts(scene, pet, mr, run_folder):
    logic = PETMRDenoiseLogic(scene)
    with pytest.raises(ValueError, match="'Brain' is the PET itself"):
        logic.denoise(pet, mr=pet)
    ct = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((12, 24, 24)), name="CT",
                                  ijk_to_ras=pet_phantom.ijk_to_ras())
    with pytest.raises(ValueError, match="'CT' has negative values .* expected an MR magnitude volume"):
        logic.denoise(pet, mr=ct)
    with pytest.raises(ValueError, match="the output volume is the MR 'MR'"):
        logic.denoise(pet, mr=mr, output_volume=mr)
    with pytest.raises(ValueError, match="the output volume is the input 'Brain'"):
        logic.denoise(pet, output_volume=pet)
    thin = mrml_fixtures.add_volume(scene, pet_phantom.brain_pet((4, 24, 24)), name="4 slices",
                                    ijk_to_ras=pet_phantom.ijk_to_ras())
    with pytest.raises(ValueError, match="'4 slices' has 4 axial slice\\(s\\); at least 8 are needed"):
        logic.denoise(thin)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 4
    assert list(run_folder.iterdir()) == []


def test_a_dicom_pt_series_is_welcome_and_a_ct_series_is_not(scene, pet):
    hierarchy = scene.GetSubjectHierarchyNode()
    attribute = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(pet), attribute, "PT")
    assert PETMRDenoiseLogic(scene).check_input(pet) == "PT"
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(pet), attribute, "CT")
    with pytest.raises(ValueError, match="'Brain' is a CT image; expected a PET or SPECT volume"):
        PETMRDenoiseLogic(scene).check_input(pet)


# -- models --------------------------------------------------------------------------------
def card(model_id, *, use_mr, rank, network="CSRDUNet3D"):
    return {"id": model_id, "version": "1.0", "description": f"{model_id} description",
            "architecture": {"network": network, "kwargs": {"use_mr": use_mr} if use_mr is not None else {},
                             "sampler": {"steps": {"cpu": 4, "cuda": 32}}},
            "default_for": {"cpu": rank}}


def test_model_choices_follow_the_cards_rank_and_per_device_steps():
    entries = [card("nomr", use_mr=False, rank=2), card("guided", use_mr=None, rank=1),
               card("unet", use_mr=True, rank=3, network="BasicUNet")]
    choices = model_choices(entries)
    assert [choice.id for choice in choices] == ["guided", "nomr", "unet"]
    assert (choices[0].default_steps, choices[0].cpu_steps, choices[0].max_steps) == (32, 4, 1000)
    assert choices[0].default_steps_for("cpu") == 4 and choices[0].steps_text == "32 steps (4 on CPU)"
    assert choices[2].single_pass
    assert [reads_mr(entry) for entry in entries] == [False, True, True]  # use_mr defaults to True


def test_a_card_without_steps_gets_the_backends_measured_default():
    from meddiffusion.tasks.petmr.model import DEFAULT_STEPS
    from PETMRDenoiseLib.logic import CPU_STEPS
    from PETMRDenoiseLib.logic import DEFAULT_STEPS as GPU_STEPS

    assert (GPU_STEPS, CPU_STEPS) == (DEFAULT_STEPS["cuda"], DEFAULT_STEPS["cpu"])
    bare = card("bare", use_mr=True, rank=1)
    del bare["architecture"]["sampler"]
    assert model_choices([bare])[0].default_steps_for("cpu") == DEFAULT_STEPS["cpu"]


# -- display --------------------------------------------------------------------------------
def test_input_and_denoised_side_by_side_fused_over_the_mr(scene, pet, mr, slice_views):
    denoised = mrml_fixtures.add_volume(scene, pet_phantom.brain_pet(noise=0.0), name="Brain denoised",
                                        ijk_to_ras=pet_phantom.ijk_to_ras())
    denoised.SetNodeReferenceID("meddiffusionMR", mr.GetID())
    checksums = [mrml_fixtures.volume_checksum(node) for node in (pet, mr)]
    logic = PETMRDenoiseLogic(scene)
    logic.opacity = 0.4

    logic.show_comparison(pet, denoised)

    red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID()) == (mr.GetID(), pet.GetID())
    assert (yellow.GetBackgroundVolumeID(), yellow.GetForegroundVolumeID()) == (mr.GetID(), denoised.GetID())
    assert red.GetForegroundOpacity() == pytest.approx(0.4) and yellow.GetForegroundOpacity() == pytest.approx(0.4)
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == layouts.SIDE_BY_SIDE
    top = np.percentile(slicer.util.arrayFromVolume(denoised), 99.9)
    for volume in (pet, denoised):  # one SUV window for both
        display = volume.GetDisplayNode()
        assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, top), abs=1e-3)
    logic.set_opacity(pet, denoised, 0.8)
    assert red.GetForegroundOpacity() == pytest.approx(0.8) and yellow.GetForegroundOpacity() == pytest.approx(0.8)
    logic.set_fade(pet, denoised, 0.5)  # the denoised PET blended over the input, as in every module
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID()) == (pet.GetID(), denoised.GetID())
    assert red.GetForegroundOpacity() == pytest.approx(0.5)
    logic.set_fade(pet, denoised, 0.0)  # back to the input fused over the MR
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID()) == (mr.GetID(), pet.GetID())
    assert red.GetForegroundOpacity() == pytest.approx(0.8)
    assert [mrml_fixtures.volume_checksum(node) for node in (pet, mr)] == checksums


def test_without_an_mr_the_pets_are_shown_alone(scene, pet, slice_views):
    denoised = mrml_fixtures.add_volume(scene, pet_phantom.brain_pet(noise=0.0), name="Brain denoised",
                                        ijk_to_ras=pet_phantom.ijk_to_ras())
    logic = PETMRDenoiseLogic(scene)
    logic.show_comparison(pet, denoised)
    red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID()) == (pet.GetID(), denoised.GetID())
    assert red.GetForegroundOpacity() == 0.0
    assert (yellow.GetBackgroundVolumeID(), yellow.GetForegroundVolumeID()) == (denoised.GetID(), None)
    logic.set_opacity(pet, denoised, 0.7)  # nothing to fuse: the views stay
    assert (yellow.GetBackgroundVolumeID(), yellow.GetForegroundVolumeID()) == (denoised.GetID(), None)


# -- lesion SUV readout ---------------------------------------------------------------------
def voxel_centres_ras(shape, matrix) -> np.ndarray:
    """RAS of every voxel centre, (k, j, i, 3), the plain way."""
    k, j, i = np.indices(shape)
    ijk1 = np.stack([i, j, k, np.ones(shape)], axis=-1)
    return (ijk1 @ np.asarray(matrix).T)[..., :3]


@pytest.mark.parametrize("radius", [4.0, 10.0])
def test_a_sphere_reads_the_voxels_within_its_radius(radius):
    rng = np.random.default_rng(5)
    values = rng.gamma(4.0, 1.0, (10, 14, 12)).astype(np.float32)
    matrix = mrml_fixtures.oblique_ijk_to_ras(spacing=(2.0, 2.5, 3.0))
    centre = (matrix @ np.array([5.3, 6.8, 4.2, 1.0]))[:3]
    inside = np.linalg.norm(voxel_centres_ras(values.shape, matrix) - centre, axis=-1) <= radius

    reading = suv.measure(values, matrix, suv.Sphere(tuple(centre), radius))

    assert reading.voxels == inside.sum() > 0
    assert reading.suv_max == pytest.approx(values[inside].max())
    assert reading.suv_mean == pytest.approx(values[inside].mean(dtype=np.float64), rel=1e-6)


def test_a_rotated_roi_reads_the_voxels_inside_it():
    rng = np.random.default_rng(6)
    values = rng.gamma(4.0, 1.0, (10, 14, 12)).astype(np.float32)
    matrix = mrml_fixtures.oblique_ijk_to_ras(spacing=(2.0, 2.5, 3.0))
    angle = 0.5
    placement = np.eye(4)
    placement[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    placement[:3, 3] = (matrix @ np.array([6.0, 7.0, 5.0, 1.0]))[:3]
    size = (14.0, 9.0, 11.0)
    local = (voxel_centres_ras(values.shape, matrix) - placement[:3, 3]) @ placement[:3, :3]
    inside = np.all(np.abs(local) <= np.array(size) / 2, axis=-1)

    reading = suv.measure(values, matrix, suv.Box.of(placement, size))

    assert reading.voxels == inside.sum() > 0
    assert reading.suv_max == pytest.approx(values[inside].max())
    assert reading.suv_mean == pytest.approx(values[inside].mean(dtype=np.float64), rel=1e-6)


def test_a_sphere_smaller_than_a_voxel_reads_the_voxel_holding_it_and_outside_reads_nothing():
    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    matrix = pet_phantom.ijk_to_ras()
    point = (matrix @ np.array([2.4, 3.3, 1.2, 1.0]))[:3]
    reading = suv.measure(values, matrix, suv.Sphere(tuple(point), 1.0))
    assert (reading.voxels, reading.suv_max) == (1, values[1, 3, 2])
    far = (matrix @ np.array([30.0, 3.0, 1.0, 1.0]))[:3]
    with pytest.raises(ValueError, match="the sphere r = 10 mm lies outside 'PET'"):
        suv.measure(values, matrix, suv.Sphere(tuple(far), 10.0), name="'PET'")
    assert np.isnan(suv.change_percent(0.0, 1.0)) and suv.change_percent(4.0, 3.0) == -25.0


def test_the_readout_table_has_a_row_per_lesion_before_and_after(scene, pet):
    after_values = np.clip(pet_phantom.brain_pet(noise=0.0) * 0.9, 0, None).astype(np.float32)
    denoised = mrml_fixtures.add_volume(scene, after_values, name="Brain denoised",
                                        ijk_to_ras=pet_phantom.ijk_to_ras())
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(pet))
    hierarchy.CreateItem(study, denoised)
    checksums = [mrml_fixtures.volume_checksum(node) for node in (pet, denoised)]
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    lesion = pet_phantom.lesion_centre_ras()
    points.AddControlPointWorld(*lesion, "hot lesion")
    points.AddControlPointWorld(*(lesion + np.array([0.0, -12.0, 0.0])), "")  # labelled "P-2" by markups
    points.SetNthControlPointLabel(1, "")  # cleared by the user
    roi = mrml_fixtures.add_roi(scene, lesion, (12.0, 12.0, 12.0), name="lesion box")
    logic = PETMRDenoiseLogic(scene)

    table = logic.measure_lesions(pet, denoised, points, radius_mm=6.0)

    assert table.GetName() == "Brain denoised lesion SUV"
    rows = table_rows(table)
    assert [row["lesion"] for row in rows] == ["hot lesion", "P 2"]
    assert list(rows[0]) == list(suv.COLUMNS)
    before_values = slicer.util.arrayFromVolume(pet)
    centres = voxel_centres_ras(before_values.shape, pet_phantom.ijk_to_ras())
    for row, point in zip(rows, (lesion, lesion + np.array([0.0, -12.0, 0.0]))):
        inside = np.linalg.norm(centres - point, axis=-1) <= 6.0
        expected = {"SUVmax before": before_values[inside].max(), "SUVmax after": after_values[inside].max(),
                    "SUVmean before": before_values[inside].mean(), "SUVmean after": after_values[inside].mean()}
        assert row["region"] == "sphere r = 6 mm" and row["voxels"] == inside.sum()
        assert {key: row[key] for key in expected} == pytest.approx(expected, abs=0.005 + 1e-6)
        assert row["SUVmax change %"] == pytest.approx(
            100 * (expected["SUVmax after"] / expected["SUVmax before"] - 1), abs=0.05 + 1e-6)
        assert row["SUVmean change %"] == pytest.approx(
            100 * (expected["SUVmean after"] / expected["SUVmean before"] - 1), abs=0.05 + 1e-6)
    assert rows[0]["SUVmean after"] == pytest.approx(0.9 * pet_phantom.LESION_SUV, abs=0.01)
    # measured again (an ROI now): the same table, its rows replaced
    again = logic.measure_lesions(pet, denoised, roi)
    assert again is table and scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    (row,) = table_rows(table)
    assert row["lesion"] == "lesion box" and row["region"] == "ROI 12 x 12 x 12 mm"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)) == study
    assert [mrml_fixtures.volume_checksum(node) for node in (pet, denoised)] == checksums


def test_the_readout_follows_a_linear_transform(scene, pet):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    shift = np.eye(4)
    shift[:3, 3] = (30.0, -20.0, 10.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    pet.SetAndObserveTransformNodeID(transform.GetID())
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    points.AddControlPointWorld(*(pet_phantom.lesion_centre_ras() + shift[:3, 3]), "L")
    (row,) = table_rows(PETMRDenoiseLogic(scene).measure_lesions(pet, pet, points, radius_mm=6.0))
    values = slicer.util.arrayFromVolume(pet)
    inside = np.linalg.norm(voxel_centres_ras(values.shape, pet_phantom.ijk_to_ras())
                            - pet_phantom.lesion_centre_ras(), axis=-1) <= 6.0
    assert row["SUVmax before"] == pytest.approx(values[inside].max(), abs=0.005)


def test_readout_refusals(scene, pet):
    logic = PETMRDenoiseLogic(scene)
    with pytest.raises(ValueError, match="no lesions"):
        logic.measure_lesions(pet, pet, None)
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    with pytest.raises(ValueError, match="'empty' holds no placed point"):
        logic.measure_lesions(pet, pet, empty)
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far")
    far.AddControlPointWorld(500.0, 500.0, 500.0, "F")
    with pytest.raises(ValueError, match="lies outside 'Brain' \\(lesion 'F'\\)"):
        logic.measure_lesions(pet, pet, far)
    other = mrml_fixtures.add_volume(scene, pet_phantom.brain_pet(), name="other grid")
    with pytest.raises(ValueError, match="'other grid'"):
        logic.measure_lesions(pet, other, far)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0


# -- sample ------------------------------------------------------------------------------------
def test_the_sample_registers_the_pet_with_its_mr():
    if SAMPLE.file(MODULE_DIR) is None:
        pytest.skip("meddiffusion/data/sample_petmr_brain_pet_drf10.nrrd is not generated yet")
    calls = []
    assert SAMPLE.register(MODULE_DIR, register=lambda **kw: calls.append(kw))
    (call,) = calls
    assert call["sampleName"] == "PET/MR brain (1/10 dose)"
    assert call["fileNames"] == ["sample_petmr_brain_pet_drf10.nrrd", "sample_petmr_brain_mr.nrrd"]
    assert call["nodeNames"] == ["PET brain DRF10", "MR brain T1"]
    assert len(call["uris"]) == len(call["checksums"]) == 2 and call["category"] == "MedDiffusion"
    assert call["thumbnailFileName"].endswith("PETMRDenoise.png")


def test_a_study_sample_is_offered_only_with_all_its_files(tmp_path):
    module_dir = tmp_path / "PETMRDenoise"
    module_dir.mkdir()
    data = tmp_path / "meddiffusion" / "data"
    data.mkdir(parents=True)
    (data / SAMPLE.file_name).write_bytes(b"NRRD0004\n")
    calls = []
    assert not SAMPLE.register(module_dir, register=lambda **kw: calls.append(kw))  # the MR is missing
    (data / SAMPLE.companions[0][0]).write_bytes(b"NRRD0004\n")
    assert SAMPLE.register(module_dir, register=lambda **kw: calls.append(kw))
    assert [len(calls[0][key]) for key in ("uris", "fileNames", "nodeNames", "checksums")] == [2, 2, 2, 2]


def test_the_sample_truth_places_the_lesions_in_slicer_coordinates(scene):
    truth_path = DATA_DIR / "sample_petmr_brain_truth.json"
    if not truth_path.is_file():
        pytest.skip("the PET/MR sample is not generated yet")
    truth = json.loads(truth_path.read_text())
    files = truth["sample"]["files"]
    low = nodes.read_volume(DATA_DIR / files["pet"], scene=scene, name="low")
    full = nodes.read_volume(DATA_DIR / files["reference"], scene=scene, name="full")
    assert nodes.dimensions(low)[::-1] == tuple(truth["sample"]["shape_zyx"])
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "truth")
    for index, lesion in enumerate(truth["lesions"]):
        points.AddControlPointWorld(*lesion["centre_ras_mm"], f"L{index + 1}")
        centre_ijk = np.linalg.inv(nodes.ijk_to_ras(low)) @ np.append(lesion["centre_ras_mm"], 1.0)
        assert np.allclose(centre_ijk[:3][::-1], lesion["centre_index_zyx"], atol=1e-3)
    rows = table_rows(PETMRDenoiseLogic(scene).measure_lesions(low, full, points, radius_mm=3.0))
    for row, lesion in zip(rows, truth["lesions"]):
        hot = lesion["suv"] > lesion["background_suv"]
        # at full counts a lesion's core reads on its side of the background (partial volume dims it)
        assert (row["SUVmean after"] > lesion["background_suv"]) == hot


# -- packaging -------------------------------------------------------------------------------
def test_cmake_lists_every_lib_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in sorted((MODULE_DIR / "PETMRDenoiseLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} missing from CMakeLists.txt"
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "PETMRDenoise")).exists()
    assert "add_subdirectory(PETMRDenoise)" in (mrml_fixtures.REPO_ROOT / "CMakeLists.txt").read_text()


def test_logic_imports_without_qt():
    code = ("import sys; sys.path[:0] = sys.argv[1:]; import PETMRDenoiseLib.logic; "
            "loaded = {'qt', 'PySide6', 'PythonQt'} & set(sys.modules); "
            "sys.exit(f'Qt imported: {loaded}' if loaded else 0)")
    completed = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR),
                                str(mrml_fixtures.REPO_ROOT / "MedDiffusionUtils")],
                               capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
