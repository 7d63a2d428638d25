"""Every registered task command goes through the same faults; a task registered later is covered too.

For each task the suite writes a small valid input from the task's input rule and limits, then
checks: bad and colliding paths, truncated and irregular inputs, an unwritable destination, an
unknown suffix and an input outside the task's limits all exit 2 before any output appears, and
SIGTERM at each stage of a real run (with the task's default model, or an untrained tiny one
for a task that ships none) ends all-or-nothing with an event that says which.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meddiffusion.checks import rule_for
from meddiffusion.io import Volume, write_volume
from meddiffusion.tasks.registry import all_tasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
import spect_phantom  # noqa: E402 - the synthetic perfusion study the SPECT module's tests share
import tiny_models  # noqa: E402 - untrained tiny networks as catalogue cards
from cli_runner import run_events  # noqa: E402 - (exit code, JSON events, stderr) of meddiff in a child process

TASKS = [spec for spec in all_tasks()]


def pet_array(slices: int) -> np.ndarray:
    """A small FDG PET in SUV: body 1.2, a liver 2.5, a lesion 8, with count noise (32² voxels a slice)."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:slices, :32, :32]
    suv = np.where(((y - 16) / 13) ** 2 + ((x - 16) / 15) ** 2 < 1, 1.2, 0.02)
    suv[((y - 20) / 6) ** 2 + ((x - 10) / 5) ** 2 < 1] = 2.5
    suv[(z - slices // 2) ** 2 + (y - 12) ** 2 + (x - 20) ** 2 < 2 ** 2] = 8.0
    return (rng.poisson(suv * 40) / 40).astype(np.float32)


#: no trained PET model ships: the module registers an untrained tiny one (RUN_ARGUMENTS names it)
TINY_MODELS = (tiny_models.petmr_model,)
TINY_CARDS = tuple(tiny_models.cardiac4d_models())
#: arguments a task needs to run on the small generic input (motion: where to look, since it holds no heart;
#: cardiac4d: its request, and the untrained cascade's implausible hearts kept)
RUN_ARGUMENTS = {"motion": ("--roi", 8, 40, 8, 40, 0, 4), "petmr": ("--model", "tiny-petmr"),
                 "cardiac4d": ("--model", "tiny-c4d-motion", "--diagnosis", "NOR", "--edv", 140, "--ef", 60,
                               "--slices", 8, "--frames", 10, "--keep-implausible", "--max-attempts", 1)}
#: tasks that generate from a request (no required input): the input faults do not apply
GENERATIVE = {spec.name for spec in TASKS if not any(port.required for port in spec.inputs)}
#: tasks whose outputs need anatomy the generic image lacks: (array maker by slice count, voxel mm, slices)
SAMPLES = {"spect": (lambda slices: spect_phantom.heart_array((slices, 32, 32)), (6.4, 6.4, 6.4), 24),
           "petmr": (pet_array, (3.0, 3.0, 3.0), 12)}


def sample_array(rule: str, slices: int) -> np.ndarray:
    """A small image the rule accepts: a body in air for CT, non-negative activity or signal otherwise."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:slices, :48, :48]
    body = (y - 24) ** 2 + (x - 24) ** 2 < 18 ** 2
    if rule == "ct":
        array = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, body.shape)
        array[(y - 24) ** 2 + (x - 30) ** 2 < 3 ** 2] = 700.0  # a bone
        return np.round(array).astype(np.float32)
    return np.where(body, 100.0, 0.0).astype(np.float32) + np.abs(rng.normal(0, 5, body.shape)).astype(np.float32)


def write_inputs(spec, folder: Path, *, slices: int | None = None, suffix: str = ".nrrd") -> dict[str, Path]:
    """The task's required inputs (optional ones, such as a CT beside a SPECT, are the task's own tests')."""
    limits = spec.limits
    make, spacing, usual = SAMPLES.get(spec.name, (None, (0.7, 0.7, 3.0), 4))
    count = slices if slices is not None else max(usual, limits.min_slices if limits else 1)
    paths = {}
    for port in (p for p in spec.inputs if p.required):
        rule = port.rule or spec.rule
        path = folder / f"{port.name}{suffix}"
        modality = {"ct": "CT", "emission": "PT", "mr": "MR"}[rule_for(rule).name]
        array = make(count) if make is not None else sample_array(rule, count)
        write_volume(Volume(array, spacing=spacing, modality=modality), path)
        paths[port.name] = path
    return paths


def command(spec, inputs: dict[str, Path], outputs: dict[str, Path], *extra) -> list[str]:
    """The arguments of ``meddiff`` that run ``spec`` from ``inputs`` into ``outputs``."""
    argv = [spec.command]
    for port in (p for p in spec.inputs if p.name in inputs):
        argv += [str(inputs[port.name])] if not port.flags else [port.flags[-1], str(inputs[port.name])]
    for port in spec.outputs:
        if port.name in outputs:
            argv += [port.flags[-1], str(outputs[port.name])]
    extra = (*RUN_ARGUMENTS.get(spec.name, ()), *extra)
    return argv + ["--threads", "1", "--steps", "1", "--events", "jsonl", *map(str, extra)]


def all_outputs(spec, folder: Path) -> dict[str, Path]:
    return {port.name: folder / "out" / (port.file or f"{port.name}.nrrd") for port in spec.outputs}


def refused(spec, tmp_path, inputs, outputs, *extra, match: str) -> None:
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, events, _ = run_events(*command(spec, inputs, outputs, *extra))
    assert code == 2 and events[-1]["event"] == "error" and events[-1]["kind"] == "input", events[-1:]
    assert match in events[-1]["message"], events[-1]["message"]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing the user had changed, nothing new appeared


@pytest.fixture(scope="module", autouse=True)
def tiny_model_folder(tmp_path_factory):
    """The children inherit ``MEDDIFF_MODEL_DIR``; the shipped models stay visible beside these."""
    from meddiffusion.catalog import register_user_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path_factory.mktemp("models")))
        for build in TINY_MODELS:
            register_user_model(*build())
        for entry, state in TINY_CARDS:
            register_user_model(entry, state)
        yield


