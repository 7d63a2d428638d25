"""Index boxes: the half-open voxel ranges the phantom rasteriser and the motion region both work in."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Box"]


class Box(NamedTuple):
    """Half-open index ranges in array order: slices z0:z1, rows y0:y1, columns x0:x1."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return (slice(self.z0, self.z1), slice(self.y0, self.y1), slice(self.x0, self.x1))

    def within(self, outer: "Box") -> tuple[slice, slice, slice]:
        """This box's slices relative to ``outer`` (which must contain it)."""
        return (slice(self.z0 - outer.z0, self.z1 - outer.z0),
                slice(self.y0 - outer.y0, self.y1 - outer.y0),
                slice(self.x0 - outer.x0, self.x1 - outer.x0))

    def overlaps(self, other: "Box") -> bool:
        return (self.z0 < other.z1 and other.z0 < self.z1 and self.y0 < other.y1 and other.y0 < self.y1
                and self.x0 < other.x1 and other.x0 < self.x1)

    def intersect(self, other: "Box") -> "Box | None":
        box = Box(max(self.z0, other.z0), min(self.z1, other.z1), max(self.y0, other.y0),
                  min(self.y1, other.y1), max(self.x0, other.x0), min(self.x1, other.x1))
        return box if box.z1 > box.z0 and box.y1 > box.y0 and box.x1 > box.x0 else None

    def union(self, other: "Box | None") -> "Box":
        if other is None:
            return self
        return Box(min(self.z0, other.z0), max(self.z1, other.z1), min(self.y0, other.y0),
                   max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1))

    def grown(self, n: int) -> "Box":
        """``n`` voxels more on every side (not clipped to any grid)."""
        return Box(self.z0 - n, self.z1 + n, self.y0 - n, self.y1 + n, self.x0 - n, self.x1 + n)

    def ijk(self) -> list[int]:
        """The box as ``--roi`` spells it: I0 I1 J0 J1 K0 K1 (x, y, z; end exclusive)."""
        return [self.x0, self.x1, self.y0, self.y1, self.z0, self.z1]
