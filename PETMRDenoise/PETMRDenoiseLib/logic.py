"""PET/MR Denoise logic: a low-count PET node (and optionally the patient's MR) in, ``meddiff
pet-denoise`` in a child process, the denoised PET out, fused over the MR, and a lesion SUV
readout.  MRML and files only, no Qt, so scripts and tests use it directly::

    logic = PETMRDenoiseLogic()
    created = logic.denoise(petNode, mr=mrNode)
    logic.show_comparison(petNode, created["output"])
    table = logic.measure_lesions(petNode, created["output"], pointListNode, radius_mm=10)

The task's ports, files and input rules come from its declaration in the backend
(``meddiffusion.tasks.petmr``); :class:`~MedDiffusionUtilsLib.compare.CompareTaskLogic` runs
the command and reads back "output": "<input> denoised", a new volume on the input's exact
grid in the input's units (SUV or Bq/ml; the input's coded units are copied onto it).

What is PET/MR's own: the optional MR (the "mr" rule, its own flag; the backend registers it
rigidly and runs the MR-guided model, or the PET-only one without it), remembered on the
output so the views can fuse it; the fused display (PET in a nuclear colour table over the MR
in grey, both PETs in one SUV window); and the lesion readout of :mod:`.suv` on markups points
(a sphere around each) or ROIs, into a table node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer
import vtk

from meddiffusion.checks import rule_for
from MedDiffusionUtilsLib import layouts, models, nodes, outputs
from MedDiffusionUtilsLib.compare import CompareTaskLogic
from MedDiffusionUtilsLib.inputs import check_volume_node
from MedDiffusionUtilsLib.models import ModelChoice, card_field, card_rank
from MedDiffusionUtilsLib.parameters import Choice, Float, Int, Node, ParameterSet, Text
from MedDiffusionUtilsLib.sampledata import Sample
from MedDiffusionUtilsLib.tasklogic import ATTRIBUTE_PREFIX

from . import suv

__all__ = [
    "DEFAULT_STEPS", "CPU_STEPS", "MAX_STEPS", "DEVICES", "SAMPLE", "DEFAULT_OPACITY", "DEFAULT_RADIUS_MM",
    "MR_REFERENCE_ROLE", "LESION_TABLE_SUFFIX", "PETMRDenoiseParameters", "reads_mr", "model_choices", "check_mr",
    "copy_units", "ijk_to_world", "lesion_regions", "PETMRDenoiseLogic",
]

#: Heun steps on a GPU and on a CPU when a card says nothing (the cards' own counts win): the
#: backend's measured default, one step (``meddiffusion.tasks.petmr.model.DEFAULT_STEPS``)
DEFAULT_STEPS, CPU_STEPS = 1, 1
#: the backend accepts 1-1000 Heun steps
MAX_STEPS = 1000
DEVICES = ("auto", "cpu", "cuda")
#: a simulated brain FDG PET at 1/10 of the counts with its T1 MR (seed 7 777 777, never trained on)
SAMPLE = Sample("sample_petmr_brain_pet_drf10.nrrd", "PET/MR brain (1/10 dose)", "PET brain DRF10",
                icon="PETMRDenoise.png", companions=(("sample_petmr_brain_mr.nrrd", "MR brain T1"),))
#: the PET's opacity over the MR in the fused views
DEFAULT_OPACITY = 0.5
#: the sphere read around a lesion point (mm): a 2 cm sphere holds a typical lesion and its peak
DEFAULT_RADIUS_MM = 10.0
#: node reference from the output to the MR it was guided by
MR_REFERENCE_ROLE = "meddiffusionMR"
#: node reference from the output to its lesion table (measured again into the same table)
LESION_TABLE_ROLE = "meddiffusionLesionTable"
LESION_TABLE_SUFFIX = "lesion SUV"
#: the shared SUV window of both PETs runs to this percentile of the denoised one
WINDOW_PERCENTILE = 99.9
#: attribute of the output holding what the backend reported (registration, total activity)
PETMR_ATTRIBUTE = ATTRIBUTE_PREFIX + "petmr"
REPORTED = ("steps", "samples", "mr_guided", "registration", "total_activity_ratio", "total_rescaled", "summary")


class PETMRDenoiseParameters(ParameterSet):
    """The module's settings, stored on its parameter node (saved with the scene)."""

    inputVolume = Node("vtkMRMLScalarVolumeNode", required=True, label="input low-count PET volume")
    #: the patient's MR (T1); None runs a PET-only model
    mrVolume = Node("vtkMRMLScalarVolumeNode", label="MR volume")
    #: None creates a new "<input> denoised" volume on every run
    outputVolume = Node("vtkMRMLScalarVolumeNode", label="output volume")
    #: a catalogue model id; empty lets the backend choose (MR-guided with an MR, else PET only)
    model = Text("")
    steps = Int(CPU_STEPS, minimum=1, maximum=MAX_STEPS)
    device = Choice("auto", choices=DEVICES)
    #: the PET's opacity over the MR in the fused views
    opacity = Float(DEFAULT_OPACITY, minimum=0.0, maximum=1.0)
    #: lesions to read: a point list (a sphere around each point) or an ROI
    lesions = Node("vtkMRMLMarkupsFiducialNode", "vtkMRMLMarkupsROINode", label="lesion points or ROI")
    radiusMm = Float(DEFAULT_RADIUS_MM, minimum=1.0, maximum=50.0)


