"""LDCT Denoise logic: a CT volume node in, ``meddiff ldct-denoise`` in a child process, a new
denoised volume node back.  MRML and files only, no Qt, so scripts and tests use it directly::

    logic = LDCTDenoiseLogic()
    denoised = logic.denoise(ctNode, model="ldct-corediff", steps=10)

The input is checked before anything starts (it must be a single-component CT volume in
Hounsfield units), written to the run's temporary folder with its geometry, denoised by the
backend and read back on the input's exact grid as "<input> denoised" under the input's
study.  The input node is never modified; a cancelled or failed run adds no node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer

from MedDiffusionUtilsLib import inputs, layouts, models, nodes, outputs
from MedDiffusionUtilsLib.inputs import check_output_volume
from MedDiffusionUtilsLib.models import ModelChoice
from MedDiffusionUtilsLib.modulebase import TaskLogic
from MedDiffusionUtilsLib.parameters import Bool, Choice, Int, Node, ParameterSet, Text

__all__ = [
    "MODULE_NAME", "TASK", "COMMAND", "MAX_STEPS", "DEVICES", "OUTPUT_SUFFIX", "DIFFERENCE_SUFFIX",
    "INPUT_REFERENCE_ROLE", "LDCTDenoiseParameters", "DenoiseRun", "ModelChoice", "model_choices",
    "check_ct_volume", "check_output_volume", "LDCTDenoiseLogic",
]

MODULE_NAME = "LDCTDenoise"
#: the catalogue's task name and the backend subcommand
TASK = "ldct"
COMMAND = "ldct-denoise"
#: CoreDiff samples in at most T = 10 steps
MAX_STEPS = 10
DEVICES = ("auto", "cpu", "cuda")
OUTPUT_SUFFIX = "denoised"
DIFFERENCE_SUFFIX = "difference"
#: attributes recording how an output was made (read back by scripts and reports)
ATTRIBUTE_PREFIX = "MedDiffusion."
#: node reference from an output to the volume it was computed from
INPUT_REFERENCE_ROLE = "meddiffusionInput"

# What "looks like CT in Hounsfield units" means here.  Air is -1000 HU, lung about -800,
# fat about -100; dense bone stays below 2000 HU and metal artefacts are a tiny fraction.
# MR, PET and CT stored without its rescale slope/intercept have no negative values.
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
MAX_LOW_HU = -200.0
MAX_HIGH_HU = 4000.0
#: voxels sampled for the percentiles (enough for 0.5 % tails, fast on a 512^3 volume)
SAMPLE_VOXELS = 1_000_000


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


@dataclass(frozen=True)
class DenoiseRun:
    """The settings of one run, fixed when it starts: edits made while it runs (another
    input picked, say) apply to the next run, not to the import of this one."""

    inputVolume: Any
    outputVolume: Any
    model: str
    steps: int
    device: str
    differenceVolume: bool

    @classmethod
    def of(cls, parameters: LDCTDenoiseParameters) -> "DenoiseRun":
        return cls(**{name: getattr(parameters, name) for name in cls.__dataclass_fields__})

    def missing(self) -> list[str]:
        return [] if self.inputVolume is not None else ["inputVolume"]


# -- model catalogue ---------------------------------------------------------------------------
def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries from catalogue entries (``ModelEntry`` objects or dicts), each led by
    the dose its model was trained for, with its CPU/GPU speed and step counts.

    Step counts the card lacks fall back to CoreDiff's T = 10 steps, also the most offered
    (see :func:`MedDiffusionUtilsLib.models.model_choices`).
    """
    return models.model_choices(entries, max_steps=MAX_STEPS, default_steps=MAX_STEPS, headline="dose")


# -- input checks ------------------------------------------------------------------------------
def check_ct_volume(node) -> None:
    """Raise ``ValueError`` unless ``node`` is a single-component CT volume in HU.

    A DICOM series whose modality is not CT is refused outright.  Otherwise the voxel values
    must look like Hounsfield units: the low tail below -200 HU (air, lung or fat; skipped
    for a DICOM CT series, which may be cropped to soft tissue) and the high tail below
    4000 HU.
    """
    modality = inputs.check_ct_volume(node, module="LDCT Denoise",
                                      select="the low-dose CT volume to denoise")
    name = node.GetName()
    voxels = slicer.util.arrayFromVolume(node).ravel()
    if voxels.size > SAMPLE_VOXELS:  # random, not strided: a stride could follow one column
        voxels = voxels[np.random.default_rng(0).integers(0, voxels.size, SAMPLE_VOXELS)]
    sample = voxels.astype(np.float64)
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    expectation = ("expected a CT volume in Hounsfield units (air about -1000 HU, bone below "
                   f"{MAX_HIGH_HU:g} HU), e.g. a CT series loaded from DICOM")
    if high <= low:
        raise ValueError(f"'{name}' has the same value {low:g} almost everywhere; {expectation}")
    if not modality and low > MAX_LOW_HU:
        raise ValueError(f"'{name}' does not look like CT: almost no voxel is below {MAX_LOW_HU:g} HU "
                         f"({LOW_PERCENTILE:g}th percentile {low:g}), so it has no air, lung or fat "
                         f"(MR, PET or CT without its rescale intercept); {expectation}")
    if high > MAX_HIGH_HU:
        raise ValueError(f"'{name}' does not look like CT: {100 - HIGH_PERCENTILE:g} % of its voxels "
                         f"exceed {high:g}, above the {MAX_HIGH_HU:g} HU of dense bone; {expectation}")


