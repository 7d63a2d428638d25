"""MRML nodes <-> files for the backend, with geometry kept exactly.

The backend reads and writes files; Slicer holds nodes.  These adapters are the only place
the two meet.  Every reader creates a NEW node (inputs are never touched), checks that the
result lies on the reference volume's grid (same dimensions, IJKToRAS within
``GEOMETRY_TOLERANCE_MM``) and then copies the reference's spacing, origin and directions
onto it, so a round trip through a file header (LPS text in NRRD, float32 in NIfTI) leaves
the IJKToRAS bit-identical to the input's.

Only storage nodes and MRML classes are used (no ``slicer.app``), so the same code runs
inside Slicer and on ``slicer-core`` in tests.

Formats:
  volumes       .nrrd .nhdr .nii .nii.gz .mha .mhd   (vtkMRMLVolumeArchetypeStorageNode)
  segmentations .seg.nrrd                           (vtkMRMLSegmentationStorageNode);
                NIfTI only as a label map (write_labelmap), because the segmentation storage
                node writes NRRD bytes under a .nii.gz name
  tables        .csv .tsv                           (vtkMRMLTableStorageNode)
  sequences     .seq.nrrd .seq.nhdr                 (vtkMRMLVolumeSequenceStorageNode)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import slicer
import vtk

__all__ = [
    "GEOMETRY_TOLERANCE_MM", "GeometryMismatch", "ijk_to_ras", "set_ijk_to_ras", "copy_geometry",
    "dimensions", "check_same_geometry", "write_volume", "read_volume", "write_segmentation",
    "write_labelmap", "read_segmentation", "write_table", "read_table", "write_sequence",
    "read_sequence", "sequence_browser",
]

#: largest difference (mm) between IJKToRAS entries still taken as "the same grid"
GEOMETRY_TOLERANCE_MM = 1e-4

_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
_SEGMENTATION_SUFFIXES = (".seg.nrrd", ".seg.nhdr")
_TABLE_SUFFIXES = (".csv", ".tsv")
_SEQUENCE_SUFFIXES = (".seq.nrrd", ".seq.nhdr")
# header + separate data file: cannot be renamed into place as one file
_TWO_FILE_SUFFIXES = (".nhdr", ".mhd", ".seg.nhdr", ".seq.nhdr")


class GeometryMismatch(ValueError):
    """A result does not lie on its input's voxel grid."""


# -- geometry --------------------------------------------------------------------------------
def ijk_to_ras(node) -> np.ndarray:
    """The node's 4x4 IJKToRAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def set_ijk_to_ras(node, matrix: np.ndarray) -> None:
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(matrix, dtype=float)))


def dimensions(node) -> tuple[int, int, int]:
    """Voxel counts (i, j, k) of a volume node."""
    image = node.GetImageData()
    if image is None:
        raise ValueError(f"volume '{node.GetName()}' has no image data")
    return tuple(image.GetDimensions())


def check_same_geometry(node, reference, what: str = "result",
                        tolerance_mm: float = GEOMETRY_TOLERANCE_MM) -> None:
    """Raise :class:`GeometryMismatch` unless ``node`` lies on ``reference``'s grid."""
    if dimensions(node) != dimensions(reference):
        raise GeometryMismatch(
            f"{what} has {dimensions(node)} voxels but '{reference.GetName()}' has "
            f"{dimensions(reference)}; the output must lie on the input's grid")
    difference = np.abs(ijk_to_ras(node) - ijk_to_ras(reference)).max()
    if difference > tolerance_mm:
        raise GeometryMismatch(
            f"{what} geometry (spacing/origin/direction) differs from '{reference.GetName()}' "
            f"by up to {difference:.3g} mm in IJKToRAS; expected at most {tolerance_mm:g} mm")


