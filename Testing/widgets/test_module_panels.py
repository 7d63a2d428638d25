"""Every registered task module's panel on its real .ui (PySide6 offscreen): Apply stays
disabled until the inputs are set, and a bad input is refused with the task rule's message
before anything starts.  A task with no required input (a generative task) has Apply enabled
without one, and its optional input, once given, is refused with the rule's message when bad.
A new task module adds one line to ``PANELS`` (and to ``BAD_INPUTS`` when its rule accepts the
CT-like default, to ``INPUTS`` when its input is not simply the selected ``inputVolume``)."""

from __future__ import annotations

import importlib

import pytest

import mrml_fixtures
from meddiffusion.checks import rule_for
from meddiffusion.tasks import registry

SPECS = [spec for spec in registry.all_tasks() if spec.module]
#: module -> (its logic, its panel) as "package.module:Class"
PANELS = {
    "LDCTDenoise": ("LDCTDenoiseLib.logic:LDCTDenoiseLogic", "LDCTDenoiseLib.panel:LDCTDenoisePanel"),
    "MotionCorrect": ("MotionCorrectLib.logic:MotionCorrectLogic", "MotionCorrectLib.panel:MotionCorrectPanel"),
    "SPECTAttenuation": ("SPECTAttenuationLib.logic:SPECTAttenuationLogic",
                         "SPECTAttenuationLib.panel:SPECTAttenuationPanel"),
    "PETMRDenoise": ("PETMRDenoiseLib.logic:PETMRDenoiseLogic", "PETMRDenoiseLib.panel:PETMRDenoisePanel"),
    "Cardiac4DSynth": ("Cardiac4DSynthLib.logic:Cardiac4DSynthLogic", "Cardiac4DSynthLib.panel:Cardiac4DSynthPanel"),
}
#: module -> an input its rule refuses, where the default (a CT without air, +500 HU) is not one
BAD_INPUTS = {"SPECTAttenuation": lambda: mrml_fixtures.chest_array((2, 16, 16)),  # a CT: negative values
              "PETMRDenoise": lambda: mrml_fixtures.chest_array((2, 16, 16)),
              "Cardiac4DSynth": lambda: mrml_fixtures.chest_array((2, 16, 16))}  # MR: negative values
#: module -> the parameters that make a volume its input, where its selector does not take it by itself
INPUTS = {"Cardiac4DSynth": lambda volume: {"useAnatomy": True, "anatomyVolume": volume}}


def bad_input():
    return mrml_fixtures.chest_array((2, 16, 16), air=0.0) + 500


def load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(params=SPECS, ids=[spec.module for spec in SPECS])
def panel(request, module_panel, scene):
    logic_class, panel_class = (load(target) for target in PANELS[request.param.module])
    return module_panel(panel_class, logic_class(scene), models=[])


def test_every_task_module_has_a_panel_entry():
    # an entry may come before its task is registered (then it waits)
    assert {spec.module for spec in SPECS} <= set(PANELS)


def test_apply_is_disabled_until_the_input_is_set(panel, scene):
    button = panel.task_panel.ui.applyButton
    if panel.logic.generative:  # no required input: made from the request alone
        assert panel.parameters.missing() == [] and button.isEnabled()
        return
    assert panel.parameters.inputVolume is None and not button.isEnabled()
    ct = mrml_fixtures.add_volume(scene, mrml_fixtures.chest_array((2, 16, 16)), name="Chest")
    assert panel.parameters.inputVolume is ct and button.isEnabled()
    scene.RemoveNode(ct)
    assert not button.isEnabled()


def test_a_bad_input_is_refused_with_the_rule_message(panel, scene):
    array = BAD_INPUTS.get(panel.logic.spec.module, bad_input)()
    volume = mrml_fixtures.add_volume(scene, array, name="Not CT")
    panel.parameters.update(**INPUTS.get(panel.logic.spec.module, lambda volume: {})(volume))
    with pytest.raises(ValueError) as expected:
        rule_for(panel.logic.spec.rule).check(array, name="Not CT")
    panel.task_panel.ui.applyButton.click()
    assert panel.errors == [str(expected.value)]
    assert panel.task_panel.task is None  # nothing was started
