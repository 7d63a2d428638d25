"""New output nodes placed next to their input: volumes, segmentations, tables, sequences.

Every helper creates new nodes named ``"<input> <suffix>"`` on the input's voxel grid and
puts them under the input's study in Subject Hierarchy.  The input node is never modified.
:func:`rollback_on_error` wraps an import so that a failure half way leaves no new node.
"""

from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import slicer
import vtk

from . import nodes

__all__ = [
    "Code", "SegmentSpec", "output_name", "place_in_study", "rollback_on_error",
    "volume_from_array", "volume_from_file", "move_into", "segmentation_from_labelmap",
    "segmentation_from_file", "segmentation_from_seg_file", "terminology_entry", "table_from_rows", "table_from_csv",
    "read_csv_rows", "sequence_from_arrays", "sequence_from_file", "GENERAL_ANATOMY_CONTEXT",
]

GENERAL_ANATOMY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM/SNOMED): coding scheme, code value, human-readable meaning."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class SegmentSpec:
    """How one label value of a label map becomes a named, coloured segment."""

    label: int
    name: str
    color: tuple[float, float, float] | None = None  # RGB in [0, 1]
    terminology: str | None = None  # a serialized entry, see terminology_entry()


def output_name(reference, suffix: str) -> str:
    """``"<input name> <suffix>"``, the naming rule for every output node."""
    return f"{reference.GetName()} {suffix}".strip()


# -- subject hierarchy -----------------------------------------------------------------------
def place_in_study(node, reference) -> None:
    """Put ``node`` under the study that holds ``reference`` (else beside ``reference``; with
    no reference, at the top of the scene: a generated result)."""
    scene = node.GetScene()
    hierarchy = scene.GetSubjectHierarchyNode()
    parent = hierarchy.GetSceneItemID()
    reference_item = hierarchy.GetItemByDataNode(reference) if reference is not None else 0
    if reference_item:
        parent = hierarchy.GetItemParent(reference_item)
        study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
        ancestor = parent
        while ancestor and ancestor != hierarchy.GetSceneItemID():
            if hierarchy.GetItemLevel(ancestor) == study_level:
                parent = ancestor
                break
            ancestor = hierarchy.GetItemParent(ancestor)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


@contextmanager
def rollback_on_error(scene) -> Iterator[None]:
    """Remove every node added to ``scene`` inside the block if the block raises."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node is not None and node.GetID() not in before and node.GetScene() is scene:
                scene.RemoveNode(node)
        raise


# -- volumes ---------------------------------------------------------------------------------
def volume_from_array(array: np.ndarray, reference, suffix: str, *, labelmap: bool = False):
    """A new volume holding ``array`` (k, j, i) on ``reference``'s grid."""
    node = _volume_on_grid(array, reference, output_name(reference, suffix), labelmap)
    node.CreateDefaultDisplayNodes()
    place_in_study(node, reference)
    return node


def _volume_on_grid(array: np.ndarray, reference, name: str, labelmap: bool):
    array = np.asarray(array)
    expected = tuple(reversed(nodes.dimensions(reference)))
    if array.shape != expected:
        raise ValueError(f"array has shape {array.shape}; '{reference.GetName()}' needs "
                         f"{expected} (k, j, i) to share its grid")
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = reference.GetScene().AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, array)
    nodes.copy_geometry(node, reference)
    return node


def volume_from_file(path: str | os.PathLike, reference, suffix: str, *, labelmap: bool = False):
    """Read a result volume; it must lie on ``reference``'s grid."""
    node = nodes.read_volume(path, scene=reference.GetScene(), name=output_name(reference, suffix),
                             reference=reference, labelmap=labelmap)
    place_in_study(node, reference)
    return node


def move_into(source, target, reference):
    """Give ``target`` (an output volume the user chose) the voxels of ``source`` on
    ``reference``'s grid, place it under ``reference``'s study and remove ``source``."""
    image = vtk.vtkImageData()
    image.DeepCopy(source.GetImageData())
    target.SetAndObserveImageData(image)
    nodes.copy_geometry(target, reference)
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    place_in_study(target, reference)
    source.GetScene().RemoveNode(source)
    return target


# -- segmentations ---------------------------------------------------------------------------
def terminology_entry(type_code: Code, category_code: Code, *, modifier: Code | None = None,
                      context: str = GENERAL_ANATOMY_CONTEXT) -> str:
    """Serialize a segment terminology (category + type) the way Slicer stores it on segments."""
    entry = slicer.vtkSlicerTerminologyEntry()
    entry.SetTerminologyContextName(context)
    for target, code in ((entry.GetCategoryObject(), category_code),
                         (entry.GetTypeObject(), type_code),
                         (entry.GetTypeModifierObject(), modifier)):
        if code is not None:
            target.SetCodingSchemeDesignator(code.scheme)
            target.SetCodeValue(code.value)
            target.SetCodeMeaning(code.meaning)
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(entry)


