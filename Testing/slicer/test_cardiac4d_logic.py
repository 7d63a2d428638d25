"""Cardiac 4D Synth logic on a real MRML scene against the real backend (``meddiff synth-cardiac`` with
the untrained tiny cascade of tiny_models, whose hearts fail the plausibility checks, so runs keep
them): the request as the command's arguments (ESV or EF, the anatomy), ESV and EF linked by the
EDV, the cine and its segmentation sequence in one browser with the frame times as index values,
the labels equal to the file the backend wrote, the volume table equal to its CSV, the plot's curves
equal to the table and the request, a refused request with the backend's message and no node,
Cancel leaving nothing, and the anatomy option exporting the chosen volume."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

import mrml_fixtures
import tiny_models
from meddiffusion.tasks import registry
from meddiffusion.tasks.cardiac4d import GUIDANCE
from MedDiffusionUtilsLib import nodes
from MedDiffusionUtilsLib.runner import RunState, TaskFailed

if "cardiac4d" not in {spec.name for spec in registry.all_tasks()}:
    pytest.skip("the cardiac4d task is not registered in meddiffusion.tasks.registry yet", allow_module_level=True)

from Cardiac4DSynthLib.logic import (PLOT_LAYOUT, SEGMENTS, Cardiac4DSynthLogic, link_systole,  # noqa: E402
                                     measured_text, model_choices, number_text, segmentation_of_frame)

MODEL = "tiny-c4d-motion"
#: what every backend run here shares: small and fast, the untrained hearts kept
FAST = dict(slices=8, frames=10, steps=1, device="cpu", model=MODEL, keep_implausible=True, max_attempts=1)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """The tiny cascade's three cards in a user model folder (built once for the module)."""
    from meddiffusion.catalog import register_user_model

    folder = tmp_path_factory.mktemp("c4d-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDIFF_MODEL_DIR", str(folder))
        for entry, state in tiny_models.cardiac4d_models():
            register_user_model(entry, state)
    return folder


@pytest.fixture
def backend(model_folder, monkeypatch):
    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(model_folder))
    return MODEL


def keep_files(logic, folder: Path) -> dict:
    """Copy each output file the backend wrote into ``folder`` as it is imported (the run folder goes)."""
    kept, original = {}, logic.import_output

    def import_output(port, path, run):
        kept[port.name] = Path(shutil.copy(path, folder / path.name))
        return original(port, path, run)

    logic.import_output = import_output
    return kept


def csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def column(table_node, name) -> list:
    array = table_node.GetTable().GetColumnByName(name)
    return [array.GetValue(i) for i in range(array.GetNumberOfValues())]


def anatomy_volume(scene, name="ED frame"):
    """A short-axis stack the MR rule and the task's limits accept: 8 slices 6 mm apart, 2 mm pixels, a
    bright blood pool in a darker ring, under a patient and study (written as the anatomy input, not run)."""
    _, j, i = np.indices((8, 48, 48))
    radius = np.hypot(j - 24, i - 24)
    array = np.where(radius < 8, 600.0, np.where(radius < 12, 200.0, 80.0))
    array = (array + np.random.default_rng(1).normal(0, 5, array.shape)).clip(0).astype(np.float32)
    matrix = np.diag([-2.0, -2.0, 6.0, 1.0])
    matrix[:3, 3] = (47.0, 47.0, -21.0)
    volume = mrml_fixtures.add_volume(scene, array, name=name, ijk_to_ras=matrix)
    mrml_fixtures.put_in_study(scene, volume, study="Cine MR")
    return volume


# -- the request ------------------------------------------------------------------------------------
def test_esv_and_ef_follow_each_other_through_the_edv(scene):
    parameters = Cardiac4DSynthLogic(scene).parameters()
    assert (parameters.diagnosis, parameters.edv, parameters.ef, parameters.esv, parameters.systole) == \
        ("NOR", 140.0, 60.0, 56.0, "EF")
    link_systole(parameters, "esv", 170.0)
    assert (parameters.esv, parameters.systole) == (170.0, "ESV")
    assert parameters.ef == pytest.approx(-21.4)  # above the EDV: shown as it is, refused by the backend
    link_systole(parameters, "edv", 230.0)  # the ESV was given: it stays, the EF follows
    assert (parameters.edv, parameters.esv, parameters.ef) == (230.0, 170.0, 26.1)
    link_systole(parameters, "ef", 35.0)
    assert (parameters.systole, parameters.ef, parameters.esv) == ("EF", 35.0, 149.5)
    link_systole(parameters, "edv", 200.0)  # the EF was given: it stays, the ESV follows
    assert (parameters.ef, parameters.esv) == (35.0, 130.0)
    with pytest.raises(ValueError, match="edited must be"):
        link_systole(parameters, "slices")


