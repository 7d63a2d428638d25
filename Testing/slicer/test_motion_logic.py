"""Motion Correct logic on a real MRML scene, with fake_motion.py standing in for
``meddiff motion-correct`` (same arguments, files, events and exit codes; in the corrected
region, voxels from 130 to 299 HU become 40 HU instead of running a model).  The last test
runs the real command with a tiny ProDM model."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import slicer

import mrml_fixtures
import tiny_models
from MedDiffusionUtilsLib import layouts, nodes
from MedDiffusionUtilsLib.runner import RunState, TaskFailed
from MotionCorrectLib import logic as motion
from MotionCorrectLib.logic import SAMPLE, MotionCorrectLogic

FAKE_MOTION = Path(__file__).resolve().parent / "fake_motion.py"
MODULE_DIR = mrml_fixtures.REPO_ROOT / "MotionCorrect"
SHAPE = (8, 20, 24)  # (k, j, i)

# lesions of the test CT, as (k, j, i) slices
CORE = np.s_[3:5, 8:10, 8:11]           # 400 HU, kept by the fake correction
HALO = np.s_[3:5, 7:11, 7:12]           # 200 HU around the core, removed by it
SMALL = np.s_[5, 14:16, 16:18]          # 200 HU only: gone after the correction
OUTSIDE = np.s_[1, 3:5, 20:22]          # 500 HU, outside the ROI used below
ROI_BOX = (5, 19, 5, 18, 2, 7)          # i0, i1, j0, j1, k0, k1 (end exclusive) around CORE/SMALL


def ct_array(calcium: bool = True) -> np.ndarray:
    """Air around a soft-tissue body with calcified lesions, in HU."""
    array = mrml_fixtures.chest_array(SHAPE, noise_hu=5.0, seed=3)
    if calcium:
        array[HALO] = 200
        array[CORE] = 400
        array[SMALL] = 200
        array[OUTSIDE] = 500
    return array


def mask_of(*regions) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    for region in regions:
        mask[region] = True
    return mask


def box_mask(box, shape=SHAPE) -> np.ndarray:
    i0, i1, j0, j1, k0, k1 = box
    mask = np.zeros(shape, bool)
    mask[k0:k1, j0:j1, i0:i1] = True
    return mask


def result_of(events) -> dict:
    (result,) = [e for e in events if e["event"] == "result"]
    return result


def segment_masks(segmentation_node, reference) -> dict[str, np.ndarray]:
    segmentation = segmentation_node.GetSegmentation()
    masks = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        name = segmentation.GetSegment(segment_id).GetName()
        masks[name] = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id,
                                                                 reference).astype(bool)
    return masks


def table_columns(table_node) -> dict[str, list]:
    table = table_node.GetTable()
    columns = {}
    for index in range(table.GetNumberOfColumns()):
        column = table.GetColumn(index)
        columns[column.GetName()] = [column.GetValue(row) for row in range(table.GetNumberOfRows())]
    return columns


@pytest.fixture
def ct(scene):
    node = mrml_fixtures.add_volume(scene, ct_array(), name="Chest")
    mrml_fixtures.put_in_study(scene, node)
    return node


@pytest.fixture
def make_logic(scene):
    def make(slice_s: float = 0.0, fault: str = "") -> MotionCorrectLogic:
        return MotionCorrectLogic(scene, backend=[sys.executable, str(FAKE_MOTION)],
                                  environment={"FAKE_MOTION_SLICE_S": str(slice_s),
                                               "FAKE_MOTION_FAULT": fault})
    return make


# -- a run ------------------------------------------------------------------------------------
def test_correct_adds_volume_segmentation_and_tables_and_leaves_the_input_alone(
        scene, ct, make_logic, run_folder):
    logic = make_logic()
    checksum = mrml_fixtures.volume_checksum(ct)
    node_mtime, image_mtime = ct.GetMTime(), ct.GetImageData().GetMTime()
    original = slicer.util.arrayFromVolume(ct).copy()
    before_ids = mrml_fixtures.node_ids(scene)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-motion-prodm", steps=4, device="cpu")
    events = []

    created = logic.run(parameters, on_event=events.append, timeout=60)
    corrected, calcium, lesions, summary = (created[name] for name in ("output", "seg", "table", "summary"))
    result = result_of(events)

    # the corrected volume: new, on the input's exact grid, the fake's correction everywhere
    assert corrected.GetID() not in before_ids and corrected.GetName() == "Chest motion corrected"
    assert np.array_equal(nodes.ijk_to_ras(corrected), mrml_fixtures.oblique_ijk_to_ras())
    assert np.array_equal(nodes.ijk_to_ras(corrected), nodes.ijk_to_ras(ct))
    expected = np.where((original >= 130) & (original < 300), 40, original)
    assert np.array_equal(slicer.util.arrayFromVolume(corrected), expected)
    # the input: same voxels, same geometry, not even touched
    assert mrml_fixtures.volume_checksum(ct) == checksum
    assert (ct.GetMTime(), ct.GetImageData().GetMTime()) == (node_mtime, image_mtime)

    # one segment per lesion and scan, with the voxels the fake scored
    assert calcium.GetName() == "Chest calcium"
    masks = segment_masks(calcium, ct)
    assert sorted(masks) == ["after L1", "after L2", "before L1", "before L2", "before L3"]
    assert calcium.GetSegmentation().GetNumberOfLayers() == 2
    before_masks = sorted((m for n, m in masks.items() if n.startswith("before")), key=np.sum)
    after_masks = sorted((m for n, m in masks.items() if n.startswith("after")), key=np.sum)
    assert [m.sum() for m in before_masks] == [4, 4, 40]
    assert any(np.array_equal(m, mask_of(HALO)) for m in before_masks)
    assert any(np.array_equal(m, mask_of(SMALL)) for m in before_masks)
    assert any(np.array_equal(m, mask_of(OUTSIDE)) for m in before_masks)
    assert sorted(m.sum() for m in after_masks) == [4, 12]
    assert any(np.array_equal(m, mask_of(CORE)) for m in after_masks)
    assert any(np.array_equal(m, mask_of(OUTSIDE)) for m in after_masks)

    # the tables hold the backend's numbers
    assert lesions.GetName() == "Chest Agatston lesions"
    columns = table_columns(lesions)
    assert columns["scan"] == ["before"] * 4 + ["after"] * 3
    assert [str(v) for v in columns["lesion"]] == ["1", "2", "3", "total", "1", "2", "total"]
    assert columns["agatston"][3] == pytest.approx(result["before"]["agatston"])
    assert columns["agatston"][6] == pytest.approx(result["after"]["agatston"])
    assert sum(columns["agatston"][:3]) == pytest.approx(result["before"]["agatston"])
    assert columns["category"][3] == result["before"]["category"]

    assert summary.GetName() == "Chest Agatston before/after"
    totals = table_columns(summary)
    assert totals["measure"] == ["Agatston", "volume (mm³)", "lesions", "risk category"]
    for scan in ("before", "after"):
        agatston, volume, count, category = totals[scan]
        assert float(agatston) == pytest.approx(result[scan]["agatston"], abs=0.05)
        assert float(volume) == pytest.approx(result[scan]["volume_mm3"], abs=0.05)
        assert (int(count), category) == (result[scan]["lesions"], result[scan]["category"])
    assert (result["before"]["lesions"], result["after"]["lesions"]) == (3, 2)
    assert result["before"]["agatston"] > result["after"]["agatston"] > 0

    # every output sits in the input's study and points back at it
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct))
    for node in (corrected, calcium, lesions, summary):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
        assert MotionCorrectLogic.input_of(node) is ct
    assert corrected.GetAttribute("MedDiffusion.model") == "fake-motion-prodm"
    assert corrected.GetAttribute("MedDiffusion.steps") == "4"
    assert corrected.GetAttribute("MedDiffusion.roi") == "automatic"
    assert MotionCorrectLogic.calcium_of(corrected)["before"] == result["before"]
    # the chosen options reached the backend; one progress event per slice
    assert any(e.get("message", "").startswith("fake-motion-prodm, 4 steps on cpu") for e in events)
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress == [(n, 8) for n in range(1, 9)]
    assert list(run_folder.iterdir()) == []


def test_roi_limits_the_correction_to_its_voxel_box(scene, ct, make_logic):
    roi = mrml_fixtures.roi_around(scene, ct, ROI_BOX)
    assert motion.roi_index_box(roi, ct) == ROI_BOX
    original = slicer.util.arrayFromVolume(ct).copy()
    events = []
    parameters = make_logic().parameters()
    parameters.update(inputVolume=ct, roi=roi, model="fake-motion-l1")

    created = make_logic().run(parameters, on_event=events.append, timeout=60)
    corrected, calcium, summary = created["output"], created["seg"], created["summary"]

    inside = box_mask(ROI_BOX)
    blurred = (original >= 130) & (original < 300)
    expected = np.where(blurred & inside, 40, original)
    assert np.array_equal(slicer.util.arrayFromVolume(corrected), expected)
    assert sorted(segment_masks(calcium, ct)) == ["after L1", "before L1", "before L2"]  # OUTSIDE left out
    assert corrected.GetAttribute("MedDiffusion.roi") == "5 19 5 18 2 7"
    assert result_of(events)["corrected_slices"] == [2, 7]
    assert table_columns(summary)["before"][2] == "2"


def test_chosen_output_volume_is_replaced_and_input_is_never_the_output(scene, ct, make_logic):
    logic = make_logic()
    chosen = mrml_fixtures.add_volume(scene, np.zeros((2, 3, 4), np.int16), name="previous result",
                                      ijk_to_ras=np.eye(4))
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    corrected = logic.correct(ct, output_volume=chosen, model="fake-motion-prodm", timeout=60)["output"]
    assert corrected is chosen and chosen.GetName() == "previous result"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes
    assert np.array_equal(nodes.ijk_to_ras(chosen), nodes.ijk_to_ras(ct))
    assert slicer.util.arrayFromVolume(chosen)[CORE].min() == 400
    assert slicer.util.arrayFromVolume(chosen)[SMALL].max() == 40
    with pytest.raises(ValueError, match="input is never overwritten"):
        logic.correct(ct, output_volume=ct)


def test_cancel_leaves_no_node_and_no_files(scene, ct, make_logic, run_folder):
    logic = make_logic(slice_s=0.5)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-motion-prodm")
    before = mrml_fixtures.node_ids(scene)
    checksum = mrml_fixtures.volume_checksum(ct)
    events = []
    task = logic.start(parameters, on_event=events.append)
    workdir = task.workdir
    deadline = time.monotonic() + 30
    while not any(e["event"] == "progress" for e in events) and time.monotonic() < deadline:
        task.poll()
        time.sleep(0.01)
    assert any(e["event"] == "progress" for e in events), "the fake backend never reported progress"

    task.cancel()
    assert task.wait(timeout=30) == RunState.CANCELLED
    assert mrml_fixtures.node_ids(scene) == before
    assert not workdir.exists() and list(run_folder.iterdir()) == []
    assert mrml_fixtures.volume_checksum(ct) == checksum
    assert events[-1]["event"] == "cancelled"


def test_backend_failure_leaves_no_node(scene, ct, make_logic, run_folder):
    logic = make_logic()
    logic.parameters()
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(TaskFailed, match="unknown model 'no-such-model'"):
        logic.correct(ct, model="no-such-model", timeout=60)
    assert mrml_fixtures.node_ids(scene) == before and list(run_folder.iterdir()) == []


def test_a_result_off_the_input_grid_is_rolled_back(scene, ct, make_logic, run_folder):
    """The volume is imported before the segmentation is found on another grid: no node stays."""
    logic = make_logic(fault="shifted-seg")
    logic.parameters()
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(TaskFailed, match="calcium segmentation is not on the grid of 'Chest'"):
        logic.correct(ct, model="fake-motion-prodm", timeout=60)
    assert mrml_fixtures.node_ids(scene) == before and list(run_folder.iterdir()) == []


def test_a_result_without_scores_fails_cleanly(scene, ct, make_logic):
    logic = make_logic(fault="no-after")
    logic.parameters()
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(TaskFailed, match="the backend's result has no 'after' scores"):
        logic.correct(ct, model="fake-motion-prodm", timeout=60)
    assert mrml_fixtures.node_ids(scene) == before


def test_an_input_removed_during_the_run_fails_cleanly(scene, ct, make_logic):
    logic = make_logic(slice_s=0.1)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-motion-prodm")
    task = logic.start(parameters)
    scene.RemoveNode(ct)
    assert task.wait(timeout=30) == RunState.FAILED
    assert task.error == "importing the results failed: 'Chest' was removed from the scene during the run"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0


# -- the ROI ----------------------------------------------------------------------------------
def independent_box(corners_ras: np.ndarray, ijk_to_ras: np.ndarray, dims) -> tuple:
    """Brute force: the voxels whose cells (centre ± 0.5) overlap the corners' index bounds."""
    ijk = (np.linalg.inv(ijk_to_ras) @ np.column_stack([corners_ras, np.ones(8)]).T)[:3]
    box = []
    for axis, size in enumerate(dims):
        low, high = ijk[axis].min(), ijk[axis].max()
        inside = [n for n in range(size) if n + 0.5 > low and n - 0.5 < high]
        box += [min(inside), max(inside) + 1] if inside else [0, 0]
    return tuple(box)


