"""LDCT Denoise logic on a real MRML scene, with fake_ldct.py standing in for
``meddiff ldct-denoise`` (same arguments, events and exit codes; a 3x3 in-plane mean filter
instead of the model)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import slicer

import mrml_fixtures
from LDCTDenoiseLib import logic as ldct
from LDCTDenoiseLib.logic import SAMPLE, LDCTDenoiseLogic
from MedDiffusionUtilsLib import nodes
from MedDiffusionUtilsLib.runner import RunState, TaskFailed

FAKE_LDCT = Path(__file__).resolve().parent / "fake_ldct.py"
MODULE_DIR = mrml_fixtures.REPO_ROOT / "LDCTDenoise"
#: a noisy chest-like CT in HU with a 700 HU bone in the middle
ct_array = partial(mrml_fixtures.chest_array, (5, 12, 14), lesion_hu=700.0, noise_hu=25.0)


def mean3x3(volume: np.ndarray) -> np.ndarray:
    """The fake model by hand: each slice's 3x3 mean with edge voxels repeated."""
    volume = volume.astype(np.float64)
    padded = np.pad(volume, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows, columns = volume.shape[1:]
    return sum(padded[:, dj:dj + rows, di:di + columns] for dj in range(3) for di in range(3)) / 9


@pytest.fixture
def ct(scene):
    node = mrml_fixtures.add_volume(scene, ct_array(), name="LDCT")
    mrml_fixtures.put_in_study(scene, node)
    return node


@pytest.fixture
def make_logic(scene):
    def make(slice_s: float = 0.0) -> LDCTDenoiseLogic:
        return LDCTDenoiseLogic(scene, backend=[sys.executable, str(FAKE_LDCT)],
                                environment={"FAKE_LDCT_SLICE_S": str(slice_s)})
    return make


# -- a run ------------------------------------------------------------------------------------
def test_denoise_adds_a_new_volume_on_the_input_grid_and_leaves_the_input_alone(
        scene, ct, make_logic, run_folder):
    logic = make_logic()
    checksum = mrml_fixtures.volume_checksum(ct)
    node_mtime, image_mtime = ct.GetMTime(), ct.GetImageData().GetMTime()
    original = slicer.util.arrayFromVolume(ct).copy()
    before = mrml_fixtures.node_ids(scene)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-ldct-10", steps=4, device="cpu")
    events = []

    denoised = logic.run(parameters, on_event=events.append, timeout=60)["output"]

    assert denoised.GetID() not in before
    assert denoised.GetName() == "LDCT denoised"
    assert np.array_equal(nodes.ijk_to_ras(denoised), mrml_fixtures.oblique_ijk_to_ras())
    assert np.array_equal(nodes.ijk_to_ras(denoised), nodes.ijk_to_ras(ct))
    assert np.allclose(slicer.util.arrayFromVolume(denoised), mean3x3(original), atol=1e-3)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    # the input: same voxels, same geometry, not even touched
    assert mrml_fixtures.volume_checksum(ct) == checksum
    assert (ct.GetMTime(), ct.GetImageData().GetMTime()) == (node_mtime, image_mtime)
    # placed in the input's study, linked to its input, with what made it
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(denoised)) == \
        hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct))
    assert LDCTDenoiseLogic.input_of(denoised) is ct
    assert denoised.GetAttribute("MedDiffusion.model") == "fake-ldct-10"
    assert denoised.GetAttribute("MedDiffusion.steps") == "4"
    # the chosen options reached the backend; one progress event per slice
    assert any(e.get("message") == "fake-ldct-10, 4 steps on cpu: 5 slices" for e in events)
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress == [(n, 5) for n in range(1, 6)]
    assert {e["stage"] for e in events if e["event"] == "progress"} == {"denoise"}
    assert list(run_folder.iterdir()) == []  # the run's folder is gone


def test_every_run_adds_a_new_volume_unless_one_is_chosen(scene, ct, make_logic):
    logic = make_logic()
    first = logic.denoise(ct, model="fake-ldct-25")
    second = logic.denoise(ct, model="fake-ldct-25")
    assert first.GetID() != second.GetID()
    assert first.GetName() == second.GetName() == "LDCT denoised"

    chosen = mrml_fixtures.add_volume(scene, np.zeros((2, 3, 4), np.int16), name="previous result",
                                      ijk_to_ras=np.eye(4))
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    result = logic.denoise(ct, output_volume=chosen, model="fake-ldct-25")
    assert result is chosen and chosen.GetName() == "previous result"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count
    assert np.allclose(slicer.util.arrayFromVolume(chosen),
                       mean3x3(slicer.util.arrayFromVolume(ct)), atol=1e-3)
    assert np.array_equal(nodes.ijk_to_ras(chosen), nodes.ijk_to_ras(ct))