def test_the_request_becomes_the_command_arguments(scene, tmp_path):
    logic = Cardiac4DSynthLogic(scene)
    parameters = logic.parameters()
    parameters.update(diagnosis="DCM", edv=230.0, esv=170.0, systole="ESV", slices=10, frames=25, seed=3)
    outputs = ["-o", tmp_path / "cine.seq.nrrd", "--labels", tmp_path / "labels.seq.nrrd",
               "--table", tmp_path / "volumes.csv"]

    assert logic.write_inputs(parameters.snapshot(), tmp_path) == outputs + [
        "--diagnosis", "DCM", "--edv", "230", "--esv", "170", "--slices", 10, "--frames", 25, "--seed", 3,
        "--guidance", f"{GUIDANCE:g}", "--heart-rate", "70", "--max-attempts", 5, "--steps", 20, "--device", "auto"]

    parameters.update(ef=26.5, systole="EF", guidance=2.5, keepImplausible=True, maxAttempts=2, model="m", steps=4,
                      device="cpu", heartRate=62.5)
    arguments = logic.write_inputs(parameters.snapshot(), tmp_path)
    assert arguments[arguments.index("--edv"):arguments.index("--slices")] == ["--edv", "230", "--ef", "26.5"]
    assert "--esv" not in arguments
    assert arguments[arguments.index("--guidance"):] == [
        "--guidance", "2.5", "--heart-rate", "62.5", "--max-attempts", 2, "--keep-implausible", "--steps", 4,
        "--device", "cpu", "--model", "m"]
    assert list(tmp_path.iterdir()) == []  # no input: nothing written

    run = parameters.snapshot()
    assert logic.request_name(run) == "DCM EDV 230 EF 26.5"
    assert [logic.output_name(run, port) for port in logic.spec.outputs] == [
        "Synthetic cine DCM EDV 230 EF 26.5", "Synthetic labels DCM EDV 230 EF 26.5", "Volumes DCM EDV 230 EF 26.5"]
    assert number_text(140.0) == "140" and number_text(0.1) == "0.1"


def test_the_anatomy_option_writes_the_chosen_volume_as_anatomy(scene, tmp_path):
    logic = Cardiac4DSynthLogic(scene)
    parameters = logic.parameters()
    anatomy = anatomy_volume(scene)
    parameters.update(diagnosis="MINF", ef=35.0, systole="EF", anatomyVolume=anatomy)  # selected, not asked for
    assert "--anatomy" not in logic.write_inputs(parameters.snapshot(), tmp_path)
    assert parameters.missing() == []
    parameters.update(useAnatomy=True, anatomyVolume=None)
    assert parameters.missing() == ["anatomyVolume"]  # asked for: Apply waits for it
    with pytest.raises(ValueError, match="set anatomyVolume before running"):
        logic.start(parameters)
    parameters.anatomyVolume = anatomy

    arguments = logic.write_inputs(parameters.snapshot(), tmp_path)

    assert arguments[:2] == ["--anatomy", tmp_path / "anatomy.nrrd"]
    assert "--edv" not in arguments and "--slices" not in arguments  # the anatomy's own
    assert arguments[arguments.index("--diagnosis"):arguments.index("--frames")] == [
        "--diagnosis", "MINF", "--ef", "35"]
    written = nodes.read_volume(tmp_path / "anatomy.nrrd", scene=scene, name="written")
    assert np.array_equal(slicer.util.arrayFromVolume(written), slicer.util.arrayFromVolume(anatomy))
    assert np.allclose(nodes.ijk_to_ras(written), nodes.ijk_to_ras(anatomy))
    assert logic.request_name(parameters.snapshot()) == "MINF EF 35 on ED frame"