# -- model catalogue ---------------------------------------------------------------------------
def reads_mr(entry: Any) -> bool:
    """Whether a card's network reads the MR (the backend's rule: ``kwargs.use_mr``, default True)."""
    architecture = card_field(entry, "architecture", {}) or {}
    return bool((architecture.get("kwargs", {}) or {}).get("use_mr", True))


def _selector_card(entry: Any) -> dict:
    """A card as the shared selector reads it: CSRD's per-device Heun steps ({"cpu": 4, "cuda": 32})
    as ``steps`` and ``cpu_steps``; a plain UNet (one pass) as a regression."""
    architecture = dict(card_field(entry, "architecture", {}) or {})
    sampler = dict(architecture.get("sampler", {}) or {})
    steps = sampler.get("steps")
    if isinstance(steps, dict):
        cpu = steps.get("cpu", CPU_STEPS)
        sampler.update(steps=steps.get("cuda", cpu), cpu_steps=cpu)
    architecture["sampler"] = sampler
    if architecture.get("network") == "BasicUNet":
        architecture.setdefault("objective", "regression")
    fields = ("id", "version", "description", "training_data", "metrics", "default_for")
    return {**{name: card_field(entry, name) for name in fields}, "architecture": architecture}


def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries for catalogue entries, as the cards rank them (``default_for``), each led
    by its description's first line; per-device step counts as the card gives them."""
    ordered = sorted(entries, key=card_rank)  # stable: equal ranks keep the catalogue's order
    return models.model_choices([_selector_card(entry) for entry in ordered], max_steps=MAX_STEPS,
                                default_steps=DEFAULT_STEPS, headline="description")


# -- checks and geometry -------------------------------------------------------------------------
def check_mr(node) -> str:
    """Raise ``ValueError`` unless ``node`` may be the MR (the backend's "mr" rule and message);
    returns its DICOM modality."""
    rule = rule_for("mr")
    modality = check_volume_node(node, select="the MR", expected=rule.expected)
    rule.check(slicer.util.arrayFromVolume(node), name=node.GetName(), modality=modality)
    return modality


def copy_units(target, source) -> None:
    """Give ``target`` the coded voxel quantity and units of ``source`` (e.g. SUVbw, g/ml), if any."""
    for getter, setter in (("GetVoxelValueQuantity", "SetVoxelValueQuantity"),
                           ("GetVoxelValueUnits", "SetVoxelValueUnits")):
        coded = getattr(source, getter)()
        if coded is not None:
            copy = slicer.vtkCodedEntry()
            copy.Copy(coded)
            getattr(target, setter)(copy)


def ijk_to_world(volume) -> np.ndarray:
    """The volume's IJK → world (RAS) matrix, through its parent transform when it has a linear one."""
    matrix = nodes.ijk_to_ras(volume)
    parent = volume.GetParentTransformNode()
    if parent is None:
        return matrix
    if not parent.IsTransformToWorldLinear():
        raise ValueError(f"'{volume.GetName()}' is under a non-linear transform; harden it before measuring SUV")
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return slicer.util.arrayFromVTKMatrix(to_world) @ matrix