def test_the_input_is_never_the_output(scene, ct, make_logic):
    logic = make_logic()
    with pytest.raises(ValueError, match="input is never overwritten"):
        logic.denoise(ct, output_volume=ct)
    labels = mrml_fixtures.add_volume(scene, np.zeros((5, 12, 14), np.int16), name="labels",
                                      node_class="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(ValueError, match="is a label map"):
        logic.denoise(ct, output_volume=labels)


def test_cancel_leaves_no_node_and_no_files(scene, ct, make_logic, run_folder):
    logic = make_logic(slice_s=0.5)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-ldct-25")
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
    assert not workdir.exists()
    assert list(run_folder.iterdir()) == []
    assert mrml_fixtures.volume_checksum(ct) == checksum
    assert events[-1]["event"] == "cancelled"


def test_an_input_removed_during_the_run_fails_cleanly(scene, ct, make_logic):
    logic = make_logic(slice_s=0.1)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-ldct-25")
    task = logic.start(parameters)
    scene.RemoveNode(ct)  # e.g. the user deleted it while the model ran
    assert task.wait(timeout=30) == RunState.FAILED
    assert task.error == "importing the results failed: 'LDCT' was removed from the scene during the run"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, make, message", [
    ("MR-like", lambda scene: mrml_fixtures.add_volume(scene, ct_array(air=0.0) + 500, name="MR-like"),
     "'MR-like' does not look like CT in Hounsfield units: almost no voxel is below -200 HU"),
    ("stored values", lambda scene: mrml_fixtures.add_volume(scene, ct_array() + 1024, name="raw"),
     "'raw' does not look like CT"),
    ("too bright", lambda scene: mrml_fixtures.add_volume(scene, ct_array() * 20, name="bright"),
     "'bright' does not look like CT in Hounsfield units: .* above the 4000 HU of dense bone"),
    ("constant", lambda scene: mrml_fixtures.add_volume(scene, np.full((3, 8, 8), -1000, np.int16),
                                                        name="flat"),
     "'flat' has the same value -1000 almost everywhere"),
    ("label map", lambda scene: mrml_fixtures.add_volume(scene, np.zeros((3, 8, 8), np.int16),
                                                         name="labels",
                                                         node_class="vtkMRMLLabelMapVolumeNode"),
     "'labels' is a vtkMRMLLabelMapVolumeNode, not an image"),
])
def test_input_that_is_not_ct_is_refused_before_anything_runs(scene, make_logic, run_folder, name,
                                                               make, message):
    volume = make(scene)
    logic = make_logic()
    logic.parameters()
    before = mrml_fixtures.node_ids(scene)
    with pytest.raises(ValueError, match=message):
        logic.denoise(volume)
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []


def test_no_input_and_colour_input_are_refused(scene, make_logic):
    logic = make_logic()
    with pytest.raises(ValueError, match="no input volume: select the low-dose CT volume"):
        logic.run(logic.parameters())
    colour = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    slicer.util.updateVolumeFromArray(colour, np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="'photo' has 3 components per voxel"):
        logic.check_input(colour)


def test_dicom_modality_decides_when_present(scene):
    def dicom_series(array, modality, name):
        node = mrml_fixtures.add_volume(scene, array, name=name)
        mrml_fixtures.put_in_study(scene, node)
        hierarchy = scene.GetSubjectHierarchyNode()
        hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(node), "DICOM.Modality", modality)
        return node

    with pytest.raises(ValueError, match="'head' is a DICOM MR series; LDCT Denoise expects a CT"):
        LDCTDenoiseLogic(scene).check_input(dicom_series(ct_array(), "MR", "head"))
    # a CT series cropped to soft tissue has no air, and is still accepted
    LDCTDenoiseLogic(scene).check_input(dicom_series(ct_array(air=60.0), "CT", "liver crop"))
    with pytest.raises(ValueError, match="does not look like CT"):
        LDCTDenoiseLogic(scene).check_input(mrml_fixtures.add_volume(scene, ct_array(air=60.0), name="no air"))


