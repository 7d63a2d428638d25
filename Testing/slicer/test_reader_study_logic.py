"""ReaderStudy logic on a real MRML scene: a study made by the backend, read by a blinded reader."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import slicer

import mrml_fixtures
from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.io.sequences import write_sequence
from meddiffusion.study import log
from meddiffusion.study.blinding import create_study
from meddiffusion.study.design import Design, default_question
from meddiffusion.study.sources import find_cases
from MedDiffusionUtilsLib import layouts, nodes
from ReaderStudyLib.logic import (CT_WINDOW_LEVEL, NAMES, SHOWN_ATTRIBUTE, HangingProtocol,
                                  ReaderStudyLogic)

MODULE_DIR = mrml_fixtures.REPO_ROOT / "ReaderStudy"
METHOD = "denoised"
PATIENTS = ("patient_alpha", "patient_bravo")
SPACING, ORIGIN = (0.7, 0.8, 2.5), (-12.5, 30.25, 7.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def chest(seed: int, smooth: bool = False) -> Volume:
    array = mrml_fixtures.chest_array((3, 12, 14), seed=seed).astype(np.float32)
    if smooth:
        array = (array + np.roll(array, 1, axis=2) + np.roll(array, -1, axis=2)) / 3
    return Volume(array, SPACING, ORIGIN, DIRECTION, modality="CT")


def make_study(root: Path, *, readers=("R1", "R2"), display=None, sessions=1, washout_days=0.0) -> Path:
    """Two patients, each an original and a denoised image: per reader two single reads per
    case (noise) and one pair (preference)."""
    for folder, smooth in (("originals", False), (METHOD, True)):
        for seed, patient in enumerate(PATIENTS):
            write_volume(chest(seed, smooth), root / folder / f"{patient}.nrrd")
    sources = find_cases(root / "originals", {METHOD: root / METHOD})
    design = Design(title="LDCT test", seed=3, readers=list(readers), cases=[], display=dict(display or {}),
                    questions=[default_question("likert", "noise"), default_question("pairwise", "preference")],
                    sessions=sessions, washout_days=washout_days)
    create_study(sources, design, root / "study")
    return root / "study"


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path)


@pytest.fixture
def logic(scene, slice_views, study):
    logic = ReaderStudyLogic(scene)
    logic.open_study(study)
    yield logic
    logic.stop()


def shown_volumes(scene) -> dict:
    """The scene's volumes by name, of those a read may show ("A", "B", "Image")."""
    found = {}
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetName() in NAMES.values():
            assert node.GetName() not in found, f"two volumes named {node.GetName()}"
            found[node.GetName()] = node
    return found


def reader_visible_text(scene) -> str:
    """Every string of the scene a reader could come across: names, descriptions, attributes,
    storage file names, of every node."""
    texts = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        texts += [node.GetName() or "", node.GetDescription() or ""]
        for name in node.GetAttributeNames() or ():
            texts += [name, node.GetAttribute(name) or ""]
        storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
        if storage is not None:
            texts.append(storage.GetFileName() or "")
    return "\n".join(texts)


def secrets_of(study: Path) -> list[str]:
    """What must never reach a reader: method, source files, image and case codes, the folder."""
    key = json.loads((study.parent / f"{study.name}.key.json").read_text())
    return [METHOD, *PATIENTS, "originals", *key["images"], *key["cases"], str(study)]


def answer_current(logic, value_for=None):
    """Answer every open question of the read on screen (likert 3, pairwise 'left')."""
    read = logic.current()
    for question in read.questions:
        value = (value_for or {}).get(question.kind, "left" if question.kind == "pairwise" else 3)
        logic.answer(question.id, value)
    return read


def file_geometry(path: Path) -> np.ndarray:
    volume = read_volume(path)
    direction = np.asarray(volume.direction).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(volume.spacing)
    matrix[:3, 3] = volume.origin
    return np.diag([-1, -1, 1, 1]) @ matrix  # LPS -> RAS


