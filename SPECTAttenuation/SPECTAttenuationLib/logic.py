"""SPECT Attenuation logic: a non-attenuation-corrected (NAC) myocardial perfusion SPECT node
in, ``meddiff spect-ac`` in a child process, the attenuation-corrected (AC) volume and what a
nuclear cardiologist reads back.  MRML and files only, no Qt, so scripts and tests use it
directly::

    logic = SPECTAttenuationLogic()
    created = logic.correct(nacNode, polar_map=True, short_axis=True)
    logic.show_comparison(nacNode, created["output"])

The task's ports, files and input rule come from its declaration in the backend
(``meddiffusion.tasks.spect``); :class:`~MedDiffusionUtilsLib.compare.CompareTaskLogic` runs
the command and reads back, by port name:

- "output": "<input> AC", a new volume on the input's exact grid, in the input's units;
- "table": "<input> polar map", the 17-segment AHA polar maps (% of peak) of NAC and AC with
  the segments whose category changes (asked with ``polarMap``);
- "mu_estimate": "<input> estimated attenuation map" (1/cm) on the input's grid (``muEstimate``).

What is SPECT's own: the optional CT or attenuation map (told apart by its values; it makes
the backend run the teacher model, which attends to it); outputs made only when asked; two
nodes that are not on the input's grid: "png" -> "<input> bull's-eyes", the NAC | AC polar
maps as an RGB picture, and "short_axis" -> "<input> AC short axis", the AC resampled on the
LV's own short-axis grid (apex to base); and the nuclear display (a PET colour table, window
0 to the 99.9th percentile, each study to its own peak as MPI is read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer
import vtk

from meddiffusion.checks import ATTENUATION, CT
from MedDiffusionUtilsLib import inputs, layouts, models, nodes, outputs
from MedDiffusionUtilsLib.compare import CompareTaskLogic
from MedDiffusionUtilsLib.inputs import check_volume_node
from MedDiffusionUtilsLib.layouts import DISPLAY_PERCENTILE, NUCLEAR_COLORS, nuclear_display
from MedDiffusionUtilsLib.models import ModelChoice, card_field
from MedDiffusionUtilsLib.parameters import Bool, Choice, Int, Node, ParameterSet, Text
from MedDiffusionUtilsLib.sampledata import Sample
from MedDiffusionUtilsLib.tasklogic import ATTRIBUTE_PREFIX

__all__ = [
    "DEFAULT_STEPS", "MAX_STEPS", "DEVICES", "SAMPLE", "NUCLEAR_COLORS", "PICTURE_SUFFIX", "DISPLAY_PERCENTILE",
    "SPECTAttenuationParameters", "is_teacher", "model_choices", "check_volume_node", "attenuation_kind",
    "nuclear_display", "picture_from_png", "SPECTAttenuationLogic",
]

#: PADM samples its Brownian bridge in 10 of T = 500 steps by default
DEFAULT_STEPS = 10
MAX_STEPS = 500
DEVICES = ("auto", "cpu", "cuda")
#: a simulated Tc-99m study of a woman whose breast attenuates the anterior wall
SAMPLE = Sample("sample_spect_nac.nrrd", "SPECT NAC (female, breast attenuation)", "SPECT NAC",
                icon="SPECTAttenuation.png")
#: node name of the bull's-eye picture ("<input> bull's-eyes")
PICTURE_SUFFIX = "bull's-eyes"
#: the estimated attenuation map's display window (1/cm): air to bone at 140 keV
MU_WINDOW = (0.0, 0.3)
#: attribute of the AC volume holding what the backend reported (polar map, LV axes, model)
SPECT_ATTRIBUTE = ATTRIBUTE_PREFIX + "spect"
#: result event keys kept on the AC volume
REPORTED = ("teacher", "changed_segments", "polar_map", "lv_frame", "scale", "summary")


class SPECTAttenuationParameters(ParameterSet):
    """The module's settings, stored on its parameter node (saved with the scene)."""

    inputVolume = Node("vtkMRMLScalarVolumeNode", required=True, label="input NAC SPECT volume")
    #: the patient's CT (HU) or attenuation map (1/cm); None runs a CT-free model
    attenuationVolume = Node("vtkMRMLScalarVolumeNode", label="CT or attenuation map")
    #: None creates a new "<input> AC" volume on every run
    outputVolume = Node("vtkMRMLScalarVolumeNode", label="output volume")
    #: a catalogue model id; empty lets the backend choose (the CT-free default, or the teacher with a CT)
    model = Text("")
    steps = Int(DEFAULT_STEPS, minimum=1, maximum=MAX_STEPS)
    device = Choice("auto", choices=DEVICES)
    #: the 17-segment polar maps of NAC and AC (table) and their bull's-eyes (picture)
    polarMap = Bool(True)
    #: the AC resampled into short-axis slices, apex to base
    shortAxis = Bool(True)
    #: the attenuation map the network's physics head estimated
    muEstimate = Bool(False)


