"""A minimal task module built on MedDiffusionUtilsLib, run against ``fake_task.py``.

It is what a real task module looks like (parameters + a TaskLogic with write_inputs and
import_results) with the model replaced by "add one", so the shared layer is tested end to
end without any network or weights.
"""

from __future__ import annotations

import sys

import mrml_fixtures

mrml_fixtures.add_module_paths()

from MedDiffusionUtilsLib import nodes, outputs  # noqa: E402
from MedDiffusionUtilsLib.tasklogic import TaskLogic  # noqa: E402
from MedDiffusionUtilsLib.parameters import Bool, Choice, Float, Int, Node, ParameterSet  # noqa: E402


class AddOneParameters(ParameterSet):
    inputVolume = Node("vtkMRMLScalarVolumeNode", required=True)
    steps = Int(5, minimum=1, maximum=100)
    stepSeconds = Float(0.02, minimum=0.0, maximum=5.0)
    fail = Bool(False)
    suffix = Choice("plus one", choices=("plus one", "incremented"))


class AddOneLogic(TaskLogic):
    """Writes the input, runs the fake backend, reads the output back as a new volume."""

    def __init__(self, scene, *extra_options: str):
        super().__init__(scene, backend=[sys.executable, str(mrml_fixtures.FAKE_TASK)])
        self.extra_options = list(extra_options)

    def write_inputs(self, parameters, workdir):
        input_path, output_path = workdir / "input.nrrd", workdir / "output.nrrd"
        nodes.write_volume(parameters.inputVolume, input_path)
        arguments = [input_path, "-o", output_path, "--steps", parameters.steps,
                     "--step-s", parameters.stepSeconds, *self.extra_options]
        if parameters.fail:
            arguments.append("--fail")
        return arguments

    def import_results(self, parameters, result, workdir):
        return [outputs.volume_from_file(workdir / "output.nrrd", parameters.inputVolume,
                                         parameters.suffix)]
