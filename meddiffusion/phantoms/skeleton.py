"""Bones of the chest: spine (T1-L2), twelve pairs of ribs with costal cartilage, sternum.

Each bone is a cortical shell (1.5 mm) around trabecular bone, drawn as two layers from one
distance field (the core is the same field shifted inward).  Vertebrae are stacked 25 mm
apart (T7 at z = 12 mm, beside the heart centre) with discs between the bodies, a continuous
spinal canal (CSF) and neural arch, spinous and transverse processes.  Each rib leaves its
vertebra, follows the cavity outline just outside the pleura from back to front while
dropping 35-80 mm on the way (the lateral part crosses an axial slice obliquely), and
(ribs 1-10) continues as cartilage up to the sternum or the costal margin.  A rib is two
stacked tubes, so its cross-section is taller than wide.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from meddiffusion.phantoms.grid import Points
from meddiffusion.phantoms.shapes import Shape, capsules, polyline, superellipse_prism, union_of_parts
from meddiffusion.phantoms.thorax import BODY_POWER, Thorax
from meddiffusion.phantoms.tissues import LABELS

__all__ = ["Skeleton", "vertebra_z"]

SHELL_MM = 1.5
_VERTEBRAE = [f"T{k}" for k in range(1, 13)] + ["L1", "L2"]


def vertebra_height(index: int) -> float:
    """Body height (mm) of vertebra ``index`` (0 = T1 ... 11 = T12, 12 = L1, 13 = L2)."""
    return 17.0 + 0.6 * index if index <= 11 else 24.0 + 1.0 * (index - 11)


def disc_height(index: int) -> float:
    """Height (mm) of the disc below vertebra ``index``."""
    return 4.0 + 0.3 * index


def vertebra_z(index: int) -> float:
    """Centre height of vertebra ``index``; T7 (index 6) sits at z = 12 mm."""
    z = 12.0
    for i in range(6, index):
        z -= vertebra_height(i) / 2 + disc_height(i) + vertebra_height(i + 1) / 2
    for i in range(index, 6):
        z += vertebra_height(i + 1) / 2 + disc_height(i) + vertebra_height(i) / 2
    return z


class Skeleton:
    """Shapes of the spine, ribs with cartilage, and sternum around a ``Thorax``."""

    def __init__(self, thorax: Thorax):
        self.thorax = thorax
        self.ribs, self.cartilage = self._rib_paths()

    # -- geometry -------------------------------------------------------------------------
    def _scalar(self, fn, z: float) -> float:
        return float(fn(torch.tensor(z)))

    def _cavity_point(self, side: float, theta: float, z: float, offset: float) -> np.ndarray:
        """A point just outside the cavity outline at angle θ from posterior (0) to anterior (π)."""
        th = self.thorax
        fat = th.p.fat_mm
        half, front, _ = (float(v) for v in th.body_radii(torch.tensor(z)))
        scale = self._scalar(th.apex_scale, z)
        back = (self._scalar(th.spine_y, z) + 28.0) * scale
        ax = (half - 1.2 * fat - 24.0) * scale + offset
        ay = (back if math.cos(theta) > 0 else (front - fat - 16.0) * scale) + offset
        e = 2.0 / BODY_POWER
        x = side * ax * abs(math.sin(theta)) ** e
        y = math.copysign(ay * abs(math.cos(theta)) ** e, math.cos(theta))
        return np.array([x, y, z])

    def sternum_y(self, z: float) -> float:
        fat = self.thorax.p.fat_mm
        front = float(self.thorax.body_radii(torch.tensor(z))[1])
        return -(front - fat - 9.0)

    def _rib_paths(self):
        th = self.thorax
        ribs, cartilage = [], []
        attach = np.linspace(135.0, 5.0, 7)                      # ribs 1-7 at the sternum
        drops = (35, 50, 60, 68, 74, 78, 80, 80, 78, 74, 50, 35)
        for k in range(1, 13):
            z0 = vertebra_z(k - 1)
            radius = 3.0 if k <= 2 else 3.6
            drop = float(drops[k - 1])
            end = 2.45 if k <= 7 else (2.3 if k <= 10 else (1.75 if k == 11 else 1.35))
            start = 0.55
            spine = self._scalar(th.spine_y, z0)
            for side in (-1.0, 1.0):
                points = [np.array([side * 20.0, spine + 2.0, z0 + 4.0]),
                          np.array([side * 34.0, spine + 22.0, z0]), ]
                for theta in np.linspace(start, end, 12):
                    frac = (theta - start) / (math.pi - start)
                    z = z0 - 4.0 - drop * frac ** 1.1
                    points.append(self._cavity_point(side, theta, z, radius + 1.5))
                points = np.array(points)
                for dz in (-2.5, 2.5):
                    ribs.extend(polyline(points + np.array([0.0, 0.0, dz]), np.full(len(points), radius)))
                if k <= 10:
                    tip = points[-1]
                    if k <= 7:
                        zt = attach[k - 1]
                        target = np.array([side * 14.0, self.sternum_y(zt), zt])
                    else:
                        zt = -10.0 - 14.0 * (k - 8)
                        target = np.array([side * (30.0 + 12.0 * (k - 8)), self.sternum_y(zt) + 6.0, zt])
                    middle = 0.5 * (tip + target) + np.array([0.0, -4.0, 0.0])
                    cartilage.extend(polyline(np.array([tip, middle, target]), np.array([4.5, 4.5, 4.0])))
        return ribs, cartilage

    # -- shapes ---------------------------------------------------------------------------
    def rib_cage(self) -> Shape:
        ribs, cartilage = self.ribs, self.cartilage
        half = self.thorax.p.half_width_mm * 1.1

        def field(q: Points):
            d = capsules(q, ribs)
            return [capsules(q, cartilage), d, d + SHELL_MM]

        return Shape("ribs", ((LABELS["body"], "cartilage"), (LABELS["bone"], "cortical_bone"),
                              (LABELS["bone"], "trabecular_bone")),
                     field, np.array([-half, -200.0, -400.0]), np.array([half, 200.0, 300.0]))

    def sternum(self) -> Shape:
        fat = self.thorax.p.fat_mm
        front0 = self.thorax.p.front_mm

        def field(q: Points):
            front = self.thorax.body_radii(q.z)[1]
            cy = -(front - fat - 9.0)
            half = torch.where(q.z > 100.0, torch.full_like(q.z, 25.0),
                               torch.where(q.z > 15.0, torch.full_like(q.z, 15.0), torch.full_like(q.z, 8.0)))
            ends = torch.maximum(-15.0 - q.z, q.z - 142.0)
            outer = torch.maximum(superellipse_prism(q, 0.0, cy, half, 6.0, 6.0, 2.0), ends)
            return [outer, outer + SHELL_MM]

        return Shape("sternum", ((LABELS["bone"], "cortical_bone"), (LABELS["bone"], "trabecular_bone")), field,
                     np.array([-30.0, -front0 * 1.1, -20.0]), np.array([30.0, -front0 * 0.5, 150.0]))

    def spine(self) -> Shape:
        th = self.thorax

        def vertebra(index: int):
            z0 = vertebra_z(index)
            height, gap = vertebra_height(index), disc_height(index)
            rx, ry = 16.0 + 0.6 * index, 13.0 + 0.3 * index
            spine = float(th.spine_y(torch.tensor(z0)))
            canal = spine + ry + 8.0

            def fn(q: Points):
                sy = th.spine_y(q.z)
                body = torch.maximum(superellipse_prism(q, 0.0, sy, rx, ry, ry, 2.0), (q.z - z0).abs() - height / 2)
                disc = torch.maximum(superellipse_prism(q, 0.0, sy, rx, ry, ry, 2.0),
                                     (q.z - (z0 - height / 2 - gap / 2)).abs() - gap / 2)
                ring = superellipse_prism(q, 0.0, sy + ry + 9.0, 14.0, 12.0, 12.0, 2.0)
                hole = superellipse_prism(q, 0.0, sy + ry + 8.0, 9.0, 7.5, 7.5, 2.0)
                arch = torch.maximum(torch.maximum(ring, -hole), (q.z - z0).abs() - 9.0)
                processes = capsules(q, polyline(np.array([[0.0, canal + 10.0, z0], [0.0, canal + 28.0, z0 - 18.0]]),
                                                 np.array([5.0, 4.0]))
                                     + polyline(np.array([[-8.0, canal, z0 + 2.0], [-30.0, canal + 8.0, z0 + 4.0]]),
                                                np.array([5.0, 4.5]))
                                     + polyline(np.array([[8.0, canal, z0 + 2.0], [30.0, canal + 8.0, z0 + 4.0]]),
                                                np.array([5.0, 4.5])))
                cortical = torch.minimum(torch.minimum(body, arch), processes)
                return [cortical, body + 1.0, disc]

            lo = np.array([-40.0, spine - ry - 5.0, z0 - height / 2 - gap - 25.0])
            hi = np.array([40.0, canal + 48.0, z0 + height / 2 + 5.0])
            return lo, hi, fn

        def field(q: Points):
            cortical, core, disc = union_of_parts(q, (vertebra(i) for i in range(len(_VERTEBRAE))), 3)
            sy = th.spine_y(q.z)
            canal = superellipse_prism(q, 0.0, sy + 13.0 + 8.0, 8.5, 7.0, 7.0, 2.0)
            return [disc, cortical, core, canal]

        return Shape("spine", ((LABELS["body"], "disc"), (LABELS["bone"], "cortical_bone"),
                               (LABELS["bone"], "trabecular_bone"), (LABELS["body"], "csf")),
                     field, np.array([-42.0, 10.0, -1000.0]), np.array([42.0, 150.0, 1000.0]))
