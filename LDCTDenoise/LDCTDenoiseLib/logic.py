"""LDCT Denoise logic: a CT volume node in, ``meddiff ldct-denoise`` in a child process, a new
denoised volume node back.  MRML and files only, no Qt, so scripts and tests use it directly::

    logic = LDCTDenoiseLogic()
    denoised = logic.denoise(ctNode, model="ldct-corediff", steps=10)

The task's ports, files and input rule come from its declaration in the backend
(``meddiffusion.tasks.ldct``); :class:`~MedDiffusionUtilsLib.compare.CompareTaskLogic` checks
the input, runs the command and reads "<input> denoised" back on the input's exact grid
under its study.  What is LDCT's own: the dose each model was trained for in the model
list, and a difference volume on request.
"""

from __future__ import annotations

from typing import Any, Sequence

from MedDiffusionUtilsLib import models
from MedDiffusionUtilsLib.compare import CompareTaskLogic
from MedDiffusionUtilsLib.models import ModelChoice
from MedDiffusionUtilsLib.parameters import Bool, Choice, Int, Node, ParameterSet, Text
from MedDiffusionUtilsLib.sampledata import Sample

__all__ = ["MAX_STEPS", "DEVICES", "SAMPLE", "LDCTDenoiseParameters", "model_choices", "LDCTDenoiseLogic"]

#: CoreDiff samples in at most T = 10 steps
MAX_STEPS = 10
DEVICES = ("auto", "cpu", "cuda")
#: a quarter-dose scan of the extension's thorax phantom
SAMPLE = Sample("sample_ldct_chest.nrrd", "LDCTChest", "LDCT chest", icon="LDCTDenoise.png")


class LDCTDenoiseParameters(ParameterSet):
    """The module's settings, stored on its parameter node (saved with the scene)."""

    inputVolume = Node("vtkMRMLScalarVolumeNode", required=True, label="input CT volume")
    #: None creates a new "<input> denoised" volume on every run
    outputVolume = Node("vtkMRMLScalarVolumeNode", label="output volume")
    #: a catalogue model id; empty lets the backend choose its default model
    model = Text("")
    steps = Int(MAX_STEPS, minimum=1, maximum=MAX_STEPS)
    device = Choice("auto", choices=DEVICES)
    #: also make "<output> difference" = denoised - input
    differenceVolume = Bool(False)


def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries from catalogue entries (``ModelEntry`` objects or dicts), each led by
    the dose its model was trained for, with its CPU/GPU speed and step counts.

    Step counts the card lacks fall back to CoreDiff's T = 10 steps, also the most offered
    (see :func:`MedDiffusionUtilsLib.models.model_choices`).
    """
    return models.model_choices(entries, max_steps=MAX_STEPS, default_steps=MAX_STEPS, headline="dose")


class LDCTDenoiseLogic(CompareTaskLogic):
    """``meddiff ldct-denoise`` around MRML (see :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic`)."""

    task = "ldct"
    title = "LDCT Denoise"
    Parameters = LDCTDenoiseParameters
    select_input = "the low-dose CT volume to denoise"

    def derived_outputs(self, run, result: dict, created: dict) -> dict:
        if not run.differenceVolume:
            return {}
        return {"difference": self.difference(run.inputVolume, created["output"])}

    def denoise(self, input_volume, *, output_volume=None, model: str = "", steps: int = MAX_STEPS,
                device: str = "auto", difference: bool = False, timeout: float | None = None):
        """Run to the end and return the denoised node (blocking; raises TaskFailed/-Cancelled)."""
        parameters = self.parameters()
        parameters.update(inputVolume=input_volume, outputVolume=output_volume, model=model,
                          steps=steps, device=device, differenceVolume=difference)
        return self.run(parameters, timeout=timeout)["output"]