def copy_geometry(node, reference) -> None:
    """Give ``node`` bit-for-bit ``reference``'s spacing, origin and directions.

    Copies the stored parts rather than the composed matrix (setting a matrix decomposes
    and recomposes it).  The volume node's setters ignore changes within floating-point
    fuzz, so each part is first moved away and then set, which makes the copy exact.
    """
    directions = vtk.vtkMatrix4x4()
    reference.GetIJKToRASDirectionMatrix(directions)
    moved = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            moved.SetElement(row, column, directions.GetElement(row, column) + 1.0)
    origin, spacing = reference.GetOrigin(), reference.GetSpacing()
    was_modifying = node.StartModify()
    node.SetIJKToRASDirectionMatrix(moved)
    node.SetIJKToRASDirectionMatrix(directions)
    node.SetOrigin(*(value + 1.0 for value in origin))
    node.SetOrigin(*origin)
    node.SetSpacing(*(value + 1.0 for value in spacing))
    node.SetSpacing(*spacing)
    node.EndModify(was_modifying)


def _adopt_reference_geometry(node, reference, what: str, tolerance_mm: float) -> None:
    check_same_geometry(node, reference, what, tolerance_mm)
    copy_geometry(node, reference)


# -- shared plumbing -------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_VOLUME_SUFFIXES + _SEGMENTATION_SUFFIXES + _TABLE_SUFFIXES
                         + _SEQUENCE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _require_suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = _suffix(path)
    if suffix not in allowed:
        raise ValueError(f"cannot write {what} to '{path.name}': expected one of {', '.join(allowed)}")
    return suffix


def _scene(scene):
    scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise ValueError("no MRML scene: pass scene= or set slicer.mrmlScene")
    return scene


def _write_atomically(path: Path, write: Callable[[Path], bool], what: str,
                      sidecar: Callable[[Path], Path] | None = None) -> Path:
    """Write via a hidden temporary name in the target folder, then rename into place.

    ``sidecar`` maps a data file to a companion file the writer adds (a table's schema),
    which is moved along with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(path)
    if suffix in _TWO_FILE_SUFFIXES:
        if not write(path):
            raise OSError(f"could not write {what} to '{path}'")
        return path
    temporary = path.with_name(f".{uuid.uuid4().hex}{suffix}")
    try:
        if not write(temporary) or not temporary.exists():
            raise OSError(f"could not write {what} to '{path}'")
        if sidecar is not None and sidecar(temporary).exists():
            os.replace(sidecar(temporary), sidecar(path))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        if sidecar is not None:
            sidecar(temporary).unlink(missing_ok=True)
    return path


def _read_into(storage_node, node, path: Path, what: str, scene=None) -> None:
    if not Path(path).exists():
        raise ValueError(f"{what} file '{path}' does not exist")
    if scene is not None:
        storage_node.SetScene(scene)
    storage_node.SetFileName(str(path))
    if not storage_node.ReadData(node):
        raise ValueError(f"could not read {what} from '{path}'")


# -- volumes ---------------------------------------------------------------------------------
def write_volume(volume_node, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a scalar or label-map volume node to ``path``; the node itself is not modified."""
    path = Path(path)
    _require_suffix(path, _VOLUME_SUFFIXES, "a volume")
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError("write_volume expects a vtkMRMLScalarVolumeNode (or a label map)")
    dimensions(volume_node)

    def write(target: Path) -> bool:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(target))
        storage.SetUseCompression(compress)
        return bool(storage.WriteData(volume_node))

    return _write_atomically(path, write, "volume")


def read_volume(path: str | os.PathLike, *, scene=None, name: str | None = None, reference=None,
                labelmap: bool = False, tolerance_mm: float = GEOMETRY_TOLERANCE_MM):
    """Read a volume file into a new node added to the scene.

    With ``reference``, the file must lie on the reference's grid; the node then carries the
    reference's exact IJKToRAS.  Nothing is added to the scene when reading or checking fails.
    """
    scene = _scene(scene)
    path = Path(path)
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    _read_into(slicer.vtkMRMLVolumeArchetypeStorageNode(), node, path, "volume")
    if reference is not None:
        _adopt_reference_geometry(node, reference, f"volume file '{path.name}'", tolerance_mm)
    node.SetName(name or _stem(path))
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))] or path.name