def test_roi_becomes_the_voxel_box_of_an_oblique_grid(scene, ct):
    matrix = mrml_fixtures.oblique_ijk_to_ras()
    angle = 0.4  # an ROI turned about its own S axis, on a grid rotated about all three
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = matrix @ np.array([10.3, 9.1, 3.6, 1.0])
    size = np.array([7.5, 5.0, 6.2])
    roi = mrml_fixtures.add_roi(scene, centre[:3], size, rotation=rotation)
    corners = np.array([centre[:3] + rotation @ (np.array(signs) * size / 2)
                        for signs in itertools.product((-1, 1), repeat=3)])

    box = motion.roi_index_box(roi, ct)

    assert box == independent_box(corners, matrix, (24, 20, 8))
    assert all(box[2 * a] < box[2 * a + 1] for a in range(3)) and box != (0, 24, 0, 20, 0, 8)
    # every voxel whose centre lies inside the (rotated) ROI is in the box
    k, j, i = np.indices(SHAPE)
    centres = matrix @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    local = rotation.T @ (centres[:3] - centre[:3, None])
    inside = np.all(np.abs(local) <= size[:, None] / 2, axis=0).reshape(SHAPE)
    assert inside.sum() > 10 and not np.any(inside & ~box_mask(box))


def test_roi_is_clipped_and_follows_its_transform(scene, ct):
    matrix = nodes.ijk_to_ras(ct)
    corner = matrix @ np.array([-1.0, -1.0, -1.0, 1.0])
    roi = mrml_fixtures.add_roi(scene, corner[:3], (12.0, 12.0, 12.0))
    low = motion.roi_index_box(roi, ct)
    assert low[0::2] == (0, 0, 0)
    assert all(0 < stop < size for stop, size in zip(low[1::2], (24, 20, 8)))

    # a linear transform on the ROI moves it: far away, then back onto the volume
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = 500.0
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    roi.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="ROI 'heart ROI' does not overlap 'Chest'"):
        motion.roi_index_box(roi, ct)
    ct.SetAndObserveTransformNodeID(transform.GetID())  # the volume moved along: the same box
    assert motion.roi_index_box(roi, ct) == low


