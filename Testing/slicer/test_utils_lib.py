"""MedDiffusionUtilsLib on a real MRML scene: node<->file adapters, output helpers, the
background runner (against fake_task.py), parameters, dependencies and compare layouts."""

from __future__ import annotations

import csv
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

import mrml_fixtures
from fake_module import AddOneLogic, AddOneParameters
from MedDiffusionUtilsLib import dependencies, environment, inputs, layouts, models, nodes, outputs, processes, runner
from MedDiffusionUtilsLib.parameters import Bool, Choice, Float, Int, Node, ParameterSet, Text
from MedDiffusionUtilsLib.runner import RunState, TaskProcess

from packaging.requirements import Requirement


def volume_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]


def lps_matrix_from_file(path) -> np.ndarray:
    """IJKToRAS computed from the file's ITK (LPS) header, independently of MRML."""
    image = sitk.ReadImage(str(path))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return np.diag([-1, -1, 1, 1]) @ matrix  # LPS -> RAS


# -- packaging rules -------------------------------------------------------------------------
def test_cmake_lists_every_lib_file_and_resource():
    folder = mrml_fixtures.REPO_ROOT / "MedDiffusionUtils"
    cmake = (folder / "CMakeLists.txt").read_text()
    for path in sorted((folder / "MedDiffusionUtilsLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} missing from CMakeLists.txt"
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui",
                     "Resources/requirements.txt"):
        assert resource in cmake
        assert (folder / resource.replace("${MODULE_NAME}", "MedDiffusionUtils")).exists()


def test_logic_modules_import_without_qt():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import MedDiffusionUtilsLib.tasklogic, MedDiffusionUtilsLib.compare, MedDiffusionUtilsLib.comparepanel, "
            "MedDiffusionUtilsLib.taskpanel, MedDiffusionUtilsLib.layouts, "
            "MedDiffusionUtilsLib.dependencies, MedDiffusionUtilsLib.environment, "
            "MedDiffusionUtilsLib.inputs, MedDiffusionUtilsLib.models, MedDiffusionUtilsLib.utilspanel; "
            "loaded = {'qt', 'PySide6', 'PythonQt'} & set(sys.modules); "
            "sys.exit(f'Qt imported: {loaded}' if loaded else 0)")
    import subprocess
    completed = subprocess.run([sys.executable, "-c", code,
                                str(mrml_fixtures.REPO_ROOT / "MedDiffusionUtils")],
                               capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]


# -- node <-> file ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_volume_round_trip_keeps_voxels_and_exact_geometry(scene, ct_volume, tmp_path, suffix):
    before_mtime = ct_volume.GetMTime()
    path = nodes.write_volume(ct_volume, tmp_path / f"ct{suffix}")

    assert ct_volume.GetMTime() == before_mtime  # writing does not touch the input
    assert ct_volume.GetStorageNode() is None
    assert not list(tmp_path.glob(".*"))  # no temporary left behind
    # the file itself holds the geometry (NIfTI stores float32, hence the tolerance)
    np.testing.assert_allclose(lps_matrix_from_file(path), nodes.ijk_to_ras(ct_volume), atol=1e-5)

    copy = nodes.read_volume(path, reference=ct_volume, name="copy")
    assert copy is not ct_volume and copy.GetScene() is scene
    assert np.array_equal(slicer.util.arrayFromVolume(copy), slicer.util.arrayFromVolume(ct_volume))
    assert np.array_equal(nodes.ijk_to_ras(copy), nodes.ijk_to_ras(ct_volume))  # bit-exact


def test_read_volume_refuses_other_grid_and_adds_nothing(scene, ct_volume, add_volume, tmp_path):
    shifted = mrml_fixtures.oblique_ijk_to_ras(origin=(-12.3, 45.6, 9.0))
    other = add_volume(np.zeros((6, 7, 8), np.int16), ijk_to_ras=shifted, name="other")
    path = nodes.write_volume(other, tmp_path / "other.nrrd")
    before = mrml_fixtures.node_ids(scene)

    with pytest.raises(nodes.GeometryMismatch, match="differs from 'CT'"):
        nodes.read_volume(path, reference=ct_volume)
    smaller = add_volume(np.zeros((6, 7, 5), np.int16), name="smaller")
    with pytest.raises(nodes.GeometryMismatch, match=r"\(5, 7, 6\) voxels"):
        nodes.read_volume(nodes.write_volume(smaller, tmp_path / "s.nrrd"), reference=ct_volume)
    assert mrml_fixtures.node_ids(scene) - before == {smaller.GetID(), smaller.GetDisplayNodeID()}


def test_writers_name_the_expected_format(ct_volume, tmp_path):
    with pytest.raises(ValueError, match="expected one of .nrrd"):
        nodes.write_volume(ct_volume, tmp_path / "ct.png")
    with pytest.raises(ValueError, match="does not exist"):
        nodes.read_volume(tmp_path / "missing.nrrd")


