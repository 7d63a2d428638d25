"""A real MRML scene set up the way the Slicer application sets it up, for slicer-core tests.

slicer-core has MRML, the storage nodes and the module logics but no application: no
``slicer.app``, ``slicer.modules`` or ``slicer.mrmlScene``.  :func:`make_scene` repeats the
start-up work the application does (application logic, the module logics registered under
their module names, the segmentation converter rules) and :func:`slicer_globals` provides
``slicer.mrmlScene`` and a ``slicer.modules`` stand-in for the duration of a test.

Shared by ``Testing/slicer/conftest.py`` and ``Testing/widgets/conftest.py`` (plain module,
so every task module's tests can import the same helpers).
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_TASK = Path(__file__).resolve().parent / "fake_task.py"


def add_module_paths() -> None:
    """Make the backend and every scripted module folder importable, as Slicer does.

    A module folder is a top-level folder ``X`` holding ``X.py`` or ``XLib/``; Slicer puts
    such folders (its qt-scripted-modules) on ``sys.path``.
    """
    candidates = [REPO_ROOT] + sorted(
        folder for folder in REPO_ROOT.iterdir()
        if folder.is_dir() and ((folder / f"{folder.name}.py").exists()
                                or (folder / f"{folder.name}Lib").is_dir()))
    for folder in candidates:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


import slicer  # noqa: E402 - after the helpers above, which do not need it
import vtk  # noqa: E402

# module name in Slicer -> logic class in slicer-core
_MODULE_LOGICS = {
    "Colors": "vtkSlicerColorLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "Sequences": "vtkSlicerSequencesLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Tables": "vtkSlicerTablesLogic",
}
_converter_rules_registered = False


@dataclass
class MRMLTestScene:
    """A scene with its application logic and module logics (kept alive together)."""

    scene: object
    app_logic: object
    logics: dict[str, object] = field(default_factory=dict)
    slice_logics: list = field(default_factory=list)

    def logic(self, module_name: str):
        return self.logics[module_name]


def register_segmentation_converter_rules() -> None:
    """The four rules the application registers at start-up (once per process)."""
    global _converter_rules_registered
    if _converter_rules_registered:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
                 slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
                 slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule):
        factory.RegisterConverterRule(rule())
    _converter_rules_registered = True


def make_scene() -> MRMLTestScene:
    """A new scene with application logic and the module logics slicer-core offers."""
    register_segmentation_converter_rules()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    for module_name, class_name in _MODULE_LOGICS.items():
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module_name, logic)
        logics[module_name] = logic
    scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    return MRMLTestScene(scene, app_logic, logics)


@contextmanager
def slicer_globals(test_scene: MRMLTestScene) -> Iterator[MRMLTestScene]:
    """Set ``slicer.mrmlScene`` and a ``slicer.modules`` stand-in, restored afterwards."""
    modules = types.SimpleNamespace(**{
        name.lower(): types.SimpleNamespace(logic=(lambda logic=logic: logic))
        for name, logic in test_scene.logics.items()})
    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    slicer.mrmlScene = test_scene.scene
    slicer.modules = modules
    try:
        yield test_scene
    finally:
        for name in ("mrmlScene", "modules"):
            if name in saved:
                setattr(slicer, name, saved[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)
        test_scene.scene.Clear(True)


def oblique_ijk_to_ras(spacing=(0.7, 0.9, 2.5), origin=(-12.3, 45.6, 7.89),
                       angles=(0.3, -0.2, 0.1)) -> np.ndarray:
    """A non-trivial IJKToRAS: rotated about three axes, anisotropic spacing, offset origin."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def add_volume(scene, array: np.ndarray, *, ijk_to_ras: np.ndarray | None = None,
               name: str = "CT", node_class: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding ``array`` (k, j, i) with the given (default oblique) geometry."""
    node = scene.AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, np.asarray(array))
    matrix = oblique_ijk_to_ras() if ijk_to_ras is None else ijk_to_ras
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    node.CreateDefaultDisplayNodes()
    return node


def put_in_study(scene, node, patient: str = "Patient 1", study: str = "CT Study"):
    """Place ``node`` under patient -> study in Subject Hierarchy, as a DICOM load would."""
    hierarchy = scene.GetSubjectHierarchyNode()
    patient_item = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), patient)
    study_item = hierarchy.CreateStudyItem(patient_item, study)
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(study_item, node)
    hierarchy.SetItemParent(item, study_item)
    return study_item


def add_slice_views(test_scene: MRMLTestScene, names=("Red", "Yellow", "Green")) -> dict:
    """Slice and composite nodes for named views, as the layout manager creates them."""
    views = {}
    for name in names:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(test_scene.app_logic)
        logic.SetMRMLScene(test_scene.scene)
        slice_node = logic.AddSliceNode(name)
        test_scene.slice_logics.append(logic)
        views[name] = (slice_node, logic.GetSliceCompositeNode())
    return views


def add_roi(scene, center_ras, size_mm, rotation=None, name="heart ROI"):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*center_ras)
    roi.SetSize(*size_mm)
    if rotation is not None:
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = center_ras
        roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(matrix))
    return roi


def roi_around(scene, volume, box, name="heart ROI"):
    """An ROI, aligned with the oblique grid, whose cells are exactly the voxels of ``box``."""
    matrix = _ijk_to_ras(volume)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    i0, i1, j0, j1, k0, k1 = box
    centre = matrix @ np.array([(i0 + i1 - 1) / 2, (j0 + j1 - 1) / 2, (k0 + k1 - 1) / 2, 1.0])
    size = (np.array([i1 - i0, j1 - j0, k1 - k0]) - 0.2) * spacing  # a little inside the cells
    return add_roi(scene, centre[:3], size, rotation=matrix[:3, :3] / spacing, name=name)


def _ijk_to_ras(volume) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def chest_array(shape=(4, 32, 32), *, air: float = -1000.0, lesion_hu: float | None = None,
                noise_hu: float = 20.0, seed: int = 0) -> np.ndarray:
    """A small noisy axial chest-like CT in HU (int16, (k, j, i)): air around a soft-tissue
    ellipse, with a calcification of ``lesion_hu`` in its middle when given."""
    rng = np.random.default_rng(seed)
    _, j, i = np.indices(shape)
    rows, columns = shape[1], shape[2]
    body = ((j - rows / 2) / (rows / 2.5)) ** 2 + ((i - columns / 2) / (columns / 2.5)) ** 2 < 1
    array = np.where(body, 40.0, air) + rng.normal(0.0, noise_hu, shape)
    if lesion_hu is not None:
        array[shape[0] // 2 - 1:shape[0] // 2 + 1, rows // 2 - 2:rows // 2 + 2, columns // 2 - 2:columns // 2 + 2] = lesion_hu
    return array.round().astype(np.int16)


def node_ids(scene) -> set[str]:
    """The IDs of every node in ``scene`` (for "nothing was added" checks)."""
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def volume_checksum(node) -> str:
    """A content hash of a volume's voxels and geometry (for "input untouched" checks)."""
    import hashlib

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    digest = hashlib.sha256(slicer.util.arrayFromVolume(node).tobytes())
    digest.update(slicer.util.arrayFromVTKMatrix(matrix).tobytes())
    return digest.hexdigest()


def fake_task_command(input_path, output_path, *options: str) -> list[str]:
    """The fake backend's command line (same protocol as ``python -m meddiffusion``)."""
    return [sys.executable, str(FAKE_TASK), str(input_path), "-o", str(output_path),
            *options, "--events", "jsonl"]


# -- pytest fixtures, imported by both conftest.py files ----------------------------------
import pytest  # noqa: E402


@pytest.fixture
def mrml():
    """A fresh scene, installed as ``slicer.mrmlScene`` for the test."""
    with slicer_globals(make_scene()) as test_scene:
        yield test_scene


@pytest.fixture
def scene(mrml):
    return mrml.scene