def test_a_bad_anatomy_is_refused_by_the_mr_rule_before_anything_starts(scene, run_folder):
    logic = Cardiac4DSynthLogic(scene)
    ct = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((8, 24, 24)), name="Chest CT")
    parameters = logic.parameters()
    parameters.update(useAnatomy=True, anatomyVolume=ct)
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(ValueError, match="'Chest CT' has negative values"):
        logic.start(parameters)
    parameters.useAnatomy = False  # not asked for: not checked
    assert logic.check(parameters.snapshot()) is None
    assert mrml_fixtures.node_ids(scene) == before and list(run_folder.iterdir()) == []


def test_the_selector_lists_the_motion_cards_by_rank():
    cards = [{"id": "vae", "architecture": {"network": "DualDecoderVAE"}},
             {"id": "anatomy", "architecture": {"network": "AnatomyLDM"}},
             {"id": "second", "description": "b", "default_for": {"cpu": 2},
              "architecture": {"network": "MotionLDM", "diffusion": {"num_train_timesteps": 500},
                               "sampler": {"steps": {"cpu": 20, "cuda": 30}}}},
             {"id": "first", "description": "a", "default_for": {"cpu": 1},
              "architecture": {"network": "MotionLDM", "sampler": {"steps": {"cpu": 2, "cuda": 2}}}}]
    choices = model_choices(cards)
    assert [choice.id for choice in choices] == ["first", "second"]
    assert (choices[1].default_steps, choices[1].cpu_steps, choices[1].max_steps) == (30, 20, 500)
    assert choices[0].max_steps == 1000


def test_the_measured_text():
    assert measured_text(None) == "—"
    report = {"requested": {"edv_ml": 230.0, "esv_ml": 170.0, "ef_percent": 26.09},
              "measured": {"lv_edv_ml": 231.4, "lv_esv_ml": 168.2, "lv_ef_percent": 27.3, "rv_edv_ml": 180.0,
                           "rv_esv_ml": 95.0, "rv_ef_percent": 47.2, "myo_volume_ml": 150.0}, "plausible": False}
    assert measured_text(report).splitlines() == [
        "LV: EDV 231 ml (asked 230), ESV 168 ml (asked 170), EF 27 % (asked 26)",
        "RV: EDV 180 ml, ESV 95 ml, EF 47 %", "Implausible labels kept (see the log)"]


def test_a_label_frame_becomes_three_segments_sharing_one_layer(scene):
    labels = np.zeros((3, 6, 7), np.uint8)
    labels[1, 2:4, 1:3], labels[1, 2:4, 3], labels[2, 4, 4:6] = 1, 2, 3
    frame = mrml_fixtures.add_volume(scene, labels, name="frame")
    segmentation = segmentation_of_frame(frame)
    contents = segmentation.GetSegmentation()
    assert [contents.GetNthSegmentID(i) for i in range(3)] == ["RV", "MYO", "LV"]
    assert [contents.GetNthSegment(i).GetName() for i in range(3)] == [name for _v, _id, name, *_ in SEGMENTS]
    scene.AddNode(segmentation)
    for value, segment_id, *_ in SEGMENTS:
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, frame)
        assert np.array_equal(mask > 0, labels == value), segment_id
    terminology = vtk.reference("")
    assert contents.GetSegment("LV").GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
    assert "87878005" in str(terminology)
    labels[0, 0, 0] = 4
    slicer.util.updateVolumeFromArray(frame, labels)
    with pytest.raises(ValueError, match=r"frame holds values \[4\]"):
        segmentation_of_frame(frame, "frame")


