"""Motion Correct logic: a non-gated chest CT node in, ``meddiff motion-correct`` in a child
process, the corrected volume, the calcium segmentation and the Agatston tables back.
MRML and files only, no Qt, so scripts and tests use it directly::

    logic = MotionCorrectLogic()
    created = logic.correct(ctNode, roi=roiNode, steps=10)
    logic.show_comparison(ctNode, created["output"])

The task's ports, files and input rule come from its declaration in the backend
(``meddiffusion.tasks.motion``); :class:`~MedDiffusionUtilsLib.compare.CompareTaskLogic`
checks the input, runs the command and reads back, by port name:

- "output": "<input> motion corrected", a new volume on the input's exact grid;
- "seg": "<input> calcium", one segment per lesion, "before L1"... (input) and "after L1"...
  (corrected) in two layers, so a lesion before and after may overlap;
- "table": "<input> Agatston lesions", the backend's per-lesion table, both scans;

What is Motion Correct's own: an optional ROI turned into the input's voxel index box,
"summary": "<input> Agatston before/after" (Agatston, volume score, lesions and risk
category from the result event), and views centred on the largest lesion.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Sequence

import numpy as np
import slicer
import vtk

from MedDiffusionUtilsLib import models, nodes, outputs
from MedDiffusionUtilsLib.compare import CompareTaskLogic
from MedDiffusionUtilsLib.models import ModelChoice
from MedDiffusionUtilsLib.parameters import Choice, Int, Node, ParameterSet, Text
from MedDiffusionUtilsLib.sampledata import Sample
from MedDiffusionUtilsLib.tasklogic import ATTRIBUTE_PREFIX

__all__ = [
    "DEFAULT_STEPS", "MAX_STEPS", "DEVICES", "SAMPLE", "SUMMARY_SUFFIX", "SUMMARY_MEASURES",
    "MotionCorrectParameters", "model_choices", "roi_index_box", "lps_to_ras", "summary_rows",
    "MotionCorrectLogic",
]

#: ProDM samples its Brownian bridge in 10 of T = 1000 steps by default
DEFAULT_STEPS = 10
MAX_STEPS = 1000
DEVICES = ("auto", "cpu", "cuda")
#: a motion-corrupted scan of the extension's thorax phantom with coronary calcium
SAMPLE = Sample("sample_nongated_chest_ct.nrrd", "Non-gated chest CT (MotionCorrect sample)",
                "Non-gated chest CT", icon="MotionCorrect.png")
SUMMARY_SUFFIX = "Agatston before/after"
#: rows of the summary table: (label, key of the backend's "before"/"after" dicts)
SUMMARY_MEASURES = (("Agatston", "agatston"), ("volume (mm³)", "volume_mm3"),
                    ("lesions", "lesions"), ("risk category", "category"))
#: attribute of the corrected volume holding the scores, largest lesion and corrected slices
CALCIUM_ATTRIBUTE = ATTRIBUTE_PREFIX + "calcium"
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


# -- model catalogue ---------------------------------------------------------------------------
def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries for catalogue entries (``ModelEntry`` objects or dicts), in order, each
    led by its description's first line; a regression model is marked as one pass.

    Step counts the card lacks fall back to ProDM's 10 of at most T = 1000 steps (see
    :func:`MedDiffusionUtilsLib.models.model_choices`).
    """
    return models.model_choices(entries, max_steps=MAX_STEPS, default_steps=DEFAULT_STEPS,
                                headline="description")


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
class MotionCorrectLogic(CompareTaskLogic):
    """``meddiff motion-correct`` around MRML (see :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic`)."""

    task = "motion"
    title = "Motion Correct"
    Parameters = MotionCorrectParameters
    select_input = "the non-gated chest CT to correct"

    def check(self, run) -> None:
        super().check(run)
        if run.roi is not None:
            roi_index_box(run.roi, run.inputVolume)

    def prepare(self, run):
        """The ROI as the input's voxel index box (i0, i1, j0, j1, k0, k1), end exclusive, or
        None for the automatic heart region."""
        run.roi_box = roi_index_box(run.roi, run.inputVolume) if run.roi is not None else None
        return run

    def options(self, run) -> list:
        return (["--roi", *run.roi_box] if run.roi_box is not None else []) + super().options(run)

    def derived_outputs(self, run, result: dict, created: dict) -> dict:
        summary = outputs.table_from_rows(summary_rows(result),
                                          outputs.output_name(run.inputVolume, SUMMARY_SUFFIX),
                                          reference=run.inputVolume, columns=("measure", "before", "after"))
        return {"summary": summary}

    def provenance(self, run, result: dict) -> dict:
        """The ROI, and what the backend reported about calcium (see :meth:`calcium_of`)."""
        calcium = {key: result.get(key) for key in ("before", "after", "largest_lesion_lps", "corrected_slices")}
        return {"roi": " ".join(map(str, run.roi_box)) if run.roi_box else "automatic",
                "calcium": json.dumps(calcium)}

    def correct(self, input_volume, *, roi=None, output_volume=None, model: str = "",
                steps: int = DEFAULT_STEPS, device: str = "auto", timeout: float | None = None) -> dict:
        """Run to the end; returns the new nodes by name: "output" (corrected volume), "seg",
        "table" (per lesion) and "summary" (blocking; raises TaskFailed / TaskCancelled)."""
        parameters = self.parameters()
        parameters.update(inputVolume=input_volume, roi=roi, outputVolume=output_volume, model=model,
                          steps=steps, device=device)
        return self.run(parameters, timeout=timeout)

    # -- reading a result back -----------------------------------------------------------------
    @staticmethod
    def calcium_of(corrected) -> dict | None:
        """What the backend reported about calcium for a corrected volume: "before"/"after"
        scores, "largest_lesion_lps" and "corrected_slices" (None for other volumes)."""
        text = corrected.GetAttribute(CALCIUM_ATTRIBUTE) if corrected is not None else None
        return json.loads(text) if text else None

    # -- comparison ----------------------------------------------------------------------------
    def focus(self, after) -> None:
        self.centre_on_largest_lesion(after)

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