def lesion_regions(markups, radius_mm: float = DEFAULT_RADIUS_MM) -> list[tuple[str, suv.Region]]:
    """(name, region) per lesion: a sphere of ``radius_mm`` around each point of a point list (its
    label, else "<list> <n>"), the box of an ROI (its name); world coordinates."""
    if markups is None:
        raise ValueError("no lesions: place points on the lesions (or an ROI around one) and select them")
    if markups.IsA("vtkMRMLMarkupsROINode"):
        size = markups.GetSize()
        return [(markups.GetName(), suv.Box.of(slicer.util.arrayFromVTKMatrix(markups.GetObjectToWorldMatrix()),
                                               size))]
    if not markups.IsA("vtkMRMLMarkupsFiducialNode"):
        raise ValueError(f"'{markups.GetName()}' is a {markups.GetClassName()}; expected a point list or an ROI")
    regions = []
    for index in range(markups.GetNumberOfControlPoints()):
        if not markups.GetNthControlPointPositionStatus(index):  # a point being placed, or skipped
            continue
        position = [0.0, 0.0, 0.0]
        markups.GetNthControlPointPositionWorld(index, position)
        name = markups.GetNthControlPointLabel(index) or f"{markups.GetName()} {index + 1}"
        regions.append((name, suv.Sphere(tuple(position), float(radius_mm))))
    if not regions:
        raise ValueError(f"'{markups.GetName()}' holds no placed point; place one on each lesion")
    return regions


