"""Motion Correct logic: a non-gated chest CT node in, ``meddiff motion-correct`` in a child
process, the corrected volume, the calcium segmentation and the Agatston tables back.
MRML and files only, no Qt, so scripts and tests use it directly::

    logic = MotionCorrectLogic()
    corrected, calcium, lesions, summary = logic.correct(ctNode, roi=roiNode, steps=10)
    logic.show_comparison(ctNode, corrected)

The input is checked before anything starts (a single-component CT volume in Hounsfield
units; an optional ROI that overlaps it, turned into the input's voxel index box), written
to the run's temporary folder with its geometry, corrected by the backend and read back:

- "<input> motion corrected": a new volume on the input's exact grid, under its study;
- "<input> calcium": one segment per lesion, "before L1"... (input) and "after L1"...
  (corrected) in two layers, so a lesion before and after may overlap;
- "<input> Agatston lesions": the backend's per-lesion table, both scans;
- "<input> Agatston before/after": Agatston, volume score, lesions and risk category.

The input node is never modified; a cancelled or failed run adds no node.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer
import vtk

from MedDiffusionUtilsLib import inputs, layouts, models, nodes, outputs
from MedDiffusionUtilsLib.inputs import check_output_volume
from MedDiffusionUtilsLib.models import ModelChoice
from MedDiffusionUtilsLib.modulebase import TaskLogic
from MedDiffusionUtilsLib.parameters import Choice, Int, Node, ParameterSet, Text

__all__ = [
    "MODULE_NAME", "TASK", "COMMAND", "DEFAULT_STEPS", "MAX_STEPS", "DEVICES", "SUFFIXES",
    "SUMMARY_MEASURES", "MotionCorrectParameters", "CorrectionRun", "ModelChoice", "model_choices",
    "check_ct_volume", "check_output_volume", "roi_index_box", "lps_to_ras", "summary_rows",
    "MotionCorrectLogic",
]

MODULE_NAME = "MotionCorrect"
#: the catalogue's task name and the backend subcommand
TASK = "motion"
COMMAND = "motion-correct"
#: ProDM samples its Brownian bridge in 10 of T = 1000 steps by default
DEFAULT_STEPS = 10
MAX_STEPS = 1000
DEVICES = ("auto", "cpu", "cuda")
#: output node name suffixes: "<input> <suffix>"
SUFFIXES = {"volume": "motion corrected", "segmentation": "calcium",
            "lesions": "Agatston lesions", "summary": "Agatston before/after"}
#: rows of the summary table: (label, key of the backend's "before"/"after" dicts)
SUMMARY_MEASURES = (("Agatston", "agatston"), ("volume (mm³)", "volume_mm3"),
                    ("lesions", "lesions"), ("risk category", "category"))
ATTRIBUTE_PREFIX = "MedDiffusion."
#: attribute of the corrected volume holding the scores, largest lesion and corrected slices
CALCIUM_ATTRIBUTE = ATTRIBUTE_PREFIX + "calcium"
INPUT_REFERENCE_ROLE = "meddiffusionInput"
#: the backend's file names inside the run folder
FILES = {"input": "input.nrrd", "volume": "corrected.nrrd", "segmentation": "calcium.seg.nrrd",
         "table": "agatston.csv"}

# Air is -1000 HU; a chest CT always has lung and air, while MR, PET or CT stored without
# its rescale intercept has no value this low (the backend applies the same rule).
MAX_LOWEST_HU = -500.0
#: how far (in voxels) an ROI must reach into a voxel for the voxel to count as inside
ROI_OVERLAP_TOLERANCE = 1e-6


class MotionCorrectParameters(ParameterSet):
    """The module's settings, stored on its parameter node (saved with the scene)."""

    inputVolume = Node("vtkMRMLScalarVolumeNode", required=True, label="input CT volume")
    #: None lets the backend find the heart region itself
    roi = Node("vtkMRMLMarkupsROINode", label="region of interest")
    #: None creates a new "<input> motion corrected" volume on every run
    outputVolume = Node("vtkMRMLScalarVolumeNode", label="output volume")
    #: a catalogue model id; empty lets the backend choose its default model
    model = Text("")
    steps = Int(DEFAULT_STEPS, minimum=1, maximum=MAX_STEPS)
    device = Choice("auto", choices=DEVICES)