# -- what the reader sees ----------------------------------------------------------------------
def test_reads_are_shown_blind_on_their_own_grid_with_a_fixed_window(logic, scene, study, slice_views):
    read = logic.start("R1")
    seen_pair = seen_single = False
    while read is not None:
        volumes = shown_volumes(scene)
        assert sorted(volumes) == sorted(NAMES[position] for position in read.images)
        for position, path in read.images.items():
            node = volumes[NAMES[position]]
            assert node.GetAttribute(SHOWN_ATTRIBUTE) == position
            assert node.GetStorageNode() is None  # no file name to look up
            assert np.allclose(nodes.ijk_to_ras(node), file_geometry(path), atol=1e-6)
            assert np.array_equal(slicer.util.arrayFromVolume(node), read_volume(path).array)
            display = node.GetDisplayNode()
            assert (display.GetWindow(), display.GetLevel()) == CT_WINDOW_LEVEL
            assert not display.GetAutoWindowLevel()
        text = reader_visible_text(scene)
        assert [secret for secret in secrets_of(study) if secret in text] == []
        layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement()
        red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]
        if "single" in read.images:
            seen_single = True
            assert layout == slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView
            assert red.GetBackgroundVolumeID() == volumes["Image"].GetID()
        else:
            seen_pair = True
            assert layout == layouts.SIDE_BY_SIDE
            assert (red.GetBackgroundVolumeID(), yellow.GetBackgroundVolumeID()) == \
                   (volumes["A"].GetID(), volumes["B"].GetID())
            assert red.GetLinkedControl() and yellow.GetLinkedControl()
            assert slice_views["Red"][0].GetViewGroup() == slice_views["Yellow"][0].GetViewGroup()
        assert red.GetForegroundVolumeID() is None and red.GetLabelVolumeID() is None
        answer_current(logic)
        read = logic.current()
    assert seen_pair and seen_single
    assert shown_volumes(scene) == {}  # finished: nothing left on screen


def test_previous_read_nodes_are_removed_when_moving_on(logic, scene):
    first = logic.start("R1")
    before = mrml_fixtures.node_ids(scene)
    first_nodes = set(node.GetID() for node in shown_volumes(scene).values())
    answer_current(logic)
    second = logic.current()
    assert second.index == first.index + 1
    now = mrml_fixtures.node_ids(scene)
    assert not first_nodes & now
    assert len(shown_volumes(scene)) == len(second.images)
    # the first read's display nodes went with their volumes
    assert len(now - before) == 2 * len(second.images)


def test_answers_are_recorded_with_time_and_the_window_level_the_reader_set(logic, scene, study):
    read = logic.start("R2")
    while "single" in read.images:  # a pair: the change must follow on both views
        read = answer_current(logic) and logic.current()
    volumes = shown_volumes(scene)
    volumes["A"].GetDisplayNode().SetWindowLevel(1500.0, -600.0)  # a lung window on the left
    assert (volumes["B"].GetDisplayNode().GetWindow(), volumes["B"].GetDisplayNode().GetLevel()) == (1500.0, -600.0)
    (question,) = read.questions
    logic.answer(question.id, "right")
    record = log.read(study / "logs" / "R2.jsonl")[-1]
    assert (record["type"], record["read"], record["question"], record["answer"]) == \
           ("answer", read.index, question.id, "right")
    assert record["window_level"] == [[1500.0, -600.0]]
    assert record["seconds"] >= 0.0
    assert log.verify(study / "logs" / "R2.jsonl") == []


def test_a_locked_window_level_is_undone_but_logged(scene, slice_views, tmp_path):
    study = make_study(tmp_path, display={"window": 350, "level": 50, "locked": True})
    logic = ReaderStudyLogic(scene)
    logic.open_study(study)
    read = logic.start("R1")
    (node,) = [v for v in shown_volumes(scene).values()][:1]
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (350.0, 50.0)
    display.SetWindowLevel(2000.0, 0.0)
    assert (display.GetWindow(), display.GetLevel()) == (350.0, 50.0)
    logic.answer(read.questions[0].id, 2)
    assert log.read(study / "logs" / "R1.jsonl")[-1]["window_level"] == [[2000.0, 0.0]]
    logic.stop()


