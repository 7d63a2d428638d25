"""SPECT Attenuation logic on a real MRML scene against the real backend (``meddiff spect-ac``
with the untrained tiny PADM models of tiny_models): the AC on the input's grid, the polar map,
bull's-eyes, short axis and estimated attenuation map as asked, the optional CT or μ-map, the
backend's refusal when no left ventricle is found, the nuclear display and the sample."""

from __future__ import annotations

import os

import numpy as np
import pytest
import slicer
import vtk
from vtk.util import numpy_support

import mrml_fixtures
import spect_phantom
import tiny_models
from meddiffusion.tasks import registry
from MedDiffusionUtilsLib import layouts, nodes
from MedDiffusionUtilsLib.runner import TaskFailed
from SPECTAttenuationLib import logic as spect
from SPECTAttenuationLib.logic import SAMPLE, SPECTAttenuationLogic

MODULE_DIR = mrml_fixtures.REPO_ROOT / "SPECTAttenuation"

if "spect" not in {spec.name for spec in registry.all_tasks()}:
    pytest.skip("the spect task is not registered in meddiffusion.tasks.registry yet", allow_module_level=True)
POLAR_COLUMNS = ["segment", "name", "territory", "nac_percent", "ac_percent", "nac_category", "ac_category",
                 "changed"]


@pytest.fixture
def nac(scene):
    node = mrml_fixtures.add_volume(scene, spect_phantom.heart_array(noise=1.0), name="Heart",
                                    ijk_to_ras=spect_phantom.ijk_to_ras())
    mrml_fixtures.put_in_study(scene, node, study="MPI Study")
    return node


@pytest.fixture
def teacher(real_backend):
    """The tiny PADM teacher, registered beside the tiny student (once per session)."""
    from meddiffusion import catalog

    if not any(entry.id == "tiny-spect-teacher" for entry in catalog.list_models("spect")):
        catalog.register_user_model(*tiny_models.spect_teacher_model())
    return "tiny-spect-teacher"


def table_rows(table_node) -> list[dict]:
    """The rows as dicts: numbers for the numeric columns, text for the rest."""
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    return [{column.GetName(): column.GetValue(r) for column in columns} for r in range(table.GetNumberOfRows())]


# -- a run with everything a cardiologist reads -------------------------------------------------
def test_a_run_makes_the_ac_polar_map_bullseyes_short_axis_and_mu(scene, nac, real_backend, run_folder):
    checksum = mrml_fixtures.volume_checksum(nac)
    before = mrml_fixtures.node_ids(scene)
    logic = SPECTAttenuationLogic(scene)

    created = logic.correct(nac, model=real_backend["spect"], steps=1, device="cpu", polar_map=True,
                            short_axis=True, mu_estimate=True, timeout=120)

    assert set(created) == {"output", "table", "png", "short_axis", "mu_estimate"}
    assert all(node.GetID() not in before for node in created.values())
    assert {name: node.GetName() for name, node in created.items()} == {
        "output": "Heart AC", "table": "Heart polar map", "png": "Heart bull's-eyes",
        "short_axis": "Heart AC short axis", "mu_estimate": "Heart estimated attenuation map"}
    ac, mu = created["output"], created["mu_estimate"]
    for volume in (ac, mu):  # on the input's exact grid
        assert np.array_equal(nodes.ijk_to_ras(volume), nodes.ijk_to_ras(nac))
        assert nodes.dimensions(volume) == nodes.dimensions(nac)
    assert mrml_fixtures.volume_checksum(nac) == checksum
    assert slicer.util.arrayFromVolume(ac).min() >= 0  # counts, in the input's units
    # the polar maps: 17 AHA segments of NAC and AC, percent of peak
    rows = table_rows(created["table"])
    assert [row["segment"] for row in rows] == list(range(1, 18))
    assert list(rows[0]) == POLAR_COLUMNS
    assert all(0.0 <= float(row[column]) <= 100.0 for row in rows for column in ("nac_percent", "ac_percent"))
    report = logic.report_of(ac)
    assert report["teacher"] is False
    assert report["changed_segments"] == [int(row["segment"]) for row in rows if row["changed"] == "yes"]
    assert len(report["polar_map"]["NAC"]) == len(report["polar_map"]["AC"]) == 17
    assert ac.GetAttribute("MedDiffusion.attenuation") == "none (CT-free)"
    # the bull's-eyes: an RGB picture of its own; the short axis on the LV's own grid
    picture = created["png"]
    assert picture.IsA("vtkMRMLVectorVolumeNode") and picture.GetImageData().GetNumberOfScalarComponents() == 3
    assert picture.GetImageData().GetDimensions()[2] == 1
    short_axis = created["short_axis"]
    assert short_axis.IsA("vtkMRMLScalarVolumeNode") and slicer.util.arrayFromVolume(short_axis).max() > 0
    # every output is linked to the NAC and sits in its study
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(nac))
    for node in created.values():
        assert logic.input_of(node) is nac
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    # the nuclear display: PET colours, 0 to the 99.9th percentile
    display = ac.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    top = np.percentile(slicer.util.arrayFromVolume(ac), 99.9)
    assert display.GetWindowLevelMin() == pytest.approx(0.0, abs=1e-3)
    assert display.GetWindowLevelMax() == pytest.approx(top, rel=1e-3)
    assert list(run_folder.iterdir()) == []