# -- segmentations ---------------------------------------------------------------------------
def make_labels(shape=(6, 7, 8)) -> np.ndarray:
    labels = np.zeros(shape, np.int16)
    labels[1:3, 2:5, 1:4] = 2
    labels[4, 4:, 5:] = 7
    return labels


def test_segmentation_from_labelmap_names_colours_terminology(scene, ct_volume):
    artery = outputs.terminology_entry(outputs.Code("SCT", "51114001", "Artery"),
                                       outputs.Code("SCT", "85756007", "Tissue"))
    specs = [outputs.SegmentSpec(2, "LAD calcium", (1.0, 0.0, 0.0), artery),
             outputs.SegmentSpec(7, "RCA calcium", (0.0, 0.5, 1.0))]
    labels = make_labels()
    segmentation_node = outputs.segmentation_from_labelmap(labels, ct_volume, "calcium", specs)

    assert segmentation_node.GetName() == "CT calcium"
    segmentation = segmentation_node.GetSegmentation()
    segments = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
                for i in range(segmentation.GetNumberOfSegments())}
    assert set(segments) == {"LAD calcium", "RCA calcium"}
    assert segments["RCA calcium"].GetColor() == pytest.approx((0.0, 0.5, 1.0))
    assert segments["LAD calcium"].GetTerminology().split("~")[2] == "SCT^51114001^Artery"
    for name, value in (("LAD calcium", 2), ("RCA calcium", 7)):
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, ct_volume)
        assert np.array_equal(mask > 0, labels == value)
    # the temporary label map used for the import is gone
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0


def test_segmentation_refuses_unlisted_labels(ct_volume):
    with pytest.raises(ValueError, match=r"values \[7\] that have no segment spec"):
        outputs.segmentation_from_labelmap(make_labels(), ct_volume, "seg",
                                           [outputs.SegmentSpec(2, "LAD")])


def test_segmentation_files_seg_nrrd_and_nifti_labelmap(scene, ct_volume, tmp_path):
    labels = make_labels()
    specs = [outputs.SegmentSpec(2, "LAD"), outputs.SegmentSpec(7, "RCA")]
    segmentation_node = outputs.segmentation_from_labelmap(labels, ct_volume, "seg", specs)

    with pytest.raises(ValueError, match="use write_labelmap"):
        nodes.write_segmentation(segmentation_node, tmp_path / "seg.nii.gz")

    nifti = nodes.write_labelmap(segmentation_node, tmp_path / "labels.nii.gz", ct_volume)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(nifti))), labels)
    np.testing.assert_allclose(lps_matrix_from_file(nifti), nodes.ijk_to_ras(ct_volume), atol=1e-5)
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0

    seg_nrrd = nodes.write_segmentation(segmentation_node, tmp_path / "seg.seg.nrrd")
    loaded = nodes.read_segmentation(seg_nrrd, reference=ct_volume, name="loaded")
    names = sorted(loaded.GetSegmentation().GetNthSegment(i).GetName() for i in range(2))
    assert names == ["LAD", "RCA"]

    from_file = outputs.segmentation_from_file(nifti, ct_volume, "from file", specs)
    rca = from_file.GetSegmentation().GetSegmentIdBySegmentName("RCA")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(from_file, rca, ct_volume)
    assert mask.sum() == (labels == 7).sum()


# -- tables ----------------------------------------------------------------------------------
def test_table_rows_round_trip_through_csv(scene, ct_volume, tmp_path):
    rows = [{"vessel": "LAD", "agatston": 112.5, "lesions": 3},
            {"vessel": "RCA", "agatston": 0.0, "lesions": 0}]
    table_node = outputs.table_from_rows(rows, "Agatston", reference=ct_volume)
    path = nodes.write_table(table_node, tmp_path / "agatston.csv")
    with open(path, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [r["vessel"] for r in written] == ["LAD", "RCA"]
    assert float(written[0]["agatston"]) == 112.5

    loaded = nodes.read_table(path, name="loaded")
    table = loaded.GetTable()
    assert table.GetColumnByName("agatston").GetValue(0) == 112.5
    assert table.GetColumnByName("vessel").GetValue(1) == "RCA"


def test_table_from_csv_without_schema_gets_numeric_columns(scene, ct_volume, tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("lesion,area_mm2,label\n1,4.5,LAD\n2,10,RCA\n")
    table_node = outputs.table_from_csv(path, "CT scores", reference=ct_volume)
    table = table_node.GetTable()
    assert table.GetColumnByName("area_mm2").IsA("vtkDoubleArray")
    assert [table.GetColumnByName("area_mm2").GetValue(i) for i in range(2)] == [4.5, 10.0]
    assert table.GetColumnByName("label").IsA("vtkStringArray")
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct_volume))
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table_node)) == study