# -- the logic ---------------------------------------------------------------------------------
class LDCTDenoiseLogic(TaskLogic):
    """``meddiff ldct-denoise`` around MRML: checks, input file, arguments, result node.

    ``backend`` replaces ``[python, -m, meddiffusion, ldct-denoise]`` (tests run a fake child
    that speaks the same protocol); ``environment`` adds variables for the child.
    """

    command = COMMAND

    def parameters(self) -> LDCTDenoiseParameters:
        """The module's parameter node in this logic's scene."""
        return LDCTDenoiseParameters.for_module(self.scene, MODULE_NAME)

    def check(self, parameters: LDCTDenoiseParameters | DenoiseRun) -> None:
        """Raise ``ValueError`` naming what is wrong before anything is started."""
        check_ct_volume(parameters.inputVolume)
        check_output_volume(parameters.outputVolume, parameters.inputVolume)

    def start(self, parameters: LDCTDenoiseParameters, **options):
        """Check, then start a run with the settings as they are now (see :class:`DenoiseRun`)."""
        run = DenoiseRun.of(parameters)
        self.check(run)
        return super().start(run, **options)

    def write_inputs(self, parameters: DenoiseRun, workdir: Path) -> list:
        input_path, output_path = workdir / "input.nrrd", workdir / "output.nrrd"
        # uncompressed: the file lives for one run, and gzip would cost seconds on a full CT
        nodes.write_volume(parameters.inputVolume, input_path, compress=False)
        arguments: list = [input_path, "-o", output_path, "--steps", parameters.steps,
                           "--device", parameters.device]
        if parameters.model:
            arguments += ["--model", parameters.model]
        if inputs.dicom_modality(parameters.inputVolume).upper() == "CT":
            # a CT series may be cropped to soft tissue: check_ct_volume accepted it without air
            arguments.append("--no-hu-check")
        return arguments

    def import_results(self, parameters: DenoiseRun, result: dict, workdir: Path) -> list:
        path = workdir / "output.nrrd"
        if not path.exists():
            raise ValueError("the backend reported success but wrote no denoised volume")
        reference = parameters.inputVolume
        for node in (reference, parameters.outputVolume):
            if node is not None and node.GetScene() is None:
                raise ValueError(f"'{node.GetName()}' was removed from the scene during the run")
        denoised = outputs.volume_from_file(path, reference, OUTPUT_SUFFIX)
        if parameters.outputVolume is not None:
            denoised = outputs.move_into(denoised, parameters.outputVolume, reference)
        _record_provenance(denoised, result, parameters)
        created = [denoised]
        if parameters.differenceVolume:
            created.append(self.difference(reference, denoised))
        return created

    # -- scripting -----------------------------------------------------------------------------
    def denoise(self, input_volume, *, output_volume=None, model: str = "", steps: int = MAX_STEPS,
                device: str = "auto", difference: bool = False, timeout: float | None = None):
        """Run to the end and return the denoised node (blocking; raises TaskFailed/-Cancelled)."""
        parameters = self.parameters()
        parameters.update(inputVolume=input_volume, outputVolume=output_volume, model=model,
                          steps=steps, device=device, differenceVolume=difference)
        return self.run(parameters, timeout=timeout)[0]

    # -- comparison ----------------------------------------------------------------------------
    def difference(self, before, after):
        """A new volume ``after - before`` named "<after> difference" (nothing is modified)."""
        return layouts.difference_volume(before, after, DIFFERENCE_SUFFIX)

    def show_comparison(self, before, after, *, difference=None, fade: float = 0.0) -> None:
        """Before | after in linked side-by-side views (the difference on the right, if given)."""
        layouts.show_side_by_side(before, after, scene=self.scene)
        self.set_fade(before, after, fade)
        if difference is not None:
            self.show_after(difference)

    def set_fade(self, before, after, opacity: float) -> None:
        """Blend ``after`` over ``before`` in the left view: 0 shows before, 1 shows after."""
        layouts.show_fade(before, after, opacity, view=layouts.BEFORE_VIEW, scene=self.scene)

    def show_after(self, volume) -> None:
        """Show ``volume`` (the denoised or the difference volume) in the right view."""
        layouts.show_single(volume, view=layouts.AFTER_VIEW, scene=self.scene)

    @staticmethod
    def input_of(output):
        """The volume an output of this module was computed from (None if unknown)."""
        return output.GetNodeReference(INPUT_REFERENCE_ROLE) if output is not None else None


def _record_provenance(node, result: dict, parameters: DenoiseRun) -> None:
    node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, parameters.inputVolume.GetID())
    values = {"task": COMMAND, "input": parameters.inputVolume.GetName(),
              "model": result.get("model", parameters.model), "steps": result.get("steps", parameters.steps),
              "seconds": result.get("seconds", "")}
    for key, value in values.items():
        node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