def test_roi_outside_or_empty_is_refused_before_anything_runs(scene, ct, make_logic, run_folder):
    logic = make_logic()
    logic.parameters()
    far = mrml_fixtures.add_roi(scene, (400.0, 400.0, 400.0), (20.0, 20.0, 20.0), name="far away")
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(ValueError, match="ROI 'far away' does not overlap 'Chest'.*move the ROI"):
        logic.correct(ct, roi=far)
    with pytest.raises(ValueError, match="ROI 'unplaced' is empty"):
        logic.correct(ct, roi=empty)
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []


# -- bad input --------------------------------------------------------------------------------
def test_input_that_is_not_ct_is_refused(scene, make_logic, run_folder):
    logic = make_logic()
    logic.parameters()
    mr = mrml_fixtures.add_volume(scene, ct_array() + 1100, name="MR-like")
    labels = mrml_fixtures.add_volume(scene, np.zeros(SHAPE, np.int16), name="labels",
                                      node_class="vtkMRMLLabelMapVolumeNode")
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(ValueError, match="'MR-like' does not look like CT in Hounsfield units"):
        logic.correct(mr)
    with pytest.raises(ValueError, match="'labels' is a vtkMRMLLabelMapVolumeNode, not an image"):
        logic.check_input(labels)
    logic.parameters().inputVolume = None
    with pytest.raises(ValueError, match="no input volume: select the non-gated chest CT"):
        logic.check(logic.parameters())
    assert mrml_fixtures.node_ids(scene) == before and list(run_folder.iterdir()) == []

    pet = mrml_fixtures.add_volume(scene, ct_array(), name="PET")
    mrml_fixtures.put_in_study(scene, pet)
    hierarchy = scene.GetSubjectHierarchyNode()
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(pet), "DICOM.Modality", "PT")
    with pytest.raises(ValueError, match="'PET' is a DICOM PT series; Motion Correct expects a CT"):
        logic.check_input(pet)


