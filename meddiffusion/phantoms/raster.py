"""Shapes → partial-volume images and crisp label maps, with the static anatomy cached.

Partial volume
--------------
A voxel's share of a layer is f = clamp(½ − d/w, 0, 1), where d is the signed distance at
the voxel centre and w = |∇d| measured in index steps (central differences).  For a surface
that is flat across the voxel this is the box-voxel coverage with the right width in any
direction, even for anisotropic or oblique grids, and it costs one field evaluation per voxel.
Objects close to the voxel size (coronary plaques) use real supersampling instead: n³ points
per voxel, f = the share inside.  Layers are composited front over back,
value ← value + f·(tissue value − value), so touching structures blend as they should.

Labels are crisp: a voxel takes the label of the topmost layer whose field is negative at
the voxel centre (f > ½), so label volumes are sample counts of the exact shapes.

Static cache
------------
Only the heart (and, when breathing, the upper abdomen) moves.  Layers are drawn in a fixed
order: static layers *below* the moving band (body, lungs, airways...), the *band* (from the
first to the last moving layer), and static layers *above* it (bones).  ``Scene`` renders
the static layers once per grid: the full static image, plus, inside the box that the band
can ever reach, the image below the band and the premultiplied colour/opacity of the layers
above it.  A frame then only draws the band inside that box.
"""

from __future__ import annotations

from typing import Sequence

import torch

from meddiffusion.phantoms.grid import Box, Grid, Points
from meddiffusion.phantoms.shapes import Shape

__all__ = ["Canvas", "Scene"]


def _ramp_at(d: torch.Tensor, index: torch.Tensor, reach: float) -> torch.Tensor:
    """Partial-volume fraction f = clamp(½ − d/w) at inner voxels (flat indices into ``d``).

    ``d`` is the field on a box with a 1-voxel margin; w = |∇d| in index steps, from central
    differences.  Values are clamped to ±``reach`` first, so the jump to the far-away value
    outside a piece's box cannot pass for a surface.
    """
    flat = d.reshape(-1)
    ny, nx = d.shape[1], d.shape[2]
    centre = flat.index_select(0, index).clamp_(-reach, reach)
    width2 = torch.zeros_like(centre)
    for step in (1, nx, nx * ny):
        g = flat.index_select(0, index + step).clamp_(-reach, reach) - flat.index_select(0, index - step).clamp_(
            -reach, reach)
        width2 += g * g
    return (0.5 - centre / (0.5 * torch.sqrt(width2)).clamp_min(1e-6)).clamp_(0.0, 1.0)