def test_a_cropped_ct_series_runs_through_the_backend_check(scene, make_logic):
    crop = mrml_fixtures.add_volume(scene, ct_array(air=60.0), name="liver crop")
    mrml_fixtures.put_in_study(scene, crop)
    hierarchy = scene.GetSubjectHierarchyNode()
    hierarchy.SetItemAttribute(hierarchy.GetItemByDataNode(crop), "DICOM.Modality", "CT")
    denoised = make_logic().denoise(crop, model="fake-ldct-25", timeout=60)  # no air: --no-hu-check
    assert denoised.GetName() == "liver crop denoised"


def test_backend_errors_reach_the_user(ct, make_logic):
    with pytest.raises(TaskFailed, match="unknown model 'no-such-model'"):
        make_logic().denoise(ct, model="no-such-model")


# -- difference and views ---------------------------------------------------------------------
def test_difference_volume_on_request(scene, ct, make_logic):
    logic = make_logic()
    original = slicer.util.arrayFromVolume(ct).astype(np.float32)
    parameters = logic.parameters()
    parameters.update(inputVolume=ct, model="fake-ldct-25", differenceVolume=True)

    created = logic.run(parameters, timeout=60)
    denoised, difference = created["output"], created["difference"]

    assert difference.GetName() == "LDCT denoised difference"
    assert np.allclose(slicer.util.arrayFromVolume(difference),
                       mean3x3(original) - original, atol=1e-3)
    assert np.array_equal(nodes.ijk_to_ras(difference), nodes.ijk_to_ras(ct))
    assert difference.GetDisplayNode().GetLevel() == 0.0  # centred on "no change"

    parameters.differenceVolume = False
    alone = logic.run(parameters, timeout=60)["output"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 4  # input, 2 results, 1 map
    later = logic.difference(ct, alone)
    assert np.array_equal(slicer.util.arrayFromVolume(later),
                          slicer.util.arrayFromVolume(alone) - original)


def test_comparison_views_show_before_and_after(scene, ct, slice_views, make_logic):
    logic = make_logic()
    denoised = logic.denoise(ct, model="fake-ldct-25")
    checksum = mrml_fixtures.volume_checksum(ct)
    red, yellow = slice_views["Red"][1], slice_views["Yellow"][1]

    logic.show_comparison(ct, denoised)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert (red.GetBackgroundVolumeID(), yellow.GetBackgroundVolumeID()) == (ct.GetID(), denoised.GetID())
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    assert slice_views["Red"][0].GetViewGroup() == slice_views["Yellow"][0].GetViewGroup()
    assert red.GetForegroundOpacity() == 0.0

    logic.set_fade(ct, denoised, 0.4)
    assert (red.GetForegroundVolumeID(), red.GetForegroundOpacity()) == (denoised.GetID(), 0.4)
    difference = logic.difference(ct, denoised)
    logic.show_after(difference)
    assert yellow.GetBackgroundVolumeID() == difference.GetID()
    assert mrml_fixtures.volume_checksum(ct) == checksum


# -- model catalogue --------------------------------------------------------------------------
def test_model_choices_show_dose_speed_and_step_range():
    entries = [
        SimpleNamespace(id="corediff-25", version="1.0", description="CoreDiff, quarter dose",
                        training_data="phantom", architecture={"network": "CLEARNet", "kwargs": {}},
                        metrics={"dose": 0.25, "ms_per_slice_cpu": 118.4, "psnr": 43.1}),
        {"id": "corediff-5", "version": "0.3",
         "architecture": {"network": "CLEARNet", "diffusion": {"num_timesteps": 5},
                          "sampler": {"steps": 4, "cpu_steps": 2}},
         "metrics": {"dose": "5 %", "ms_per_slice_cpu": 2500, "ms_per_slice_gpu": 12}},
        SimpleNamespace(id="bare", version="2", description="", training_data="", metrics={},
                        architecture={"network": "CLEARNet", "diffusion": {"num_timesteps": 50},
                                      "sampler": {"steps": 30}}),
    ]
    quarter, five, bare = ldct.model_choices(entries)

    assert quarter.summary == "trained for 25 % dose · about 118 ms per slice on CPU · 10 steps"
    assert (quarter.max_steps, quarter.default_steps, quarter.cpu_steps) == (10, 10, 10)
    assert quarter.tooltip == ("corediff-25 (version 1.0)\n25 % dose, about 118 ms per slice on CPU\n"
                               "CoreDiff, quarter dose\nTraining data: phantom")
    assert five.summary == ("trained for 5 % dose · about 2.5 s per slice on CPU, about 12 ms per "
                            "slice on GPU · 4 steps (2 on CPU)")
    assert (five.max_steps, five.default_steps_for("cuda"), five.default_steps_for("auto"),
            five.default_steps_for("cpu")) == (5, 4, 4, 2)
    # the module offers at most CoreDiff's 10 steps
    assert (bare.max_steps, bare.default_steps, bare.summary) == (10, 10, "10 steps")
    assert (bare.traits, bare.tooltip) == ("", "bare (version 2)")


def test_shipped_ldct_cards_show_their_dose_and_cpu_speed():
    """The catalogue entries as ``meddiff info`` hands them to the module (plain JSON)."""
    import json

    catalogue = json.loads((mrml_fixtures.REPO_ROOT / "meddiffusion" / "models" / "catalog.json").read_text())
    cards = [card for card in catalogue["models"] if card["task"] == "ldct"]
    assert cards, "no shipped LDCT model"
    for choice, card in zip(ldct.model_choices(cards), cards):
        dose = card["metrics"]["dose"]  # one fraction, or the [low, high] range a model was trained over
        low, high = dose if isinstance(dose, list) else (dose, dose)
        words = f"{low * 100:g} %" if low == high else f"{low * 100:g}-{high * 100:g} %"
        assert 0 < low <= high < 1 and choice.summary.startswith(f"trained for {words} dose · ")
        if "ms_per_slice_cpu" in card["metrics"]:
            assert 0 < card["metrics"]["ms_per_slice_cpu"] < 60_000
            assert "per slice on CPU" in choice.summary and choice.traits in choice.tooltip


def test_parameter_defaults_and_limits(scene):
    parameters = LDCTDenoiseLogic(scene).parameters()
    assert (parameters.steps, parameters.device, parameters.model) == (10, "auto", "")
    assert parameters.outputVolume is None and parameters.differenceVolume is False
    assert parameters.missing() == ["inputVolume"]
    with pytest.raises(ValueError, match="'steps' must be between 1 and 10"):
        parameters.steps = 11
    with pytest.raises(ValueError, match="'device' must be one of auto, cpu, cuda"):
        parameters.device = "tpu"


# -- sample data and packaging ----------------------------------------------------------------
def test_sample_data_is_registered_with_a_local_file(tmp_path):
    module_dir = tmp_path / "LDCTDenoise"
    module_dir.mkdir()
    calls = []
    assert SAMPLE.register(module_dir, register=lambda **kw: calls.append(kw)) is False
    assert calls == []  # no file, nothing offered

    sample = tmp_path / "meddiffusion" / "data" / "sample_ldct_chest.nrrd"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(b"NRRD0004\nnot really a volume\n")
    assert SAMPLE.register(module_dir, register=lambda **kw: calls.append(kw))
    (call,) = calls
    assert call["uris"] == "file://" + str(sample.resolve())
    assert call["fileNames"] == "sample_ldct_chest.nrrd" and call["category"] == "MedDiffusion"
    assert call["checksums"] == "SHA256:" + hashlib.sha256(sample.read_bytes()).hexdigest()


def test_sample_data_resolves_from_the_repository_layout():
    expected = mrml_fixtures.REPO_ROOT / "meddiffusion" / "data" / "sample_ldct_chest.nrrd"
    assert SAMPLE.file(MODULE_DIR) == (expected if expected.is_file() else None)


def test_cmake_lists_every_lib_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in sorted((MODULE_DIR / "LDCTDenoiseLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} missing from CMakeLists.txt"
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "LDCTDenoise")).exists()
    assert "WITH_GENERIC_TESTS" in cmake
    assert "slicer_add_python_unittest" in (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()


def test_logic_imports_without_qt():
    code = ("import sys; sys.path[:0] = sys.argv[1:]; import LDCTDenoiseLib.logic; "
            "loaded = {'qt', 'PySide6', 'PythonQt'} & set(sys.modules); "
            "sys.exit(f'Qt imported: {loaded}' if loaded else 0)")
    completed = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR),
                                str(mrml_fixtures.REPO_ROOT / "MedDiffusionUtils")],
                               capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
