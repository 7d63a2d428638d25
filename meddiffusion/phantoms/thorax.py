"""The chest around the heart: body and fat, lungs, mediastinum, airways, upper abdomen.

All lengths are LPS millimetres with z = 0 at the heart centre (about T7/T8).  The outline
is a superellipse (power 2.4: a rounded rectangle, flatter than an ellipse, like a real
chest) whose size changes slowly with height.  Subcutaneous fat is the band between the skin
and an inner outline; chest-wall muscle lies between that and the thoracic cavity (inside the
ribs), which narrows to the lung apices and is indented behind by the spine.  The two lungs
fill the cavity; the diaphragm is two paraboloid domes (the right one higher), below which
the upper abdomen — liver, stomach with an anterior gas cap, spleen, colon — moves down and
slightly forward when the patient breathes in.

What makes attenuation artefacts in myocardial perfusion SPECT can be dialled in (all off by
default, which leaves every other phantom exactly as it was): breasts on the anterior chest
wall of women (anterior-wall artefact), a raised diaphragm that lifts the liver, stomach and
spleen toward the inferior wall, and a bowel loop just under the left dome (inferior-wall
artefact and sub-diaphragmatic tracer, scaled by ``gut_uptake``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from meddiffusion.phantoms.grid import Points
from meddiffusion.phantoms.shapes import (Shape, capsule_bounds, capsules, ellipsoid, polyline, rotation,
                                          smooth_min, superellipse_prism, within)
from meddiffusion.phantoms.tissues import LABELS

__all__ = ["ThoraxParams", "Thorax", "breathing_displacement"]

BODY_POWER = 2.4
_ALL_Z = (-5000.0, 5000.0)


@dataclass
class ThoraxParams:
    """Body habitus and breathing (mm; ``breathing_mm`` = 0 is a breath-hold)."""

    half_width_mm: float = 160.0
    front_mm: float = 112.0
    back_mm: float = 118.0
    fat_mm: float = 15.0
    breathing_mm: float = 0.0
    breathing_period_s: float = 4.0
    sex: str = "male"
    breast_mm: float = 0.0                  # how far each breast projects from the chest wall (0 = none)
    breast_ptosis_mm: float = 0.0           # how far the front of the breast hangs down (pendulous)
    breast_shift_mm: tuple[float, float] = (0.0, 0.0)   # both breasts moved outward (x) and up (z)
    breast_hu: float = -30.0                # fatty (-50) to dense glandular (+20)
    diaphragm_mm: float = 0.0               # domes, liver, stomach and spleen raised by this much
    gut_uptake: float = 1.0                 # liver and bowel tracer (SPECT, PET) × this
    bowel_loop: bool = False                # a bowel loop right under the left dome, below the heart

    def validate(self) -> None:
        if not 100 <= self.half_width_mm <= 250:
            raise ValueError(f"body half-width must be 100-250 mm, got {self.half_width_mm}")
        if not 80 <= self.front_mm <= 200 or not 80 <= self.back_mm <= 200:
            raise ValueError(f"body front/back depths must be 80-200 mm, got {self.front_mm}, {self.back_mm}")
        if not 2 <= self.fat_mm <= 50:
            raise ValueError(f"subcutaneous fat must be 2-50 mm, got {self.fat_mm}")
        if not 0 <= self.breathing_mm <= 40:
            raise ValueError(f"breathing amplitude must be 0-40 mm, got {self.breathing_mm}")
        if not 1 <= self.breathing_period_s <= 20:
            raise ValueError(f"breathing period must be 1-20 s, got {self.breathing_period_s}")
        if self.sex not in ("male", "female"):
            raise ValueError(f"sex must be 'male' or 'female', got '{self.sex}'")
        if not 0 <= self.breast_mm <= 120 or (self.breast_mm > 0 and self.sex != "female"):
            raise ValueError(f"breast projection must be 0-120 mm, and 0 for men, got {self.breast_mm}")
        if not 0 <= self.breast_ptosis_mm <= 80:
            raise ValueError(f"breast ptosis must be 0-80 mm, got {self.breast_ptosis_mm}")
        if len(self.breast_shift_mm) != 2 or max(abs(v) for v in self.breast_shift_mm) > 40:
            raise ValueError(f"breast shift must be two offsets (x, z) within ±40 mm, got {self.breast_shift_mm}")
        if not -100 <= self.breast_hu <= 60:
            raise ValueError(f"breast density must be -100 to 60 HU, got {self.breast_hu}")
        if not 0 <= self.diaphragm_mm <= 40:
            raise ValueError(f"diaphragm raise must be 0-40 mm, got {self.diaphragm_mm}")
        if not 0 <= self.gut_uptake <= 5:
            raise ValueError(f"gut uptake must be 0-5 × the standard, got {self.gut_uptake}")


def breathing_displacement(t: float, amplitude_mm: float, period_s: float) -> float:
    """Diaphragm descent (mm, ≥ 0) at time t: Lujan's model b·cos⁴(πt/τ − π/2).

    Zero at t = 0 (end-expiration) and most of the cycle near expiration, as in free
    breathing (Lujan et al., Med Phys 26:715, 1999).
    """
    return amplitude_mm * math.sin(math.pi * t / period_s) ** 4


class Thorax:
    """Profiles (radii as functions of height) and the shapes of the chest."""

    def __init__(self, params: ThoraxParams):
        params.validate()
        self.p = params

    # -- profiles (torch, z any shape) -------------------------------------------------------
    def body_radii(self, z):
        p = self.p
        lower = (-z / 150.0).clamp(-1.0, 1.0)
        upper = ((z - 60.0) / 110.0).clamp(0.0, 1.0)
        half = p.half_width_mm * (1 + 0.05 * lower) * (1 - 0.10 * upper * upper)
        return half, p.front_mm * (1 + 0.05 * lower), p.back_mm + 0.0 * z

    def spine_y(self, z):
        """Vertebral body centre y (thoracic kyphosis: most posterior mid-chest)."""
        u = ((z - 30.0) / 180.0).clamp(-1.2, 1.2)
        return 40.0 + 8.0 * (1 - u * u)

    def apex_scale(self, z):
        """Cavity shrinks to the lung apices above z = 95 mm."""
        u = ((z - 95.0) / 85.0).clamp(0.0, 1.0)
        return torch.sqrt((1 - u * u).clamp_min(0.0))

    def dome(self, x, y, descent: float = 0.0):
        """Height of the diaphragm (mm) above (x, y), after a breathing descent (and any raise)."""
        right = -25.0 - ((x + 75.0) ** 2 + (y - 10.0) ** 2) / 230.0
        left = -58.0 - ((x - 70.0) ** 2 + (y - 10.0) ** 2) / 230.0
        return torch.maximum(right, left) - descent + self.p.diaphragm_mm

    def cavity(self, q) -> torch.Tensor:
        """Thoracic (and, below the diaphragm, abdominal) cavity inside the ribs."""
        fat = self.p.fat_mm
        half, front, _ = self.body_radii(q.z)
        scale = self.apex_scale(q.z)
        spine = self.spine_y(q.z)
        d = superellipse_prism(q, 0.0, 0.0, ((half - 1.2 * fat - 24.0) * scale).clamp_min(1.0),
                               ((front - fat - 16.0) * scale).clamp_min(1.0),
                               ((spine + 28.0) * scale).clamp_min(1.0), BODY_POWER)
        bulge = superellipse_prism(q, 0.0, spine + 20.0, 28.0, 40.0, 40.0, 2.0)
        return torch.maximum(d, -bulge)

    def lung(self, q) -> torch.Tensor:
        """Both lungs fill the cavity; the mediastinum and heart, drawn over them, separate them
        (and the abdomen hides the part below the diaphragm)."""
        return self.cavity(q)

    def evaluate(self, fn, xyz: np.ndarray) -> np.ndarray:
        """A field function at LPS points (N, 3) given as numpy."""
        t = torch.as_tensor(np.asarray(xyz, float), dtype=torch.float32)
        return fn(SimpleNamespace(x=t[:, 0], y=t[:, 1], z=t[:, 2])).numpy()

    # -- shapes --------------------------------------------------------------------------------
    def _wide(self, margin: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        w = p.half_width_mm * 1.06 + margin
        return np.array([-w, -p.front_mm * 1.06 - margin, _ALL_Z[0]]), np.array([w, p.back_mm + margin, _ALL_Z[1]])

    def body(self) -> Shape:
        """Skin outline (filled with fat) and the inner outline (muscle) over it."""
        fat = self.p.fat_mm

        def field(q: Points):
            half, front, back = self.body_radii(q.z)
            outer = superellipse_prism(q, 0.0, 0.0, half, front, back, BODY_POWER)
            inner = superellipse_prism(q, 0.0, 0.0, half - 1.2 * fat, front - fat, back - 0.8 * fat, BODY_POWER)
            return [outer, inner]

        lo, hi = self._wide()
        return Shape("body", ((LABELS["fat"], "fat"), (LABELS["body"], "muscle")), field, lo, hi)

    def breasts(self) -> Shape | None:
        """Both breasts, or None (men, or ``breast_mm`` = 0).

        Each is an ellipsoid centred on the skin of the anterior chest wall, about the height
        of the heart, kept outside the chest-wall muscle (it replaces the subcutaneous fat).
        Its base widens with its size; ``breast_ptosis_mm`` shears the front of it downward,
        so a pendulous breast covers the lower anterior chest, and the inferior LV wall.
        """
        p = self.p
        if p.breast_mm <= 0:
            return None
        size, drop = p.breast_mm, p.breast_ptosis_mm
        base = 45.0 + 0.35 * size                       # semi-axes across the chest wall
        cz = -25.0 + p.breast_shift_mm[1]
        half, front, _ = (float(v) for v in self.body_radii(torch.tensor(cz)))
        centres = []
        for side in (-1.0, 1.0):
            cx = side * (0.45 * half + p.breast_shift_mm[0])
            wall = -front * (1.0 - abs(cx / half) ** BODY_POWER) ** (1.0 / BODY_POWER)
            centres.append(np.array([cx, wall, cz]))
        fat = p.fat_mm

        def field(q: Points):
            hz, fz, bz = self.body_radii(q.z)
            muscle = superellipse_prism(q, 0.0, 0.0, hz - 1.2 * fat, fz - fat, bz - 0.8 * fat, BODY_POWER)
            d = None
            for c in centres:
                depth = ((c[1] - q.y) / size).clamp(0.0, 1.0)          # 0 at the wall, 1 at the tip
                hang = SimpleNamespace(x=q.x, y=q.y, z=q.z + drop * depth * depth)
                e = ellipsoid(hang, c, (base, size, 0.9 * base))
                d = e if d is None else torch.minimum(d, e)
            return [torch.maximum(d, -muscle)]

        reach = np.array([abs(centres[0][0]) + base + 10.0, front * 1.06 + size + 10.0])
        lo = np.array([-reach[0], -reach[1], cz - 0.9 * base - drop - 10.0])
        hi = np.array([reach[0], -front * 0.3 + base, cz + 0.9 * base + 10.0])
        return Shape("breasts", ((LABELS["breast"], "breast"),), field, lo, hi)

    def lungs(self, vessels: list) -> Shape:
        """Lung parenchyma and, inside it only, the pulmonary vessel tree."""

        def field(q: Points):
            lung = self.lung(q)
            return [lung, torch.maximum(capsules(q, vessels), lung)]

        lo, hi = self._wide(0.0)
        return Shape("lungs", ((LABELS["lung"], "lung"), (LABELS["lung_vessel"], "blood")), field, lo, hi)

    def mediastinum(self) -> Shape:
        """Static mediastinal fat: superior (great vessels, trachea) and posterior (oesophagus, aorta)."""

        def field(q: Points):
            spine = self.spine_y(q.z)
            top = superellipse_prism(q, 0.0, -15.0, 40.0, 60.0, 45.0, 2.0)
            top = torch.maximum(top, 15.0 - q.z)
            back = superellipse_prism(q, 8.0, spine - 22.0, 30.0, 18.0, 18.0, 2.0)
            return [smooth_min(top, back, 8.0)]

        return Shape("mediastinum", ((LABELS["fat"], "fat"),), field,
                     np.array([-50.0, -80.0, _ALL_Z[0]]), np.array([50.0, 50.0, _ALL_Z[1]]))

    def airways(self) -> Shape:
        """Trachea and main bronchi: cartilage/mucosa wall (2 mm) around an air lumen."""
        carina = np.array([0.0, 2.0, 50.0])
        pieces = (polyline(np.array([[0.0, -2.0, 260.0], [0.0, 0.0, 100.0], carina]), np.array([9.5, 9.5, 9.0]))
                  + polyline(np.array([carina, [-22.0, 8.0, 38.0], [-40.0, 12.0, 27.0]]), np.array([8.0, 7.5, 6.0]))
                  + polyline(np.array([carina, [25.0, 8.0, 41.0], [50.0, 14.0, 28.0]]), np.array([7.5, 7.0, 5.5])))

        def field(q: Points):
            d = capsules(q, pieces)
            return [d, d + 2.0]

        return Shape("airways", ((LABELS["body"], "airway_wall"), (LABELS["airway"], "air")), field,
                     np.array([-50.0, -15.0, 15.0]), np.array([60.0, 25.0, _ALL_Z[1]]))

    def oesophagus(self) -> Shape:
        path = np.array([[2.0, 24.0, 260.0], [5.0, 26.0, 60.0], [10.0, 26.0, 0.0], [22.0, 14.0, -60.0],
                         [45.0, -2.0, -95.0]])
        pieces = polyline(path, np.full(len(path), 8.0))
        return Shape("oesophagus", ((LABELS["body"], "muscle"),), lambda q: [capsules(q, pieces)],
                     np.array([-10.0, -15.0, -110.0]), np.array([56.0, 35.0, _ALL_Z[1]]))

    def descending_aorta(self) -> Shape:
        """Aortic arch and descending aorta, left-anterior of the spine (static)."""
        path = np.array([[-10.0, -22.0, 75.0], [0.0, -8.0, 92.0], [16.0, 10.0, 90.0], [25.0, 24.0, 78.0],
                         [25.0, 30.0, 40.0], [21.0, 32.0, -40.0], [12.0, 30.0, -120.0], [5.0, 28.0, -300.0]])
        radii = np.array([15.0, 13.5, 13.0, 12.5, 12.0, 11.5, 11.0, 10.5])
        branches = (polyline(np.array([[-2.0, -8.0, 95.0], [-14.0, -10.0, 130.0], [-22.0, -4.0, 260.0]]),
                             np.array([7.0, 6.5, 6.0]))
                    + polyline(np.array([[6.0, -2.0, 98.0], [9.0, -4.0, 260.0]]), np.array([4.5, 4.5]))
                    + polyline(np.array([[16.0, 8.0, 96.0], [26.0, 12.0, 140.0], [55.0, 10.0, 175.0],
                                         [90.0, 8.0, 185.0]]), np.array([5.5, 5.5, 5.0, 5.0])))
        pieces = polyline(path, radii) + branches
        return Shape("aorta", ((LABELS["aorta"], "blood"),), lambda q: [capsules(q, pieces)],
                     np.array([-40.0, -45.0, _ALL_Z[0]]), np.array([110.0, 50.0, _ALL_Z[1]]))

    def abdomen(self, descent: float) -> Shape:
        """Everything under the diaphragm, moved down by ``descent`` (mm) and forward by 10 %."""
        s = np.array([0.0, -0.1 * descent, -descent + self.p.diaphragm_mm])
        colon = polyline(np.array([[110.0, -20.0, -160.0], [106.0, -45.0, -130.0], [75.0, -62.0, -135.0],
                                   [35.0, -68.0, -152.0]]) + s, np.full(4, 18.0))
        spleen_axes = rotation(np.array([0.0, 0.0, 1.0]), np.array([math.cos(0.5), math.sin(0.5), 0.0]))

        liver_right, liver_left = np.array([-60.0, 10.0, -100.0]) + s, np.array([0.0, -42.0, -88.0]) + s
        spleen_c, stomach_c = np.array([92.0, 50.0, -95.0]) + s, np.array([62.0, -12.0, -100.0]) + s

        def field(q: Points):
            abdomen = torch.maximum(self.cavity(q), q.z - self.dome(q.x, q.y - s[1], descent))

            def organ(lo, hi, fn):
                return within(q, lo, hi, lambda sub, sl: torch.maximum(fn(sub), abdomen[sl]))

            liver = organ(np.array([-160.0, -90.0, -200.0]) + s, np.array([60.0, 110.0, -10.0]) + s,
                          lambda p: smooth_min(ellipsoid(p, liver_right, (95.0, 90.0, 80.0)),
                                               ellipsoid(p, liver_left, (55.0, 42.0, 32.0)), 15.0))
            spleen = organ(spleen_c - 56.0, spleen_c + 56.0, lambda p: ellipsoid(p, spleen_c, (28.0, 50.0, 55.0),
                                                                                 spleen_axes))
            stomach = organ(stomach_c - 49.0, stomach_c + 49.0, lambda p: ellipsoid(p, stomach_c, (42.0, 38.0, 48.0)))
            gas = torch.maximum(stomach + 4.0, q.y - (-40.0 + s[1]))
            bowel = organ(*capsule_bounds(colon, 2.0), lambda p: capsules(p, colon))
            if loop:
                bowel = torch.minimum(bowel, organ(*capsule_bounds(loop, 2.0), lambda p: capsules(p, loop)))
            return [abdomen, liver, spleen, stomach, stomach + 4.0, gas, bowel]

        loop = self._bowel_loop(s) if self.p.bowel_loop else []
        lo, hi = self._wide(0.0)
        hi[2] = -20.0 - descent + self.p.diaphragm_mm
        return Shape("abdomen", ((LABELS["body"], "soft_tissue"), (LABELS["liver"], "liver"),
                                 (LABELS["spleen"], "spleen"), (LABELS["stomach"], "stomach_wall"),
                                 (LABELS["stomach"], "stomach_fluid"), (LABELS["stomach"], "air"),
                                 (LABELS["bowel"], "bowel")),
                     field, lo, hi, moving=self.p.breathing_mm > 0)

    def _bowel_loop(self, shift: np.ndarray) -> list:
        """A loop of transverse colon (splenic flexure) 16 mm under the left dome, below the
        inferior LV wall: its tracer (Tc-99m sestamibi is cleared through the bile) lies within
        a few centimetres of the heart, as it often does in real studies."""
        xy = np.array([[10.0, -45.0], [35.0, -32.0], [60.0, -20.0], [82.0, -6.0]])
        z = self.evaluate(lambda q: self.dome(q.x, q.y), np.column_stack([xy, np.zeros(len(xy))])) - 16.0
        path = np.column_stack([xy, z]) + np.array([0.0, shift[1], shift[2] - self.p.diaphragm_mm])
        return polyline(path, np.full(len(path), 12.0))