# -- model catalogue ---------------------------------------------------------------------------
def is_teacher(entry: Any) -> bool:
    """Whether a card's network attends to an attenuation map (PADM's teacher needs a CT or μ-map)."""
    architecture = card_field(entry, "architecture", {}) or {}
    return bool((architecture.get("kwargs", {}) or {}).get("teacher"))


def _rank(entry: Any) -> tuple[int, int]:
    """Sort key: CT-free models first, then as the cards rank themselves (``default_for``)."""
    default_for = card_field(entry, "default_for", {}) or {}
    return (int(is_teacher(entry)), min((int(v) for v in default_for.values()), default=1_000_000))


def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries for catalogue entries, the default CT-free model first and teachers last,
    each led by its description's first line.

    Step counts the card lacks fall back to PADM's 10 of at most T = 500 steps (see
    :func:`MedDiffusionUtilsLib.models.model_choices`).
    """
    ordered = sorted(entries, key=_rank)  # stable: equal ranks keep the catalogue's order
    return models.model_choices(ordered, max_steps=MAX_STEPS, default_steps=DEFAULT_STEPS,
                                headline="description")


# -- checks ------------------------------------------------------------------------------------
def attenuation_kind(node) -> str:
    """"ct" for a CT in HU, "mumap" for an attenuation map in 1/cm, told apart by the backend's
    own rules (a DICOM CT series is a CT); ``ValueError`` with both rules' reasons otherwise."""
    expected = f"{CT.expected}, or {ATTENUATION.expected}"
    modality = check_volume_node(node, select="the CT or attenuation map", expected=expected).upper()
    values = slicer.util.arrayFromVolume(node)
    name = node.GetName()
    if modality == "CT":
        CT.check(values, name=name, modality=modality)
        return "ct"
    reasons = []
    for kind, rule in (("ct", CT), ("mumap", ATTENUATION)):
        try:
            rule.check(values, name=name, modality=modality)
            return kind
        except ValueError as error:
            reasons.append(str(error))
    raise ValueError(f"'{name}' is neither a CT nor an attenuation map: {reasons[0]}. {reasons[1]}")


# -- display -----------------------------------------------------------------------------------
def _grey_window(volume, low: float, high: float) -> None:
    display = volume.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, high)


