"""Lesion SUV readout: SUVmax and SUVmean in a sphere around a point, or inside a box, before and after.

Pure numpy on (k, j, i) arrays with their 4×4 IJK→RAS matrix (no MRML, no Qt), so every
number the readout shows is checked against a plain computation.  A voxel belongs to a
region when its centre does: within ``radius_mm`` of the point for a :class:`Sphere`, within
the box's half sizes along its own axes for a :class:`Box` (a Markups ROI, possibly rotated).
A sphere smaller than a voxel reads the voxel holding its centre, so a point always reads
something when it lies in the volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = ["Sphere", "Box", "Region", "Reading", "region_mask", "measure", "change_percent", "lesion_row", "COLUMNS"]

#: the table's columns, in order
COLUMNS = ("lesion", "region", "voxels", "SUVmax before", "SUVmax after", "SUVmax change %", "SUVmean before",
           "SUVmean after", "SUVmean change %")
#: how far (mm) a voxel centre may lie outside a box's face and still count (rounding of ROI sizes)
BOX_TOLERANCE_MM = 1e-6


@dataclass(frozen=True)
class Sphere:
    """The voxels whose centres lie within ``radius_mm`` of ``centre_ras``."""

    centre_ras: tuple[float, float, float]
    radius_mm: float

    def __post_init__(self) -> None:
        if not self.radius_mm > 0:
            raise ValueError(f"the sphere's radius must be positive, got {self.radius_mm:g} mm")

    @property
    def text(self) -> str:
        return f"sphere r = {self.radius_mm:g} mm"


@dataclass(frozen=True)
class Box:
    """The voxels whose centres lie inside a box of ``size_mm`` along its own axes, placed by
    ``object_to_ras`` (4×4: its centre and orthonormal axes in RAS)."""

    object_to_ras: tuple[tuple[float, ...], ...]
    size_mm: tuple[float, float, float]

    @classmethod
    def of(cls, object_to_ras, size_mm) -> "Box":
        matrix = np.asarray(object_to_ras, dtype=float)
        if matrix.shape != (4, 4):
            raise ValueError(f"a box's placement must be a 4x4 matrix, got shape {matrix.shape}")
        return cls(tuple(map(tuple, matrix)), tuple(float(s) for s in size_mm))

    @property
    def text(self) -> str:
        return "ROI " + " x ".join(f"{s:g}" for s in self.size_mm) + " mm"


Region = Union[Sphere, Box]


@dataclass(frozen=True)
class Reading:
    """SUVmax and SUVmean of one image in one region, and how many voxels it holds."""

    suv_max: float
    suv_mean: float
    voxels: int


def _corners_ras(region: Region) -> np.ndarray:
    """Eight RAS points whose index-space bounds hold the region."""
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    if isinstance(region, Sphere):
        return np.asarray(region.centre_ras, dtype=float) + signs * 2.0 * region.radius_mm
    matrix = np.asarray(region.object_to_ras)
    local = signs * np.asarray(region.size_mm)
    return local @ matrix[:3, :3].T + matrix[:3, 3]


def region_mask(region: Region, shape_kji, ijk_to_ras) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """The region's voxels as (k, j, i slices of the volume, boolean mask over that block).

    The block is the index-space bounding box of the region clipped to the volume; it is
    empty (mask.size == 0) when the region misses the volume.
    """
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if isinstance(region, Box) and min(region.size_mm) <= 0:
        raise ValueError(f"the ROI is empty (size {' x '.join(f'{s:g}' for s in region.size_mm)} mm)")
    ras_to_ijk = np.linalg.inv(matrix)
    corners = _corners_ras(region)
    ijk = corners @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
    dims = np.asarray(shape_kji[::-1])
    start = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, dims)
    stop = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, dims)
    block = tuple(slice(int(a), int(b)) for a, b in zip(start[::-1], stop[::-1]))
    if np.any(stop <= start):
        return block, np.zeros((0, 0, 0), bool)
    k, j, i = np.meshgrid(*(np.arange(s.start, s.stop) for s in block), indexing="ij")
    points = np.stack([i, j, k], axis=-1).astype(float) @ matrix[:3, :3].T + matrix[:3, 3]
    if isinstance(region, Sphere):
        inside = np.linalg.norm(points - np.asarray(region.centre_ras), axis=-1) <= region.radius_mm
        if not inside.any():
            inside = _voxel_holding(region.centre_ras, ras_to_ijk, block, dims)
        return block, inside
    placement = np.asarray(region.object_to_ras)
    to_object = np.linalg.inv(placement)
    local = points @ to_object[:3, :3].T + to_object[:3, 3]
    half = np.asarray(region.size_mm) / 2.0 + BOX_TOLERANCE_MM
    return block, np.all(np.abs(local) <= half, axis=-1)


def _voxel_holding(centre_ras, ras_to_ijk, block, dims) -> np.ndarray:
    """The mask of the one voxel whose cell holds ``centre_ras`` (none outside the volume)."""
    shape = tuple(s.stop - s.start for s in block)
    mask = np.zeros(shape, bool)
    ijk = np.rint(ras_to_ijk[:3, :3] @ np.asarray(centre_ras, dtype=float) + ras_to_ijk[:3, 3]).astype(int)
    if np.all(ijk >= 0) and np.all(ijk < dims):
        kji = ijk[::-1] - np.array([s.start for s in block])
        if np.all(kji >= 0) and np.all(kji < shape):
            mask[tuple(kji)] = True
    return mask


def measure(values: np.ndarray, ijk_to_ras, region: Region, *, name: str = "the volume") -> Reading:
    """SUVmax and SUVmean of ``values`` (k, j, i) in ``region``; ``ValueError`` when the region
    holds no voxel of the volume."""
    block, mask = region_mask(region, values.shape, ijk_to_ras)
    if not mask.any():
        raise ValueError(f"the {region.text} lies outside {name}; place it on a lesion")
    inside = np.asarray(values[block], dtype=np.float64)[mask]
    return Reading(float(inside.max()), float(inside.mean()), int(mask.sum()))


def change_percent(before: float, after: float) -> float:
    """100 (after − before) / before; NaN when ``before`` is not positive."""
    return 100.0 * (after - before) / before if before > 0 else math.nan


def lesion_row(name: str, region: Region, before: Reading, after: Reading) -> dict:
    """One table row (see :data:`COLUMNS`): values rounded to 0.01 SUV and 0.1 %."""
    return {"lesion": name, "region": region.text, "voxels": before.voxels,
            "SUVmax before": round(before.suv_max, 2), "SUVmax after": round(after.suv_max, 2),
            "SUVmax change %": round(change_percent(before.suv_max, after.suv_max), 1),
            "SUVmean before": round(before.suv_mean, 2), "SUVmean after": round(after.suv_mean, 2),
            "SUVmean change %": round(change_percent(before.suv_mean, after.suv_mean), 1)}