class Canvas:
    """Property images (P, z, y, x) and labels (z, y, x) over one grid box, drawn layer by layer.

    ``table`` maps a tissue name to its P property values.  With P = 0 only labels are drawn,
    which is much cheaper (no fractions needed).
    """

    def __init__(self, grid: Grid, box: Box, values: torch.Tensor, labels: torch.Tensor,
                 table: dict[str, torch.Tensor]):
        self.grid, self.box, self.values, self.labels, self.table = grid, box, values, labels, table

    @classmethod
    def blank(cls, grid: Grid, box: Box, fill: torch.Tensor, label: int,
              table: dict[str, torch.Tensor]) -> "Canvas":
        values = fill.view(-1, 1, 1, 1).expand(-1, *box.shape).clone()
        labels = torch.full(box.shape, label, dtype=torch.int16)
        return cls(grid, box, values, labels, table)

    def draw(self, shape: Shape) -> None:
        """Draw every layer of ``shape`` where its bounding box meets this canvas."""
        target = self.grid.box_of(shape.lo, shape.hi)
        target = target.intersect(self.box) if target is not None else None
        if target is None:
            return
        region = target.within(self.box)
        labels = self.labels[region]
        if shape.supersample > 1:
            values = self.values[(slice(None),) + region]
            n = shape.supersample
            fields = shape.field(Points(self.grid, target, supersample=n))
            for (label, tissue), d in zip(shape.layers, fields):
                if values.shape[0]:
                    values += (d < 0).float().mean(0) * (self.table[tissue].view(-1, 1, 1, 1) - values)
                labels.masked_fill_(d[(n ** 3 - 1) // 2] < 0, label)
            return
        fields = shape.field(Points(self.grid, target, margin=1))
        for (label, tissue), d in zip(shape.layers, fields):
            self._layer(target, labels, d, label, self.table[tissue])

    def _layer(self, target: Box, labels: torch.Tensor, d: torch.Tensor, label: int, value: torch.Tensor) -> None:
        """Composite one layer given its field ``d`` on ``target`` plus a 1-voxel margin.

        Voxels deeper inside than one voxel are simply set; only the thin band around the
        surface needs the ramp.  When few voxels are involved (a vessel tree in a big box)
        everything goes through their indices instead of whole-box masks.
        """
        inner = d[1:-1, 1:-1, 1:-1]
        labels.masked_fill_(inner < 0, label)
        if self.values.shape[0] == 0:
            return
        spacing = max(self.grid.spacing)
        near = inner < spacing
        if int(torch.count_nonzero(near)) * 4 >= near.numel():
            deep = inner <= -spacing
            region = (slice(None),) + target.within(self.box)
            for channel, v in zip(self.values[region], value.tolist()):
                channel.masked_fill_(deep, v)
            near &= ~deep
        self._blend(target, d, near, spacing, value)

    def _blend(self, target: Box, d: torch.Tensor, mask: torch.Tensor, spacing: float, value: torch.Tensor) -> None:
        """value ← value + f·(tissue − value) at the voxels of ``mask``, f from the distance ramp."""
        z, y, x = torch.nonzero(mask, as_tuple=True)
        if len(z) == 0:
            return
        ny, nx = d.shape[1], d.shape[2]
        fraction = _ramp_at(d, ((z + 1) * ny + (y + 1)) * nx + (x + 1), 2.0 * spacing)
        _, cy, cx = self.box.shape
        oz, oy, ox = target.z0 - self.box.z0, target.y0 - self.box.y0, target.x0 - self.box.x0
        index = ((z + oz) * cy + (y + oy)) * cx + (x + ox)
        flat = self.values.view(self.values.shape[0], -1)
        old = flat.index_select(1, index)
        flat.index_copy_(1, index, old + fraction * (value.view(-1, 1) - old))


class Scene:
    """The static part of a phantom on one grid, ready to take moving layers per frame.

    ``motion`` lists the shapes (in drawing order) at instants spanning the motion: the first
    list gives the static layers, all of them bound where the moving band can ever be drawn.
    """

    def __init__(self, grid: Grid, motion: Sequence[list[Shape]], table: dict[str, torch.Tensor]):
        self.grid, self.table = grid, table
        shapes = motion[0]
        moving = [i for i, s in enumerate(shapes) if s.moving]
        first, last = (moving[0], moving[-1]) if moving else (len(shapes), len(shapes) - 1)
        self.band = (first, last + 1)
        below, above = shapes[:first], shapes[last + 1:]

        box = None
        for instant in motion:
            for s in instant[first:last + 1]:
                b = grid.box_of(s.lo, s.hi)
                box = b.union(box) if b is not None else box
        self.box = box

        canvas = Canvas.blank(grid, grid.full, table["air"], 0, table)
        for s in below:
            canvas.draw(s)
        # above the band: premultiplied colour with opacity as the last channel, -1 = no label
        over_table = {k: torch.cat([v, torch.ones(1)]) for k, v in table.items()}
        over = Canvas.blank(grid, grid.full, torch.zeros(canvas.values.shape[0] + 1), -1, over_table)
        for s in above:
            over.draw(s)
        colour, alpha = over.values[:-1], over.values[-1:]
        if box is not None:
            self.below_values = canvas.values[(slice(None),) + box.slices].clone()
            self.below_labels = canvas.labels[box.slices].clone()
            self.over_colour = colour[(slice(None),) + box.slices].clone()
            self.over_alpha = alpha[(slice(None),) + box.slices].clone()
            self.over_labels = over.labels[box.slices].clone()
        self.values = colour + (1.0 - alpha) * canvas.values
        self.labels = torch.where(over.labels >= 0, over.labels, canvas.labels)

    def frame(self, shapes: list[Shape]) -> tuple[torch.Tensor, torch.Tensor]:
        """Property images (P, z, y, x) and labels at the instant the ``shapes`` describe."""
        values, labels = self.values.clone(), self.labels.clone()
        if self.box is None:
            return values, labels
        work = Canvas(self.grid, self.box, self.below_values.clone(), self.below_labels.clone(), self.table)
        for s in shapes[self.band[0]:self.band[1]]:
            work.draw(s)
        values[(slice(None),) + self.box.slices] = self.over_colour + (1.0 - self.over_alpha) * work.values
        labels[self.box.slices] = torch.where(self.over_labels >= 0, self.over_labels, work.labels)
        return values, labels