@pytest.fixture(params=TASKS, ids=[spec.name for spec in TASKS])
def spec(request):
    return request.param


@pytest.fixture
def reading_spec(spec):
    """A task that reads an input: the input faults apply."""
    if spec.name in GENERATIVE:
        pytest.skip(f"{spec.name} generates from a request; it reads no required input")
    return spec


def main_output(spec):
    """The first output: the one every run writes."""
    return next(p for p in spec.outputs if p.required)


def test_missing_input_and_outputs_over_inputs_or_each_other(reading_spec, tmp_path):
    spec = reading_spec
    inputs = write_inputs(spec, tmp_path)
    outputs = all_outputs(spec, tmp_path)
    first = next(iter(inputs))
    refused(spec, tmp_path, {**inputs, first: tmp_path / "absent.nrrd"}, outputs, match="not found")
    for port in spec.outputs:
        if port.kind == "volume":
            refused(spec, tmp_path, inputs, {**outputs, port.name: inputs[first]}, match="must not overwrite the input")
    volume_outputs = [p for p in spec.outputs if p.kind == "volume"]
    main = volume_outputs[0]
    link = tmp_path / "link.nrrd"
    link.symlink_to(inputs[first])
    refused(spec, tmp_path, inputs, {**outputs, main.name: link}, match="must not overwrite the input")
    for port in spec.outputs:
        if port is not main:
            clash = {**outputs, port.name: outputs[main.name]}
            refused(spec, tmp_path, inputs, clash, match="must")


def test_outputs_over_each_other(spec, tmp_path):
    inputs = write_inputs(spec, tmp_path)
    outputs = all_outputs(spec, tmp_path)
    main = main_output(spec)
    for port in spec.outputs:
        if port is not main:
            refused(spec, tmp_path, inputs, {**outputs, port.name: outputs[main.name]}, match="must")


def test_truncated_and_irregular_inputs(reading_spec, tmp_path):
    spec = reading_spec
    inputs = write_inputs(spec, tmp_path, suffix=".nii.gz")
    outputs = all_outputs(spec, tmp_path)
    first = next(iter(inputs))
    data = inputs[first].read_bytes()
    inputs[first].write_bytes(data[: len(data) // 2])
    refused(spec, tmp_path, inputs, outputs, match="truncated")
    folder = tmp_path / "series"
    source = write_inputs(spec, tmp_path / "dicom", slices=8)[first]
    from meddiffusion.io import read_volume

    write_volume(read_volume(source), folder)
    shutil.rmtree(tmp_path / "dicom")
    sorted(folder.iterdir())[4].unlink()
    refused(spec, tmp_path, {**write_inputs(spec, tmp_path), first: folder}, outputs, match="irregular slice")


def test_unwritable_destination_and_unknown_suffix(spec, tmp_path):
    inputs = write_inputs(spec, tmp_path)
    outputs = all_outputs(spec, tmp_path)
    main = main_output(spec)
    (tmp_path / "afile").write_text("x")
    refused(spec, tmp_path, inputs, {**outputs, main.name: tmp_path / "afile" / "out.nrrd"}, match="not a folder")
    expected = "use one of .nrrd" if main.kind == "volume" else "must end in"
    refused(spec, tmp_path, inputs, {**outputs, main.name: tmp_path / "out.jpg"}, match=expected)


def test_input_outside_the_task_limits(reading_spec, tmp_path):
    spec = reading_spec
    if spec.limits is None or spec.limits.min_slices <= 1:
        pytest.skip(f"{spec.name} takes a single slice")
    inputs = write_inputs(spec, tmp_path, slices=spec.limits.min_slices - 1)
    refused(spec, tmp_path, inputs, all_outputs(spec, tmp_path), match="axial slice(s); at least")


def test_sigterm_at_every_stage_is_all_or_nothing(spec, tmp_path):
    inputs = write_inputs(spec, tmp_path)
    outputs = all_outputs(spec, tmp_path)
    code, events, _ = run_events(*command(spec, inputs, outputs))
    assert code == 0 and events[-1]["event"] == "result", events[-2:]
    stages = list(dict.fromkeys(e["stage"] for e in events if e["event"] == "progress"))
    assert stages[0] == "read" and stages[-1] == "write" and len(stages) >= 3
    for stage in stages:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        child = subprocess.Popen([sys.executable, "-m", "meddiffusion", *command(spec, inputs, outputs)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seen = []
        for line in child.stdout:
            seen.append(json.loads(line))
            if seen[-1].get("stage") == stage:
                child.send_signal(signal.SIGTERM)
                break
        seen += [json.loads(line) for line in child.stdout]
        child.wait(timeout=300)
        written = [p for p in outputs.values() if p.exists()]
        if child.returncode == 130:
            assert seen[-1]["event"] == "cancelled" and written == [], (stage, seen[-1], written)
        else:  # the signal came after the outputs were committed: all of them, and a result
            assert child.returncode == 0 and seen[-1]["event"] == "result", (stage, seen[-2:])
            assert sorted(written) == sorted(outputs.values())
        if child.returncode == 130:
            assert not (tmp_path / "out").exists()  # not even the folder the run would have made
        else:
            assert all(not p.name.startswith(".") for p in (tmp_path / "out").iterdir())