def picture_from_png(path: str | Path, reference, suffix: str = PICTURE_SUFFIX):
    """A PNG picture as a new RGB vector volume "<input> <suffix>" under ``reference``'s study.

    The picture is its own grid (one slice, 1 mm pixels); its first column is on the patient's
    right and its first row at the top, so it reads as drawn in an axial view.
    """
    path = Path(path)
    reader = vtk.vtkPNGReader()
    if not reader.CanReadFile(str(path)):
        raise ValueError(f"the backend's picture '{path.name}' is not a PNG file")
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    components = image.GetNumberOfScalarComponents()
    if components not in (3, 4):
        raise ValueError(f"the backend's picture '{path.name}' has {components} channels; expected RGB")
    if components == 4:  # drop the alpha channel: a vector volume shows three
        extract = vtk.vtkImageExtractComponents()
        extract.SetInputData(image)
        extract.SetComponents(0, 1, 2)
        extract.Update()
        image = extract.GetOutput()
    picture = vtk.vtkImageData()
    picture.DeepCopy(image)
    picture.SetOrigin(0.0, 0.0, 0.0)
    picture.SetSpacing(1.0, 1.0, 1.0)
    scene = reference.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", outputs.output_name(reference, suffix))
    node.SetAndObserveImageData(picture)
    # vtkPNGReader puts the bottom row at j = 0: j runs up the screen (anterior), i to the left (patient right)
    directions = np.diag([-1.0, 1.0, 1.0, 1.0])
    node.SetIJKToRASDirectionMatrix(slicer.util.vtkMatrixFromArray(directions))
    node.CreateDefaultDisplayNodes()
    outputs.place_in_study(node, reference)
    return node


