"""Where the phantom is sampled: a voxel grid in patient (LPS) space, and boxes of it.

The phantom lives in continuous LPS millimetres (x to the patient's left, y posterior,
z superior; the origin is the body axis at the level of the heart centre), so any grid can
sample it: any size, spacing and orientation, e.g. an axial chest CT or a cardiac short-axis
cine stack.  ``Grid`` follows ``meddiffusion.io.Volume``: ``shape`` is (z, y, x), ``spacing``
and ``origin`` are (x, y, z) and ``direction`` is the row-major 3×3 cosine matrix, so
point = origin + direction · (spacing ⊙ index_xyz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from meddiffusion.geometry import Box
from meddiffusion.io import Volume

__all__ = ["Grid", "Box", "Points", "chest_grid", "short_axis_grid"]

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """A voxel grid in LPS space (see the module docstring for the conventions)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"grid shape must be 3 positive sizes (z, y, x), got {self.shape}")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"grid spacing must be 3 positive voxel sizes in mm (x, y, z), got {self.spacing}")
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != 3 or not all(math.isfinite(o) for o in origin):
            raise ValueError(f"grid origin must be 3 finite numbers in mm (x, y, z), got {self.origin}")
        d = np.asarray(self.direction, dtype=float)
        if d.size != 9 or not np.allclose(d.reshape(3, 3) @ d.reshape(3, 3).T, np.eye(3), atol=1e-5):
            raise ValueError(f"grid direction must be a row-major 3×3 rotation matrix, got {self.direction}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", tuple(float(v) for v in d.ravel()))

    # -- geometry ---------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """3×3 map from index steps (i, j, k) = (x, y, z) to LPS millimetres (columns)."""
        return np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)

    @property
    def full(self) -> Box:
        return Box(0, self.shape[0], 0, self.shape[1], 0, self.shape[2])

    @property
    def centre(self) -> np.ndarray:
        return self.index_to_world(np.array([(s - 1) / 2 for s in self.shape[::-1]]))

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """LPS mm of index points (..., 3) given as (i, j, k) = (x, y, z) index order."""
        return np.asarray(self.origin) + np.asarray(ijk, dtype=float) @ self.matrix.T

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) index of LPS points (..., 3)."""
        return (np.asarray(xyz, dtype=float) - np.asarray(self.origin)) @ np.linalg.inv(self.matrix).T

    def box_of(self, lo: np.ndarray, hi: np.ndarray, margin: int = 1) -> Box | None:
        """The grid voxels whose centres may lie in the world AABB [lo, hi] (clipped), or None."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = self.world_to_index(corners)
        first = np.floor(ijk.min(axis=0)).astype(int) - margin
        last = np.ceil(ijk.max(axis=0)).astype(int) + margin + 1
        box = Box(first[2], last[2], first[1], last[1], first[0], last[0])
        return box.intersect(self.full)

    def points(self, box: Box | None = None, *, margin: int = 0, supersample: int = 1) -> "Points":
        return Points(self, box or self.full, margin=margin, supersample=supersample)

    # -- construction and output -------------------------------------------------------------
    @classmethod
    def centred(cls, size_xyz, spacing_xyz, centre_xyz=(0.0, 0.0, 0.0), direction=IDENTITY) -> "Grid":
        """A grid of ``size_xyz`` voxels whose centre is the LPS point ``centre_xyz``."""
        size = tuple(int(s) for s in size_xyz)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"grid size must be 3 positive voxel counts (x, y, z), got {size_xyz}")
        grid = cls(size[::-1], tuple(spacing_xyz), (0.0, 0.0, 0.0), tuple(direction))
        offset = grid.index_to_world(np.array([(s - 1) / 2 for s in size]))
        return cls(grid.shape, grid.spacing, tuple(np.asarray(centre_xyz, float) - offset), grid.direction)

    @classmethod
    def like(cls, volume: Volume) -> "Grid":
        """The grid of an existing volume (to render a phantom on a scan's geometry)."""
        return cls(volume.shape, volume.spacing, volume.origin, volume.direction)

    def volume(self, array, modality: str = "", units: str = "") -> Volume:
        array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} differs from the grid shape {self.shape}")
        return Volume(np.ascontiguousarray(array, dtype=np.float32), self.spacing, self.origin,
                      self.direction, modality=modality, units=units)


