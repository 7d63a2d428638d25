"""Coronary arteries on the epicardium and the calcified plaques they carry.

Centrelines are defined in the heart's material coordinates (anatomical angle ψ, height h₀;
see ``heart.py``) on a surface — the LV epicardium or the outside of the RV wall — so at any
instant they lie on that surface and move with it: base descent, twist, wall thickening.

- LAD: anterior interventricular groove (just past the anterior RV insertion), base to apex.
- LCX: left atrioventricular groove, from the anterior insertion around the lateral wall.
- RCA: right atrioventricular groove around the RV, then down the posterior groove (PDA).
- Left main / RCA ostia: short segments from the aortic root to each tree.

A plaque is an ellipsoid on the vessel wall — long axis along the vessel, centre displaced
toward the outer (epicardial fat) side — so it never enters a cavity, and it moves exactly
as the wall point it sits on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meddiffusion.phantoms.heart import Heart, HeartState
from meddiffusion.phantoms.mediastinum import Surroundings
from meddiffusion.phantoms.shapes import Shape, capsule_bounds, capsules, ellipsoid, polyline
from meddiffusion.phantoms.tissues import LABELS, PLAQUE_LABEL_BASE

__all__ = ["Plaque", "Coronaries"]

_POINTS = 28
_SURFACE_GAP_MM = 0.5


@dataclass
class Plaque:
    """A calcified plaque: where (vessel, fraction along it, angle around it), size and density.

    ``size_mm`` is the length along the vessel (the largest diameter), ``aspect`` the ratio
    of the cross diameters to it, ``angle_deg`` the position around the vessel (0 = the side
    facing away from the heart), ``hu`` the density of the calcium.
    """

    id: int
    vessel: str
    position: float
    size_mm: float
    aspect: float
    hu: float
    angle_deg: float = 0.0

    @property
    def semi_axes_mm(self) -> tuple[float, float, float]:
        long = self.size_mm / 2
        return (long * self.aspect, long * self.aspect, long)

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c


class Coronaries:
    """Centrelines, vessel tubes and plaques for one ``Heart``."""

    def __init__(self, heart: Heart, surroundings: Surroundings, plaques: list[Plaque]):
        self.heart, self.surroundings, self.plaques = heart, surroundings, plaques

    def _on_surface(self, psi_deg: np.ndarray, h_frac: np.ndarray, surface: str, radius: np.ndarray,
                    st: HeartState) -> np.ndarray:
        h = self.heart
        phi0 = h.ant_sign * np.radians(psi_deg)
        h0 = h_frac * h.base_height
        rho = h.surfaces(phi0, h0, st)[surface] + radius + _SURFACE_GAP_MM
        return h.world(phi0, h0, rho, st)

    def centrelines(self, st: HeartState) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per vessel: points (n, 3) in LPS mm and radii (n,) at this instant."""
        h = self.heart
        rv = h.p.rv_half_angle_deg
        s = np.linspace(0.0, 1.0, _POINTS)
        lines = {}
        radius = 1.9 - 1.0 * s
        lines["LAD"] = (self._on_surface(np.full(_POINTS, rv + 6.0), 0.96 - 0.92 * s, "lv_epi", radius, st), radius)
        start = rv + 14.0
        radius = 1.8 - 0.8 * s
        lines["LCX"] = (self._on_surface(start + 0.7 * (360.0 - 2 * rv - 28.0) * s, np.full(_POINTS, 0.95),
                                         "lv_epi", radius, st), radius)
        ring, drop = np.linspace(0.0, 1.0, _POINTS // 2), np.linspace(0.0, 1.0, _POINTS // 2)
        groove = self._on_surface(0.6 * rv - 1.55 * rv * ring, np.full(len(ring), 0.97), "rv_outer",
                                  1.9 - 0.4 * ring, st)
        posterior = self._on_surface(np.full(len(drop), -(rv + 6.0)), 0.9 - 0.55 * drop, "lv_epi",
                                     1.5 - 0.5 * drop, st)
        lines["RCA"] = (np.concatenate([groove, posterior]), np.concatenate([1.9 - 0.4 * ring, 1.5 - 0.5 * drop]))
        root = self.surroundings.aortic_root(st)
        for name, target in (("LM", lines["LAD"][0][0]), ("RCA0", lines["RCA"][0][0])):
            direction = (target - root) / np.linalg.norm(target - root)
            pts = np.linspace(root + 12.0 * direction, target, 6)
            lines[name] = (pts, np.full(6, 2.2 if name == "LM" else 1.9))
        rca0 = lines.pop("RCA0")
        lines["RCA"] = (np.concatenate([rca0[0][:-1], lines["RCA"][0]]), np.concatenate([rca0[1][:-1], lines["RCA"][1]]))
        return lines

    def vessels_shape(self, st: HeartState) -> Shape:
        pieces = [seg for pts, radii in self.centrelines(st).values() for seg in polyline(pts, radii)]
        lo, hi = capsule_bounds(pieces, 2.0)
        return Shape("coronaries", ((LABELS["coronary_artery"], "blood"),), lambda q: [capsules(q, pieces)], lo, hi,
                     moving=True)

    # -- plaques ------------------------------------------------------------------------------
    def plaque_frames(self, st: HeartState) -> list[tuple[np.ndarray, np.ndarray]]:
        """(centre, 3×3 axes with the long axis last) of every plaque at this instant."""
        lines = self.centrelines(st)
        frames = []
        for plaque in self.plaques:
            pts, radii = lines[plaque.vessel]
            arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
            where = plaque.position * arc[-1]
            i = int(np.clip(np.searchsorted(arc, where) - 1, 0, len(pts) - 2))
            w = (where - arc[i]) / max(arc[i + 1] - arc[i], 1e-9)
            point = (1 - w) * pts[i] + w * pts[i + 1]
            radius = (1 - w) * radii[i] + w * radii[i + 1]
            tangent = (pts[i + 1] - pts[i]) / max(np.linalg.norm(pts[i + 1] - pts[i]), 1e-9)
            outward = point - (st.apex + ((point - st.apex) @ self.heart.e_h) * self.heart.e_h)
            outward -= (outward @ tangent) * tangent
            outward /= max(np.linalg.norm(outward), 1e-9)
            side = np.cross(tangent, outward)
            angle = math.radians(plaque.angle_deg)
            normal = math.cos(angle) * outward + math.sin(angle) * side
            centre = point + 0.6 * radius * normal
            frames.append((centre, np.stack([normal, np.cross(tangent, normal), tangent], axis=1)))
        return frames

    def plaque_shapes(self, st: HeartState) -> list[Shape]:
        """One small supersampled shape per plaque (label 100 + id, its own tissue)."""
        shapes = []
        for plaque, (centre, frame) in zip(self.plaques, self.plaque_frames(st)):
            axes = plaque.semi_axes_mm
            reach = max(axes) + 0.5

            def field(q, centre=centre, frame=frame, axes=axes):
                return [ellipsoid(q, centre, axes, frame)]

            shapes.append(Shape(f"plaque_{plaque.id}", ((PLAQUE_LABEL_BASE + plaque.id, f"plaque_{plaque.id}"),),
                                field, centre - reach, centre + reach, moving=True, supersample=5))
        return shapes