# -- runs -------------------------------------------------------------------------------------------
def test_a_run_makes_the_cine_its_labels_one_browser_the_table_and_the_plot(scene, backend, run_folder, tmp_path,
                                                                             slice_views):
    logic = Cardiac4DSynthLogic(scene)
    kept = keep_files(logic, tmp_path)
    logic.parameters()
    before = mrml_fixtures.node_ids(scene)

    created = logic.synthesize("DCM", edv=230, esv=170, seed=3, timeout=180, **FAST)

    assert set(created) == {"output", "labels", "table", "browser", "request", "plot"}
    assert all(node.GetID() not in before for node in created.values())
    cine, labels, browser, table, plot = (created[name] for name in ("output", "labels", "browser", "table", "plot"))
    assert cine.GetName() == "Synthetic cine DCM EDV 230 ESV 170"
    assert labels.GetName() == "Synthetic labels DCM EDV 230 ESV 170"
    assert table.GetName() == "Volumes DCM EDV 230 ESV 170"
    assert browser.GetName() == "Synthetic cine DCM EDV 230 ESV 170 browser"
    rows = csv_rows(kept["table"])

    # the sequences: one item per frame, indexed by the frame times (ms) of the table
    times = [row["time_ms"] for row in rows]
    assert len(rows) == 10
    for sequence in (cine, labels):
        assert sequence.GetNumberOfDataNodes() == 10
        assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "ms")
        assert [float(sequence.GetNthIndexValue(i)) for i in range(10)] == [float(t) for t in times]
    assert cine.GetNthDataNode(0).IsA("vtkMRMLScalarVolumeNode")
    assert nodes.dimensions(cine.GetNthDataNode(0))[2] == 8  # slices
    assert all(labels.GetNthDataNode(i).IsA("vtkMRMLSegmentationNode") for i in range(10))

    # one browser plays both, with the cine as its primary sequence
    assert logic.browser_of(cine) is browser and logic.browser_of(labels) is browser
    assert browser.GetNumberOfSynchronizedSequenceNodes(True) == 2
    primary = getattr(browser, "GetPrimarySequenceNode", None) or browser.GetMasterSequenceNode
    assert primary() is cine
    from meddiffusion.io import read_sequence

    cine_frames, _ = read_sequence(kept["output"])
    label_frames, _ = read_sequence(kept["labels"])
    for item in (0, 6):
        browser.SetSelectedItemNumber(item)
        cine_proxy, label_proxy = browser.GetProxyNode(cine), browser.GetProxyNode(labels)
        assert np.array_equal(slicer.util.arrayFromVolume(cine_proxy), cine_frames[item].array)
        assert label_proxy.IsA("vtkMRMLSegmentationNode") and label_proxy.GetDisplayNode() is not None
        for value, segment_id, *_ in SEGMENTS:  # the labels the backend wrote, segment by segment
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(label_proxy, segment_id, cine_proxy)
            assert np.array_equal(mask > 0, label_frames[item].array == value), (item, segment_id)

    # the table is the CSV; the plot's curves are the table's and the request's
    assert [table.GetTable().GetColumnName(c) for c in range(table.GetTable().GetNumberOfColumns())] == list(rows[0])
    for name in rows[0]:
        assert column(table, name) == pytest.approx([float(row[name]) for row in rows]), name
    report = logic.report_of(cine)
    assert report["requested"]["edv_ml"] == 230.0 and report["requested"]["esv_ml"] == 170.0
    assert set(report["measured"]) >= {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "rv_edv_ml", "rv_esv_ml"}
    series = [plot.GetNthPlotSeriesNode(i) for i in range(plot.GetNumberOfPlotSeriesNodes())]
    assert [s.GetName() for s in series] == ["LV measured", "RV measured", "LV EDV requested", "LV ESV requested"]
    lv, rv, edv, esv = series
    for curve, name in ((lv, "lv_ml"), (rv, "rv_ml")):
        assert curve.GetTableNode() is table and curve.GetXColumnName() == "time_ms"
        assert column(table, curve.GetYColumnName()) == pytest.approx([float(row[name]) for row in rows])
    request = created["request"]
    assert edv.GetTableNode() is request and esv.GetTableNode() is request
    assert column(request, edv.GetYColumnName()) == [230.0, 230.0]
    assert column(request, esv.GetYColumnName()) == [170.0, 170.0]
    assert column(request, "time_ms") == pytest.approx([float(times[0]), float(times[-1])])
    assert esv.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDot

    # made from the request alone: no input, at the top of the scene
    assert all(logic.input_of(node) is None for node in created.values())
    assert cine.GetAttribute("MedDiffusion.input") == "none"
    assert cine.GetAttribute("MedDiffusion.request") == "DCM EDV 230 ESV 170"
    assert cine.GetAttribute("MedDiffusion.model") == MODEL
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(cine)) == hierarchy.GetSceneItemID()
    assert list(run_folder.iterdir()) == []

    # the views: the cine in every slice view, the chart in the plot view
    plot_view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode")
    logic.show(created)
    proxy = browser.GetProxyNode(cine)
    assert {composite.GetBackgroundVolumeID() for _slice, composite in slice_views.values()} == {proxy.GetID()}
    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == PLOT_LAYOUT
    assert plot_view.GetPlotChartNodeID() == plot.GetID()
    assert scene.GetNodeByID("vtkMRMLSelectionNodeSingleton").GetActivePlotChartID() == plot.GetID()