def chest_grid(size_xyz=(256, 256, 128), spacing_xyz=(1.5, 1.5, 2.5), centre_xyz=(0.0, 0.0, 10.0)) -> Grid:
    """A standard axial chest CT grid: 384 mm field of view, 320 mm from lung apex to upper abdomen."""
    return Grid.centred(size_xyz, spacing_xyz, centre_xyz)


def short_axis_grid(phantom, size_xyz=(192, 192, 16), spacing_xyz=(1.0, 1.0, 10.0)) -> Grid:
    """A cardiac short-axis cine stack (ACDC-like): slices perpendicular to the LV long axis.

    x points to the septum (RV side), z from apex to base; the stack is centred half-way up
    the LV at end-diastole.
    """
    heart = phantom.heart
    frame = np.stack([heart.e1, heart.e2, heart.e_h], axis=1)        # columns: grid axes in LPS
    centre = heart.state(0.0).apex + 0.5 * heart.base_height * heart.e_h
    return Grid.centred(size_xyz, spacing_xyz, centre, tuple(frame.ravel()))


class Points:
    """LPS coordinates (mm, float32 tensors) of the voxel centres of a grid box.

    ``x``, ``y`` and ``z`` broadcast to ``shape``: (nz, ny, nx), or (s, nz, ny, nx) with
    ``supersample`` = n, where the s = n³ sub-points of each voxel sit on a regular n×n×n
    lattice inside it (the centre among them when n is odd).  ``margin`` adds voxels on
    every side (beyond the grid edge if need be: the phantom is defined everywhere), which
    is what finite differences need.
    """

    def __init__(self, grid: Grid, box: Box, *, margin: int = 0, supersample: int = 1):
        self.grid = grid
        self.box = box.grown(margin)
        self.supersample = supersample
        b = self.box
        k = torch.arange(b.z0, b.z1, dtype=torch.float64).view(-1, 1, 1)
        j = torch.arange(b.y0, b.y1, dtype=torch.float64).view(1, -1, 1)
        i = torch.arange(b.x0, b.x1, dtype=torch.float64).view(1, 1, -1)
        if supersample > 1:
            steps = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
            sk, sj, si = torch.meshgrid(steps, steps, steps, indexing="ij")
            k = k + sk.reshape(-1, 1, 1, 1)
            j = j + sj.reshape(-1, 1, 1, 1)
            i = i + si.reshape(-1, 1, 1, 1)
        m = grid.matrix
        coords = []
        for axis in range(3):
            c = grid.origin[axis] + _term(m[axis, 0], i) + _term(m[axis, 1], j) + _term(m[axis, 2], k)
            coords.append(c.to(torch.float32))
        self.x, self.y, self.z = coords
        lead = (supersample ** 3,) if supersample > 1 else ()
        self.shape = lead + b.shape

    def region(self, lo: np.ndarray, hi: np.ndarray, margin: int = 1) -> "tuple[tuple, Points] | None":
        """The sub-box of these points covering the world AABB [lo, hi]: (slices, Points)."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = self.grid.world_to_index(corners)
        first = np.floor(ijk.min(axis=0)).astype(int) - margin
        last = np.ceil(ijk.max(axis=0)).astype(int) + margin + 1
        sub = Box(first[2], last[2], first[1], last[1], first[0], last[0]).intersect(self.box)
        if sub is None:
            return None
        return (...,) + sub.within(self.box), Points(self.grid, sub, supersample=self.supersample)


def _term(coefficient: float, index: torch.Tensor) -> torch.Tensor | float:
    """coefficient · index, skipped when zero so axis-aligned grids keep 1D broadcasts."""
    return coefficient * index if abs(coefficient) > 1e-12 else 0.0