# -- views ------------------------------------------------------------------------------------
def test_comparison_is_centred_on_the_largest_lesion(scene, ct, slice_views, make_logic):
    logic = make_logic()
    corrected = logic.correct(ct, model="fake-motion-prodm", timeout=60)["output"]
    checksum = mrml_fixtures.volume_checksum(ct)
    red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]

    logic.show_comparison(ct, corrected)

    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == layouts.SIDE_BY_SIDE
    assert (red.GetBackgroundVolumeID(), yellow.GetBackgroundVolumeID()) == (ct.GetID(), corrected.GetID())
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    assert (red.GetForegroundVolumeID(), red.GetForegroundOpacity()) == (corrected.GetID(), 0.0)
    # the largest lesion is the halo + core one: its centre, from the input's own IJKToRAS
    centre_ijk = np.argwhere(mask_of(HALO)).mean(axis=0)[::-1]
    expected = (nodes.ijk_to_ras(ct) @ np.append(centre_ijk, 1.0))[:3]
    for name, (slice_node, _) in slice_views.items():
        position = slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())[:3, 3]
        np.testing.assert_allclose(position, expected, atol=1e-3, err_msg=name)
    logic.set_fade(ct, corrected, 0.7)
    assert red.GetForegroundOpacity() == 0.7
    assert mrml_fixtures.volume_checksum(ct) == checksum