# -- sequences -------------------------------------------------------------------------------
def test_sequence_from_arrays_and_file_round_trip(scene, ct_volume, tmp_path):
    frames = [np.full((6, 7, 8), 10.0 * k, np.float32) for k in range(4)]
    sequence, browser = outputs.sequence_from_arrays(frames, ct_volume, "cine",
                                                     index_values=[0, 40, 80, 120],
                                                     index_unit="ms")
    assert sequence.GetName() == "CT cine"
    assert sequence.GetNumberOfDataNodes() == 4
    assert [sequence.GetNthIndexValue(i) for i in range(4)] == ["0", "40", "80", "120"]
    browser.SetSelectedItemNumber(2)
    proxy = browser.GetProxyNode(sequence)
    assert proxy is not None
    assert float(slicer.util.arrayFromVolume(proxy).mean()) == 20.0
    assert np.array_equal(nodes.ijk_to_ras(proxy), nodes.ijk_to_ras(ct_volume))

    path = nodes.write_sequence(sequence, tmp_path / "cine.seq.nrrd")
    loaded, loaded_browser = nodes.read_sequence(path, reference=ct_volume)
    assert loaded.GetIndexUnit() == "ms"
    assert [loaded.GetNthIndexValue(i) for i in range(4)] == ["0", "40", "80", "120"]
    for index, frame in enumerate(frames):
        data = loaded.GetNthDataNode(index)
        assert np.array_equal(slicer.util.arrayFromVolume(data), frame)
        assert np.array_equal(nodes.ijk_to_ras(data), nodes.ijk_to_ras(ct_volume))
    assert loaded_browser.GetProxyNode(loaded) is not None


def test_sequence_frames_must_match_grid(ct_volume):
    with pytest.raises(ValueError, match=r"frame 1 has shape \(2, 2, 2\)"):
        outputs.sequence_from_arrays([np.zeros((6, 7, 8)), np.zeros((2, 2, 2))], ct_volume, "x")


# -- output placement and rollback -----------------------------------------------------------
def test_outputs_go_under_the_input_study_and_input_is_untouched(scene, ct_volume):
    checksum, mtime = mrml_fixtures.volume_checksum(ct_volume), ct_volume.GetMTime()
    result = outputs.volume_from_array(np.ones((6, 7, 8), np.float32), ct_volume, "denoised")
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct_volume))
    assert hierarchy.GetItemLevel(study) == "Study"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(result)) == study
    assert result.GetName() == "CT denoised"
    assert np.array_equal(nodes.ijk_to_ras(result), nodes.ijk_to_ras(ct_volume))
    assert mrml_fixtures.volume_checksum(ct_volume) == checksum
    assert ct_volume.GetMTime() == mtime


def test_rollback_on_error_removes_nodes_added_in_the_block(scene, ct_volume):
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(RuntimeError):
        with outputs.rollback_on_error(scene):
            outputs.volume_from_array(np.ones((6, 7, 8)), ct_volume, "half")
            outputs.table_from_rows([{"a": 1}], "half table")
            raise RuntimeError("import failed")
    assert mrml_fixtures.node_ids(scene) == before


# -- the runner with the fake backend --------------------------------------------------------
@pytest.fixture
def add_one(scene, ct_volume):
    parameters = AddOneParameters.for_module(scene, "AddOne")
    parameters.inputVolume = ct_volume
    return parameters


def test_run_success_creates_one_node_on_the_input_grid(scene, ct_volume, add_one):
    checksum, mtime = mrml_fixtures.volume_checksum(ct_volume), ct_volume.GetMTime()
    volumes_before = volume_nodes(scene)
    events, states = [], []

    task = AddOneLogic(scene).start(add_one, on_event=events.append, on_state=states.append)
    workdir = task.workdir
    assert task.wait(timeout=30) == RunState.DONE, task.error

    (result,) = task.outputs
    assert [n.GetID() for n in volume_nodes(scene)] == [n.GetID() for n in volumes_before] + [result.GetID()]
    assert result.GetName() == "CT plus one"
    expected = slicer.util.arrayFromVolume(ct_volume).astype(np.float32) + 1
    assert np.array_equal(slicer.util.arrayFromVolume(result), expected)
    assert np.array_equal(nodes.ijk_to_ras(result), nodes.ijk_to_ras(ct_volume))
    assert mrml_fixtures.volume_checksum(ct_volume) == checksum and ct_volume.GetMTime() == mtime
    assert states == [RunState.RUNNING, RunState.IMPORTING, RunState.DONE]
    assert not workdir.exists()
    assert task.result["mean"] == pytest.approx(float(expected.mean()), rel=1e-6)

    progress = [e for e in events if e["event"] == "progress"]
    assert [e["done"] for e in progress] == list(range(6))
    assert {e["total"] for e in progress} == {5}
    assert events[-1]["event"] == "result"
    assert any(e.get("stream") == "stderr" for e in events)  # stderr arrives as log lines


def wait_for_progress(task: TaskProcess, events: list, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(e["event"] == "progress" for e in events):
        assert task.poll() and time.monotonic() < deadline, "no progress event arrived"
        time.sleep(0.01)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie (not yet reaped by its parent) is gone for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name == "nt", reason="process-group signals are POSIX")
