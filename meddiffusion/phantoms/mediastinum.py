"""Around the ventricles: atria (with their fat) and the great vessels.

The atria are ellipsoids above the base that follow its descent and fill while the
ventricles empty (+30 % volume at end-systole), as the AV plane moves toward the apex; a thin
layer of fat covers them (the ventricles' epicardial fat is drawn with the ventricles).  The
aortic root sits on the LV base next to the septum and the pulmonary trunk leaves the RV
outflow tract; both rise to fixed points where the (static) arch and the lung hila take over.
The superior vena cava brings the brachiocephalic veins down to the right atrium, the
inferior vena cava comes up through the liver.  All of it moves with the heart when the
patient breathes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from meddiffusion.phantoms.grid import Points
from meddiffusion.phantoms.heart import Heart, HeartState
from meddiffusion.phantoms.shapes import Shape, capsule_bounds, capsules, ellipsoid, polyline
from meddiffusion.phantoms.tissues import LABELS

__all__ = ["Surroundings"]

FAT_MM = 4.0   # fat around the atria


class Surroundings:
    """Shapes of the atria and great vessels for one ``Heart``."""

    def __init__(self, heart: Heart):
        self.heart = heart

    # -- landmarks ------------------------------------------------------------------------
    def aortic_root(self, st: HeartState) -> np.ndarray:
        """Aortic valve: on the base, toward the septum and the anterior wall."""
        h = self.heart
        return st.base_centre(h) + 10.0 * h.e1 + 8.0 * h.ant_sign * h.e2 + 6.0 * h.e_h

    def outflow_tract(self, st: HeartState) -> np.ndarray:
        """RV outflow tract: inside the RV crescent, anterior side, at the base."""
        h = self.heart
        phi0 = h.ant_sign * math.radians(0.45 * h.p.rv_half_angle_deg)
        h0 = 0.95 * h.base_height
        rho = float(h.surfaces(np.array(phi0), np.array(h0), st)["rv_cavity"]) - 0.4 * st.alpha
        return h.world(np.array(phi0), np.array(h0), np.array(rho), st) + 10.0 * h.e_h

    def atria(self, st: HeartState):
        """(centre, semi-axes along e₁, e₂, e_h) of the LA and RA, sitting on the base.

        The LA covers the mitral (posterior-lateral) half of the LV base, the RA the
        tricuspid side beyond the septum; both grow by 30 % while the ventricles empty.
        """
        h = self.heart
        base = st.base_centre(h)
        front = h.ant_sign * h.e2
        scale = (1.0 + 0.3 * st.contraction) ** (1 / 3)
        la = (base + 17.0 * h.e_h - 12.0 * front - 4.0 * h.e1, scale * np.array([28.0, 22.0, 20.0]))
        ra_out = h.a + h.p.wall_mm + 0.5 * h.alpha_ed
        ra = (base + 14.0 * h.e_h + ra_out * h.e1 - 6.0 * front, scale * np.array([22.0, 26.0, 24.0]))
        return la, ra

    @property
    def frame(self) -> np.ndarray:
        h = self.heart
        return np.stack([h.e1, h.e2, h.e_h], axis=1)

    # -- shapes -----------------------------------------------------------------------------
    def pulmonary_artery(self, st: HeartState, shift: np.ndarray) -> Shape:
        root = self.outflow_tract(st)
        fork = np.array([16.0, -12.0, 42.0]) + shift
        pieces = (polyline(np.array([root, 0.5 * (root + fork) + np.array([0.0, -4.0, 0.0]), fork]),
                           np.array([12.5, 13.0, 12.0]))
                  + polyline(np.array([fork, [34.0, 2.0, 44.0] + shift, [52.0, 14.0, 33.0] + shift]),
                             np.array([10.0, 9.0, 7.5]))
                  + polyline(np.array([fork, [-8.0, 2.0, 42.0] + shift, [-30.0, 8.0, 36.0] + shift,
                                       [-47.0, 12.0, 29.0] + shift]), np.array([10.0, 9.5, 8.5, 7.5])))
        lo, hi = capsule_bounds(pieces, 2.0)
        return Shape("pulmonary_artery", ((LABELS["pulmonary_artery"], "blood"),), lambda q: [capsules(q, pieces)],
                     lo, hi, moving=True)

    def ascending_aorta(self, st: HeartState, shift: np.ndarray) -> Shape:
        root = self.aortic_root(st)
        path = np.array([root, root + 12.0 * self.heart.e_h, [-9.0, -26.0, 42.0] + shift,
                         [-10.0, -22.0, 75.0] + shift])
        pieces = polyline(path, np.array([13.0, 15.0, 15.5, 15.0]))
        lo, hi = capsule_bounds(pieces, 2.0)
        return Shape("ascending_aorta", ((LABELS["aorta"], "blood"),), lambda q: [capsules(q, pieces)], lo, hi,
                     moving=True)

    def venae_cavae(self, st: HeartState, shift: np.ndarray) -> Shape:
        (_, _), (ra_c, ra_r) = self.atria(st)
        top, bottom = ra_c + 0.6 * ra_r[2] * self.heart.e_h, ra_c - 0.6 * ra_r[2] * self.heart.e_h
        junction = np.array([-26.0, -14.0, 110.0]) + shift
        pieces = (polyline(np.array([junction, [-28.0, -12.0, 60.0] + shift, top]),
                           np.array([10.0, 10.0, 11.0]))
                  + polyline(np.array([[50.0, -14.0, 170.0], [12.0, -32.0, 126.0], junction]) + shift,
                             np.array([6.0, 6.5, 7.0]))
                  + polyline(np.array([[-48.0, -6.0, 175.0], junction]) + shift, np.array([6.5, 7.0]))
                  + polyline(np.array([[-20.0, 22.0, -260.0] + shift, [-18.0, 16.0, -60.0] + shift, bottom]),
                             np.array([12.0, 12.0, 12.0])))
        lo, hi = capsule_bounds(pieces, 2.0)
        return Shape("venae_cavae", ((LABELS["vena_cava"], "blood"),), lambda q: [capsules(q, pieces)], lo, hi,
                     moving=True)

    def atria_shape(self, st: HeartState, shift: np.ndarray) -> Shape:
        """Both atria, with the four pulmonary veins entering the LA."""
        (la_c, la_r), (ra_c, ra_r) = self.atria(st)
        frame = self.frame
        veins = []
        for end in ([-42.0, 10.0, 26.0], [-40.0, 16.0, 2.0], [44.0, 12.0, 26.0], [42.0, 18.0, 2.0]):
            end = np.asarray(end) + shift
            veins += polyline(np.array([la_c + 0.5 * (end - la_c) * 0.4, end]), np.array([7.0, 6.0]))
        reach = max(la_r.max(), ra_r.max())
        lo = np.minimum(np.minimum(la_c, ra_c) - reach, capsule_bounds(veins)[0]) - 2.0
        hi = np.maximum(np.maximum(la_c, ra_c) + reach, capsule_bounds(veins)[1]) + 2.0

        def field(q: Points):
            la, ra = ellipsoid(q, la_c, la_r, frame), ellipsoid(q, ra_c, ra_r, frame)
            return [torch.minimum(la, ra) - FAT_MM, capsules(q, veins), la, ra]

        return Shape("atria", ((LABELS["fat"], "fat"), (LABELS["lung_vessel"], "blood"), (LABELS["la"], "blood"),
                               (LABELS["ra"], "blood")), field, lo - FAT_MM, hi + FAT_MM, moving=True)