# -- the logic ---------------------------------------------------------------------------------
class SPECTAttenuationLogic(CompareTaskLogic):
    """``meddiff spect-ac`` around MRML (see :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic`)."""

    task = "spect"
    title = "SPECT Attenuation"
    Parameters = SPECTAttenuationParameters
    select_input = "the non-attenuation-corrected (NAC) SPECT volume"

    # -- what a run makes ------------------------------------------------------------------
    @staticmethod
    def wanted_outputs(run) -> list[str]:
        """The output ports a run asks for, by name: the AC always, the rest as ticked."""
        wanted = ["output"]
        if run.polarMap:
            wanted += ["table", "png"]
        if run.shortAxis:
            wanted.append("short_axis")
        if run.muEstimate:
            wanted.append("mu_estimate")
        return wanted

    @staticmethod
    def _port(name: str, ports):
        return next(port for port in ports if port.name == name)

    # -- checks ----------------------------------------------------------------------------
    def check(self, run) -> None:
        super().check(run)
        attenuation = run.attenuationVolume
        if attenuation is not None:
            if attenuation.GetID() == run.inputVolume.GetID():
                raise ValueError(f"'{attenuation.GetName()}' is the NAC itself; choose the patient's CT or "
                                 "attenuation map, or none for CT-free correction")
            attenuation_kind(attenuation)
        output = getattr(run, "outputVolume", None)
        if output is not None and attenuation is not None and output.GetID() == attenuation.GetID():
            raise ValueError(f"the output volume is the attenuation input '{attenuation.GetName()}'; it is never "
                             "overwritten: choose 'Create new volume' or another volume")

    def prepare(self, run):
        """The attenuation input's kind ("ct", "mumap" or None) and the ports asked for."""
        run.attenuation = attenuation_kind(run.attenuationVolume) if run.attenuationVolume is not None else None
        run.wanted = self.wanted_outputs(run)
        return run

    # -- files in ----------------------------------------------------------------------------
    def write_inputs(self, run, workdir: Path) -> list:
        """The NAC, the CT or μ-map under its own flag, and a file for every output asked for."""
        spec = self.spec
        nac = self._port("nac", spec.inputs)
        path = workdir / nac.file
        nodes.write_volume(run.inputVolume, path, compress=False)
        arguments: list = [path]
        if run.attenuation is not None:
            port = self._port(run.attenuation, spec.inputs)
            attenuation_path = workdir / port.file
            nodes.write_volume(run.attenuationVolume, attenuation_path, compress=False)
            arguments += [port.flags[0], attenuation_path]
            if run.attenuation == "ct" and inputs.dicom_modality(run.attenuationVolume).upper() == "CT":
                arguments.append(CT.skip_flag)  # a CT series may be cropped to soft tissue
        for name in run.wanted:
            port = self._port(name, spec.outputs)
            arguments += [port.flags[0], workdir / port.file]
        return arguments + self.options(run)

    # -- nodes out ---------------------------------------------------------------------------
    def import_results(self, run, result: dict, workdir: Path) -> dict:
        """Every output asked for as a new node, by port name; the AC and the estimated
        attenuation map on the input's grid, the short axis and the picture on their own."""
        reference = run.inputVolume
        for node in (reference, getattr(run, "outputVolume", None)):
            if node is not None and node.GetScene() is None:
                raise ValueError(f"'{node.GetName()}' was removed from the scene during the run")
        created = {}
        for name in run.wanted:
            port = self._port(name, self.spec.outputs)
            path = workdir / port.file
            if not path.exists():
                raise ValueError(f"the backend reported success but wrote no {self.suffix(port)} {port.kind}")
            if name == "short_axis":
                created[name] = self._short_axis(path, reference, self.suffix(port))
            elif name == "png":
                created[name] = picture_from_png(path, reference)
            else:
                created[name] = self.import_output(port, path, run)
        created.update(self.derived_outputs(run, result, created))
        self.record_provenance(run, result, created)
        return created

    @staticmethod
    def _short_axis(path: Path, reference, suffix: str):
        node = nodes.read_volume(path, scene=reference.GetScene(), name=outputs.output_name(reference, suffix))
        outputs.place_in_study(node, reference)
        return node

    def derived_outputs(self, run, result: dict, created: dict) -> dict:
        """No new nodes; the volumes made get the nuclear display (the input's is left as it is)."""
        for name in ("output", "short_axis"):
            if name in created:
                nuclear_display(created[name])
        if "mu_estimate" in created:
            _grey_window(created["mu_estimate"], *MU_WINDOW)
        return {}

    def provenance(self, run, result: dict) -> dict:
        """The attenuation input, and what the backend reported (see :meth:`report_of`)."""
        attenuation = run.attenuationVolume
        used = (f"{'CT' if run.attenuation == 'ct' else 'attenuation map'} '{attenuation.GetName()}'"
                if attenuation is not None else "none (CT-free)")
        reported = {key: result[key] for key in REPORTED if key in result}
        return {"attenuation": used, "spect": json.dumps(reported)}

    def correct(self, input_volume, *, attenuation=None, output_volume=None, model: str = "",
                steps: int = DEFAULT_STEPS, device: str = "auto", polar_map: bool = True, short_axis: bool = True,
                mu_estimate: bool = False, timeout: float | None = None) -> dict:
        """Run to the end; returns the new nodes by port name: "output" (AC), and as asked "table"
        (polar map), "png" (bull's-eyes), "short_axis", "mu_estimate" (blocking; raises
        TaskFailed / TaskCancelled)."""
        parameters = self.parameters()
        parameters.update(inputVolume=input_volume, attenuationVolume=attenuation, outputVolume=output_volume,
                          model=model, steps=steps, device=device, polarMap=polar_map, shortAxis=short_axis,
                          muEstimate=mu_estimate)
        return self.run(parameters, timeout=timeout)

    # -- reading a result back -----------------------------------------------------------------
    @staticmethod
    def report_of(corrected) -> dict | None:
        """What the backend reported for an AC volume: "teacher", "summary", and with the polar map
        "changed_segments", "polar_map" ({"NAC": [17 %], "AC": [...]}), "lv_frame" (None for
        other volumes)."""
        text = corrected.GetAttribute(SPECT_ATTRIBUTE) if corrected is not None else None
        return json.loads(text) if text else None

    # -- comparison ----------------------------------------------------------------------------
    def show_comparison(self, before, after, *, difference=None, fade: float = 0.0) -> None:
        """NAC | AC in linked side-by-side views, both in the nuclear colour table, each windowed
        to its own 99.9th percentile (the input's display node is set, its voxels never)."""
        nuclear_display(before)
        nuclear_display(after)
        super().show_comparison(before, after, difference=difference, fade=fade)

    def show_picture(self, picture) -> None:
        """The bull's-eyes alone in the left view (one-up layout)."""
        layouts.set_layout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView, self.scene)
        layouts.show_single(picture, view=layouts.BEFORE_VIEW, scene=self.scene)
        layouts.fit_views()