@dataclass(frozen=True)
class CorrectionRun:
    """The settings of one run, fixed when it starts (later edits apply to the next run).

    ``roi_box`` is the ROI as the input's voxel index box (i0, i1, j0, j1, k0, k1), end
    exclusive, or None for the automatic heart region.
    """

    inputVolume: Any
    roi: Any
    outputVolume: Any
    model: str
    steps: int
    device: str
    roi_box: tuple[int, int, int, int, int, int] | None = None

    @classmethod
    def of(cls, parameters: MotionCorrectParameters) -> "CorrectionRun":
        names = [name for name in cls.__dataclass_fields__ if name != "roi_box"]
        return cls(**{name: getattr(parameters, name) for name in names})

    def missing(self) -> list[str]:
        return [] if self.inputVolume is not None else ["inputVolume"]


# -- model catalogue ---------------------------------------------------------------------------
def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries for catalogue entries (``ModelEntry`` objects or dicts), in order, each
    led by its description's first line; a regression model is marked as one pass.

    Step counts the card lacks fall back to ProDM's 10 of at most T = 1000 steps (see
    :func:`MedDiffusionUtilsLib.models.model_choices`).
    """
    return models.model_choices(entries, max_steps=MAX_STEPS, default_steps=DEFAULT_STEPS,
                                headline="description")


# -- input checks ------------------------------------------------------------------------------
def check_ct_volume(node) -> None:
    """Raise ``ValueError`` unless ``node`` is a single-component CT volume in HU.

    Motion correction and the calcium score work in Hounsfield units (calcium is 130 HU and
    up), so a DICOM series of another modality, or an image without air, is refused.
    """
    inputs.check_ct_volume(node, module="Motion Correct", select="the non-gated chest CT to correct",
                           expected="a chest CT in Hounsfield units")
    lowest = float(np.min(slicer.util.arrayFromVolume(node)))
    if lowest > MAX_LOWEST_HU:
        raise ValueError(f"'{node.GetName()}' does not look like CT in Hounsfield units: its lowest value "
                         f"is {lowest:g}, but a chest CT holds air near -1000 HU (below {MAX_LOWEST_HU:g})")


# -- geometry ----------------------------------------------------------------------------------
def _local_to_world(node) -> np.ndarray:
    """4x4 from ``node``'s own RAS to world RAS (its parent transforms, which must be linear)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, matrix):
        raise ValueError(f"'{node.GetName()}' is under the non-linear transform "
                         f"'{parent.GetName()}'; harden the transform first")
    return slicer.util.arrayFromVTKMatrix(matrix)


def roi_index_box(roi, volume) -> tuple[int, int, int, int, int, int]:
    """The ROI as ``volume``'s voxel index box ``(i0, i1, j0, j1, k0, k1)``, end exclusive.

    The box holds every voxel that the ROI reaches into: the ROI's eight corners (it may be
    rotated, and the grid oblique) are taken to voxel indices, and a voxel counts when its
    cell (centre ± half a voxel) overlaps their bounding box.  It is clipped to the volume;
    an ROI that is empty or misses the volume raises ``ValueError``.
    """
    name = roi.GetName()
    size = np.asarray(roi.GetSize(), dtype=float)
    if not np.all(size > 0):
        raise ValueError(f"ROI '{name}' is empty (size {' x '.join(f'{s:g}' for s in size)} mm); "
                         "place it around the heart, or choose no ROI to find the heart automatically")
    signs = np.array(list(itertools.product((-0.5, 0.5), repeat=3)))
    corners = np.column_stack([signs * size, np.ones(len(signs))])  # ROI object coordinates
    object_to_world = slicer.util.arrayFromVTKMatrix(roi.GetObjectToWorldMatrix())
    world_to_ijk = np.linalg.inv(_local_to_world(volume) @ nodes.ijk_to_ras(volume))
    ijk = (world_to_ijk @ object_to_world @ corners.T)[:3]
    low, high = ijk.min(axis=1), ijk.max(axis=1)
    dims = np.asarray(nodes.dimensions(volume))
    start = np.floor(low - 0.5 + ROI_OVERLAP_TOLERANCE).astype(int) + 1
    stop = np.ceil(high + 0.5 - ROI_OVERLAP_TOLERANCE).astype(int)
    start, stop = np.clip(start, 0, dims), np.clip(stop, 0, dims)
    if np.any(start >= stop):
        raise ValueError(f"ROI '{name}' does not overlap '{volume.GetName()}' (its corners span voxel "
                         f"indices {np.round(low, 1).tolist()} to {np.round(high, 1).tolist()}, the "
                         f"volume 0 to {(dims - 1).tolist()}); move the ROI onto the heart")
    return tuple(int(value) for pair in zip(start, stop) for value in pair)