def test_cancel_mid_run_leaves_nothing(scene, add_one, tmp_path):
    add_one.update(steps=100, stepSeconds=0.05)
    pid_file = tmp_path / "grandchild.pid"
    before = mrml_fixtures.node_ids(scene)
    events = []
    task = AddOneLogic(scene, "--spawn-child", str(pid_file)).start(add_one, on_event=events.append)
    wait_for_progress(task, events)
    task.cancel()
    assert task.wait(timeout=20) == RunState.CANCELLED

    assert task.returncode == 130
    assert events[-1]["event"] == "cancelled"
    assert task.outputs is None and mrml_fixtures.node_ids(scene) == before
    assert not task.workdir.exists()
    assert process_gone(task.process.pid)
    assert process_gone(int(pid_file.read_text()))  # the whole process group was stopped


@pytest.mark.skipif(os.name == "nt", reason="process-group signals are POSIX")
def test_cancel_kills_a_child_that_ignores_sigterm(scene, add_one):
    add_one.update(steps=100, stepSeconds=0.05)
    events = []
    task = AddOneLogic(scene, "--ignore-term").start(add_one, on_event=events.append,
                                                     cancel_timeout_s=0.5)
    wait_for_progress(task, events)
    started = time.monotonic()
    task.cancel()
    assert task.wait(timeout=20) == RunState.CANCELLED
    assert time.monotonic() - started < 10
    assert task.returncode == -signal.SIGKILL
    assert any("killing it" in line for line in task.log.tail(5))
    assert process_gone(task.process.pid)


def test_failure_reports_the_child_message_and_adds_nothing(scene, add_one):
    add_one.fail = True
    before = mrml_fixtures.node_ids(scene)
    task = AddOneLogic(scene).start(add_one)
    assert task.wait(timeout=30) == RunState.FAILED
    assert task.returncode == processes.EXIT_BAD_INPUT
    assert task.error == "'input.nrrd' is not a CT volume; expected Hounsfield units"
    assert task.error_kind == "bad_input"
    assert mrml_fixtures.node_ids(scene) == before and not task.workdir.exists()
    with pytest.raises(runner.TaskFailed, match="is not a CT volume"):
        AddOneLogic(scene).run(add_one, timeout=30)


@pytest.mark.parametrize("option, message", [
    ("--crash", r"exit code 1:[\s\S]*simulated crash"),
    ("--no-result", "without reporting a result"),
])
def test_child_ending_without_error_event_fails_clearly(scene, add_one, option, message):
    before = mrml_fixtures.node_ids(scene)
    task = AddOneLogic(scene, option).start(add_one)
    assert task.wait(timeout=30) == RunState.FAILED
    assert re.search(message, task.error), task.error
    assert mrml_fixtures.node_ids(scene) == before


def test_import_failure_rolls_back_partial_nodes(scene, add_one):
    class HalfImport(AddOneLogic):
        def import_results(self, parameters, result, workdir):
            outputs.volume_from_file(workdir / "output.nrrd", parameters.inputVolume, "first")
            raise ValueError("second output missing")

    before = mrml_fixtures.node_ids(scene)
    task = HalfImport(scene).start(add_one)
    assert task.wait(timeout=30) == RunState.FAILED
    assert task.error == "importing the results failed: second output missing"
    assert mrml_fixtures.node_ids(scene) == before


def test_input_writing_error_propagates_and_leaves_no_run_folder(scene, add_one):
    class BadInput(AddOneLogic):
        def write_inputs(self, parameters, workdir):
            raise ValueError("input must be a CT volume in HU")

    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("meddiffusion-run-*"))
    states = []
    with pytest.raises(ValueError, match="input must be a CT volume in HU"):
        BadInput(scene).start(add_one, on_state=states.append)
    assert states == [RunState.FAILED]
    assert set(temp.glob("meddiffusion-run-*")) == before


def test_missing_input_is_refused_before_starting(scene):
    parameters = AddOneParameters.for_module(scene, "AddOne")
    with pytest.raises(ValueError, match="set inputVolume before running"):
        AddOneLogic(scene).start(parameters)


def test_install_step_declined_cancels_and_failure_fails(scene, add_one):
    states = []
    task = AddOneLogic(scene).start(add_one, on_state=states.append,
                                    install=lambda: (_ for _ in ()).throw(
                                        dependencies.InstallDeclined("declined")))
    assert task.state == RunState.CANCELLED and states == [RunState.INSTALLING, RunState.CANCELLED]
    assert task.process is None and not task.workdir.exists()

    def broken():
        raise RuntimeError("no network")
    task = AddOneLogic(scene).start(add_one, install=broken)
    assert task.state == RunState.FAILED
    assert task.error == "installing dependencies failed: no network"


def test_waiting_for_a_run_that_never_started_is_an_error():
    task = TaskProcess()
    with pytest.raises(RuntimeError, match="start the run before waiting"):
        task.wait(timeout=1)
    task.discard()
    assert task.state == RunState.CANCELLED and not task.workdir.exists()