def test_a_refused_request_shows_the_backend_message_and_adds_no_node(scene, backend, run_folder):
    from meddiffusion.tasks.cardiac4d.clinical import make_request

    with pytest.raises(ValueError) as expected:
        make_request("DCM", 230.0, esv_ml=240.0, slices=8, frames=10)
    logic = Cardiac4DSynthLogic(scene)
    logic.parameters()  # the module's parameter node, there once the module is open
    before = mrml_fixtures.node_ids(scene)

    with pytest.raises(TaskFailed) as refused:
        logic.synthesize("DCM", edv=230, esv=240, timeout=120, **FAST)

    assert str(refused.value) == str(expected.value)
    assert "ESV 240 ml ≥ EDV 230 ml" in str(refused.value)
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []


def test_cancel_during_the_generation_leaves_no_node_and_no_file(scene, backend, run_folder):
    logic = Cardiac4DSynthLogic(scene)
    parameters = logic.parameters()
    parameters.update(diagnosis="NOR", edv=140.0, ef=60.0, systole="EF", slices=8, frames=10, steps=2, device="cpu",
                      model=MODEL, keepImplausible=True, maxAttempts=1)
    before = mrml_fixtures.node_ids(scene)
    stages = []

    task = logic.start(parameters, on_event=lambda event: stages.append(event.get("stage")))
    deadline = time.monotonic() + 120
    while task.poll() and not {"anatomy", "motion"} & set(stages) and time.monotonic() < deadline:
        time.sleep(0.02)
    task.cancel()

    assert task.wait(timeout=60) == RunState.CANCELLED
    assert {"anatomy", "motion"} & set(stages)  # cancelled while generating
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []


def phantom_anatomy(scene, name="ED frame"):
    """The end-diastolic stack of a phantom MINF cine (48² × 3.5 mm, 10 mm slices) as a volume node, and its EDV
    measured on the phantom's labels."""
    from meddiffusion.phantoms import Phantom
    from meddiffusion.tasks.cardiac4d.cine import CineProtocol, acquire
    from meddiffusion.tasks.cardiac4d.measure import clinical_values

    study = acquire(Phantom.sample("MINF", 4), CineProtocol(matrix=48, pixel_mm=3.5, frames=4), 4)
    matrix = np.diag([-3.5, -3.5, 10.0, 1.0])
    volume = mrml_fixtures.add_volume(scene, ((study.images[0] + 1) * 500).astype(np.float32), name=name,
                                      ijk_to_ras=matrix)
    mrml_fixtures.put_in_study(scene, volume, study="Cine MR")
    return volume, clinical_values(study.labels, study.grid.spacing)["lv_edv_ml"]


def test_the_anatomy_option_keeps_the_chosen_heart_and_generates_its_motion(scene, backend, run_folder):
    """With the shipped cascade: the untrained tiny VAE reads no heart in a stack."""
    anatomy, edv = phantom_anatomy(scene)
    slices = nodes.dimensions(anatomy)[2]
    checksum = mrml_fixtures.volume_checksum(anatomy)
    logic = Cardiac4DSynthLogic(scene)

    created = logic.synthesize("MINF", ef=35, anatomy=anatomy, timeout=180,
                               **{**FAST, "model": "cardiac4d-motion-small"})

    cine = created["output"]
    assert cine.GetName() == "Synthetic cine MINF EF 35 on ED frame"
    report = logic.report_of(cine)
    assert report["anatomy_given"] is True
    assert report["requested"]["slices"] == slices  # the anatomy's stack
    assert report["requested"]["edv_ml"] == pytest.approx(edv, rel=0.25)  # read on the given heart
    assert report["requested"]["ef_percent"] == pytest.approx(35.0)
    assert all(logic.input_of(node) is anatomy for node in created.values())
    assert cine.GetAttribute("MedDiffusion.input") == "ED frame"
    assert nodes.dimensions(cine.GetNthDataNode(0))[2] == slices
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(anatomy))
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(cine)) == study
    assert mrml_fixtures.volume_checksum(anatomy) == checksum
    assert list(run_folder.iterdir()) == []