def test_without_calcium_the_views_stay_where_they_are(scene, slice_views, make_logic):
    clean = mrml_fixtures.add_volume(scene, ct_array(calcium=False), name="No calcium")
    logic = make_logic()
    created = logic.correct(clean, model="fake-motion-prodm", timeout=60)
    corrected, calcium, summary = created["output"], created["seg"], created["summary"]
    assert calcium.GetSegmentation().GetNumberOfSegments() == 0
    assert table_columns(summary)["before"] == ["0.0", "0.0", "0", "zero"]
    assert MotionCorrectLogic.calcium_of(corrected)["largest_lesion_lps"] is None
    red = slice_views["Red"][0]
    position = slicer.util.arrayFromVTKMatrix(red.GetSliceToRAS()).copy()
    logic.show_comparison(clean, corrected)
    assert logic.centre_on_largest_lesion(corrected) is None
    assert np.array_equal(slicer.util.arrayFromVTKMatrix(red.GetSliceToRAS()), position)


def test_lps_to_ras_negates_x_and_y():
    assert motion.lps_to_ras([1.5, -2.0, 3.25]) == (-1.5, 2.0, 3.25)


# -- model catalogue and parameters -----------------------------------------------------------
def test_model_choices_show_description_and_steps():
    entries = [
        SimpleNamespace(id="motion-prodm-small", version="1.0",
                        description="ProDM with calcium-aware loss\n(trained on phantoms)",
                        training_data="thorax phantom", metrics={"ms_per_slice_cpu": 850},
                        architecture={"network": "ProDMUNet", "objective": "bridge",
                                      "diffusion": {"num_timesteps": 1000}, "sampler": {"steps": 10}}),
        {"id": "motion-unet-l1-small", "version": "1.0", "description": "plain L1 regression",
         "architecture": {"network": "ProDMUNet", "objective": "regression",
                          "diffusion": {"num_timesteps": 1000}, "sampler": {"steps": 10}}},
        SimpleNamespace(id="bare", version="2", description="", training_data="", metrics={},
                        architecture={"network": "ProDMUNet", "diffusion": {"num_timesteps": 50},
                                      "sampler": {"steps": 80}}),
    ]
    prodm, l1, bare = motion.model_choices(entries)
    assert prodm.summary == "ProDM with calcium-aware loss · about 850 ms per slice on CPU · 10 steps"
    assert prodm.tooltip == ("motion-prodm-small (version 1.0)\nabout 850 ms per slice on CPU\n"
                             "ProDM with calcium-aware loss\n"
                             "(trained on phantoms)\nTraining data: thorax phantom")
    assert (prodm.max_steps, prodm.default_steps, prodm.single_pass) == (1000, 10, False)
    assert l1.single_pass and l1.summary == "plain L1 regression · one pass (steps unused)"
    assert (bare.max_steps, bare.default_steps, bare.summary) == (50, 50, "50 steps")