def test_command_line_and_environment():
    command = processes.backend_command("agatston", "ct.nrrd", "-o", "out.csv", python="py")
    assert command == ["py", "-m", "meddiffusion", "agatston", "ct.nrrd", "-o", "out.csv",
                       "--events", "jsonl"]
    assert processes.python_executable() == sys.executable  # no PythonSlicer on this machine
    environment = processes.backend_environment({"CUDA_VISIBLE_DEVICES": "-1"})
    assert str(mrml_fixtures.REPO_ROOT) in environment["PYTHONPATH"].split(os.pathsep)
    assert environment["CUDA_VISIBLE_DEVICES"] == "-1"


def test_bounded_log_keeps_the_newest_lines_within_the_limit():
    log = runner.BoundedLog(limit_bytes=1000)
    for number in range(500):
        log.append(f"line {number:04d}")
    assert len(log.text()) <= 1000
    assert log.tail(1) == ["line 0499"] and log.trimmed > 0
    assert "line 0000" not in log.text()


def test_real_backend_agatston_through_the_runner(scene, add_volume, tmp_path):
    """The real ``meddiff agatston`` over the same contract, checked by hand arithmetic.

    One lesion of 250 HU (weight 2), 4x4 voxels of 0.5x0.5 mm (4 mm²) on 3 slices 3 mm
    apart: 3 slices x 4 mm² x 2 = 24, no slice-thickness correction at 3 mm.
    """
    array = np.full((8, 16, 16), -1000, np.int16)
    array[2:5, 6:10, 6:10] = 250
    matrix = np.diag([0.5, 0.5, 3.0, 1.0])
    ct = add_volume(array, ijk_to_ras=matrix, name="Calcium CT")

    task = TaskProcess()
    nodes.write_volume(ct, task.workdir / "ct.nrrd")
    table_path = task.workdir / "agatston.csv"
    task.importer = lambda result: outputs.table_from_csv(result["table"], "Calcium CT Agatston",
                                                           reference=ct)
    task.start(processes.backend_command("agatston", task.workdir / "ct.nrrd", "-o", table_path),
               env=processes.backend_environment())
    assert task.wait(timeout=60) == RunState.DONE, task.error
    assert task.result["total"] == pytest.approx(24.0)
    assert task.outputs.GetTable().GetNumberOfRows() >= 1


# -- parameters ------------------------------------------------------------------------------
class ExampleParameters(ParameterSet):
    volume = Node("vtkMRMLScalarVolumeNode", required=True)
    mask = Node("vtkMRMLSegmentationNode")
    steps = Int(10, minimum=1, maximum=200)
    strength = Float(0.5, minimum=0.0, maximum=1.0)
    model = Choice("fast", choices=("fast", "accurate"))
    useGPU = Bool(True)
    note = Text("")


def test_parameters_round_trip_on_the_node(scene, ct_volume):
    parameters = ExampleParameters.for_module(scene, "Example")
    assert parameters.values() == {"volume": None, "mask": None, "steps": 10, "strength": 0.5,
                                   "model": "fast", "useGPU": True, "note": ""}
    assert parameters.missing() == ["volume"]
    parameters.update(volume=ct_volume, steps=25, strength=0.125, model="accurate",
                      useGPU=False, note="first try")

    node = parameters.node
    assert node.GetParameter("steps") == "25" and node.GetParameter("useGPU") == "false"
    assert node.GetNodeReferenceID("volume") == ct_volume.GetID()
    again = ExampleParameters.for_module(scene, "Example")  # same singleton node
    assert again.node is node
    assert again.values() == {"volume": ct_volume, "mask": None, "steps": 25, "strength": 0.125,
                              "model": "accurate", "useGPU": False, "note": "first try"}
    assert again.missing() == []
    again.reset()
    assert again.steps == 10 and again.volume is None


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, r"'steps' must be between 1 and 200, got 0"),
    ("steps", 2.5, r"'steps' must be a whole number"),
    ("strength", "high", r"'strength' must be a number"),
    ("strength", float("nan"), "NaN"),
    ("model", "best", r"'model' must be one of fast, accurate"),
    ("useGPU", "maybe", r"'useGPU' must be true or false"),
])
def test_parameter_validation_errors(scene, name, value, message):
    parameters = ExampleParameters.for_module(scene, "Example")
    with pytest.raises(ValueError, match=message):
        setattr(parameters, name, value)
    assert parameters.node.GetParameter(name) == ""  # nothing stored


def test_node_parameter_checks_the_class(scene, ct_volume):
    parameters = ExampleParameters.for_module(scene, "Example")
    with pytest.raises(ValueError, match="'mask' must be a vtkMRMLSegmentationNode, got vtkMRMLScalarVolumeNode"):
        parameters.mask = ct_volume
    with pytest.raises(AttributeError, match="no parameter 'stepz'"):
        parameters.get("stepz")


