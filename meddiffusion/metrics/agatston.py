"""Coronary artery calcium: the Agatston score, lesion by lesion, and the volume score.

Agatston's definition (Agatston et al., JACC 1990), applied per axial slice:

- a calcified component is an in-plane connected region (8-connectivity) of voxels at or
  above 130 HU whose area is at least 1 mm²;
- it scores area (mm²) × w, where w comes from the component's peak HU *on that slice*:
  1 below 200, 2 below 300, 3 below 400, 4 from 400 HU up;
- scores are summed over components and slices and multiplied by slice thickness / 3 mm,
  the "equivalent Agatston" vendors report for slices other than 3 mm.

A lesion is a 3D group (26-connectivity) of the voxels that counted; it collects the scores
of its slice components.  The volume score is the number of those voxels × the voxel volume.
Areas are compared with 1 mm² up to a 1e-9 mm² tolerance, so four 0.5 mm pixels count even
when the spacing is not exact in binary.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from meddiffusion.files import atomic_write

__all__ = ["Lesion", "AgatstonResult", "ROW_FIELDS", "agatston", "density_weight", "risk_category"]

CALCIUM_THRESHOLD_HU = 130.0
MIN_LESION_AREA_MM2 = 1.0
REFERENCE_THICKNESS_MM = 3.0
_AREA_TOLERANCE_MM2 = 1e-9
_IN_PLANE = np.ones((3, 3), dtype=bool)      # 8-connectivity
_IN_VOLUME = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def density_weight(peak_hu: float) -> int:
    """Agatston's density factor for a component's peak HU."""
    if peak_hu < 200:
        return 1
    if peak_hu < 300:
        return 2
    if peak_hu < 400:
        return 3
    return 4


def risk_category(score: float) -> str:
    """Risk category of a total score.

    Boundaries for non-integer scores: 0 exactly → "zero", ≤ 10 → "minimal", ≤ 100 → "mild",
    ≤ 400 → "moderate", above → "severe" (so 10.5 is mild and 0.3 is minimal).
    """
    score = float(score)
    if not math.isfinite(score) or score < 0:
        raise ValueError(f"an Agatston score is a finite number ≥ 0, got {score}")
    if score == 0:
        return "zero"
    if score <= 10:
        return "minimal"
    if score <= 100:
        return "mild"
    if score <= 400:
        return "moderate"
    return "severe"


@dataclass(frozen=True)
class Lesion:
    """One 3D calcified lesion.

    ``centroid_zyx`` is the mean voxel index (array order); ``centroid_xyz_mm`` is the same
    point in physical (LPS) space when the image origin was given.  ``mask_label`` is the
    mask label holding most of the lesion's voxels (ties: the smallest), None without a mask.
    """

    id: int
    slice_first: int
    slice_last: int
    area_mm2: float
    peak_hu: float
    weight: int
    agatston: float
    volume_mm3: float
    voxels: int
    centroid_zyx: tuple[float, float, float]
    centroid_xyz_mm: tuple[float, float, float] | None = None
    mask_label: int | None = None


ROW_FIELDS = (
    "lesion", "mask_label", "slice_first", "slice_last", "area_mm2", "peak_hu", "weight",
    "agatston", "volume_mm3", "voxels", "centroid_z", "centroid_y", "centroid_x",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "category",
)


@dataclass(frozen=True)
class AgatstonResult:
    """Lesions and totals.  ``total`` already includes the slice-thickness factor.

    ``label_map`` (z, y, x) holds each counted voxel's lesion id (0 elsewhere), so the lesions
    can be shown as segments.
    """

    lesions: list[Lesion]
    total: float
    volume_mm3: float
    category: str
    slice_thickness_mm: float
    label_map: np.ndarray = field(repr=False, compare=False, default=None)

    def totals(self) -> dict[str, Any]:
        """The summary row: lesion "total", sums of scores/areas/volumes, overall extremes."""
        lesions = self.lesions
        return _row(
            lesion="total",
            slice_first=min((les.slice_first for les in lesions), default=None),
            slice_last=max((les.slice_last for les in lesions), default=None),
            area_mm2=sum(les.area_mm2 for les in lesions),
            peak_hu=max((les.peak_hu for les in lesions), default=None),
            weight=max((les.weight for les in lesions), default=None),
            agatston=self.total,
            volume_mm3=self.volume_mm3,
            voxels=sum(les.voxels for les in lesions),
            category=self.category,
        )

    def to_rows(self) -> list[dict[str, Any]]:
        """One row per lesion, then the totals row; every row has the keys in ``ROW_FIELDS``."""
        rows = []
        for lesion in self.lesions:
            fields = asdict(lesion)
            z, y, x = fields.pop("centroid_zyx")
            mm = fields.pop("centroid_xyz_mm") or (None, None, None)
            rows.append(_row(lesion=fields.pop("id"), centroid_z=z, centroid_y=y, centroid_x=x,
                             centroid_x_mm=mm[0], centroid_y_mm=mm[1], centroid_z_mm=mm[2], **fields))
        rows.append(self.totals())
        return rows

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write ``to_rows()`` as CSV atomically (temporary file in the same folder, then rename).

        Numbers keep full precision; missing values are empty cells.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
                writer.writeheader()
                writer.writerows(self.to_rows())

        atomic_write(path, write)
        return path


def _row(**values: Any) -> dict[str, Any]:
    return {name: values.get(name) for name in ROW_FIELDS}


# -- the score ----------------------------------------------------------------------------
def agatston(
    hu: np.ndarray,
    spacing_xyz: Sequence[float],
    *,
    mask: np.ndarray | None = None,
    slice_thickness_mm: float | None = None,
    threshold_hu: float = CALCIUM_THRESHOLD_HU,
    min_area_mm2: float = MIN_LESION_AREA_MM2,
    origin_xyz: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> AgatstonResult:
    """Agatston score of a CT volume in HU, indexed (z, y, x) with z the axial slice.

    ``spacing_xyz`` is the voxel size in mm (x, y, z).  ``slice_thickness_mm`` defaults to the
    z spacing.  ``mask`` (a label map on the same grid) keeps only voxels where mask > 0,
    e.g. coronary or heart labels.  ``origin_xyz`` and ``direction`` (row-major 3×3, identity
    by default) add physical lesion centroids.  ``threshold_hu`` and ``min_area_mm2`` change
    the candidate rule (e.g. a lower threshold for low-kV scans); the weights stay as above.
    """
    hu, spacing, thickness, mask = _check_inputs(hu, spacing_xyz, mask, slice_thickness_mm,
                                                  threshold_hu, min_area_mm2)
    geometry = _geometry(origin_xyz, direction, spacing)
    pixel_area = spacing[0] * spacing[1]
    factor = thickness / REFERENCE_THICKNESS_MM

    candidates = hu >= threshold_hu
    if mask is not None:
        candidates &= mask > 0
    counted, components = _slice_components(hu, candidates, pixel_area, min_area_mm2)

    lesion_map, n_lesions = ndimage.label(counted, structure=_IN_VOLUME)
    scores = np.zeros(n_lesions + 1)
    weights = np.zeros(n_lesions + 1, dtype=int)
    areas = np.zeros(n_lesions + 1)
    for (z, y, x), area, weight in components:
        lesion_id = lesion_map[z, y, x]
        scores[lesion_id] += area * weight * factor
        weights[lesion_id] = max(weights[lesion_id], weight)
        areas[lesion_id] += area

    voxel_volume = spacing[0] * spacing[1] * spacing[2]
    lesions = []
    for lesion_id, box in enumerate(ndimage.find_objects(lesion_map), start=1):
        inside = lesion_map[box] == lesion_id
        corner = np.array([s.start for s in box])
        centroid = np.argwhere(inside).mean(axis=0) + corner
        lesions.append(Lesion(
            id=lesion_id,
            slice_first=int(box[0].start),
            slice_last=int(box[0].stop - 1),
            area_mm2=float(areas[lesion_id]),
            peak_hu=float(hu[box][inside].max()),
            weight=int(weights[lesion_id]),
            agatston=float(scores[lesion_id]),
            volume_mm3=float(inside.sum() * voxel_volume),
            voxels=int(inside.sum()),
            centroid_zyx=tuple(float(c) for c in centroid),
            centroid_xyz_mm=None if geometry is None else _to_physical(centroid, *geometry),
            mask_label=None if mask is None else _majority(mask[box][inside]),
        ))
    total = float(sum(lesion.agatston for lesion in lesions))
    return AgatstonResult(
        lesions=lesions,
        total=total,
        volume_mm3=float(counted.sum() * voxel_volume),
        category=risk_category(total),
        slice_thickness_mm=thickness,
        label_map=lesion_map.astype(np.int32),
    )


def _slice_components(hu: np.ndarray, candidates: np.ndarray, pixel_area: float, min_area_mm2: float):
    """Per-slice components large enough to count.

    Returns the boolean map of counted voxels and, per component, ((z, y, x) of one of its
    voxels, area mm², weight).
    """
    counted = np.zeros_like(candidates)
    components = []
    for z in range(hu.shape[0]):
        if not candidates[z].any():
            continue
        slice_labels, n = ndimage.label(candidates[z], structure=_IN_PLANE)
        ids = np.arange(1, n + 1)
        areas = np.bincount(slice_labels.ravel(), minlength=n + 1)[1:] * pixel_area
        peaks = ndimage.maximum(hu[z], slice_labels, ids)
        keep = areas >= min_area_mm2 - _AREA_TOLERANCE_MM2
        counted[z] = np.isin(slice_labels, ids[keep])
        first_voxel = np.zeros(n + 1, dtype=np.int64)
        values, first = np.unique(slice_labels.ravel(), return_index=True)
        first_voxel[values] = first
        for label, area, peak in zip(ids[keep], areas[keep], peaks[keep]):
            y, x = np.unravel_index(first_voxel[label], slice_labels.shape)
            components.append(((z, int(y), int(x)), float(area), density_weight(peak)))
    return counted, components


def _majority(labels: np.ndarray) -> int:
    values, counts = np.unique(labels, return_counts=True)
    return int(values[np.argmax(counts)])


def _geometry(origin_xyz, direction, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if origin_xyz is None:
        if direction is not None:
            raise ValueError("direction was given without origin_xyz; physical centroids need both")
        return None
    origin = np.asarray(origin_xyz, dtype=float)
    matrix = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(-1)
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise ValueError(f"origin_xyz must be 3 finite numbers (mm), got {origin_xyz}")
    if matrix.size != 9 or not np.isfinite(matrix).all():
        raise ValueError(f"direction must be 9 finite numbers (row-major 3×3), got {direction}")
    return origin, matrix.reshape(3, 3), np.asarray(spacing)


def _to_physical(centroid_zyx: np.ndarray, origin: np.ndarray, matrix: np.ndarray,
                 spacing: np.ndarray) -> tuple[float, float, float]:
    """ITK convention: point = origin + direction · (spacing ⊙ index_xyz)."""
    point = origin + matrix @ (centroid_zyx[::-1] * spacing)
    return tuple(float(c) for c in point)


def _check_inputs(hu, spacing_xyz, mask, slice_thickness_mm, threshold_hu, min_area_mm2):
    hu = np.asarray(hu)
    if hu.ndim != 3 or hu.size == 0:
        raise ValueError(f"hu must be a non-empty 3D array (z, y, x), got shape {hu.shape}")
    if hu.dtype.kind not in "iuf":
        raise ValueError(f"hu must hold numbers (HU), got dtype {hu.dtype}")
    if not np.isfinite(hu).all():
        raise ValueError("hu contains NaN or infinite values; expected finite HU everywhere")
    spacing = tuple(float(s) for s in spacing_xyz)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_xyz must be 3 positive voxel sizes in mm (x, y, z), got {spacing_xyz}")
    thickness = spacing[2] if slice_thickness_mm is None else float(slice_thickness_mm)
    if not (math.isfinite(thickness) and thickness > 0):
        raise ValueError(f"slice_thickness_mm must be a positive number of mm, got {slice_thickness_mm}")
    if not math.isfinite(float(threshold_hu)):
        raise ValueError(f"threshold_hu must be a finite HU value, got {threshold_hu}")
    if not (math.isfinite(float(min_area_mm2)) and min_area_mm2 >= 0):
        raise ValueError(f"min_area_mm2 must be ≥ 0 mm², got {min_area_mm2}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != hu.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the image shape {hu.shape}")
        if mask.dtype.kind not in "biuf" or not np.array_equal(mask, np.round(mask)):
            raise ValueError("mask must be a label map of whole numbers (voxels with mask > 0 are kept)")
        mask = mask.astype(np.int64)
    return hu, spacing, thickness, mask