def test_the_layout_is_part_of_the_protocol(logic, scene):
    logic.start("R1")
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    shown = layout.GetViewArrangement()
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    assert layout.GetViewArrangement() == shown


def test_nothing_else_of_the_scene_shows_while_reading(scene, slice_views, study):
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    other = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array(), name="CT denoised")
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "heart")
    model.CreateDefaultDisplayNodes()
    logic = ReaderStudyLogic(scene)
    logic.open_study(study)
    logic.start("R1")
    assert not other.GetDisplayNode().GetVisibility()
    assert not model.GetDisplayNode().GetVisibility()
    for view in ("Red", "Yellow"):
        composite = slice_views[view][1]
        assert other.GetID() not in (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID())
    logic.stop()
    assert model.GetDisplayNode().GetVisibility()
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert shown_volumes(scene) == {}


# -- resume, skip, refusals --------------------------------------------------------------------
def test_reopening_resumes_at_the_first_unanswered_read(mrml, study):
    first_scene = mrml.scene
    mrml_fixtures.add_slice_views(mrml)
    logic = ReaderStudyLogic(first_scene)
    logic.open_study(study)
    logic.start("R1")
    answer_current(logic)
    answer_current(logic)
    expected = logic.current()
    logic.stop()
    del logic

    with mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as reopened:  # Slicer closed and reopened
        mrml_fixtures.add_slice_views(reopened)
        again = ReaderStudyLogic(reopened.scene)
        again.open_study(study)
        read = again.start("R1")
        assert (read.index, read.case, read.images) == (expected.index, expected.case, expected.images)
        assert again.progress() == (2, again.progress()[1])
        assert sorted(shown_volumes(reopened.scene)) == sorted(NAMES[p] for p in read.images)
        while again.current() is not None:
            answer_current(again)
        done, total = again.progress()
        assert done == total == len(log.read(study / "logs" / "R1.jsonl"))
        again.stop()


def test_skip_needs_a_reason_and_moves_on(logic, study):
    read = logic.start("R1")
    with pytest.raises(ValueError, match="why"):
        logic.skip("  ")
    assert logic.current().index == read.index
    following = logic.skip("image did not load")
    assert following.index == read.index + 1
    record = log.read(study / "logs" / "R1.jsonl")[-1]
    assert (record["type"], record["reason"], record["read"]) == ("skip", "image did not load", read.index)


def test_unknown_reader_and_missing_study_are_refused(scene, slice_views, study):
    logic = ReaderStudyLogic(scene)
    with pytest.raises(ValueError, match="open a study"):
        logic.start("R1")
    logic.open_study(study)
    with pytest.raises(ValueError, match="not a reader of this study.*R1, R2"):
        logic.start("R9")
    with pytest.raises(ValueError, match="name"):
        logic.start("  ")
    with pytest.raises(ValueError, match="not a study folder"):
        logic.open_study(study.parent)
    with pytest.raises(ValueError, match="start reading"):
        logic.answer("noise", 3)


def test_a_session_in_washout_shows_nothing_until_it_opens(scene, slice_views, tmp_path):
    study = make_study(tmp_path, readers=("R1",), sessions=2, washout_days=14)
    now = [datetime(2026, 1, 5, tzinfo=timezone.utc)]
    logic = ReaderStudyLogic(scene, clock=lambda: now[0])
    logic.open_study(study)
    read = logic.start("R1")
    while read is not None and read.session == 1:
        read = answer_current(logic) and logic.current()
    assert read.session == 2 and logic.opens_at(read) is not None
    assert shown_volumes(scene) == {}
    now[0] += timedelta(days=15)
    assert logic.show_current().index == read.index
    assert sorted(shown_volumes(scene)) == sorted(NAMES[p] for p in read.images)
    logic.stop()


