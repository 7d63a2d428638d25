"""Training volumes taken from the scene: kept as node references, written with their geometry.

Each row of the parameter node keeps its own references (``trainingVolume3``,
``trainingTarget3``); the chosen volumes are written into ``RUN/volumes/{input,target}/``
with a manifest naming each volume's patient, and refused where the validation split by
patient could not be drawn.  MRML and files only, no Qt.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Sequence

from meddiffusion.training.recipe import LOWDOSE_FOLDER, PAIRED_FOLDER

from MedDiffusionUtilsLib import nodes

from .choices import SCENE_FOLDER

__all__ = ["ROLES", "set_scene_volumes", "scene_volumes", "write_scene_data", "patient_of"]

#: the node reference roles of a row: its input (or single) volume and its target
ROLES = ("trainingVolume", "trainingTarget")


def set_scene_volumes(parameters, rows: Sequence[tuple[Any, Any] | Any]) -> None:
    """Store the rows on ``parameters``' node: (input, target) pairs, or single volumes (clean or low-dose)."""
    node = parameters.node
    was_modifying = node.StartModify()
    for index in range(parameters.sceneRows):
        for role in ROLES:
            node.RemoveNodeReferenceIDs(f"{role}{index}")
    for index, row in enumerate(rows):
        for role, volume in zip(ROLES, row if isinstance(row, (tuple, list)) else (row, None)):
            node.SetNodeReferenceID(f"{role}{index}", volume.GetID() if volume is not None else None)
    parameters.sceneRows = len(rows)
    node.EndModify(was_modifying)


def scene_volumes(parameters) -> list[tuple[Any, Any]]:
    return [tuple(parameters.node.GetNodeReference(f"{role}{index}") for role in ROLES)
            for index in range(parameters.sceneRows)]


def write_scene_data(folder: str | os.PathLike, source: str, rows: Sequence[tuple[Any, Any]]) -> Path:
    """Write ``rows`` into ``folder/volumes/{input,target}/`` with their geometry and a manifest
    (``input,target,patient`` or ``volume,patient``); returns the manifest.

    Pairs are checked to share their grid here, so a mismatch is named by the nodes' names
    (the backend then checks intensities and alignment).
    """
    rows = list(rows)
    paired = source == PAIRED_FOLDER
    if paired and any(volume is None or target is None for volume, target in rows):
        raise ValueError("every pair needs an input and a target volume")
    rows = [(volume, target if paired else None) for volume, target in rows if volume is not None]
    if len(rows) < 2:
        raise ValueError("choose at least two volumes (or pairs) from different patients: one is kept "
                         "for validation")
    patients = {patient_of(volume) for volume, _ in rows}
    if len(patients) < 2:
        raise ValueError(f"all chosen volumes belong to patient '{patients.pop()}'; the validation split is "
                         "by patient, so volumes of at least two patients are needed")
    for volume, target in rows:
        if target is not None:
            nodes.check_same_geometry(target, volume, f"target '{target.GetName()}' of '{volume.GetName()}'")
    data = Path(folder) / SCENE_FOLDER
    manifest = data / "manifest.csv"
    lines = []
    for index, (volume, target) in enumerate(rows):
        name = _file_name(index, volume)
        kind = "input" if paired or source == LOWDOSE_FOLDER else "target"
        nodes.write_volume(volume, data / kind / name)
        line = {"input" if paired else "volume": f"{kind}/{name}", "patient": patient_of(volume)}
        if paired:
            nodes.write_volume(target, data / "target" / name)
            line["target"] = f"target/{name}"
        lines.append(line)
    columns = ["input", "target", "patient"] if paired else ["volume", "patient"]
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(lines)
    return manifest


def patient_of(node) -> str:
    """The patient a volume belongs to in Subject Hierarchy (as a DICOM load places it), else its name.

    The backend's validation split is drawn over these, so two series of one patient never
    end up on both sides.
    """
    hierarchy = node.GetScene().GetSubjectHierarchyNode() if node.GetScene() is not None else None
    if hierarchy is not None:
        item = hierarchy.GetItemByDataNode(node)
        while item and item != hierarchy.GetSceneItemID():
            if hierarchy.GetItemLevel(item) == "Patient":
                return hierarchy.GetItemName(item)
            item = hierarchy.GetItemParent(item)
    return node.GetName()


def _file_name(index: int, node) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", node.GetName()).strip("._") or "volume"
    return f"{index + 1:03d}-{safe}.nrrd"