# -- dependencies ----------------------------------------------------------------------------
def test_requirements_file_lists_the_backend_packages():
    names = {r.name for r in dependencies.load_requirements()}
    assert {"torch", "monai", "safetensors", "pynrrd", "tqdm", "scipy"} <= names
    assert not names & set(dependencies.SLICER_SHIPPED)


@pytest.fixture
def fake_site(monkeypatch):
    """Installed versions as a dict the fake installers change."""
    site = {"numpy": "2.0.0", "SimpleITK": "2.4.0", "torch": "1.13.0", "scipy": "1.11.0"}
    monkeypatch.setattr(dependencies, "installed_version", lambda name: site.get(name))
    return site


def test_plan_skips_slicer_packages_and_routes_torch(fake_site):
    requirements = [Requirement(r) for r in ("torch>=2.1", "scipy>=1.10", "monai>=1.4",
                                             "numpy>=3", "SimpleITK>=9")]
    plan = dependencies.plan(requirements)
    assert str(plan.torch) == "torch>=2.1"
    assert [str(r) for r in plan.pip] == ["monai>=1.4"]  # numpy/SimpleITK never reinstalled
    assert "monai>=1.4" in plan.describe() and "Install now?" in plan.describe()


def test_installer_asks_first_and_installs_only_after_yes(fake_site):
    calls = []

    def pip_install(requirements, constraints, log):
        calls.append(("pip", [str(r) for r in requirements], constraints.read_text()))
        fake_site["monai"] = "1.6.0"

    def torch_install(requirement, log):
        calls.append(("torch", str(requirement)))
        fake_site["torch"] = "2.13.0"

    requirements = [Requirement(r) for r in ("torch>=2.1", "monai>=1.4", "scipy>=1.10")]
    installer = dependencies.DependencyInstaller(requirements, pip_install=pip_install,
                                                 torch_install=torch_install)
    questions = []
    with pytest.raises(dependencies.InstallDeclined):
        installer.ensure(confirm=lambda text: questions.append(text) or False, log=lambda m: None)
    assert calls == [] and len(questions) == 1

    assert installer.ensure(confirm=lambda text: True, log=lambda m: None) is True
    assert calls[0] == ("torch", "torch>=2.1")
    assert calls[1][:2] == ("pip", ["monai>=1.4"])
    assert set(calls[1][2].split()) == {"numpy==2.0.0", "SimpleITK==2.4.0"}  # pinned, never replaced
    assert installer.ensure(confirm=lambda text: pytest.fail("asked again"), log=print) is False


def test_installer_reports_what_is_still_missing(fake_site):
    installer = dependencies.DependencyInstaller([Requirement("monai>=1.4")],
                                                 pip_install=lambda *args: None,
                                                 torch_install=lambda *args: None)
    with pytest.raises(RuntimeError, match="still missing after installing: monai>=1.4"):
        installer.ensure(confirm=lambda text: True, log=lambda m: None)


def test_environment_rows():
    rows = {row.name: row for row in environment.package_rows()}
    assert rows["meddiffusion (backend)"].ok
    assert rows["numpy"].installed == np.__version__
    model_rows = environment.model_rows([{"id": "ldct-v1", "task": "ldct", "version": "1.0",
                                          "description": "CoreDiff", "metrics": {"psnr": 41.234567}}])
    assert model_rows[0].metrics == "psnr 41.23"
    assert environment.device_text({"device": "cpu", "device_description": "CPU, 2 threads"}) \
        == "cpu: CPU, 2 threads"


# -- compare layouts -------------------------------------------------------------------------
@pytest.fixture
def before_after(scene, ct_volume):
    after_array = slicer.util.arrayFromVolume(ct_volume).astype(np.float32) * 0.5 + 3
    after = outputs.volume_from_array(after_array, ct_volume, "denoised")
    return ct_volume, after


def test_side_by_side_and_fade_set_up_the_views(scene, slice_views, before_after):
    before, after = before_after
    checksum = mrml_fixtures.volume_checksum(before)
    slice_views["Yellow"][0].SetViewGroup(3)
    layouts.show_side_by_side(before, after)

    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == layouts.SIDE_BY_SIDE
    red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]
    assert red.GetBackgroundVolumeID() == before.GetID()
    assert yellow.GetBackgroundVolumeID() == after.GetID()
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    assert slice_views["Red"][0].GetViewGroup() == slice_views["Yellow"][0].GetViewGroup()

    layouts.show_fade(before, after, 0.25, view="Green")
    green = slice_views["Green"][1]
    assert (green.GetBackgroundVolumeID(), green.GetForegroundVolumeID()) == (before.GetID(), after.GetID())
    assert green.GetForegroundOpacity() == 0.25
    with pytest.raises(ValueError, match="between 0 and 1"):
        layouts.show_fade(before, after, 1.5)
    with pytest.raises(ValueError, match="no slice view named 'Blue'"):
        layouts.show_single(before, view="Blue")
    assert mrml_fixtures.volume_checksum(before) == checksum