def test_parameter_defaults_and_limits(scene):
    parameters = MotionCorrectLogic(scene).parameters()
    assert (parameters.steps, parameters.device, parameters.model) == (10, "auto", "")
    assert parameters.roi is None and parameters.outputVolume is None
    assert parameters.missing() == ["inputVolume"]
    parameters.steps = 1000
    with pytest.raises(ValueError, match="'steps' must be between 1 and 1000"):
        parameters.steps = 1001
    with pytest.raises(ValueError, match="'device' must be one of auto, cpu, cuda"):
        parameters.device = "tpu"


# -- sample data and packaging ----------------------------------------------------------------
def test_sample_data_is_registered_with_a_local_file(tmp_path):
    module_dir = tmp_path / "MotionCorrect"
    module_dir.mkdir()
    calls = []
    assert SAMPLE.register(module_dir, register=lambda **kw: calls.append(kw)) is False
    assert calls == []

    sample = tmp_path / "meddiffusion" / "data" / "sample_nongated_chest_ct.nrrd"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(b"NRRD0004\nnot really a volume\n")
    assert SAMPLE.register(module_dir, register=lambda **kw: calls.append(kw))
    (call,) = calls
    assert call["uris"] == "file://" + str(sample.resolve())
    assert call["fileNames"] == "sample_nongated_chest_ct.nrrd" and call["category"] == "MedDiffusion"
    assert call["sampleName"] == "Non-gated chest CT (MotionCorrect sample)"
    assert call["checksums"] == "SHA256:" + hashlib.sha256(sample.read_bytes()).hexdigest()


def test_cmake_lists_every_lib_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in sorted((MODULE_DIR / "MotionCorrectLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} missing from CMakeLists.txt"
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "MotionCorrect")).exists()
    assert "add_subdirectory(MotionCorrect)" in (mrml_fixtures.REPO_ROOT / "CMakeLists.txt").read_text()
    assert "slicer_add_python_unittest" in (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()


def test_logic_imports_without_qt():
    code = ("import sys; sys.path[:0] = sys.argv[1:]; import MotionCorrectLib.logic; "
            "loaded = {'qt', 'PySide6', 'PythonQt'} & set(sys.modules); "
            "sys.exit(f'Qt imported: {loaded}' if loaded else 0)")
    completed = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR),
                                str(mrml_fixtures.REPO_ROOT / "MedDiffusionUtils")],
                               capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]