# -- segmentations ---------------------------------------------------------------------------
def write_segmentation(segmentation_node, path: str | os.PathLike) -> Path:
    """Write a segmentation as ``.seg.nrrd`` (segment names, colours, terminology kept)."""
    path = Path(path)
    if _suffix(path) in (".nii", ".nii.gz"):
        raise ValueError(f"cannot write a segmentation to '{path.name}': NIfTI holds only a "
                         "label map; use write_labelmap() for NIfTI or a .seg.nrrd name")
    _require_suffix(path, _SEGMENTATION_SUFFIXES, "a segmentation")

    def write(target: Path) -> bool:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(target))
        return bool(storage.WriteData(segmentation_node))

    return _write_atomically(path, write, "segmentation")


def write_labelmap(segmentation_node, path: str | os.PathLike, reference) -> Path:
    """Write a segmentation as a label map on ``reference``'s grid (NRRD or NIfTI).

    Each voxel holds its segment's label value (``vtkSegment.GetLabelValue()``), so labels
    that came from a label map go back out unchanged.
    """
    path = Path(path)
    _require_suffix(path, _VOLUME_SUFFIXES, "a label map")
    scene = segmentation_node.GetScene()
    if scene is None:
        raise ValueError("write_labelmap needs a segmentation node that is in a scene")
    segmentation = segmentation_node.GetSegmentation()
    segment_ids = vtk.vtkStringArray()
    segmentation.GetSegmentIDs(segment_ids)
    label_map = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__meddiffusion_export")
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "__meddiffusion_export_colors")
    try:
        colors.SetTypeToUser()
        values = [segmentation.GetNthSegment(i).GetLabelValue()
                  for i in range(segmentation.GetNumberOfSegments())]
        colors.SetNumberOfColors(max(values, default=0) + 1)
        for i, value in enumerate(values):
            segment = segmentation.GetNthSegment(i)
            colors.SetColor(value, segment.GetName(), *segment.GetColor(), 1.0)
        exported = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, segment_ids, label_map, reference,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, colors)
        if not exported:
            raise OSError(f"could not export segmentation '{segmentation_node.GetName()}' as a label map")
        copy_geometry(label_map, reference)
        return write_volume(label_map, path)
    finally:
        scene.RemoveNode(label_map)
        scene.RemoveNode(colors)


def read_segmentation(path: str | os.PathLike, *, scene=None, name: str | None = None,
                      reference=None):
    """Read a ``.seg.nrrd`` file into a new segmentation node (geometry from ``reference``)."""
    scene = _scene(scene)
    path = Path(path)
    node = slicer.vtkMRMLSegmentationNode()
    _read_into(slicer.vtkMRMLSegmentationStorageNode(), node, path, "segmentation")
    node.SetName(name or _stem(path))
    scene.AddNode(node)
    if reference is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    node.CreateDefaultDisplayNodes()
    return node


# -- tables ----------------------------------------------------------------------------------
def write_table(table_node, path: str | os.PathLike) -> Path:
    """Write a table node as CSV or TSV (by suffix)."""
    path = Path(path)
    _require_suffix(path, _TABLE_SUFFIXES, "a table")

    def write(target: Path) -> bool:
        storage = slicer.vtkMRMLTableStorageNode()
        storage.SetFileName(str(target))
        return bool(storage.WriteData(table_node))

    return _write_atomically(path, write, "table", sidecar=_table_schema)


def _table_schema(path: Path) -> Path:
    """The column-type file the table storage node writes beside ``x.csv``: ``x.schema.csv``."""
    return path.with_name(f"{path.stem}.schema{path.suffix}")


def read_table(path: str | os.PathLike, *, scene=None, name: str | None = None,
               numeric: bool = True):
    """Read CSV/TSV into a new table node.

    Column types come from the ``x.schema.csv`` file when one exists; without it the storage
    node reads every column as text, so with ``numeric`` columns whose cells all parse as
    numbers become numeric columns.
    """
    scene = _scene(scene)
    path = Path(path)
    node = slicer.vtkMRMLTableNode()
    _read_into(slicer.vtkMRMLTableStorageNode(), node, path, "table")
    if numeric:
        _make_numeric_columns(node)
    node.SetName(name or _stem(path))
    scene.AddNode(node)
    return node