# -- the logic ---------------------------------------------------------------------------------
class PETMRDenoiseLogic(CompareTaskLogic):
    """``meddiff pet-denoise`` around MRML (see :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic`)."""

    task = "petmr"
    title = "PET/MR Denoise"
    Parameters = PETMRDenoiseParameters
    select_input = "the low-count PET volume to denoise"

    def __init__(self, scene=None, **options):
        super().__init__(scene, **options)
        #: the PET's opacity over the MR in the fused views (the panel's slider sets it)
        self.opacity = DEFAULT_OPACITY

    @staticmethod
    def _port(name: str, ports):
        return next(port for port in ports if port.name == name)

    # -- checks ----------------------------------------------------------------------------
    def check(self, run) -> None:
        """The PET (the emission rule and the task's limits, by the shared check), the output,
        and the MR when given: the "mr" rule, and neither the PET nor the output."""
        super().check(run)
        mr = run.mrVolume
        if mr is None:
            return
        if mr.GetID() == run.inputVolume.GetID():
            raise ValueError(f"'{mr.GetName()}' is the PET itself; choose the patient's MR, or none to denoise "
                             "the PET alone")
        check_mr(mr)
        output = getattr(run, "outputVolume", None)
        if output is not None and output.GetID() == mr.GetID():
            raise ValueError(f"the output volume is the MR '{mr.GetName()}'; it is never overwritten: choose "
                             "'Create new volume' or another volume")

    # -- files in, nodes out -----------------------------------------------------------------
    def write_inputs(self, run, workdir: Path) -> list:
        """The PET, the MR under its own flag when given, and the output's file."""
        spec = self.spec
        pet = self._port("pet", spec.inputs)
        path = workdir / pet.file
        nodes.write_volume(run.inputVolume, path, compress=False)
        arguments: list = [path]
        if run.mrVolume is not None:
            port = self._port("mr", spec.inputs)
            nodes.write_volume(run.mrVolume, workdir / port.file, compress=False)
            arguments += [port.flags[0], workdir / port.file]
        output = self._port("output", spec.outputs)
        arguments += [output.flags[0], workdir / output.file]
        return arguments + self.options(run)

    def derived_outputs(self, run, result: dict, created: dict) -> dict:
        """No new nodes: the output gets the input's coded units, the MR it was guided by and
        the nuclear display (the inputs' display nodes are left as they are)."""
        output = created["output"]
        copy_units(output, run.inputVolume)
        output.SetNodeReferenceID(MR_REFERENCE_ROLE, run.mrVolume.GetID() if run.mrVolume is not None else None)
        layouts.nuclear_display(output, percentile=WINDOW_PERCENTILE)
        return {}

    def provenance(self, run, result: dict) -> dict:
        """The MR, and what the backend reported (see :meth:`report_of`)."""
        mr = run.mrVolume
        reported = {key: result[key] for key in REPORTED if key in result}
        return {"mr": f"'{mr.GetName()}'" if mr is not None else "none (PET only)", "petmr": json.dumps(reported)}

    def denoise(self, input_volume, *, mr=None, output_volume=None, model: str = "", steps: int = CPU_STEPS,
                device: str = "auto", timeout: float | None = None) -> dict:
        """Run to the end; returns {"output": the denoised PET} (blocking; raises TaskFailed /
        TaskCancelled)."""
        parameters = self.parameters()
        parameters.update(inputVolume=input_volume, mrVolume=mr, outputVolume=output_volume, model=model,
                          steps=steps, device=device)
        return self.run(parameters, timeout=timeout)

    # -- reading a result back -----------------------------------------------------------------
    @staticmethod
    def report_of(denoised) -> dict | None:
        """What the backend reported for a denoised PET: "mr_guided", "registration" (with an MR:
        "shift_mm", "rotation_deg", "registered"), "total_activity_ratio", "summary" (None for
        other volumes)."""
        text = denoised.GetAttribute(PETMR_ATTRIBUTE) if denoised is not None else None
        return json.loads(text) if text else None

    @staticmethod
    def mr_of(denoised):
        """The MR a denoised PET was guided by (None for a PET-only run or another volume)."""
        return denoised.GetNodeReference(MR_REFERENCE_ROLE) if denoised is not None else None

    # -- display -------------------------------------------------------------------------------
    def pet_display(self, before, after) -> None:
        """Both PETs in the nuclear colour table and one SUV window, 0 to the denoised PET's
        99.9th percentile, so before and after read on one scale (display nodes only)."""
        values = slicer.util.arrayFromVolume(after)
        top = float(np.percentile(values, WINDOW_PERCENTILE)) if values.size else 1.0
        for volume in (before, after):
            layouts.nuclear_display(volume, top=top)

    def show_comparison(self, before, after, *, difference=None, fade: float = 0.0) -> None:
        """Before | after in linked side-by-side views in one SUV window; with the run's MR, each
        PET fused over it (MR in grey behind, the PET at :attr:`opacity`)."""
        self.pet_display(before, after)
        super().show_comparison(before, after, difference=difference, fade=fade)
        mr = self.mr_of(after)
        if mr is not None and difference is None:
            layouts.show_fade(mr, after, self.opacity, view=layouts.AFTER_VIEW, scene=self.scene)

    def set_fade(self, before, after, opacity: float) -> None:
        """0: the input fused over the run's MR (or alone); above 0: the denoised PET blended
        over the input, as in every module."""
        mr = self.mr_of(after)
        if mr is not None and opacity == 0.0:
            layouts.show_fade(mr, before, self.opacity, view=layouts.BEFORE_VIEW, scene=self.scene)
        else:
            super().set_fade(before, after, opacity)

    def set_opacity(self, before, after, opacity: float) -> None:
        """The PET's opacity over the MR in the fused views (nothing to fuse without an MR)."""
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"PET opacity must be between 0 and 1, got {opacity}")
        self.opacity = float(opacity)
        mr = self.mr_of(after)
        if mr is None:
            return
        for view, pet in ((layouts.BEFORE_VIEW, before), (layouts.AFTER_VIEW, after)):
            composite = layouts.composite_node(view, self.scene)
            if composite.GetBackgroundVolumeID() == mr.GetID() and composite.GetForegroundVolumeID() == pet.GetID():
                composite.SetForegroundOpacity(self.opacity)

    # -- lesion SUV readout --------------------------------------------------------------------
    def measure_lesions(self, before, after, markups, *, radius_mm: float = DEFAULT_RADIUS_MM, table=None):
        """SUVmax and SUVmean of each lesion before and after (a sphere of ``radius_mm`` around
        each point of a point list, or inside an ROI) into a table node "<after> lesion SUV",
        one row per lesion (:data:`~PETMRDenoiseLib.suv.COLUMNS`).

        Measured again for the same output, the rows replace those of its table (``table``
        names another to fill).  Both volumes must share one grid; nothing else is modified.
        """
        nodes.check_same_geometry(after, before, f"'{after.GetName()}'")
        matrix = ijk_to_world(before)
        if not np.allclose(ijk_to_world(after), matrix, atol=nodes.GEOMETRY_TOLERANCE_MM):
            raise ValueError(f"'{before.GetName()}' and '{after.GetName()}' are under different transforms")
        first = slicer.util.arrayFromVolume(before)
        second = slicer.util.arrayFromVolume(after)
        rows = []
        for name, region in lesion_regions(markups, radius_mm):
            reading = suv.measure(first, matrix, region, name=f"'{before.GetName()}' (lesion '{name}')")
            rows.append(suv.lesion_row(name, region, reading, suv.measure(second, matrix, region)))
        if table is None:
            table = after.GetNodeReference(LESION_TABLE_ROLE)
        table = outputs.table_from_rows(rows, outputs.output_name(after, LESION_TABLE_SUFFIX), reference=after,
                                        columns=suv.COLUMNS, into=table)
        after.SetNodeReferenceID(LESION_TABLE_ROLE, table.GetID())
        return table