def test_only_the_outputs_asked_for_are_made(scene, nac, real_backend):
    logic = SPECTAttenuationLogic(scene)
    created = logic.correct(nac, model=real_backend["spect"], steps=1, device="cpu", polar_map=False,
                            short_axis=False, mu_estimate=False, timeout=120)
    assert list(created) == ["output"]
    assert logic.report_of(created["output"]).get("changed_segments") is None
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0


def test_without_a_heart_the_polar_map_fails_clearly_and_adds_nothing(scene, real_backend, run_folder):
    flat = np.random.default_rng(3).uniform(20.0, 30.0, (12, 32, 32)).astype(np.float32)
    volume = mrml_fixtures.add_volume(scene, flat, name="No heart", ijk_to_ras=spect_phantom.ijk_to_ras())
    logic = SPECTAttenuationLogic(scene)
    logic.parameters()  # the module's parameter node may stay
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(TaskFailed, match="no left-ventricular myocardium found"):
        logic.correct(volume, model=real_backend["spect"], steps=1, device="cpu", polar_map=True,
                      short_axis=False, timeout=120)
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []


# -- the optional CT or attenuation map --------------------------------------------------------
def test_a_ct_on_its_own_grid_runs_the_teacher(scene, nac, teacher, run_folder):
    from meddiffusion.tasks.spect.model import is_teacher

    ct_array = mrml_fixtures.chest_array((20, 48, 48), noise_hu=5.0)
    ct_grid = np.diag([-4.0, -4.0, 7.5, 1.0])  # finer in-plane, thicker slices, same position
    ct_grid[:3, 3] = spect_phantom.ijk_to_ras()[:3, 3]
    ct = mrml_fixtures.add_volume(scene, ct_array, name="CT", ijk_to_ras=ct_grid)
    checksum = mrml_fixtures.volume_checksum(ct)
    logic = SPECTAttenuationLogic(scene)

    created = logic.correct(nac, attenuation=ct, steps=1, device="cpu", polar_map=False, short_axis=False,
                            timeout=120)  # no model: the backend picks the teacher for a CT

    ac = created["output"]
    assert np.array_equal(nodes.ijk_to_ras(ac), nodes.ijk_to_ras(nac))
    assert is_teacher(ac.GetAttribute("MedDiffusion.model"))  # the cards' first teacher (shipped or tiny)
    assert ac.GetAttribute("MedDiffusion.attenuation") == "CT 'CT'"
    assert logic.report_of(ac)["teacher"] is True
    assert mrml_fixtures.volume_checksum(ct) == checksum
    assert list(run_folder.iterdir()) == []


def test_ct_and_attenuation_map_are_told_apart_by_their_values(scene):
    ct = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((3, 16, 16)), name="CT")
    mu_values = np.where(mrml_fixtures.chest_array((3, 16, 16)) > -500, 0.15, 0.0).astype(np.float32)
    mu = mrml_fixtures.add_volume(scene, mu_values, name="mu")
    counts = mrml_fixtures.add_volume(scene, spect_phantom.heart_array((6, 16, 16)), name="NAC")
    assert spect.attenuation_kind(ct) == "ct"
    assert spect.attenuation_kind(mu) == "mumap"
    with pytest.raises(ValueError, match="'NAC' is neither a CT nor an attenuation map: .*too large for an "
                                         "attenuation map"):
        spect.attenuation_kind(counts)


def test_the_command_line_names_the_attenuation_input_and_the_outputs_asked_for(scene, nac, tmp_path):
    mu_values = np.full((4, 8, 8), 0.15, np.float32) + np.eye(8, dtype=np.float32)[None] * 0.05
    mu = mrml_fixtures.add_volume(scene, mu_values, name="mu")
    logic = SPECTAttenuationLogic(scene)
    parameters = logic.parameters()
    parameters.update(inputVolume=nac, attenuationVolume=mu, polarMap=False, shortAxis=True, muEstimate=False,
                      steps=3, device="cpu", model="tiny-spect-teacher")
    run = parameters.snapshot()
    logic.check(run)
    arguments = [str(a) for a in logic.write_inputs(logic.prepare(run), tmp_path)]
    assert arguments == [str(tmp_path / "input.nrrd"), "--mumap", str(tmp_path / "mumap.nrrd"),
                         "-o", str(tmp_path / "output.nrrd"), "--short-axis", str(tmp_path / "short_axis.nrrd"),
                         "--steps", "3", "--device", "cpu", "--model", "tiny-spect-teacher"]
    assert (tmp_path / "mumap.nrrd").exists()


