"""Training logic on a real MRML scene: scene volumes written for the backend, a real detached
``meddiff train`` followed into a table node, charts and preview volumes, Cancel, reconnect, Register."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import slicer

import mrml_fixtures
from MedDiffusionUtilsLib import environment, nodes
from MedDiffusionUtilsLib.runner import RunState
from TrainingLib.logic import (LAYOUT_ID, PREVIEW_VIEWS, RunMonitor, TrainingLogic, gate_verdict,
                               patient_of, resume_command, training_tasks)

#: the tiny LDCT run of the CLI tests: a 48² phantom slab, seconds on one thread
TINY = ("--size", "48", "--slices", "3", "--slabs", "1", "--val-slabs", "1", "--crop", "32",
        "--pixel-range", "4", "5", "--noise-range", "10", "20")


def detach_supported() -> bool:
    """Whether the backend offers ``meddiff train --detach`` yet (it lands beside this module)."""
    result = subprocess.run([sys.executable, "-m", "meddiffusion", "train", "ldct", "--help"],
                            capture_output=True, text=True, timeout=60)
    return "--detach" in result.stdout


needs_detach = pytest.mark.skipif(not detach_supported(), reason="the backend has no 'meddiff train --detach' yet")


@pytest.fixture
def models(tmp_path, monkeypatch):
    """An empty user model folder for this test and its children; one torch thread (shared CI cores)."""
    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDDIFF_THREADS", "1")
    return tmp_path / "models"


@pytest.fixture
def logic(scene, tmp_path):
    logic = TrainingLogic(scene)
    logic.parameters().runsFolder = str(tmp_path / "runs")
    return logic


def tiny_parameters(logic, **values) -> None:
    logic.select_task("ldct")
    logic.parameters().update(**{"config": "tiny", "steps": 6, "batchSize": 2, "device": "cpu", "precision": "fp32",
                                 "extraOptions": " ".join(TINY), **values})


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


# -- choices ---------------------------------------------------------------------------------------
def test_every_task_with_a_recipe_is_offered_with_its_defaults(logic):
    names = [task.name for task in training_tasks()]
    assert names[:2] == ["ldct", "motion"]
    motion = logic.select_task("motion")
    parameters = logic.parameters()
    assert (parameters.task, parameters.config, parameters.steps, parameters.batchSize) == ("motion", "small", 6000, 8)
    assert parameters.learningRate == pytest.approx(5e-4) and parameters.source == "phantom"
    assert motion.sources == ("phantom", "paired-folder", "clean-folder")
    parameters.source = "lowdose-folder"
    assert logic.missing() == ["motion cannot learn from low-dose volumes only (self-supervised)"]
    logic.select_task("ldct")
    parameters.update(source="paired-folder", dataFrom="folder")
    assert logic.missing() == ["choose a folder"]
    parameters.update(dataFrom="manifest", dataPath="/data/pairs.txt")
    assert logic.missing() == ["the manifest must be a .csv file"]


def test_the_command_line_carries_every_setting(logic, tmp_path):
    tiny_parameters(logic, baseModel="ldct-corediff-small", source="paired-folder", dataFrom="folder",
                    dataPath=str(tmp_path), valPatients=2, previewEvery=5, gpus=2, learningRate=3e-4)
    arguments = logic.train_arguments(tmp_path / "run", str(tmp_path))
    assert arguments[:2] == ["ldct", "--out"] and arguments[-1] == "--detach"
    text = " ".join(arguments)
    for expected in ("--steps 6", "--batch-size 2", "--lr 0.0003", "--device cpu", "--precision fp32",
                     "--config tiny", "--from-model ldct-corediff-small", "--source paired-folder",
                     f"--data {tmp_path}", "--val-patients 2", "--gpus 2", "--preview-every 5", "--size 48"):
        assert expected in text
    info = {"command": "meddiff train " + " ".join(arguments) + " --events jsonl"}
    again = resume_command(info)
    assert again[-2:] == ["--resume", "--detach"] and "--events" not in again and again.count("--detach") == 1


def parsed(arguments):
    """``arguments`` as ``meddiff train`` parses them (a refused one exits)."""
    from meddiffusion.cli import build_parser

    return build_parser().parse_args(["train", *arguments])


def test_the_tasks_own_options_come_from_its_recipe_and_reach_the_command_line(logic, tmp_path):
    choice = logic.select_task("cardiac4d")
    options = {option.flag: option for option in choice.options}
    assert [(flag, options[flag].kind) for flag in ("--variant", "--vae", "--anatomy", "--studies", "--kl-weight")] == [
        ("--variant", "choice"), ("--vae", "model"), ("--anatomy", "model"), ("--studies", "int"),
        ("--kl-weight", "float")]
    assert options["--variant"].choices == ("vae", "anatomy", "motion") and "--data" not in options
    assert options["--kl-weight"].decimals == 9 and options["--vae"].label == "Vae model:"
    read = [option.flag for option in logic.read_options()]
    assert "--kl-weight" in read and "--vae" not in read and "--anatomy" not in read  # a VAE run reads no VAE
    for flag, value in (("--variant", "motion"), ("--vae", "cardiac4d-vae-small"), ("--anatomy", "my-anatomy"),
                        ("--studies", 8.0), ("--kl-weight", 1e-6), ("--cfg-dropout", 0.1)):
        logic.set_task_option(flag, value)
    assert logic.task_options() == {"--variant": "motion", "--vae": "cardiac4d-vae-small", "--anatomy": "my-anatomy",
                                    "--studies": 8, "--kl-weight": 1e-6}  # --cfg-dropout 0.1 is the default
    arguments = logic.train_arguments(tmp_path / "run")
    text = " ".join(arguments)
    assert "--variant motion --vae cardiac4d-vae-small --anatomy my-anatomy --studies 8 --detach" in text
    assert "--kl-weight" not in text  # the VAE's weight, not read by the motion LDM
    args = parsed(arguments)
    assert (args.variant, args.vae, args.anatomy, args.studies) == ("motion", "cardiac4d-vae-small", "my-anatomy", 8)
    logic.set_task_option("--variant", "vae")
    arguments = logic.train_arguments(tmp_path / "run")
    assert "--variant" not in arguments and "--anatomy" not in arguments and "--kl-weight" in arguments
    args = parsed(arguments)
    assert (args.variant, args.anatomy, args.kl_weight) == ("vae", None, 1e-6)  # the CLI refuses --anatomy here
    with pytest.raises(ValueError, match="one of vae, anatomy, motion"):
        logic.set_task_option("--variant", "gan")
    with pytest.raises(ValueError, match="whole number"):
        logic.set_task_option("--studies", 2.5)
    with pytest.raises(ValueError, match="no option --dose"):
        logic.set_task_option("--dose", 0.1)
    logic.parameters().taskOptions = '{"--dose": 0.1}'  # a scene saved with another task's options
    assert logic.missing() == ["cardiac4d has no option --dose"]
    logic.select_task("spect")
    assert logic.task_options() == {} and logic.missing() == []


def nm_volume(scene, name: str, patient: str, seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    node = mrml_fixtures.add_volume(scene, (rng.random((3, 16, 16)) * 100 * scale).astype(np.float32), name=name)
    mrml_fixtures.put_in_study(scene, node, patient=patient, study="SPECT")
    return node


def test_a_spect_teacher_gets_each_studys_ct_or_mumap_in_its_manifest(logic, scene, tmp_path):
    from meddiffusion.tasks.spect import userdata

    logic.select_task("spect")
    logic.set_task_option("--variant", "teacher")
    logic.parameters().source = "paired-folder"
    assert logic.extras() == {"ct": "CT (HU)", "mumap": "μ-map (1/cm)"} and tuple(logic.extras()) == userdata.EXTRAS
    studies = [(nm_volume(scene, f"{patient} NAC", patient, seed), nm_volume(scene, f"{patient} AC", patient, seed, 4))
               for patient, seed in (("Alice", 1), ("Bob", 2))]
    ct = mrml_fixtures.add_volume(scene, np.full((5, 20, 20), -1000, np.int16), name="Alice CT", ijk_to_ras=np.eye(4))
    mu = mrml_fixtures.add_volume(scene, np.full((3, 16, 16), 0.15, np.float32), name="Bob mu")
    rows = [(*studies[0], ct, None), (*studies[1], None, mu)]
    logic.set_scene_volumes(rows)
    assert logic.scene_volumes() == rows and logic.missing() == []
    manifest = logic.write_scene_data(tmp_path / "run", "paired-folder")
    lines = list(csv.DictReader(manifest.open()))
    assert list(lines[0]) == ["input", "target", "patient", "ct", "mumap"]
    assert [(line["patient"], line["ct"], line["mumap"]) for line in lines] == [
        ("Alice", "ct/001-Alice_NAC.nrrd", ""), ("Bob", "", "mumap/002-Bob_NAC.nrrd")]
    back = nodes.read_volume(manifest.parent / lines[0]["ct"], scene=scene)
    assert np.allclose(nodes.ijk_to_ras(back), np.eye(4)) and back.GetImageData().GetDimensions() == (20, 20, 5)
    args = parsed(logic.train_arguments(tmp_path / "run", str(manifest)))
    assert (args.variant, args.source, args.data) == ("teacher", "paired-folder", str(manifest))
    entries = userdata.list_studies(args)  # the backend's reader: a CT or μ-map for every study of the teacher
    assert [(entry.extra("ct"), entry.extra("mumap")) for entry in entries] == [
        (manifest.parent / "ct" / "001-Alice_NAC.nrrd", None), (None, manifest.parent / "mumap" / "002-Bob_NAC.nrrd")]
    logic.select_task("ldct")  # pairs without further volumes: editing the rows drops the SPECT ones
    assert logic.extras() == {} and logic.scene_volumes() == [row[:2] for row in rows]
    logic.set_scene_volumes(logic.scene_volumes())
    logic.select_task("spect")
    assert logic.scene_volumes() == [(*row[:2], None, None) for row in rows]


def test_start_refuses_spect_rows_the_reader_would_refuse(logic, scene):
    logic.select_task("spect")
    logic.parameters().source = "paired-folder"
    studies = [(nm_volume(scene, f"{patient} NAC", patient, seed), nm_volume(scene, f"{patient} AC", patient, seed, 4))
               for patient, seed in (("Alice", 1), ("Bob", 2))]
    ct = mrml_fixtures.add_volume(scene, np.full((5, 20, 20), -1000, np.int16), name="Alice CT", ijk_to_ras=np.eye(4))
    mu = mrml_fixtures.add_volume(scene, np.full((3, 16, 16), 0.15, np.float32), name="Alice mu")
    logic.set_scene_volumes([(*studies[0], ct, mu), (*studies[1], None, None)])
    problems = logic.missing()
    assert problems[0] == "row 1: both a CT and a μ-map given; give one (the teacher attends to one attenuation map)"
    assert len(problems) == 2                   # and the default student distils with the teacher, which needs μ
    logic.set_scene_volumes([(*studies[0], ct, None), (*studies[1], None, None)])
    assert "the student's attention transfer runs the teacher" in " ".join(logic.missing())
    assert "1 of 2 studies have no CT or μ-map (row 2)" in " ".join(logic.missing())
    logic.set_task_option("--at-weight", 0.0)                             # a student without distillation
    assert logic.missing() == []
    logic.set_task_option("--variant", "teacher")
    assert "the teacher variant attends to each patient's attenuation map" in " ".join(logic.missing())
    with pytest.raises(ValueError, match="row 2"):
        logic.start()


# -- volumes from the scene ----------------------------------------------------------------------
def pair(scene, patient: str, seed: int, ijk_to_ras=None):
    low = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((3, 16, 16), noise_hu=60.0, seed=seed),
                                   name=f"{patient} low dose", ijk_to_ras=ijk_to_ras)
    full = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((3, 16, 16), noise_hu=10.0, seed=seed),
                                    name=f"{patient} normal dose")
    study = mrml_fixtures.put_in_study(scene, low, patient=patient)
    hierarchy = scene.GetSubjectHierarchyNode()
    hierarchy.CreateItem(study, full)
    return low, full


def test_scene_pairs_are_written_with_their_geometry_and_patient(logic, scene, tmp_path):
    pairs = [pair(scene, "Alice", 1), pair(scene, "Bob", 2)]
    logic.set_scene_volumes(pairs)
    assert logic.scene_volumes() == pairs
    assert patient_of(pairs[1][1]) == "Bob"
    manifest = logic.write_scene_data(tmp_path / "run", "paired-folder")
    rows = list(csv.DictReader(manifest.open()))
    assert [(row["patient"], row["input"], row["target"]) for row in rows] == [
        ("Alice", "input/001-Alice_low_dose.nrrd", "target/001-Alice_low_dose.nrrd"),
        ("Bob", "input/002-Bob_low_dose.nrrd", "target/002-Bob_low_dose.nrrd")]
    for (low, full), row in zip(pairs, rows):
        for node, column in ((low, "input"), (full, "target")):
            back = nodes.read_volume(manifest.parent / row[column], scene=scene)
            assert np.array_equal(slicer.util.arrayFromVolume(back), slicer.util.arrayFromVolume(node))
            assert np.allclose(nodes.ijk_to_ras(back), nodes.ijk_to_ras(node), atol=1e-6)
    single = logic.write_scene_data(tmp_path / "clean", "clean-folder")
    assert single.read_text().splitlines() == ["volume,patient", "target/001-Alice_low_dose.nrrd,Alice",
                                               "target/002-Bob_low_dose.nrrd,Bob"]


def test_scene_data_is_refused_with_a_reason(logic, scene, tmp_path):
    first, second = pair(scene, "Alice", 1), pair(scene, "Alice", 2)
    with pytest.raises(ValueError, match="belong to patient 'Alice'"):
        logic.write_scene_data(tmp_path, "paired-folder", [first, second])
    shifted = np.eye(4)
    shifted[:3, 3] = (5.0, 0.0, 0.0)
    moved = pair(scene, "Carol", 3, ijk_to_ras=shifted)
    with pytest.raises(nodes.GeometryMismatch, match="Carol normal dose"):
        logic.write_scene_data(tmp_path, "paired-folder", [first, moved])
    with pytest.raises(ValueError, match="input and a target"):
        logic.write_scene_data(tmp_path, "paired-folder", [first, (moved[0], None)])


# -- curves, from a run folder written line by line ------------------------------------------------
def test_the_curve_table_grows_with_metrics_lines_and_restarts_after_a_resume(scene, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"task": "ldct", "state": "done"}))
    monitor = RunMonitor(scene, folder)
    metrics = folder / "metrics.jsonl"
    lines = [{"split": "val", "step": 0, "loss": 0.5}, {"split": "train", "step": 10, "loss": 0.4},
             {"split": "val", "step": 10, "loss": 0.3, "psnr": 31.5}]
    counts = []
    for line in lines:
        with metrics.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        counts.append(monitor.poll().new_rows)
    with metrics.open("a") as handle:
        handle.write('{"split": "train", "step": 2')  # a line still being written waits
    assert monitor.poll().new_rows == 0
    curves = monitor.curves
    assert counts == [1, 1, 0] and curves.row_count == 2
    assert list(curves.values("step")) == [0, 10]
    assert np.isnan(curves.values("train loss")[0]) and curves.values("val loss").tolist() == [0.5, 0.3]
    assert np.isnan(curves.values("val psnr")[0]) and curves.values("val psnr")[1] == 31.5
    series = [curves.loss_chart.GetNthPlotSeriesNode(i) for i in range(curves.loss_chart.GetNumberOfPlotSeriesNodes())]
    assert [(s.GetXColumnName(), s.GetYColumnName(), s.GetTableNode()) for s in series] == [
        ("step", "train loss", curves.table), ("step", "val loss", curves.table)]
    assert list(curves.metric_charts) == ["val psnr"]
    metrics.write_text(json.dumps({"split": "val", "step": 0, "loss": 0.5}) + "\n")  # resumed at step 0
    assert monitor.poll().new_rows == 1 and curves.row_count == 1
    again = RunMonitor(scene, folder)  # reconnecting reuses the run's nodes
    assert again.curves.table is curves.table and again.poll().new_rows == 1


def test_a_run_whose_process_is_gone_reads_as_stopped(logic, scene, tmp_path):
    folder = tmp_path / "runs" / "ldct-old"
    folder.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    (folder / "run.json").write_text(json.dumps({"task": "ldct", "state": "running", "pid": process.pid,
                                                 "started": "2026-01-01T00:00:00", "command": "meddiff train ldct"}))
    runs = logic.runs()
    assert [(Path(run["folder"]).name, run["state"]) for run in runs] == [("ldct-old", "stopped")]


# -- a real detached run ---------------------------------------------------------------------------
def launch(logic, **values):
    tiny_parameters(logic, **values)
    started = logic.start()
    assert started.task.wait(timeout=120) == RunState.DONE, started.task.error
    return started.folder


@needs_detach
def test_a_detached_run_grows_its_curves_and_preview_then_cancel_checkpoints_and_resume_continues(
        logic, mrml, scene, models):
    views = mrml_fixtures.add_slice_views(mrml)
    plot_view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode")
    folder = launch(logic, steps=3000, previewEvery=10,
                    extraOptions=" ".join(TINY) + " --val-every 10 --ckpt-every 0")
    monitor = logic.attach(folder)
    wait_for(lambda: monitor.poll().state == "running" and monitor.curves.row_count >= 3 and monitor.preview_step)
    rows = monitor.curves.row_count
    wait_for(lambda: monitor.poll().state == "running" and monitor.curves.row_count > rows)  # grows as it runs
    assert monitor.progress["stage"] == "train" and monitor.eta_s() is not None
    for kind, (name, view) in PREVIEW_VIEWS.items():
        node = monitor.preview[kind]
        assert node.GetName() == name and views[view][1].GetBackgroundVolumeID() == node.GetID()
        assert views[view][1].GetLinkedControl() and views[view][0].GetOrientation() == "Axial"
    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == LAYOUT_ID
    assert plot_view.GetPlotChartNodeID() == monitor.curves.loss_chart.GetID()
    shown = monitor.preview_step
    wait_for(lambda: monitor.poll() and monitor.preview_step > shown)  # a newer step replaces the model image

    logic.cancel(folder)
    status = wait_for(lambda: monitor.poll().finished and monitor.status)
    assert status.state == "cancelled", status.info
    checkpoints = sorted(folder.glob("checkpoint_step*.safetensors"))
    assert checkpoints, "Cancel writes a checkpoint"
    stopped_at = int(checkpoints[-1].stem.split("step")[1])
    with pytest.raises(ValueError, match="not running"):
        logic.cancel(folder)

    again = logic.resume(folder)
    assert again.task.wait(timeout=120) == RunState.DONE, again.task.error
    monitor = logic.attach(folder)
    wait_for(lambda: monitor.poll().state == "running" and monitor.progress
             and monitor.progress.get("done", 0) > stopped_at)
    assert "resumed from" in " ".join(str(e.get("message")) for e in monitor.events_seen)
    logic.cancel(folder)
    assert wait_for(lambda: monitor.poll().finished and monitor.status).state == "cancelled"


@needs_detach
def test_reconnecting_to_a_finished_run_shows_its_curves_and_register_lists_the_model(logic, scene, models):
    folder = launch(logic, previewEvery=2, extraOptions=" ".join(TINY) + " --val-every 2 --ckpt-every 0")
    wait_for(lambda: read_state(folder) == "done", timeout=120)
    again = TrainingLogic(scene)  # the module reopened: it finds the run under the runs folder
    again.parameters().runsFolder = logic.parameters().runsFolder
    assert [(Path(run["folder"]), run["state"]) for run in again.runs()] == [(folder, "done")]
    monitor = again.attach(folder)
    assert monitor.status.state == "done" and monitor.curves.row_count == 4  # val at 0, 2, 4, 6 (+ train at 6)
    assert monitor.preview_step == 6
    assert gate_verdict(folder) == ("no parent to compare with (trained from scratch)", True)
    assert "my-ldct" not in [entry.id for entry in environment.model_catalogue("ldct")[0]]
    registering = again.register(folder, "my-ldct")
    assert registering.wait(timeout=120) == RunState.DONE, registering.error
    entry = next(entry for entry in environment.model_catalogue("ldct")[0] if entry.id == "my-ldct")
    assert entry.user and entry.training_command.startswith("meddiff train ldct --config tiny")
    with pytest.raises(ValueError, match="model id"):
        again.register(folder, "my ldct")


def read_state(folder) -> str:
    return json.loads((Path(folder) / "run.json").read_text()).get("state", "")


def test_a_preview_image_that_appears_later_is_put_in_its_view(mrml, scene, tmp_path):
    from meddiffusion.io import Volume, write_volume

    views = mrml_fixtures.add_slice_views(mrml)
    folder = tmp_path / "run"
    (folder / "preview").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"task": "ldct", "state": "running", "pid": None}))
    image = Volume(np.zeros((1, 8, 8), np.float32))
    for kind in ("input", "reference"):
        write_volume(image, folder / "preview" / f"{kind}.nrrd")
    monitor = RunMonitor(scene, folder)
    monitor.poll()
    assert views["Yellow"][1].GetBackgroundVolumeID() is None  # no model image yet
    write_volume(image, folder / "preview" / "step_000010.nrrd")
    monitor.poll()
    name, view = PREVIEW_VIEWS["model"]
    assert views[view][1].GetBackgroundVolumeID() == monitor.preview["model"].GetID() and monitor.preview_step == 10
