"""Smooth parametric shapes as signed distance fields, and the ``Shape`` a phantom is made of.

Every primitive returns d(p), negative inside: the exact distance in mm for capsules, and
for ellipsoids and superellipse prisms an implicit function with the exact sign and roughly
millimetre scale near the surface.  That is all rendering needs: labels use the sign, and
partial volume divides d by its own gradient, so its scale cancels.  Unions are minima, intersections maxima, differences max(a, −b).

A ``Shape`` bundles fields that share one bounding box and one piece of coordinate work (the
heart's chambers, say), each field drawn as a layer with a label and a tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from meddiffusion.phantoms.grid import Points

__all__ = ["Shape", "Capsule", "ellipsoid", "superellipse_prism", "capsules", "capsule_bounds",
           "capsule_parts", "polyline", "segment_distance", "union_of_parts", "within", "smooth_min", "rotation",
           "FAR"]

#: distance used for "nowhere near" (mm)
FAR = 1e4


@dataclass
class Shape:
    """Layers drawn in order, all evaluated on one box: ``field(points)`` → one d per layer.

    ``lo``/``hi`` bound (in LPS mm) every point where any field is negative; ``moving``
    says the geometry depends on time; ``supersample`` > 1 renders partial volume by
    sub-voxel sampling instead of the distance ramp (for objects near the voxel size).
    """

    name: str
    layers: tuple[tuple[int, str], ...]
    field: Callable[[Points], list[torch.Tensor]]
    lo: np.ndarray
    hi: np.ndarray
    moving: bool = False
    supersample: int = 1


def rotation(axis_z: np.ndarray, hint_x: np.ndarray) -> np.ndarray:
    """Orthonormal frame (columns e_x, e_y, e_z) with e_z along ``axis_z`` and e_x near ``hint_x``."""
    ez = np.asarray(axis_z, float)
    ez = ez / np.linalg.norm(ez)
    ex = np.asarray(hint_x, float) - np.dot(hint_x, ez) * ez
    ex = ex / np.linalg.norm(ex)
    return np.stack([ex, np.cross(ez, ex), ez], axis=1)


def _local(p: Points, centre, rot: np.ndarray | None):
    """Coordinates of the points in a frame centred at ``centre`` with axes the columns of ``rot``."""
    dx, dy, dz = p.x - float(centre[0]), p.y - float(centre[1]), p.z - float(centre[2])
    if rot is None:
        return dx, dy, dz
    r = rot
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)


def ellipsoid(p: Points, centre, axes, rot: np.ndarray | None = None) -> torch.Tensor:
    """Ellipsoid with semi-axes ``axes`` (mm) along the columns of ``rot`` (world axes if None).

    d = (|q/a| − 1)·min(a): the exact sign, and within a factor min(a)/max(a) of the
    distance, which is all rendering needs (partial volume divides d by its own gradient).
    """
    u, v, w = _local(p, centre, rot)
    a, b, c = (float(s) for s in axes)
    r = torch.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    return (r - 1.0) * min(a, b, c)


def superellipse_prism(p: Points, cx, cy, ax, ay_front, ay_back, power: float = 2.0) -> torch.Tensor:
    """A z-extruded superellipse |x/ax|^n + |y/ay|^n = 1 (ay differs front and back).

    ``cx``, ``cy`` and the radii may be tensors broadcasting along z, so an outline can change
    with height; the in-plane terms stay 2D until they are summed, which keeps this cheap.
    d = (u − 1)·ay/n with u = |x/ax|^n + |y/ay|^n: the sign is exact and near the outline
    d ≈ (r − 1)·ay in mm, without a 3D power.
    """
    dy = p.y - cy
    ay = torch.where(dy < 0, torch.as_tensor(ay_front, dtype=dy.dtype), torch.as_tensor(ay_back, dtype=dy.dtype))
    xn = (p.x - cx).abs() / ax
    yn = dy.abs() / ay
    u = xn * xn + yn * yn if power == 2.0 else xn ** power + yn ** power
    return (u - 1.0) * (ay / power)


def within(p: Points, lo: np.ndarray, hi: np.ndarray, fn) -> torch.Tensor:
    """``fn(sub_points, slices)`` evaluated only on the part of ``p`` inside [lo, hi]; FAR elsewhere.

    ``slices`` locate the sub-box in ``p``, so ``fn`` can reuse fields already computed on it.
    """
    out = torch.full(p.shape, FAR)
    found = p.region(lo, hi)
    if found is not None:
        slices, q = found
        out[slices] = fn(q, slices)
    return out


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum (blends two surfaces over ~k mm instead of a sharp crease)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


@dataclass(frozen=True)
class Capsule:
    """A tube segment from ``a`` to ``b`` whose radius goes linearly from ``ra`` to ``rb``."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    ra: float
    rb: float