def test_a_4d_image_plays_as_a_cine_named_by_its_position(scene, slice_views, mrml, study):
    logic = ReaderStudyLogic(scene)
    logic.open_study(study)
    first = logic.study.reads("R1")[0]
    code = first.images["single"]
    frames = [chest(phase) for phase in range(4)]
    path = write_sequence(frames, study / "images" / f"{code}.nrrd")
    logic.start("R1")
    browsers = [scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))]
    (browser,) = browsers
    assert browser.GetName() == "Image cine"
    assert browser.GetPlaybackActive() and browser.GetPlaybackLooped()
    assert browser.GetPlaybackRateFps() == HangingProtocol().cine_fps
    image = shown_volumes(scene)["Image"]
    assert browser.GetProxyNode(browser.GetMasterSequenceNode() if hasattr(browser, "GetMasterSequenceNode")
                                else browser.GetPrimarySequenceNode()).GetID() == image.GetID()
    assert (image.GetDisplayNode().GetWindow(), image.GetDisplayNode().GetLevel()) == CT_WINDOW_LEVEL
    assert [secret for secret in secrets_of(study) if secret in reader_visible_text(scene)] == []
    assert path.exists()
    answer_current(logic)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == 0
    logic.stop()


def test_hanging_protocol_from_the_design():
    assert HangingProtocol.from_design({}) == HangingProtocol()
    assert HangingProtocol.from_design({"window": 1500, "level": -600}).window_level([np.zeros(3)]) == (1500, -600)
    with pytest.raises(ValueError, match="both or neither"):
        HangingProtocol.from_design({"window": 400})
    with pytest.raises(ValueError, match="positive"):
        HangingProtocol.from_design({"window": 0, "level": 0})
    ct = mrml_fixtures.chest_array()
    assert HangingProtocol().window_level([ct, ct]) == CT_WINDOW_LEVEL
    pet = np.linspace(0.0, 10.0, 1001)
    window, level = HangingProtocol().window_level([pet])
    assert window == pytest.approx(9.8) and level == pytest.approx(5.0)


# -- the lead's screen -------------------------------------------------------------------------
def test_reader_progress_from_the_logs(logic):
    logic.start("R2")
    answer_current(logic)
    logic.stop()
    rows = {row.reader: row for row in logic.reader_progress()}
    assert (rows["R1"].done, rows["R1"].state) == (0, "not started")
    assert rows["R2"].done == 1 and rows["R2"].state == "session 1"
    assert rows["R1"].total == rows["R2"].total == len(logic.study.reads("R1"))


def test_create_runs_meddiff_study_create_in_a_child(scene, tmp_path):
    for folder, smooth in (("originals", False), (METHOD, True)):
        for seed, patient in enumerate(PATIENTS):
            write_volume(chest(seed, smooth), tmp_path / folder / f"{patient}.nrrd")
    logic = ReaderStudyLogic(scene)
    task = logic.create_task(tmp_path / "originals", {METHOD: tmp_path / METHOD}, ["R1", " R2 "],
                             tmp_path / "new-study", seed=5, options=["--repeats", "0", "--min-patient-gap", "0"])
    assert task.wait(timeout=120).value == "done", task.error
    assert Path(task.outputs["study"]) == tmp_path / "new-study"
    study = logic.open_study(task.outputs["study"])
    assert study.design.readers == ["R1", "R2"] and study.design.seed == 5
    assert (tmp_path / "new-study.key.json").exists()
    with pytest.raises(ValueError, match="method"):
        logic.create_task(tmp_path / "originals", {}, ["R1"], tmp_path / "other")