def test_difference_and_checkerboard_volumes(scene, before_after):
    before, after = before_after
    first = slicer.util.arrayFromVolume(before).astype(np.float32)
    second = slicer.util.arrayFromVolume(after)

    difference = layouts.difference_volume(before, after)
    assert difference.GetName() == "CT denoised difference"
    assert np.array_equal(slicer.util.arrayFromVolume(difference), second - first)
    assert np.array_equal(nodes.ijk_to_ras(difference), nodes.ijk_to_ras(before))
    assert difference.GetDisplayNode().GetLevel() == 0.0

    board = slicer.util.arrayFromVolume(layouts.checkerboard_volume(before, after, block_voxels=2))
    for k, j, i in [(0, 0, 0), (1, 0, 2), (2, 2, 0), (3, 3, 3), (5, 6, 7)]:
        use_after = (j // 2 + i // 2) % 2 == 1
        assert board[k, j, i] == (second if use_after else first)[k, j, i]
    layouts.fit_views()  # no application here: nothing to do, and no error


# -- input checks shared by the task modules --------------------------------------------------
def test_ct_volume_checks_name_the_module_and_return_the_modality(scene, ct_volume):
    def check(node):
        return inputs.check_ct_volume(node, module="Some Task", select="the CT to process",
                                      expected="a chest CT in Hounsfield units")

    assert check(ct_volume) == ""  # not from DICOM: the caller checks the values itself
    hierarchy = scene.GetSubjectHierarchyNode()
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(ct_volume), "DICOM.Modality", "CT")
    assert check(ct_volume) == "CT" == inputs.dicom_modality(ct_volume)
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(ct_volume), "DICOM.Modality", "MR")
    with pytest.raises(ValueError, match="'CT' is a DICOM MR series; Some Task expects a CT series"):
        check(ct_volume)
    with pytest.raises(ValueError, match="^no input volume: select the CT to process$"):
        check(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="'empty' holds no voxels; expected a chest CT in Hounsfield units"):
        check(empty)
    labels = mrml_fixtures.add_volume(scene, np.zeros((2, 3, 4), np.int16), name="labels",
                                      node_class="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(ValueError, match="'labels' is a vtkMRMLLabelMapVolumeNode, not an image"):
        check(labels)


def test_output_volume_check_protects_the_input(scene, ct_volume):
    inputs.check_output_volume(None, ct_volume)
    inputs.check_output_volume(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "spare"), ct_volume)
    with pytest.raises(ValueError, match="the output volume is the input 'CT'; the input is never overwritten"):
        inputs.check_output_volume(ct_volume, ct_volume)
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(ValueError, match="the output 'labels' is a label map"):
        inputs.check_output_volume(labels, ct_volume)


def test_move_into_fills_the_chosen_output_and_removes_the_source(scene, ct_volume):
    checksum = mrml_fixtures.volume_checksum(ct_volume)
    values = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    source = outputs.volume_from_array(values, ct_volume, "result")
    target = mrml_fixtures.add_volume(scene, np.zeros((2, 2, 2), np.int16), ijk_to_ras=np.eye(4),
                                      name="chosen")
    assert outputs.move_into(source, target, ct_volume) is target
    assert source.GetScene() is None and scene.GetNodeByID(target.GetID()) is target
    assert np.array_equal(slicer.util.arrayFromVolume(target), values)
    assert np.array_equal(nodes.ijk_to_ras(target), nodes.ijk_to_ras(ct_volume))
    hierarchy = scene.GetSubjectHierarchyNode()
    assert (hierarchy.GetItemParent(hierarchy.GetItemByDataNode(target))
            == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct_volume)))
    assert mrml_fixtures.volume_checksum(ct_volume) == checksum


# -- model selector shared by the task modules ------------------------------------------------
CARDS = [
    {"id": "bridge-a", "version": "1.2", "description": "Bridge model\nsecond line",
     "training_data": "phantoms", "metrics": {"ms_per_slice_cpu": 900, "ms_per_slice_gpu": 1500.0},
     "architecture": {"objective": "bridge", "diffusion": {"num_timesteps": 1000},
                      "sampler": {"steps": 20, "cpu_steps": 5}}},
    {"id": "l1-b", "version": "1.0", "description": "regression", "metrics": {"dose": 0.1},
     "architecture": {"objective": "regression", "diffusion": {"num_timesteps": 50}}},
]