def capsule_bounds(segments: list[Capsule], pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([s.a for s in segments])
    b = np.array([s.b for s in segments])
    r = np.array([max(s.ra, s.rb) for s in segments])[:, None] + pad
    return np.minimum(a - r, b - r).min(axis=0), np.maximum(a + r, b + r).max(axis=0)


def polyline(points: np.ndarray, radii: np.ndarray) -> list[Capsule]:
    """Consecutive capsules along a centreline with a radius per point."""
    return [Capsule(tuple(points[i]), tuple(points[i + 1]), float(radii[i]), float(radii[i + 1]))
            for i in range(len(points) - 1)]


def union_of_parts(p: Points, parts, n_fields: int = 1) -> list[torch.Tensor]:
    """Union (minimum) of many local pieces, each evaluated only on its own sub-box.

    ``parts`` yields (lo, hi, fn): fn(sub_points) returns ``n_fields`` tensors (or one
    tensor), valid inside the world box [lo, hi]; everywhere else the fields stay ``FAR``.
    """
    out = [torch.full(p.shape, FAR) for _ in range(n_fields)]
    for lo, hi, fn in parts:
        found = p.region(lo, hi)
        if found is None:
            continue
        slices, q = found
        values = fn(q)
        for d, v in zip(out, values if isinstance(values, (list, tuple)) else [values]):
            d[slices] = torch.minimum(d[slices], v)
    return out


def segment_distance(q: Points, s: Capsule) -> torch.Tensor:
    """Signed distance to one tapered capsule."""
    a, ab = np.asarray(s.a, float), np.asarray(s.b, float) - np.asarray(s.a, float)
    length2 = float(ab @ ab) or 1e-12
    px, py, pz = q.x - float(a[0]), q.y - float(a[1]), q.z - float(a[2])
    t = ((px * ab[0] + py * ab[1] + pz * ab[2]) / length2).clamp(0.0, 1.0)
    ex, ey, ez = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return torch.sqrt(ex * ex + ey * ey + ez * ez) - (s.ra + (s.rb - s.ra) * t)


def capsule_parts(segments: list[Capsule]):
    """``union_of_parts`` pieces for a set of capsules."""
    for s in segments:
        a, b, r = np.asarray(s.a), np.asarray(s.b), max(s.ra, s.rb)
        yield np.minimum(a, b) - r, np.maximum(a, b) + r, (lambda q, s=s: segment_distance(q, s))


def capsules(p: Points, segments: list[Capsule]) -> torch.Tensor:
    """Union of tapered capsules, each evaluated only on its own sub-box.

    The sub-boxes are concatenated into one flat batch of voxels (no padding), so a vessel
    tree of a thousand segments costs a few tensor operations rather than a thousand.
    """
    if p.supersample > 1 or len(segments) < 8:
        return union_of_parts(p, capsule_parts(segments))[0]
    grid, box = p.grid, p.box
    a = np.array([s.a for s in segments], float)
    b = np.array([s.b for s in segments], float)
    ra = np.array([s.ra for s in segments], float)
    rb = np.array([s.rb for s in segments], float)
    r = np.maximum(ra, rb)[:, None]
    lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
    corners = np.stack([np.stack([np.where(m & 1, hi[:, 0], lo[:, 0]), np.where(m & 2, hi[:, 1], lo[:, 1]),
                                  np.where(m & 4, hi[:, 2], lo[:, 2])], axis=1) for m in range(8)], axis=1)
    ijk = grid.world_to_index(corners)                           # (n, 8, 3) as (i, j, k)
    origin = np.array([box.x0, box.y0, box.z0])
    first = np.maximum(np.floor(ijk.min(axis=1)).astype(int) - 1, origin)
    last = np.minimum(np.ceil(ijk.max(axis=1)).astype(int) + 2, np.array([box.x1, box.y1, box.z1]))
    keep = np.all(last > first, axis=1)
    nz, ny, nx = box.shape
    d = torch.full((nz * ny * nx,), FAR)
    members = np.where(keep)[0]
    counts = np.prod(last - first, axis=1)
    for chunk in _chunks(members, counts, 3_000_000):
        n = torch.as_tensor(counts[chunk])
        seg = torch.repeat_interleave(torch.arange(len(chunk)), n)

        def per_voxel(values, dtype=torch.float32):
            """A per-segment quantity repeated for each voxel of the segment's box."""
            return torch.as_tensor(values, dtype=dtype).index_select(0, seg)

        offset = torch.arange(int(n.sum())) - per_voxel(np.cumsum(counts[chunk]) - counts[chunk], torch.int64)
        dims = last[chunk] - first[chunk]
        di, rest = offset % per_voxel(dims[:, 0], torch.int64), offset // per_voxel(dims[:, 0], torch.int64)
        width = per_voxel(dims[:, 1], torch.int64)
        dj, dk = rest % width, rest // width
        i, j, k = (per_voxel(first[chunk, 0], torch.int64) + di, per_voxel(first[chunk, 1], torch.int64) + dj,
                   per_voxel(first[chunk, 2], torch.int64) + dk)
        fi, fj, fk = i.to(torch.float32), j.to(torch.float32), k.to(torch.float32)
        rel, ab = [], []
        for axis in range(3):
            m = grid.matrix[axis]
            world = grid.origin[axis] + m[0] * fi + m[1] * fj + m[2] * fk
            rel.append(world - per_voxel(a[chunk, axis]))
            ab.append(per_voxel(b[chunk, axis] - a[chunk, axis]))
        length2 = per_voxel(np.maximum(((b[chunk] - a[chunk]) ** 2).sum(axis=1), 1e-12))
        t = ((rel[0] * ab[0] + rel[1] * ab[1] + rel[2] * ab[2]) / length2).clamp_(0.0, 1.0)
        ex, ey, ez = rel[0] - t * ab[0], rel[1] - t * ab[1], rel[2] - t * ab[2]
        radius = per_voxel(ra[chunk]) + per_voxel(rb[chunk] - ra[chunk]) * t
        dist = torch.sqrt(ex * ex + ey * ey + ez * ez) - radius
        flat = ((k - box.z0) * ny + (j - box.y0)) * nx + (i - box.x0)
        d.scatter_reduce_(0, flat, dist, reduce="amin")
    return d.view(nz, ny, nx)


def _chunks(members: np.ndarray, counts: np.ndarray, budget: int):
    """Split segment indices into runs of at most ``budget`` voxels (one oversized run allowed)."""
    run, total = [], 0
    for m in members:
        if run and total + counts[m] > budget:
            yield np.array(run)
            run, total = [], 0
        run.append(m)
        total += counts[m]
    if run:
        yield np.array(run)