# -- the real backend -------------------------------------------------------------------------
@pytest.fixture
def tiny_motion_model(tmp_path, monkeypatch):
    """An untrained tiny ProDM whose output brightens the HU window by a known amount (see
    tiny_models.motion_model), registered in a temporary user model folder (seen by the child)."""
    from meddiffusion import catalog

    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(tmp_path / "models"))
    entry, weights = tiny_models.motion_model(output_bias=-0.05)
    catalog.register_user_model(entry, weights)
    return entry.id


def test_real_backend_on_the_bundled_sample(scene, slice_views, tiny_motion_model):
    """``meddiff motion-correct`` itself on the non-gated sample, in an ROI around its calcium."""
    from meddiffusion.io import read_volume

    sample_path = mrml_fixtures.REPO_ROOT / "meddiffusion" / "data" / SAMPLE.file_name
    if not sample_path.is_file():
        pytest.fail(f"the MotionCorrect sample {sample_path.name} is missing")
    sample = read_volume(sample_path)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(sample.direction).reshape(3, 3) @ np.diag(sample.spacing)
    matrix[:3, 3] = sample.origin
    ct = mrml_fixtures.add_volume(scene, sample.array.astype(np.int16), ijk_to_ras=lps_to_ras @ matrix,
                                  name="Sample")
    box = (100, 180, 145, 215, 27, 33)  # around the calcium; unequal ranges catch a swapped axis
    roi = mrml_fixtures.roi_around(scene, ct, box)
    original = slicer.util.arrayFromVolume(ct).copy()
    events = []
    logic = MotionCorrectLogic(scene)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, roi=roi, model=tiny_motion_model, steps=1, device="cpu")

    created = logic.run(parameters, on_event=events.append, timeout=300)
    corrected, calcium, lesions, summary = (created[name] for name in ("output", "seg", "table", "summary"))

    result = result_of(events)
    assert result["boxes"] == [list(box)] and result["corrected_slices"] == [27, 33]
    assert np.array_equal(nodes.ijk_to_ras(corrected), nodes.ijk_to_ras(ct))
    changed = slicer.util.arrayFromVolume(corrected) != original
    inside = box_mask(box, sample.shape)
    assert changed[inside].any() and not changed[~inside].any()  # the untrained model changes the box only
    assert np.array_equal(slicer.util.arrayFromVolume(ct), original)
    # segments as reported, tables with the backend's numbers
    masks = segment_masks(calcium, ct)
    assert result["before"]["lesions"] >= 1
    assert len([n for n in masks if n.startswith("before L")]) == result["before"]["lesions"]
    assert len([n for n in masks if n.startswith("after L")]) == result["after"]["lesions"]
    totals = table_columns(summary)
    for scan in ("before", "after"):
        assert float(totals[scan][0]) == pytest.approx(result[scan]["agatston"], abs=0.05)
        assert totals[scan][3] == result[scan]["category"]
    assert lesions.GetTable().GetNumberOfRows() == result["before"]["lesions"] + result["after"]["lesions"] + 2
    assert corrected.GetAttribute("MedDiffusion.model") == tiny_motion_model
    assert json.loads(corrected.GetAttribute("MedDiffusion.calcium"))["after"] == result["after"]
    # the views centre on the largest lesion: the backend's LPS point is where its segment is
    logic.show_comparison(ct, corrected)
    largest = max((m for n, m in masks.items() if n.startswith("before L")), key=np.sum)
    centre_ijk = np.argwhere(largest).mean(axis=0)[::-1]
    expected = (nodes.ijk_to_ras(ct) @ np.append(centre_ijk, 1.0))[:3]
    position = slicer.util.arrayFromVTKMatrix(slice_views["Red"][0].GetSliceToRAS())[:3, 3]
    np.testing.assert_allclose(position, expected, atol=1e-3)


def test_a_single_slice_is_refused_with_the_backend_limits(scene, make_logic, run_folder):
    logic = make_logic()
    logic.parameters()
    one = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((1, 32, 32), lesion_hu=400.0), name="one slice")
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(ValueError, match=r"'one slice' has 1 axial slice\(s\); at least 3 are needed"):
        logic.correct(one)
    assert mrml_fixtures.node_ids(scene) == before and list(run_folder.iterdir()) == []