def test_model_choices_read_steps_speed_dose_and_objective():
    bridge, l1 = models.model_choices(CARDS, max_steps=100, default_steps=10)
    assert (bridge.max_steps, bridge.default_steps, bridge.cpu_steps) == (100, 20, 5)
    assert (bridge.default_steps_for("cpu"), bridge.default_steps_for("cuda")) == (5, 20)
    assert bridge.summary == ("Bridge model · about 900 ms per slice on CPU, about 1.5 s per slice on GPU"
                              " · 20 steps (5 on CPU)")
    assert bridge.tooltip.splitlines()[0] == "bridge-a (version 1.2)"
    assert bridge.tooltip.splitlines()[-1] == "Training data: phantoms"
    assert (l1.max_steps, l1.default_steps, l1.cpu_steps, l1.single_pass) == (50, 10, 10, True)
    assert (l1.summary, l1.traits) == ("regression · one pass (steps unused)", "10 % dose")
    assert not bridge.single_pass and bridge.traits == bridge.speed

    _, dosed = models.model_choices(CARDS, max_steps=8, default_steps=8, headline="dose")
    assert dosed.summary == "trained for 10 % dose · one pass (steps unused)" and dosed.max_steps == 8
    assert models.clamp_steps("many", 4, 3) == 3 and models.clamp_steps(-2, 4, 3) == 1
    assert models.dose_text(25) == models.dose_text(0.25) == "25 %" and models.dose_text(True) == ""
    assert models.dose_text([0.07, 0.4]) == "7-40 %"
    with pytest.raises(ValueError, match="headline must be one of"):
        models.model_choices(CARDS, max_steps=8, default_steps=8, headline="speed")


class _Widget:
    """Records what a model selector does to a combo box, spin box or label."""

    def __init__(self):
        self.items, self.tooltips, self.blocked = [], {}, False
        self.enabled, self.maximum, self.text, self.tooltip = True, None, "", ""

    def blockSignals(self, block):
        previous, self.blocked = self.blocked, block
        return previous

    def clear(self):
        self.items.clear()
        self.tooltips.clear()

    def addItem(self, text):
        self.items.append(text)

    def setItemData(self, index, value, role):
        self.tooltips[(index, role)] = value

    def setEnabled(self, enabled):
        self.enabled = enabled

    def setMaximum(self, maximum):
        self.maximum = maximum

    def setText(self, text):
        self.text = text

    def setToolTip(self, text):
        self.tooltip = text


class SelectorParameters(ParameterSet):
    model = Text("")
    steps = Int(10, minimum=1, maximum=1000)
    device = Choice("auto", choices=("auto", "cpu", "cuda"))


def make_selector():
    combo, spin, label = _Widget(), _Widget(), _Widget()
    choices = lambda entries: models.model_choices(entries, max_steps=1000, default_steps=10)  # noqa: E731
    selector = models.ModelSelector(combo, spin, label, task="motion", choices=choices, max_steps=1000,
                                    kind="motion-correction")
    return selector, combo, spin, label


def test_model_selector_keeps_model_steps_and_info_in_step(scene):
    parameters = SelectorParameters.for_module(scene, "SelectorTest")
    selector, combo, spin, label = make_selector()
    selector.fill(CARDS)
    assert combo.items == ["bridge-a", "l1-b"] and combo.enabled and not combo.blocked
    assert combo.tooltips[(1, models.TOOLTIP_ROLE)].startswith("l1-b (version 1.0)")

    selector.watch(parameters)  # nothing stored: the first model with its default steps
    assert (parameters.model, parameters.steps, spin.maximum, spin.enabled) == ("bridge-a", 20, 1000, True)
    assert label.text.startswith("Bridge model · ") and label.tooltip.startswith("bridge-a")
    parameters.device = "cpu"
    parameters.model = "l1-b"  # the observer applies the new model's CPU steps and range
    assert (parameters.steps, spin.maximum, spin.enabled) == (10, 50, False)
    parameters.model = "bridge-a"
    assert parameters.steps == 5
    parameters.steps = 7
    parameters.model = "gone"  # not in the catalogue: back to the model shown, steps kept
    assert (parameters.model, parameters.steps) == ("bridge-a", 7)

    selector.unwatch()
    parameters.update(model="l1-b", steps=900)  # e.g. a scene saved with an older catalogue
    assert parameters.steps == 900  # no longer followed
    again, _, spin_again, _ = make_selector()
    again.fill(CARDS)
    again.watch(parameters)  # a stored model is kept; its steps only clamped to its range
    assert (parameters.model, parameters.steps, spin_again.maximum) == ("l1-b", 50, 50)
    again.unwatch()
    parameters.model = "gone"
    assert parameters.model == "gone"  # unwatched: nothing follows the node any more


def test_model_selector_without_models_says_why(scene, monkeypatch):
    monkeypatch.setattr(environment, "model_catalogue",
                        lambda task: ([], f"model catalogue unavailable for {task}"))
    parameters = SelectorParameters.for_module(scene, "SelectorTest")
    parameters.steps = 400
    selector, combo, spin, label = make_selector()
    selector.fill()
    selector.watch(parameters)
    assert combo.items == [] and not combo.enabled
    assert (parameters.model, parameters.steps, spin.maximum, spin.enabled) == ("", 400, 1000, True)
    assert label.text == ("No motion-correction model found (model catalogue unavailable for motion); "
                          "the backend uses its default model.")
    updates = []
    selector.refresh(CARDS, SimpleNamespace(update_widgets=lambda: updates.append(parameters.model)))
    assert updates == [""]  # the binding shows the stored model in the refilled list first
    assert parameters.model == "bridge-a" and combo.enabled and label.tooltip.startswith("bridge-a")