def lps_to_ras(point: Sequence[float]) -> tuple[float, float, float]:
    """A physical point from the backend (LPS, as in ITK and DICOM) in Slicer's RAS."""
    x, y, z = (float(value) for value in point)
    return (-x, -y, z)


# -- results -----------------------------------------------------------------------------------
def _scores(result: dict, scan: str) -> dict:
    scores = result.get(scan)
    if not isinstance(scores, dict):
        raise ValueError(f"the backend's result has no '{scan}' scores")
    missing = [key for _, key in SUMMARY_MEASURES if key not in scores]
    if missing:
        raise ValueError(f"the backend's '{scan}' scores lack {', '.join(missing)}")
    return scores


def _cell(key: str, value: Any) -> str:
    if key == "category":
        return str(value)
    if key == "lesions":
        return str(int(value))
    return f"{float(value):.1f}"


def summary_rows(result: dict) -> list[dict[str, str]]:
    """The before/after table: one row per measure, columns "measure", "before", "after"."""
    before, after = _scores(result, "before"), _scores(result, "after")
    return [{"measure": label, "before": _cell(key, before[key]), "after": _cell(key, after[key])}
            for label, key in SUMMARY_MEASURES]


# -- the logic ---------------------------------------------------------------------------------
class MotionCorrectLogic(TaskLogic):
    """``meddiff motion-correct`` around MRML: checks, input file, arguments, result nodes.

    ``backend`` replaces ``[python, -m, meddiffusion, motion-correct]`` (tests run a fake child
    that speaks the same protocol); ``environment`` adds variables for the child.
    """

    command = COMMAND

    def parameters(self) -> MotionCorrectParameters:
        """The module's parameter node in this logic's scene."""
        return MotionCorrectParameters.for_module(self.scene, MODULE_NAME)

    def check(self, parameters: MotionCorrectParameters | CorrectionRun) -> None:
        """Raise ``ValueError`` naming what is wrong before anything is started."""
        check_ct_volume(parameters.inputVolume)
        check_output_volume(parameters.outputVolume, parameters.inputVolume)
        if parameters.roi is not None:
            roi_index_box(parameters.roi, parameters.inputVolume)

    def start(self, parameters: MotionCorrectParameters, **options):
        """Check, then start a run with the settings as they are now (see :class:`CorrectionRun`)."""
        run = CorrectionRun.of(parameters)
        self.check(run)
        if run.roi is not None:
            run = replace(run, roi_box=roi_index_box(run.roi, run.inputVolume))
        return super().start(run, **options)

    def write_inputs(self, parameters: CorrectionRun, workdir: Path) -> list:
        paths = {key: workdir / name for key, name in FILES.items()}
        # uncompressed: the file lives for one run, and gzip would cost seconds on a full CT
        nodes.write_volume(parameters.inputVolume, paths["input"], compress=False)
        arguments: list = [paths["input"], "-o", paths["volume"], "--seg", paths["segmentation"],
                           "--table", paths["table"]]
        if parameters.roi_box is not None:
            arguments += ["--roi", *parameters.roi_box]
        arguments += ["--steps", parameters.steps, "--device", parameters.device]
        if parameters.model:
            arguments += ["--model", parameters.model]
        return arguments

    def import_results(self, parameters: CorrectionRun, result: dict, workdir: Path) -> list:
        paths = {key: workdir / name for key, name in FILES.items()}
        for key, what in (("volume", "corrected volume"), ("segmentation", "calcium segmentation"),
                          ("table", "Agatston table")):
            if not paths[key].exists():
                raise ValueError(f"the backend reported success but wrote no {what}")
        reference = parameters.inputVolume
        for node in (reference, parameters.outputVolume):
            if node is not None and node.GetScene() is None:
                raise ValueError(f"'{node.GetName()}' was removed from the scene during the run")
        summary = summary_rows(result)  # a result without scores fails before any node is added

        corrected = outputs.volume_from_file(paths["volume"], reference, SUFFIXES["volume"])
        if parameters.outputVolume is not None:
            corrected = outputs.move_into(corrected, parameters.outputVolume, reference)
        segmentation = nodes.read_segmentation(
            paths["segmentation"], scene=reference.GetScene(),
            name=outputs.output_name(reference, SUFFIXES["segmentation"]), reference=reference)
        _check_segmentation_grid(segmentation, reference)
        outputs.place_in_study(segmentation, reference)
        lesions = outputs.table_from_csv(paths["table"], outputs.output_name(reference, SUFFIXES["lesions"]),
                                         reference=reference)
        totals = outputs.table_from_rows(summary, outputs.output_name(reference, SUFFIXES["summary"]),
                                         reference=reference, columns=("measure", "before", "after"))
        created = [corrected, segmentation, lesions, totals]
        _record_provenance(created, result, parameters)
        return created

    # -- scripting -----------------------------------------------------------------------------
    def correct(self, input_volume, *, roi=None, output_volume=None, model: str = "",
                steps: int = DEFAULT_STEPS, device: str = "auto", timeout: float | None = None) -> list:
        """Run to the end; returns [corrected volume, segmentation, lesion table, summary table]
        (blocking; raises TaskFailed / TaskCancelled)."""
        parameters = self.parameters()
        parameters.update(inputVolume=input_volume, roi=roi, outputVolume=output_volume, model=model,
                          steps=steps, device=device)
        return self.run(parameters, timeout=timeout)

    # -- reading a result back -----------------------------------------------------------------
    @staticmethod
    def input_of(output):
        """The volume an output of this module was computed from (None if unknown)."""
        return output.GetNodeReference(INPUT_REFERENCE_ROLE) if output is not None else None

    @staticmethod
    def calcium_of(corrected) -> dict | None:
        """What the backend reported about calcium for a corrected volume: "before"/"after"
        scores, "largest_lesion_lps" and "corrected_slices" (None for other volumes)."""
        text = corrected.GetAttribute(CALCIUM_ATTRIBUTE) if corrected is not None else None
        return json.loads(text) if text else None

    # -- comparison ----------------------------------------------------------------------------
    def show_comparison(self, before, after, *, fade: float = 0.0, centre: bool = True) -> None:
        """Before | after in linked side-by-side views, ``after`` faded over ``before`` on the
        left, every slice view centred on the largest lesion (when there is calcium)."""
        layouts.show_side_by_side(before, after, scene=self.scene)
        self.set_fade(before, after, fade)
        if centre:
            self.centre_on_largest_lesion(after)

    def set_fade(self, before, after, opacity: float) -> None:
        """Blend ``after`` over ``before`` in the left view: 0 shows before, 1 shows after."""
        layouts.show_fade(before, after, opacity, view=layouts.BEFORE_VIEW, scene=self.scene)

    def centre_on_largest_lesion(self, corrected) -> tuple[float, float, float] | None:
        """Centre all slice views on the largest lesion of the input; returns the point (RAS)
        or None, leaving the views where they are, when the input has no calcium."""
        calcium = self.calcium_of(corrected) or {}
        point = calcium.get("largest_lesion_lps")
        if point is None:
            return None
        ras = np.append(lps_to_ras(point), 1.0)
        reference = self.input_of(corrected) or corrected
        r, a, s = (float(value) for value in (_local_to_world(reference) @ ras)[:3])
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice,
                                              -1, None)
        return (r, a, s)