def _make_numeric_columns(table_node) -> None:
    table = table_node.GetTable()
    for index in range(table.GetNumberOfColumns()):
        column = table.GetColumn(index)
        if not column.IsA("vtkStringArray") or column.GetNumberOfValues() == 0:
            continue
        texts = [column.GetValue(row) for row in range(column.GetNumberOfValues())]
        try:
            values = [float(text) for text in texts]
        except ValueError:
            continue
        numeric = vtk.vtkDoubleArray()
        numeric.SetName(column.GetName())
        for value in values:
            numeric.InsertNextValue(value)
        table.RemoveColumn(index)
        table.InsertColumn(numeric, index)
    table_node.Modified()


# -- sequences -------------------------------------------------------------------------------
def write_sequence(sequence_node, path: str | os.PathLike) -> Path:
    """Write a sequence of volumes as ``.seq.nrrd`` (index name, unit and values kept)."""
    path = Path(path)
    _require_suffix(path, _SEQUENCE_SUFFIXES, "a volume sequence")

    def write(target: Path) -> bool:
        storage = slicer.vtkMRMLVolumeSequenceStorageNode()
        storage.SetFileName(str(target))
        return bool(storage.WriteData(sequence_node))

    return _write_atomically(path, write, "volume sequence")


def read_sequence(path: str | os.PathLike, *, scene=None, name: str | None = None,
                  reference=None, tolerance_mm: float = GEOMETRY_TOLERANCE_MM, browse: bool = True):
    """Read a ``.seq.nrrd`` file into a new sequence node plus a browser to play it.

    Returns ``(sequence_node, browser_node)``; the browser is None with ``browse=False`` (the
    caller plays the sequence in a browser of its own, see :func:`sequence_browser`).  With
    ``reference`` every frame must lie on the reference's grid and takes its exact IJKToRAS.
    """
    scene = _scene(scene)
    path = Path(path)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name or _stem(path))
    try:  # the sequence reader needs the node in a scene
        _read_into(slicer.vtkMRMLVolumeSequenceStorageNode(), sequence, path, "volume sequence",
                   scene)
        if reference is not None:
            for index in range(sequence.GetNumberOfDataNodes()):
                _adopt_reference_geometry(sequence.GetNthDataNode(index), reference,
                                          f"frame {index} of '{path.name}'", tolerance_mm)
    except Exception:
        scene.RemoveNode(sequence)
        raise
    return sequence, (sequence_browser(sequence) if browse else None)


def sequence_browser(sequence_node, name: str | None = None, *, synchronized=()):
    """A browser node that plays ``sequence_node`` through a proxy node (first item shown),
    and the sequences of ``synchronized`` with it (one item of each per index value, e.g. a
    cine and its labels).

    The proxy nodes come from the Sequences module's logic (``slicer.modules.sequences``,
    always there in Slicer; the test fixtures provide it too).
    """
    scene = sequence_node.GetScene()
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode",
                                      name or f"{sequence_node.GetName()} browser")
    if hasattr(browser, "SetAndObservePrimarySequenceNodeID"):
        browser.SetAndObservePrimarySequenceNodeID(sequence_node.GetID())
    else:
        browser.SetAndObserveMasterSequenceNodeID(sequence_node.GetID())
    for other in synchronized:
        browser.AddSynchronizedSequenceNode(other)
    browser.SetSelectedItemNumber(0)
    logic = _sequences_logic()
    if logic is not None:
        logic.UpdateProxyNodesFromSequences(browser)
        for sequence in (sequence_node, *synchronized):
            proxy = browser.GetProxyNode(sequence)
            if proxy is not None and proxy.GetDisplayNode() is None:
                proxy.CreateDefaultDisplayNodes()
    return browser


def _sequences_logic():
    sequences = getattr(getattr(slicer, "modules", None), "sequences", None)
    return sequences.logic() if sequences is not None else None