def test_analyze_runs_in_a_child_and_brings_back_its_tables(logic, scene, tmp_path):
    """A stand-in backend writes what `meddiff study analyze` writes: tables in the report folder."""
    code = ("import json, pathlib, sys; args = sys.argv[1:]; out = pathlib.Path(args[args.index('-o') + 1]); "
            "out.mkdir(parents=True); (out / 'likert.csv').write_text('method,mean\\noriginal,3.5\\nM1,4.25\\n'); "
            "print(json.dumps({'event': 'result', 'args': args, 'summary': 'report'}))")
    logic.backend = [sys.executable, "-c", code]
    task = logic.analyze_task(tmp_path / "report", reason="final analysis")
    assert task.wait(timeout=60).value == "done", task.error
    assert task.result["args"][:4] == ["study", "analyze", str(logic.study.folder), "-o"]
    assert "--reason" in task.result["args"]
    table = task.outputs["likert"]
    assert table.GetName() == "Reader study likert"
    assert slicer.util.arrayFromTableColumn(table, "mean").tolist() == [3.5, 4.25]


def test_two_readers_finish_and_the_real_analysis_comes_back_as_tables(scene, slice_views, study, tmp_path):
    """The lead's path end to end: both readers read everything (R2 after a stop), then
    `meddiff study analyze` writes the report and its tables come into the scene unblinded."""
    logic = ReaderStudyLogic(scene)
    logic.open_study(study)
    for reader, ratings in (("R1", {"likert": 2, "pairwise": "right"}), ("R2", {"likert": 3, "pairwise": "left"})):
        logic.start(reader)
        answer_current(logic, ratings)
        if reader == "R2":
            logic.stop()
            logic.start(reader)
        while logic.current() is not None:
            answer_current(logic, ratings)
        logic.stop()
    assert [(row.reader, row.state) for row in logic.reader_progress()] == [("R1", "finished"), ("R2", "finished")]
    task = logic.analyze_task(tmp_path / "report", reason="test")
    assert task.wait(timeout=300).value == "done", task.error
    assert (tmp_path / "report" / "report.md").exists()
    summary = task.outputs["likert_summary"]
    assert summary.GetName() == "Reader study likert_summary"
    column = summary.GetTable().GetColumnByName("method")
    assert {"original", METHOD} <= {column.GetValue(row) for row in range(column.GetNumberOfValues())}


# -- packaging ---------------------------------------------------------------------------------
def cmake_list(cmake: str, variable: str) -> set[str]:
    """The files a ``set(<variable> ...)`` block of the module's CMakeLists.txt names."""
    block = re.search(rf"set\({variable}\s+(.*?)\)", cmake, re.S).group(1)
    return {entry.replace("${MODULE_NAME}", "ReaderStudy") for entry in block.split()}


def test_cmake_lists_exactly_the_module_files():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = {"ReaderStudy.py", *(f"ReaderStudyLib/{p.name}" for p in (MODULE_DIR / "ReaderStudyLib").glob("*.py"))}
    resources = {str(p.relative_to(MODULE_DIR)) for folder in ("Icons", "UI")
                 for p in (MODULE_DIR / "Resources" / folder).iterdir()}
    assert cmake_list(cmake, "MODULE_PYTHON_SCRIPTS") == scripts
    assert cmake_list(cmake, "MODULE_PYTHON_RESOURCES") == resources
    assert "WITH_GENERIC_TESTS" in cmake and "add_subdirectory(Testing/Python)" in cmake
    assert "slicer_add_python_unittest" in (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    assert "add_subdirectory(ReaderStudy)" in (mrml_fixtures.REPO_ROOT / "CMakeLists.txt").read_text().splitlines()


def test_the_logic_loads_no_qt():
    """The logic must run where only MRML exists (batch scripts, these tests)."""
    probe = "import sys, ReaderStudyLib.logic; print(sorted({m.split('.')[0] for m in sys.modules} & {'qt', 'PySide6', 'PythonQt'}))"
    paths = [MODULE_DIR, mrml_fixtures.REPO_ROOT / "MedDiffusionUtils", mrml_fixtures.REPO_ROOT]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    completed = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True,
                               encoding="utf-8", timeout=60)
    assert completed.stdout.strip().splitlines()[-1:] == ["[]"], completed.stderr[-2000:]
