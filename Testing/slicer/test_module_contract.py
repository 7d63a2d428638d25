"""The contract every task module keeps, checked for each registered task with a Slicer module.

For every ``spec`` in ``registry.all_tasks()`` with a ``module``, against the real backend
(``python -m meddiffusion <command>`` with the task's tiny untrained model, see tiny_models):
Apply waits for the inputs; a run adds new nodes on the input's grid, one per declared output,
and leaves the input untouched; Cancel leaves no node and no file; a bad input is refused,
before anything starts, with the message of the task's input rule (the backend's own).

A task with no required input (a generative task: every input optional, e.g. a synthesis from
a request) keeps the same contract without an input: Apply needs none, a run adds one new node
per declared output named from the request and linked to no input, Cancel leaves nothing, and
its optional input, once given, is refused by the rule's message when bad.

A new task module adds one line to ``CASES`` (its logic, a small valid input, what else a
run needs) and one tiny model to tiny_models.MODELS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import slicer

import mrml_fixtures
import pet_phantom
import spect_phantom
from meddiffusion.checks import rule_for
from meddiffusion.tasks import registry
from MedDiffusionUtilsLib import nodes
from MedDiffusionUtilsLib.runner import RunState
from MedDiffusionUtilsLib.tasklogic import IMPORTED_KINDS

SPECS = [spec for spec in registry.all_tasks() if spec.module]


@dataclass(frozen=True)
class Case:
    """What the contract needs of one task module: its logic ("package.module:Class"), a small
    valid input array (k, j, i), further parameters for a run (scene, input -> values; the input
    is None for a generative task), an input its rule refuses, the input's IJKToRAS (None: an
    oblique CT-like grid), the outputs that by design lie on a grid of their own (a picture, a
    reoriented volume) and the parameters that give a run its input volume."""

    logic: str
    make_array: Callable[[], np.ndarray]
    bad_array: Callable[[], np.ndarray]
    extra: Callable = field(default=lambda scene, volume: {})
    ijk_to_ras: np.ndarray | None = None
    off_grid: tuple[str, ...] = ()
    input: Callable = field(default=lambda volume: {"inputVolume": volume})


def whole_volume_roi(scene, volume):
    dims = nodes.dimensions(volume)
    return {"roi": mrml_fixtures.roi_around(scene, volume, (0, dims[0], 0, dims[1], 0, dims[2]))}


CASES = {
    "ldct": Case("LDCTDenoiseLib.logic:LDCTDenoiseLogic",
                 make_array=lambda: mrml_fixtures.chest_array((2, 24, 24)),
                 bad_array=lambda: mrml_fixtures.chest_array((2, 24, 24), air=0.0) + 500),
    "motion": Case("MotionCorrectLib.logic:MotionCorrectLogic",
                   make_array=lambda: mrml_fixtures.chest_array((4, 32, 32), lesion_hu=400.0),
                   bad_array=lambda: mrml_fixtures.chest_array((4, 32, 32)) + 1100,
                   extra=whole_volume_roi),
    "spect": Case("SPECTAttenuationLib.logic:SPECTAttenuationLogic",
                  make_array=lambda: spect_phantom.heart_array((24, 32, 32), noise=1.0),
                  bad_array=lambda: mrml_fixtures.chest_array((24, 32, 32)).astype(np.float32),
                  extra=lambda scene, volume: {"polarMap": True, "shortAxis": True, "muEstimate": True},
                  ijk_to_ras=spect_phantom.ijk_to_ras(), off_grid=("png", "short_axis")),
    "petmr": Case("PETMRDenoiseLib.logic:PETMRDenoiseLogic",
                  make_array=lambda: pet_phantom.brain_pet((12, 24, 24)),
                  bad_array=lambda: mrml_fixtures.chest_array((12, 24, 24)).astype(np.float32),
                  ijk_to_ras=pet_phantom.ijk_to_ras()),
    "cardiac4d": Case("Cardiac4DSynthLib.logic:Cardiac4DSynthLogic",
                      make_array=lambda: np.random.default_rng(0).uniform(50.0, 150.0, (8, 24, 24)).astype(np.float32),
                      bad_array=lambda: mrml_fixtures.chest_array((8, 24, 24)).astype(np.float32),
                      extra=lambda scene, volume: {"diagnosis": "NOR", "edv": 140.0, "ef": 60.0, "systole": "EF",
                                                   "slices": 8, "frames": 10, "maxAttempts": 1,
                                                   "keepImplausible": True},
                      ijk_to_ras=np.diag([-1.75, -1.75, 10.0, 1.0]),
                      input=lambda volume: {"useAnatomy": True, "anatomyVolume": volume}),
}


@pytest.fixture(params=SPECS, ids=[spec.module for spec in SPECS])
def spec(request):
    return request.param


@pytest.fixture
def case(spec) -> Case:
    return CASES[spec.name]


def make_logic(case: Case, scene):
    module, _, name = case.logic.partition(":")
    return getattr(importlib.import_module(module), name)(scene)


def add_input(scene, array, name="Chest", ijk_to_ras=None):
    volume = mrml_fixtures.add_volume(scene, array, name=name, ijk_to_ras=ijk_to_ras)
    mrml_fixtures.put_in_study(scene, volume)
    return volume


def test_every_task_module_has_a_contract_case():
    # a case may come before its task is registered (then it waits)
    assert {spec.name for spec in SPECS} <= set(CASES)


def test_apply_waits_for_the_inputs(spec, case, scene):
    logic = make_logic(case, scene)
    parameters = logic.parameters()
    if logic.generative:  # no required input: Apply needs none, and the optional one is taken
        assert parameters.missing() == []
        parameters.update(**case.input(add_input(scene, case.make_array(), ijk_to_ras=case.ijk_to_ras)))
        assert parameters.missing() == []
        return
    assert parameters.missing() == ["inputVolume"]
    with pytest.raises(ValueError, match="no input volume: select "):
        logic.start(parameters)
    parameters.inputVolume = add_input(scene, case.make_array(), ijk_to_ras=case.ijk_to_ras)
    assert parameters.missing() == []


def test_a_run_adds_new_nodes_on_the_input_grid_and_leaves_the_input_alone(spec, case, scene, real_backend,
                                                                             run_folder):
    logic = make_logic(case, scene)
    generative = logic.generative  # then the run has no input
    volume = None if generative else add_input(scene, case.make_array(), ijk_to_ras=case.ijk_to_ras)
    checksum = None if generative else mrml_fixtures.volume_checksum(volume)
    before = mrml_fixtures.node_ids(scene)
    parameters = logic.parameters()
    parameters.update(**({} if generative else case.input(volume)), model=real_backend[spec.name], steps=1,
                      device="cpu", **case.extra(scene, volume))

    created = logic.run(parameters, timeout=120)

    declared = [port for port in spec.outputs if port.kind in IMPORTED_KINDS]
    assert {port.name for port in declared} <= set(created)
    for name, node in created.items():
        assert node.GetID() not in before, name
        if generative:
            assert logic.input_of(node) is None, name
            continue
        assert node.GetName().startswith("Chest "), name
        assert logic.input_of(node) is volume, name
        if node.IsA("vtkMRMLVolumeNode") and name not in case.off_grid:
            nodes.check_same_geometry(node, volume, name)
    if generative:  # named from the request
        run = parameters.snapshot()
        assert logic.request_name(run)
        names = [logic.output_name(run, port) for port in declared]
        assert [created[port.name].GetName() for port in declared] == names
    else:
        assert mrml_fixtures.volume_checksum(volume) == checksum
    sequences = [created[port.name] for port in declared if port.kind == "sequence"]
    assert len({logic.browser_of(sequence).GetID() for sequence in sequences}) == min(len(sequences), 1)
    assert created["output"].GetAttribute("MedDiffusion.model") == real_backend[spec.name]
    assert list(run_folder.iterdir()) == []


def test_cancel_leaves_no_node_and_no_file(spec, case, scene, real_backend, run_folder):
    logic = make_logic(case, scene)
    volume = None if logic.generative else add_input(scene, case.make_array(), ijk_to_ras=case.ijk_to_ras)
    parameters = logic.parameters()
    parameters.update(**({} if volume is None else case.input(volume)), model=real_backend[spec.name], steps=1,
                      device="cpu", **case.extra(scene, volume))
    before = mrml_fixtures.node_ids(scene)

    task = logic.start(parameters)
    task.cancel()

    assert task.wait(timeout=60) == RunState.CANCELLED
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []


def test_a_bad_input_gets_the_task_rule_message(spec, case, scene, run_folder):
    array = case.bad_array()
    volume = add_input(scene, array, name="Not CT", ijk_to_ras=case.ijk_to_ras)
    with pytest.raises(ValueError) as expected:
        rule_for(spec.rule).check(array, name="Not CT")
    logic = make_logic(case, scene)
    parameters = logic.parameters()
    parameters.update(**case.input(volume))  # a generative task's optional input: checked once given
    before = mrml_fixtures.node_ids(scene)

    with pytest.raises(ValueError) as refused:
        logic.start(parameters)

    assert str(refused.value) == str(expected.value)
    assert mrml_fixtures.node_ids(scene) == before
    assert list(run_folder.iterdir()) == []