def segmentation_from_labelmap(labels: np.ndarray, reference, suffix: str,
                               segments: Sequence[SegmentSpec]):
    """A segmentation with one segment per :class:`SegmentSpec`, from a (k, j, i) label array.

    Label values that appear in ``labels`` but have no spec are refused rather than dropped,
    so a mismatch between backend and module shows up instead of hiding voxels.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label map must hold integers, got {labels.dtype}")
    specs = {spec.label: spec for spec in segments}
    if len(specs) != len(segments) or 0 in specs:
        raise ValueError("segment specs need distinct, non-zero label values")
    present = {int(v) for v in np.unique(labels)} - {0}
    unknown = sorted(present - specs.keys())
    if unknown:
        raise ValueError(f"label map holds values {unknown} that have no segment spec; "
                         f"expected only {sorted(specs)}")
    scene = reference.GetScene()
    with rollback_on_error(scene):
        label_node = _volume_on_grid(labels.astype(np.int32), reference, "__labels", labelmap=True)
        try:
            segmentation = _segmentation_from_label_node(label_node, reference, suffix, specs)
        finally:
            scene.RemoveNode(label_node)
    return segmentation


def segmentation_from_file(path: str | os.PathLike, reference, suffix: str,
                           segments: Sequence[SegmentSpec]):
    """A segmentation from a label-map file (NRRD/NIfTI) on ``reference``'s grid."""
    scene = reference.GetScene()
    with rollback_on_error(scene):
        label_node = nodes.read_volume(path, scene=scene, reference=reference, labelmap=True)
        try:
            labels = slicer.util.arrayFromVolume(label_node).copy()
        finally:
            scene.RemoveNode(label_node)
        return segmentation_from_labelmap(labels, reference, suffix, segments)


def segmentation_from_seg_file(path: str | os.PathLike, reference, suffix: str):
    """A ``.seg.nrrd`` result (segments, names and layers as written) on ``reference``'s grid."""
    segmentation = nodes.read_segmentation(path, scene=reference.GetScene(),
                                           name=output_name(reference, suffix), reference=reference)
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
                f"the {suffix} segmentation is not on the grid of '{reference.GetName()}' (its "
                f"IJKToRAS differs by up to {difference:.3g} mm)")
    place_in_study(segmentation, reference)
    return segmentation


def _segmentation_from_label_node(label_node, reference, suffix, specs):
    scene = reference.GetScene()
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                output_name(reference, suffix))
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    segmentation_node.CreateDefaultDisplayNodes()
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            label_node, segmentation_node):
        raise ValueError(f"could not turn the label map into segmentation '{segmentation_node.GetName()}'")
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        spec = specs[segment.GetLabelValue()]
        segment.SetName(spec.name)
        if spec.color is not None:
            segment.SetColor(*spec.color)
        if spec.terminology:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), spec.terminology)
    place_in_study(segmentation_node, reference)
    return segmentation_node


# -- tables ----------------------------------------------------------------------------------
def table_from_rows(rows: Sequence[Mapping[str, Any]], name: str, *, reference=None,
                    scene=None, columns: Sequence[str] | None = None, into=None):
    """A table node from dict rows; numeric columns become numbers, the rest text.

    ``into``, a table node, is emptied and filled instead of adding a new one (a readout
    measured again stays where the user shows it)."""
    if not rows and not columns:
        raise ValueError("a table needs at least one row or an explicit column list")
    columns = list(columns or rows[0].keys())
    if into is not None:
        table_node = into
        table_node.RemoveAllColumns()
    else:
        scene = scene or (reference.GetScene() if reference is not None else slicer.mrmlScene)
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    for column in columns:
        values = [row.get(column) for row in rows]
        numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                      for v in values)
        array = vtk.vtkDoubleArray() if numeric and values else vtk.vtkStringArray()
        array.SetName(column)
        for value in values:
            array.InsertNextValue(float(value) if numeric else ("" if value is None else str(value)))
        table.AddColumn(array)
    table_node.Modified()
    if reference is not None:
        place_in_study(table_node, reference)
    return table_node


def table_from_csv(path: str | os.PathLike, name: str, *, reference=None, scene=None):
    """A table node from a CSV/TSV file the backend wrote (numeric columns as numbers)."""
    scene = scene or (reference.GetScene() if reference is not None else slicer.mrmlScene)
    table_node = nodes.read_table(path, scene=scene, name=name)
    if reference is not None:
        place_in_study(table_node, reference)
    return table_node


def read_csv_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (for modules that post-process a backend table)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- sequences -------------------------------------------------------------------------------
def sequence_from_arrays(frames: Sequence[np.ndarray], reference, suffix: str, *,
                         index_values: Sequence[float] | None = None, index_name: str = "time",
                         index_unit: str = "s"):
    """A volume sequence (one frame per array, all on ``reference``'s grid) plus its browser.

    Returns ``(sequence_node, browser_node)``.
    """
    if len(frames) == 0:
        raise ValueError("a sequence needs at least one frame")
    index_values = list(range(len(frames))) if index_values is None else list(index_values)
    if len(index_values) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(index_values)} index values")
    expected = tuple(reversed(nodes.dimensions(reference)))
    scene = reference.GetScene()
    with rollback_on_error(scene):
        sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", output_name(reference, suffix))
        sequence.SetIndexName(index_name)
        sequence.SetIndexUnit(index_unit)
        sequence.SetIndexType(sequence.NumericIndex)
        for number, (frame, value) in enumerate(zip(frames, index_values)):
            frame = np.asarray(frame)
            if frame.shape != expected:
                raise ValueError(f"frame {number} has shape {frame.shape}; expected {expected}")
            volume = slicer.vtkMRMLScalarVolumeNode()
            slicer.util.updateVolumeFromArray(volume, frame)
            nodes.copy_geometry(volume, reference)
            sequence.SetDataNodeAtValue(volume, f"{value:g}")
        browser = nodes.sequence_browser(sequence)
        place_in_study(sequence, reference)
        place_in_study(browser, reference)
    return sequence, browser


def sequence_from_file(path: str | os.PathLike, reference, suffix: str):
    """Read a ``.seq.nrrd`` result on ``reference``'s grid; returns (sequence, browser)."""
    scene = reference.GetScene()
    with rollback_on_error(scene):
        sequence, browser = nodes.read_sequence(path, scene=scene, reference=reference,
                                                name=output_name(reference, suffix))
        place_in_study(sequence, reference)
        place_in_study(browser, reference)
    return sequence, browser
