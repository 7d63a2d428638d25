"""One patient: parameters → anatomy at any time t → label maps, property images and truth.

Time t is in seconds from end-diastole at end-expiration: the cardiac cycle repeats every
RR = 60/HR s and breathing (if any) every ``breathing_period_s``.  ``frame_times(n)`` gives n
frames over one heartbeat, starting at ED.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, replace

import numpy as np
import torch

from meddiffusion.io import Volume
from meddiffusion.phantoms.coronaries import Coronaries
from meddiffusion.phantoms.grid import Grid
from meddiffusion.phantoms.heart import MYOCARDIAL_DENSITY, Heart
from meddiffusion.phantoms.lungtree import grow_tree, sample_inside
from meddiffusion.phantoms.mediastinum import Surroundings
from meddiffusion.phantoms.presets import PhantomParams, sample_params
from meddiffusion.phantoms.raster import Scene
from meddiffusion.phantoms.shapes import Shape
from meddiffusion.phantoms.skeleton import Skeleton
from meddiffusion.phantoms.thorax import Thorax, breathing_displacement
from meddiffusion.phantoms.tissues import TISSUES, Tissue, plaque_tissue

__all__ = ["Phantom"]

_CACHE_GRIDS = 2
_FIT_STEPS = 40
_FIT_MARGIN_MM = 2.0
_TREE_POINTS = 1500
#: (lung side, root) of the arterial and venous trees: hila and pulmonary vein ostia
_TREE_ROOTS = ((-1, (-47.0, 12.0, 29.0)), (1, (52.0, 14.0, 33.0)), (-1, (-40.0, 16.0, 2.0)), (1, (42.0, 18.0, 2.0)))


class Phantom:
    """A 4D thorax phantom.  Build with :meth:`sample` or from saved ``PhantomParams``."""

    def __init__(self, params: PhantomParams):
        self.params = params
        self.thorax = Thorax(params.thorax)
        self.heart = self._fit_heart()
        self.skeleton = Skeleton(self.thorax)
        self.surroundings = Surroundings(self.heart)
        self.coronaries = Coronaries(self.heart, self.surroundings, params.plaques)
        self.vessel_tree = self._grow_vessels()
        self._scenes: OrderedDict = OrderedDict()

    @classmethod
    def sample(cls, preset: str = "NOR", seed: int = 0, **overrides) -> "Phantom":
        """A random patient of ``preset`` (NOR, DCM, HCM, MINF, RV); see ``sample_params``."""
        return cls(sample_params(preset, seed, **overrides))

    # -- time ---------------------------------------------------------------------------------
    @property
    def rr_s(self) -> float:
        return self.heart.rr_s

    def frame_times(self, n: int) -> list[float]:
        """``n`` equally spaced instants over one heartbeat, the first at end-diastole."""
        if n < 1:
            raise ValueError(f"number of frames must be ≥ 1, got {n}")
        return [k * self.rr_s / n for k in range(n)]

    def descent(self, t: float) -> float:
        p = self.params.thorax
        return breathing_displacement(t, p.breathing_mm, p.breathing_period_s)

    def heart_shift(self, descent: float) -> np.ndarray:
        """The heart follows the diaphragm at 60 % and moves slightly forward (Shechter et al. 2004)."""
        return np.array([0.0, -0.15 * descent, -0.6 * descent])

    def lv_volume(self, t: float) -> float:
        return self.heart.lv_volume(t)

    def rv_volume(self, t: float) -> float:
        return self.heart.rv_volume(t)

    def plaque_positions(self, t: float) -> np.ndarray:
        """Plaque centres (n, 3) in LPS mm at time t, for per-view motion simulation."""
        st = self.heart.state(t, self.heart_shift(self.descent(t)))
        return np.array([c for c, _ in self.coronaries.plaque_frames(st)]).reshape(-1, 3)

    # -- anatomy ------------------------------------------------------------------------------
    def _fit_heart(self) -> Heart:
        """The heart, moved (in 2 mm steps) until it lies inside the rib cage with its fat.

        Body habitus and heart size are drawn independently, so a big heart in a slim chest
        would otherwise cross the sternum or ribs.  Every fourth step the chest also widens
        by 2 % (a dilated heart makes room).  The adjusted values are kept in the params.
        """
        p, body = self.params.heart, self.params.thorax
        phi, h = np.meshgrid(np.linspace(-math.pi, math.pi, 49), np.linspace(0.0, 1.0, 17), indexing="ij")
        heart = Heart(p)
        for step in range(_FIT_STEPS):
            ed = heart.state(0.0)
            radius = heart.surfaces(phi, h * heart.base_height, ed)["rv_outer"] + p.epicardial_fat_mm + _FIT_MARGIN_MM
            pts = heart.world(phi, h * heart.base_height, radius, ed).reshape(-1, 3)
            outside = self.thorax.evaluate(self.thorax.cavity, pts) > 0
            if not outside.any():
                return heart
            centre = ed.apex + 0.5 * heart.base_height * heart.e_h
            away = centre - pts[outside].mean(axis=0)
            p.apex_mm = tuple(float(v) for v in np.asarray(p.apex_mm) + 2.0 * away / np.linalg.norm(away))
            if step % 4 == 3:
                body.half_width_mm, body.front_mm, body.back_mm = (1.02 * body.half_width_mm, 1.02 * body.front_mm,
                                                                   1.02 * body.back_mm)
                self.thorax = Thorax(body)
        raise ValueError("the heart does not fit inside this chest; use a larger body or a smaller EDV")

    def _grow_vessels(self):
        rng = np.random.default_rng([self.params.seed, 1])
        th = self.thorax
        ed = self.heart.state(0.0)
        heart_lo, heart_hi = self.heart.bounds(ed, pad=25.0)
        mediastinum = th.mediastinum()

        def inside_lung(xyz: np.ndarray, side: int) -> np.ndarray:
            """Lung points clear of the diaphragm, heart and mediastinum (where vessels would hide)."""
            lung = th.evaluate(th.lung, xyz) < -4.0
            above = xyz[:, 2] > th.evaluate(lambda q: th.dome(q.x, q.y), xyz) + 6.0
            in_heart = np.all((xyz > heart_lo) & (xyz < heart_hi), axis=1)
            clear = ~in_heart & (th.evaluate(lambda q: mediastinum.field(q)[0], xyz) > 4.0)
            return lung & above & clear & (np.sign(xyz[:, 0]) == side)

        segments = []
        for side, root in _TREE_ROOTS:
            lo = np.array([0.0 if side > 0 else -200.0, -150.0, -140.0])
            hi = np.array([200.0 if side > 0 else 0.0, 120.0, 190.0])
            points = sample_inside(lambda xyz: inside_lung(xyz, side), lo, hi, _TREE_POINTS, rng)
            segments += grow_tree(np.array(root), points, 7.0, max_depth=8)
        return segments

    def shapes(self, t: float, *, calcium: bool = True, descent: float | None = None) -> list[Shape]:
        """All shapes in drawing order at time t (``descent`` overrides the breathing state)."""
        descent = self.descent(t) if descent is None else descent
        shift = self.heart_shift(descent)
        st = self.heart.state(t, shift)
        th, sk, sr, co = self.thorax, self.skeleton, self.surroundings, self.coronaries
        breasts = th.breasts()
        shapes = [th.body()] + ([breasts] if breasts is not None else []) + [
                  th.lungs(self.vessel_tree), th.mediastinum(), th.airways(),
                  th.abdomen(descent), th.oesophagus(), th.descending_aorta(), self.heart.epicardial_fat(st),
                  sr.atria_shape(st, shift), sr.pulmonary_artery(st, shift), sr.ascending_aorta(st, shift),
                  sr.venae_cavae(st, shift), co.vessels_shape(st), self.heart.ventricles(st)]
        if calcium:
            shapes += co.plaque_shapes(st)
        return shapes + [sk.rib_cage(), sk.sternum(), sk.spine()]

    def tissues(self, *, stress: bool = True) -> dict[str, Tissue]:
        """Tissue table of this patient: the standard tissues, its plaques and any ischaemic zone.

        A perfusion defect (ischaemia) shows only under stress: at rest (``stress=False``) the
        ischaemic zone takes up tracer like normal myocardium, while a scar shows in both.
        """
        table = dict(TISSUES)
        for plaque in self.params.plaques:
            table[f"plaque_{plaque.id}"] = plaque_tissue(plaque.hu)
        body = self.params.thorax
        if body.breast_hu != TISSUES["breast"].hu:
            table["breast"] = replace(TISSUES["breast"], hu=float(body.breast_hu))
        if body.gut_uptake != 1.0:
            for name in ("liver", "bowel"):
                t = TISSUES[name]
                table[name] = replace(t, spect=t.spect * body.gut_uptake, pet=t.pet * body.gut_uptake)
        defect = self.params.heart.defect
        severity = defect.severity if defect is not None and stress else 0.0
        myo = TISSUES["myocardium"]
        table["ischaemic_myocardium"] = Tissue(myo.hu, myo.texture, myo.spect * (1 - severity),
                                               myo.pet * (1 - severity), myo.pd, myo.t1, myo.t2)
        return table

    # -- rendering ----------------------------------------------------------------------------
    def scene(self, grid: Grid, table: dict[str, torch.Tensor], key: tuple) -> Scene:
        """The static part on ``grid`` (cached for the last few grids and property sets)."""
        cache_key = (grid, key)
        if cache_key in self._scenes:
            self._scenes.move_to_end(cache_key)
            return self._scenes[cache_key]
        max_descent = self.params.thorax.breathing_mm
        motion = [self.shapes(t, descent=d) for t in self.frame_times(8) for d in {0.0, max_descent}]
        scene = Scene(grid, motion, table)
        self._scenes[cache_key] = scene
        while len(self._scenes) > _CACHE_GRIDS:
            self._scenes.popitem(last=False)
        return scene

    def frame(self, grid: Grid, t: float, table: dict[str, torch.Tensor], key: tuple, *,
              calcium: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Property images (P, z, y, x) and labels (z, y, x, int16) at time t."""
        return self.scene(grid, table, key).frame(self.shapes(t, calcium=calcium))

    def labels(self, grid: Grid, t: float = 0.0) -> Volume:
        """Label map at time t (values in ``tissues.LABELS``, plaques 100 + id)."""
        _, labels = self.frame(grid, t, {name: torch.zeros(0) for name in self.tissues()}, ())
        vol = grid.volume(labels.to(torch.float32), units="label")
        vol.metadata["phantom"] = f"{self.params.preset} seed {self.params.seed} t={t:.4f}s"
        return vol

    # -- truth ----------------------------------------------------------------------------------
    def truth(self) -> dict:
        """Clinical ground truth and the full parameters (JSON-serialisable)."""
        h = self.heart
        p = self.params.heart
        es = self.rr_s * p.systolic_fraction
        lv_edv, lv_esv = h.lv_volume(0.0), h.lv_volume(es)
        rv_edv, rv_esv = h.rv_volume(0.0), h.rv_volume(es)
        ed_state = h.state(0.0)
        plaques = []
        for plaque, (centre, _) in zip(self.params.plaques, self.coronaries.plaque_frames(ed_state)):
            plaques.append({"id": plaque.id, "label": 100 + plaque.id, "vessel": plaque.vessel,
                            "position_ed_mm": [round(float(c), 3) for c in centre],
                            "size_mm": plaque.size_mm, "semi_axes_mm": list(plaque.semi_axes_mm),
                            "volume_mm3": plaque.volume_mm3, "peak_hu": plaque.hu})
        return {
            "preset": self.params.preset, "seed": self.params.seed,
            "heart_rate_bpm": p.heart_rate_bpm, "rr_ms": 1000.0 * self.rr_s,
            "es_time_ms": 1000.0 * es,
            "lv": {"edv_ml": lv_edv, "esv_ml": lv_esv, "ef_percent": 100.0 * (lv_edv - lv_esv) / lv_edv,
                   "myocardial_volume_ml": h.myocardial_ml,
                   "myocardial_mass_g": MYOCARDIAL_DENSITY * h.myocardial_ml},
            "rv": {"edv_ml": rv_edv, "esv_ml": rv_esv, "ef_percent": 100.0 * (rv_edv - rv_esv) / rv_edv},
            "infarct": None if p.infarct is None else p.infarct.territory,
            "perfusion_defect": None if p.defect is None else p.defect.territory,
            "plaques": plaques,
            "params": _jsonable(asdict(self.params)),
        }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