def _check_segmentation_grid(segmentation, reference) -> None:
    """Every layer of the segmentation must lie on the input's voxel grid."""
    matrix = vtk.vtkMatrix4x4()
    expected = nodes.ijk_to_ras(reference)
    contents = segmentation.GetSegmentation()
    for index in range(contents.GetNumberOfSegments()):
        labelmap = contents.GetNthSegment(index).GetRepresentation(
            slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
        if labelmap is None:
            continue
        labelmap.GetImageToWorldMatrix(matrix)
        difference = np.abs(slicer.util.arrayFromVTKMatrix(matrix) - expected).max()
        if difference > nodes.GEOMETRY_TOLERANCE_MM:
            raise nodes.GeometryMismatch(
                f"the calcium segmentation is not on the grid of '{reference.GetName()}' (its "
                f"IJKToRAS differs by up to {difference:.3g} mm)")


def _record_provenance(created: list, result: dict, parameters: CorrectionRun) -> None:
    """Link every output to the input; the corrected volume also keeps how it was made and
    what the backend reported about calcium (read back by :meth:`MotionCorrectLogic.calcium_of`)."""
    values = {"task": COMMAND, "input": parameters.inputVolume.GetName(),
              "model": result.get("model", parameters.model), "steps": result.get("steps", parameters.steps),
              "roi": " ".join(map(str, parameters.roi_box)) if parameters.roi_box else "automatic",
              "seconds": result.get("seconds", "")}
    calcium = {key: result.get(key) for key in ("before", "after", "largest_lesion_lps", "corrected_slices")}
    for node in created:
        node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, parameters.inputVolume.GetID())
    corrected = created[0]
    for key, value in values.items():
        corrected.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
    corrected.SetAttribute(CALCIUM_ATTRIBUTE, json.dumps(calcium))
