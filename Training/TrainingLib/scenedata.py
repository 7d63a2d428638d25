"""Training volumes taken from the scene: kept as node references, written with their geometry.

Each row of the parameter node keeps its own references (``trainingVolume3``,
``trainingTarget3``, and ``trainingCt3`` for a task whose pairs bring a further volume in the
manifest column ``ct``, a recipe's ``extras``); the chosen volumes are written into
``RUN/volumes/{input,target,<extra>}/`` with a manifest naming each volume's patient, and
refused where the validation split by patient could not be drawn.  MRML and files only, no Qt.
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

__all__ = ["ROLES", "row_roles", "set_scene_volumes", "scene_volumes", "write_scene_data", "patient_of"]

#: the node reference roles of a row: its input (or single) volume and its target
ROLES = ("trainingVolume", "trainingTarget")
ROLE_PREFIX = "training"


def row_roles(extras: Sequence[str] = ()) -> tuple[str, ...]:
    """The reference roles of a row holding the further volumes ``extras`` (manifest columns) too."""
    return ROLES + tuple(ROLE_PREFIX + column.capitalize() for column in extras)


def set_scene_volumes(parameters, rows: Sequence[Sequence[Any] | Any], extras: Sequence[str] = ()) -> None:
    """Store the rows on ``parameters``' node: (input, target, *extras) volumes, or single volumes (clean or
    low-dose); further volumes of columns not in ``extras`` (another task's) are dropped."""
    node = parameters.node
    was_modifying = node.StartModify()
    stored = {node.GetNthNodeReferenceRole(n) for n in range(node.GetNumberOfNodeReferenceRoles())}
    for role in sorted(role for role in stored if role.startswith(ROLE_PREFIX)):
        node.RemoveNodeReferenceIDs(role)
    for index, row in enumerate(rows):
        for role, volume in zip(row_roles(extras), row if isinstance(row, (tuple, list)) else (row,)):
            if volume is not None:
                node.SetNodeReferenceID(f"{role}{index}", volume.GetID())
    parameters.sceneRows = len(rows)
    node.EndModify(was_modifying)


def scene_volumes(parameters, extras: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """The stored rows: (input, target, *extras), None where a row has no volume."""
    return [tuple(parameters.node.GetNodeReference(f"{role}{index}") for role in row_roles(extras))
            for index in range(parameters.sceneRows)]


def write_scene_data(folder: str | os.PathLike, source: str, rows: Sequence[Sequence[Any]],
                     extras: Sequence[str] = ()) -> Path:
    """Write ``rows`` into ``folder/volumes/{input,target,<extra>}/`` with their geometry and a manifest
    (``input,target,patient[,<extra>...]`` or ``volume,patient``); returns the manifest.

    Pairs are checked to share their grid here, so a mismatch is named by the nodes' names
    (the backend then checks intensities and alignment). A row's further volumes (``extras``,
    optional per row) keep their own grid: the task's reader resamples them, as from the command
    line; a column no row fills is left out.
    """
    rows = [tuple(row) + (None,) * (2 + len(extras) - len(row)) for row in rows]
    paired = source == PAIRED_FOLDER
    if paired and any(row[0] is None or row[1] is None for row in rows):
        raise ValueError("every pair needs an input and a target volume")
    rows = [(row[0], *(row[1:] if paired else (None,) * (1 + len(extras)))) for row in rows if row[0] is not None]
    if len(rows) < 2:
        raise ValueError("choose at least two volumes (or pairs) from different patients: one is kept "
                         "for validation")
    patients = {patient_of(row[0]) for row in rows}
    if len(patients) < 2:
        raise ValueError(f"all chosen volumes belong to patient '{patients.pop()}'; the validation split is "
                         "by patient, so volumes of at least two patients are needed")
    for volume, target, *_ in rows:
        if target is not None:
            nodes.check_same_geometry(target, volume, f"target '{target.GetName()}' of '{volume.GetName()}'")
    data = Path(folder) / SCENE_FOLDER
    manifest = data / "manifest.csv"
    lines = []
    for index, (volume, target, *more) in enumerate(rows):
        name = _file_name(index, volume)
        kind = "input" if paired or source == LOWDOSE_FOLDER else "target"
        nodes.write_volume(volume, data / kind / name)
        line = {"input" if paired else "volume": f"{kind}/{name}", "patient": patient_of(volume)}
        if paired:
            nodes.write_volume(target, data / "target" / name)
            line["target"] = f"target/{name}"
        for column, extra in zip(extras, more):
            if extra is not None:
                nodes.write_volume(extra, data / column / name)
                line[column] = f"{column}/{name}"
        lines.append(line)
    filled = [column for column in extras if any(column in line for line in lines)]
    columns = ["input", "target", "patient", *filled] if paired else ["volume", "patient"]
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