def test_bad_inputs_are_refused_before_anything_starts(scene, nac, run_folder):
    logic = SPECTAttenuationLogic(scene)
    with pytest.raises(ValueError, match="'Heart' is the NAC itself"):
        logic.correct(nac, attenuation=nac)
    noise = mrml_fixtures.add_volume(scene, spect_phantom.heart_array((6, 16, 16)), name="other NAC")
    with pytest.raises(ValueError, match="'other NAC' is neither a CT nor an attenuation map"):
        logic.correct(nac, attenuation=noise)
    fine = mrml_fixtures.add_volume(scene, spect_phantom.heart_array((6, 16, 16)), name="0.7 mm pixels")
    with pytest.raises(ValueError, match="0.7 mm pixels"):
        logic.correct(fine)  # the oblique test grid's 0.7 mm pixels are outside the task's limits
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3
    assert list(run_folder.iterdir()) == []


def test_a_dicom_nm_series_is_welcome(scene, nac):
    hierarchy = scene.GetSubjectHierarchyNode()
    attribute = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(nac), attribute, "NM")
    assert SPECTAttenuationLogic(scene).check_input(nac) == "NM"
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(nac), attribute, "CT")
    with pytest.raises(ValueError, match="'Heart' is a CT image; expected a PET or SPECT volume"):
        SPECTAttenuationLogic(scene).check_input(nac)


# -- display -----------------------------------------------------------------------------------
def test_nac_and_ac_side_by_side_in_the_nuclear_colours(scene, nac, slice_views):
    ac = mrml_fixtures.add_volume(scene, spect_phantom.heart_array() * 2.5, name="Heart AC",
                                  ijk_to_ras=spect_phantom.ijk_to_ras())
    input_checksum = mrml_fixtures.volume_checksum(nac)
    SPECTAttenuationLogic(scene).show_comparison(nac, ac)
    red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]
    assert (red.GetBackgroundVolumeID(), yellow.GetBackgroundVolumeID()) == (nac.GetID(), ac.GetID())
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == layouts.SIDE_BY_SIDE
    for volume in (nac, ac):
        display = volume.GetDisplayNode()
        assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
        assert display.GetWindowLevelMax() == pytest.approx(
            np.percentile(slicer.util.arrayFromVolume(volume), 99.9), rel=1e-3)
    assert mrml_fixtures.volume_checksum(nac) == input_checksum


def test_without_a_nuclear_colour_table_the_volume_stays_grey(scene, nac):
    assert spect.nuclear_display(nac, colors=("vtkMRMLColorTableNodeFileNotThere.txt",)) == ""
    assert nac.GetDisplayNode().GetColorNodeID() != "vtkMRMLPETProceduralColorNodePET-Heat"


def test_a_picture_reads_as_drawn_in_an_axial_view(scene, nac, tmp_path, slice_views):
    rgb = np.zeros((6, 10, 3), np.uint8)  # (rows, columns): a red top-left corner
    rgb[0, 0] = (255, 0, 0)
    image = vtk.vtkImageData()
    image.SetDimensions(10, 6, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = rgb[::-1].reshape(-1, 3)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(tmp_path / "picture.png"))
    writer.SetInputData(image)
    writer.Write()

    picture = spect.picture_from_png(tmp_path / "picture.png", nac)
    array = slicer.util.arrayFromVolume(picture)  # (k, j, i, rgb)
    assert array.shape == (1, 6, 10, 3)
    assert tuple(array[0, 5, 0]) == (255, 0, 0)  # top row at the highest j (anterior, up the screen)
    top_left = nodes.ijk_to_ras(picture) @ np.array([0, 5, 0, 1.0])
    top_right = nodes.ijk_to_ras(picture) @ np.array([9, 5, 0, 1.0])
    assert top_left[0] > top_right[0]  # first column on the patient's right: the screen's left
    SPECTAttenuationLogic(scene).show_picture(picture)
    assert slice_views["Red"][1].GetBackgroundVolumeID() == picture.GetID()


# -- sample ------------------------------------------------------------------------------------
def test_the_sample_is_registered_from_the_backend_data_folder():
    if SAMPLE.file(MODULE_DIR) is None:
        pytest.skip("meddiffusion/data/sample_spect_nac.nrrd is not generated yet")
    calls = []
    assert SAMPLE.register(MODULE_DIR, register=lambda **kw: calls.append(kw))
    (call,) = calls
    assert call["sampleName"] == "SPECT NAC (female, breast attenuation)"
    assert call["fileNames"] == "sample_spect_nac.nrrd" and call["nodeNames"] == "SPECT NAC"
    assert os.path.basename(call["thumbnailFileName"]) == "SPECTAttenuation.png"
