"""The ventricles: LV and RV geometry driven by volume curves, with incompressible walls.

Coordinates
-----------
The LV is described in cylindrical coordinates about its long axis: h (mm) runs from the
epicardial apex toward the base along e_h, ρ is the distance from the axis and φ the angle
from e₁, which points to the septum (the RV side).  The *anatomical* angle ψ = ±φ is 0 at the
septum, +90° anterior, 180° lateral and −90° inferior.  Material coordinates (φ₀, h₀) are
those of end-diastole (ED): at time t the base has descended, h = λ(t)·h₀, and the wall has
twisted, φ = φ₀ + θ(t)·(1 − h₀/H₀).

LV
--
At ED the endocardium is a prolate ellipsoid (semi-axes a, c = e·a) truncated by the base
plane at β·c above its centre, whose volume π·a²·c·[(1+β) − (1+β³)/3] is solved for a so it
equals the requested EDV.  The epicardium is a wider ellipsoid with the same centre (wall and
apex thicknesses).  In each cross-section the cavity radius is ρ_endo = k(φ₀, h₀)·ρ_ED(h₀)
with k = 1 − m·(1 − κ(t)), m the local contractility (0 where akinetic).  The cavity volume is
then V = λ·(C₂κ² + 2C₁κ + C₀) with C's fixed integrals, so κ(t) is the root of a quadratic
that makes V(t) follow the volume curve exactly.  The epicardium follows from
incompressibility strip by strip: ρ_epi² − ρ_endo² = A₀(φ₀, h₀)/λ, which keeps
∫∫ ½(ρ_epi² − ρ_endo²) dφ dh — the myocardial volume — constant and thickens the wall as the
cavity empties (radial thickening ≈ 40 % at EF 60 %).

RV
--
The RV cavity is a crescent on the septal side: ρ_epi < ρ < ρ_epi + α(t)·S(φ₀)·P(h₀), with S
a cosine-power profile across the sector |φ₀| < Δ and P rising from the RV apex.  Its volume
α·B(t) + α²·A(t) is again a quadratic, solved for α so the RV follows its own volume curve.
The free wall is a thin incompressible shell outside it.

Volume curve
------------
V(τ) = ESV + SV·F(τ) over the cycle phase τ ∈ [0, 1), ED at τ = 0: F falls as a half cosine
during systole (τ < τ_s), then refills with an early wave (80 % of SV, first 40 % of
diastole) and an atrial kick (last 25 %), each a half-cosine ramp, so V is smooth and
periodic.  The contraction state c = 1 − F drives base descent λ = 1 − δ·c and twist θ·c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from meddiffusion.phantoms.grid import Points
from meddiffusion.phantoms.shapes import Shape
from meddiffusion.phantoms.tissues import LABELS

__all__ = ["Region", "Infarct", "Defect", "HeartParams", "HeartState", "Heart", "TERRITORIES", "filling"]

MYOCARDIAL_DENSITY = 1.05   # g/ml (Vinnakota & Bassingthwaighte, AJP Heart 286:H1742, 2004)
_REGION_EDGE_MM = 10.0       # width over which thinning/akinesia fade in around a region


@dataclass
class Region:
    """A patch of LV wall: anatomical angle window × height window (fractions of the base
    height H₀), plus optionally the whole apical cap below ``cap``·H₀."""

    centre_deg: float
    half_width_deg: float
    low: float
    high: float
    cap: float = 0.0


#: coronary territories of the 17-segment model, roughly (Cerqueira et al., Circulation 2002)
TERRITORIES = {
    "LAD": Region(60.0, 75.0, 0.0, 0.8, cap=0.3),     # anterior wall, anterior septum, apex
    "LCX": Region(180.0, 55.0, 0.3, 0.95),            # lateral wall
    "RCA": Region(-90.0, 50.0, 0.15, 0.95),           # inferior wall, inferior septum
}


@dataclass
class Infarct:
    """Myocardial scar: wall thinned by ``thinning`` (fraction), contraction lost by ``akinesia``."""

    territory: str
    region: Region
    thinning: float = 0.5
    akinesia: float = 0.9


@dataclass
class Defect:
    """A perfusion defect (ischaemia): normal anatomy, tracer uptake reduced by ``severity``."""

    territory: str
    region: Region
    severity: float = 0.6


@dataclass
class HeartParams:
    """Everything that defines the ventricles and their motion (volumes in ml, lengths in mm)."""

    edv_ml: float = 140.0
    ef: float = 0.62
    heart_rate_bpm: float = 65.0
    systolic_fraction: float = 0.35
    elongation: float = 2.2          # c/a of the ED endocardial ellipsoid
    base_fraction: float = 0.4       # base plane above the ellipsoid centre, × c
    wall_mm: float = 9.0
    septal_extra_mm: float = 0.0     # asymmetric septal hypertrophy
    apex_wall_mm: float = 7.0
    long_shortening: float = 0.14    # base descent as a fraction of the long axis at ES
    twist_deg: float = 12.0          # apex-to-base twist at ES
    rv_edv_ml: float = 150.0
    rv_ef: float = 0.55
    rv_half_angle_deg: float = 80.0  # half-width of the RV crescent around the LV
    rv_wall_mm: float = 3.5
    rv_apex_fraction: float = 0.3    # RV apex height, fraction of the LV base height
    epicardial_fat_mm: float = 3.0   # fat over the ventricles (about 2.5× that in the grooves)
    infarct: Infarct | None = None
    defect: Defect | None = None
    apex_mm: tuple[float, float, float] = (62.0, -58.0, -40.0)
    azimuth_deg: float = 45.0        # long axis turned toward the patient's left
    elevation_deg: float = 30.0      # and tilted down toward the apex
    roll_deg: float = 0.0

    def validate(self) -> None:
        checks = [
            (30 <= self.edv_ml <= 600, f"LV EDV must be 30-600 ml, got {self.edv_ml}"),
            (0.05 <= self.ef <= 0.85, f"LV EF must be 0.05-0.85 (5-85 %), got {self.ef}"),
            (30 <= self.heart_rate_bpm <= 200, f"heart rate must be 30-200 bpm, got {self.heart_rate_bpm}"),
            (0.2 <= self.systolic_fraction <= 0.6,
             f"systolic fraction must be 0.2-0.6 of the cycle, got {self.systolic_fraction}"),
            (30 <= self.rv_edv_ml <= 600, f"RV EDV must be 30-600 ml, got {self.rv_edv_ml}"),
            (0.05 <= self.rv_ef <= 0.85, f"RV EF must be 0.05-0.85, got {self.rv_ef}"),
            (1.2 <= self.elongation <= 3.5, f"LV elongation must be 1.2-3.5, got {self.elongation}"),
            (2 <= self.wall_mm <= 35, f"LV wall must be 2-35 mm, got {self.wall_mm}"),
            (0 <= self.long_shortening < 0.4, f"long-axis shortening must be 0-0.4, got {self.long_shortening}"),
            (30 <= self.rv_half_angle_deg <= 130, f"RV half-angle must be 30-130°, got {self.rv_half_angle_deg}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def filling(tau, systolic_fraction: float):
    """F(τ): 1 at ED, 0 at ES (τ = systolic fraction), smooth and periodic (numpy or float)."""
    tau = np.mod(np.asarray(tau, dtype=float), 1.0)
    ts = systolic_fraction
    s = np.clip((tau - ts) / (1.0 - ts), 0.0, 1.0)
    systole = 0.5 * (1.0 + np.cos(np.pi * np.clip(tau / ts, 0.0, 1.0)))
    early = 0.5 * (1.0 - np.cos(np.pi * np.clip(s / 0.4, 0.0, 1.0)))
    atrial = 0.5 * (1.0 - np.cos(np.pi * np.clip((s - 0.75) / 0.25, 0.0, 1.0)))
    return np.where(tau < ts, systole, 0.8 * early + 0.2 * atrial)


@dataclass
class HeartState:
    """The ventricles at one instant."""

    t: float
    tau: float                # cycle phase
    contraction: float        # c = 1 - F: 0 at ED, 1 at ES
    lam: float                # long-axis scale (base descent)
    kappa: float              # endocardial radial scale of contracting wall
    alpha: float              # RV crescent depth (mm at the thickest point)
    twist: float              # radians at the apex relative to the base
    apex: np.ndarray          # epicardial apex, LPS mm
    lv_ml: float
    rv_ml: float

    def base_centre(self, heart: "Heart") -> np.ndarray:
        return self.apex + self.lam * heart.base_height * heart.e_h


class Heart:
    """Geometry and motion of the ventricles for one set of ``HeartParams``."""

    def __init__(self, params: HeartParams):
        params.validate()
        self.p = p = params
        beta, e = p.base_fraction, p.elongation
        shape_factor = (1 + beta) - (1 + beta ** 3) / 3
        self.a = (p.edv_ml * 1000.0 / (math.pi * e * shape_factor)) ** (1 / 3)
        self.c = e * self.a
        self.c_epi = self.c + p.apex_wall_mm
        self.h_centre = self.c_epi                      # epicardial apex at h = 0
        self.base_height = self.h_centre + beta * self.c
        self.rv_apex = p.rv_apex_fraction * self.base_height
        self.rv_half = math.radians(p.rv_half_angle_deg)
        self.rv_wall_half = self.rv_half + math.radians(10.0)
        self.ref_radius = self.a + p.wall_mm / 2      # mm per radian for region edges
        self._frame()
        self._alpha_cache: dict[tuple, float] = {}
        self._lv_coefficients()
        self.myocardial_ml = self._myocardial_volume()
        self.alpha_ed = self.state(0.0).alpha           # RV depth at ED: the wall's reference
        es = self.state(self.rr_s * p.systolic_fraction)
        if es.kappa <= 0.05:
            raise ValueError("LV end-systolic volume is too small for this wall motion; lower the EF")

    # -- frame and timing ---------------------------------------------------------------------
    def _frame(self) -> None:
        p = self.p
        az, el = math.radians(p.azimuth_deg), math.radians(p.elevation_deg)
        apex_dir = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), -math.sin(el)])
        self.e_h = -apex_dir                                     # apex -> base
        hint = np.array([-0.5, -1.0, 0.0])                       # septum faces right-anterior
        e1 = hint - hint @ self.e_h * self.e_h
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(self.e_h, e1)
        roll = math.radians(p.roll_deg)
        self.e1 = math.cos(roll) * e1 + math.sin(roll) * e2
        self.e2 = np.cross(self.e_h, self.e1)
        front = np.array([0.0, -1.0, 0.5])                      # anterior-superior
        self.ant_sign = 1.0 if front @ self.e2 >= 0 else -1.0

    @property
    def rr_s(self) -> float:
        return 60.0 / self.p.heart_rate_bpm

    def filling(self, t: float) -> float:
        return float(filling(t / self.rr_s, self.p.systolic_fraction))

    def lv_volume(self, t: float) -> float:
        esv = self.p.edv_ml * (1 - self.p.ef)
        return esv + (self.p.edv_ml - esv) * self.filling(t)

    def rv_volume(self, t: float) -> float:
        esv = self.p.rv_edv_ml * (1 - self.p.rv_ef)
        return esv + (self.p.rv_edv_ml - esv) * self.filling(t)

    # -- material wall functions (torch, any shape) ----------------------------------------
    def _region_distance(self, phi0, h0, region: Region):
        """Signed distance-like (mm) to a wall region in material coordinates."""
        psi = self.ant_sign * phi0
        dpsi = torch.remainder(psi - math.radians(region.centre_deg) + math.pi, 2 * math.pi) - math.pi
        arc = self.ref_radius * (dpsi.abs() - math.radians(region.half_width_deg))
        height = torch.maximum(region.low * self.base_height - h0, h0 - region.high * self.base_height)
        d = torch.maximum(arc, height)
        if region.cap > 0:
            d = torch.minimum(d, h0 - region.cap * self.base_height)
        return d

    def _infarct_weight(self, phi0, h0):
        if self.p.infarct is None:
            return None
        d = self._region_distance(phi0, h0, self.p.infarct.region)
        return (0.5 - d / _REGION_EDGE_MM).clamp(0.0, 1.0)

    def _walls(self, phi0, h0, kappa: float, lam: float):
        """LV endo²/epi² radii at material points, their spatial h-derivatives and ED epi²."""
        p = self.p
        u = (h0 - self.h_centre)
        rho_ed2 = self.a ** 2 * (1 - (u / self.c) ** 2)
        inside_ed = rho_ed2 > 0
        rho_ed2 = rho_ed2.clamp_min(0.0)
        drho_ed2 = torch.where(inside_ed, -2 * self.a ** 2 * u / self.c ** 2, torch.zeros_like(u))
        wall = p.wall_mm + p.septal_extra_mm * torch.cos(phi0).clamp_min(0.0) ** 2
        weight = self._infarct_weight(phi0, h0)
        if weight is not None:
            wall = wall * (1 - p.infarct.thinning * weight)
            k = 1 - (1 - p.infarct.akinesia * weight) * (1 - kappa)
        else:
            k = kappa
        a_epi = self.a + wall
        q = 1 - (u / self.c_epi) ** 2
        epi0_2 = (a_epi ** 2 * q).clamp_min(0.0)
        depi0_2 = torch.where(q > 0, -2 * a_epi ** 2 * u / self.c_epi ** 2, torch.zeros_like(u))
        area0 = epi0_2 - rho_ed2
        k2 = k * k
        endo2 = k2 * rho_ed2
        epi2 = endo2 + area0 / lam
        dendo = k2 * drho_ed2 / lam
        depi = (k2 * drho_ed2 + (depi0_2 - drho_ed2) / lam) / lam
        return endo2, epi2, dendo, depi, epi0_2

    def _rv_profile(self, phi0, h0):
        """Unit crescent depth S(φ₀)·P(h₀) and the free-wall thickness (mm) at material points."""
        p = self.p
        s = torch.cos((0.5 * math.pi * phi0 / self.rv_half).clamp(-0.5 * math.pi, 0.5 * math.pi)).clamp_min(0.0)
        s = torch.where(phi0.abs() < self.rv_half, s ** 0.6, torch.zeros_like(s))
        ramp = ((h0 - self.rv_apex) / (0.35 * self.base_height)).clamp(0.0, 1.0)
        depth = s * ramp * ramp * (3 - 2 * ramp)
        sw = torch.cos((0.5 * math.pi * phi0 / self.rv_wall_half).clamp(-0.5 * math.pi, 0.5 * math.pi))
        sw = sw.clamp_min(0.0) ** 0.3
        rw = ((h0 - self.rv_apex + 6.0) / (0.2 * self.base_height)).clamp(0.0, 1.0)
        wall = p.rv_wall_mm * sw * rw * rw * (3 - 2 * rw)
        return depth, wall

    # -- volumes --------------------------------------------------------------------------------
    def _quadrature(self, phi_lo, phi_hi, h_lo, h_hi, n_phi, n_h):
        dphi, dh = (phi_hi - phi_lo) / n_phi, (h_hi - h_lo) / n_h
        phi = phi_lo + (torch.arange(n_phi, dtype=torch.float64) + 0.5) * dphi
        h = h_lo + (torch.arange(n_h, dtype=torch.float64) + 0.5) * dh
        return phi.view(-1, 1), h.view(1, -1), dphi * dh

    def _lv_coefficients(self) -> None:
        phi, h, w = self._quadrature(-math.pi, math.pi, self.h_centre - self.c, self.base_height, 256, 600)
        rho_ed2 = (self.a ** 2 * (1 - ((h - self.h_centre) / self.c) ** 2)).clamp_min(0.0).expand(phi.shape[0], -1)
        weight = self._infarct_weight(phi, h)
        m = torch.ones_like(rho_ed2) if weight is None else (1 - self.p.infarct.akinesia * weight)
        half = 0.5 * rho_ed2 * w / 1000.0                     # ml
        self._c0 = float((half * (1 - m) ** 2).sum())
        self._c1 = float((half * m * (1 - m)).sum())
        self._c2 = float((half * m * m).sum())

    def _myocardial_volume(self) -> float:
        phi, h, w = self._quadrature(-math.pi, math.pi, 0.0, self.base_height, 360, 800)
        endo2, epi2, *_ = self._walls(phi, h, 1.0, 1.0)
        return float((0.5 * (epi2 - endo2) * w).sum() / 1000.0)

    def _kappa(self, volume_ml: float, lam: float) -> float:
        c0, c1, c2 = self._c0, self._c1, self._c2
        target = volume_ml / lam
        disc = c1 * c1 - c2 * (c0 - target)
        if disc < 0 or c0 > target:
            raise ValueError("the akinetic region is larger than the requested end-systolic volume; "
                             "lower the EF or the infarct extent")
        return (-c1 + math.sqrt(disc)) / c2

    def _alpha(self, volume_ml: float, kappa: float, lam: float) -> float:
        """RV crescent depth for a volume, given the LV state (memoised: a pure function).

        A 120 × 160 midpoint rule is within 1e-4 of a converged one.
        """
        key = (round(volume_ml, 9), round(kappa, 12), round(lam, 12))
        if key not in self._alpha_cache:
            self._alpha_cache[key] = self._solve_alpha(volume_ml, kappa, lam)
        return self._alpha_cache[key]

    def _solve_alpha(self, volume_ml: float, kappa: float, lam: float) -> float:
        phi, h, w = self._quadrature(-self.rv_half, self.rv_half, self.rv_apex, self.base_height, 120, 160)
        _, epi2, *_ = self._walls(phi, h, kappa, lam)
        depth, _ = self._rv_profile(phi, h)
        b = float((torch.sqrt(epi2) * depth).sum() * w * lam / 1000.0)
        a = float((0.5 * depth * depth).sum() * w * lam / 1000.0)
        return (-b + math.sqrt(b * b + 4 * a * volume_ml)) / (2 * a)

    # -- state ----------------------------------------------------------------------------------
    def state(self, t: float, shift: np.ndarray | None = None) -> HeartState:
        """The ventricles at time ``t`` (s); ``shift`` (mm) moves the heart rigidly (breathing)."""
        f = self.filling(t)
        c = 1.0 - f
        lam = 1.0 - self.p.long_shortening * c
        lv, rv = self.lv_volume(t), self.rv_volume(t)
        kappa = self._kappa(lv, lam)
        alpha = self._alpha(rv, kappa, lam)
        apex = np.asarray(self.p.apex_mm, float) + (0 if shift is None else np.asarray(shift, float))
        return HeartState(t=t, tau=(t / self.rr_s) % 1.0, contraction=c, lam=lam, kappa=kappa, alpha=alpha,
                          twist=math.radians(self.p.twist_deg) * c, apex=apex, lv_ml=lv, rv_ml=rv)

    # -- world <-> heart coordinates -----------------------------------------------------------
    def world(self, phi0, h0, rho, st: HeartState) -> np.ndarray:
        """LPS points (…, 3) of material angle/height at radius ``rho`` (numpy arrays)."""
        phi = np.asarray(phi0) + st.twist * (1 - np.asarray(h0) / self.base_height)
        h = st.lam * np.asarray(h0)
        radial = np.cos(phi)[..., None] * self.e1 + np.sin(phi)[..., None] * self.e2
        return st.apex + h[..., None] * self.e_h + np.asarray(rho)[..., None] * radial

    def surfaces(self, phi0, h0, st: HeartState) -> dict[str, np.ndarray]:
        """Radii (mm) of the LV epicardium and the RV outer wall at material points (numpy)."""
        phi = torch.as_tensor(np.asarray(phi0, float))
        h = torch.as_tensor(np.asarray(h0, float))
        _, epi2, _, _, epi0_2 = self._walls(phi, h, st.kappa, st.lam)
        rho_rv, rho_out = self._outer_radius(phi, h, st, epi2, epi0_2)
        return {"lv_epi": torch.sqrt(epi2).numpy(), "rv_cavity": rho_rv.numpy(), "rv_outer": rho_out.numpy()}

    def bounds(self, st: HeartState, pad: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        phi = np.linspace(-math.pi, math.pi, 73)[:, None]
        h = np.linspace(0.0, self.base_height, 25)[None, :]
        phi, h = np.broadcast_arrays(phi, h)
        pts = self.world(phi, h, self.surfaces(phi, h, st)["rv_outer"], st).reshape(-1, 3)
        return pts.min(axis=0) - pad, pts.max(axis=0) + pad

    # -- fields ---------------------------------------------------------------------------------
    def _coordinates(self, pts: Points, st: HeartState):
        """Spatial h, ρ, ρ² and material φ₀, h₀ of grid points."""
        dx, dy, dz = pts.x - float(st.apex[0]), pts.y - float(st.apex[1]), pts.z - float(st.apex[2])
        eh, e1, e2 = self.e_h, self.e1, self.e2
        h = dx * eh[0] + dy * eh[1] + dz * eh[2]
        v1 = dx * e1[0] + dy * e1[1] + dz * e1[2]
        v2 = dx * e2[0] + dy * e2[1] + dz * e2[2]
        rho2 = v1 * v1 + v2 * v2
        h0 = h / st.lam
        phi = torch.atan2(v2, v1) - st.twist * (1 - h0 / self.base_height)
        phi0 = torch.remainder(phi + math.pi, 2 * math.pi) - math.pi
        return h, torch.sqrt(rho2), rho2, phi0, h0

    def _outer_radius(self, phi0, h0, st: HeartState, epi2, epi0_2):
        """Radius of the RV cavity and of the ventricles' outer surface (RV wall or LV epicardium)."""
        depth, wall = self._rv_profile(phi0, h0)
        rho_epi = torch.sqrt(epi2)
        rho_rv = rho_epi + st.alpha * depth
        rho_rv_ed = torch.sqrt(epi0_2) + self.alpha_ed * depth
        return rho_rv, torch.sqrt(rho_rv * rho_rv + (2 * rho_rv_ed * wall + wall * wall) / st.lam)

    def epicardial_fat(self, st: HeartState) -> Shape:
        """Fat over the ventricles: a thin layer, thicker in the interventricular and AV grooves."""
        p = self.p
        insertion = self.rv_half + math.radians(5.0)
        lo, hi = self.bounds(st, pad=3.0 * p.epicardial_fat_mm + 8.0)

        def field(pts: Points) -> list[torch.Tensor]:
            h, rho, rho2, phi0, h0 = self._coordinates(pts, st)
            h0 = h0.clamp(max=self.base_height)          # above the base: the radius at the base
            _, epi2, _, _, epi0_2 = self._walls(phi0, h0, st.kappa, st.lam)
            _, outer = self._outer_radius(phi0, h0, st, epi2, epi0_2)
            grooves = torch.exp(-((phi0.abs() - insertion) / 0.3) ** 2) + torch.exp(
                -((h0 - self.base_height) / 12.0) ** 2)
            radius = outer + p.epicardial_fat_mm * (1.0 + 1.5 * grooves.clamp(max=1.0))
            cap = 12.0 * torch.sqrt((1 - rho2 / (radius * radius)).clamp_min(0.0))   # rounded over the base
            return [torch.maximum(torch.maximum(rho - radius, h - st.lam * self.base_height - cap),
                                  -h - p.epicardial_fat_mm)]

        return Shape("epicardial_fat", ((LABELS["fat"], "fat"),), field, lo, hi, moving=True)

    def ventricles(self, st: HeartState) -> Shape:
        """RV wall, RV blood, LV myocardium, scar, ischaemic zone, LV blood — in drawing order."""
        p = self.p
        layers = [(LABELS["rv_myocardium"], "myocardium"), (LABELS["rv_blood"], "blood"),
                  (LABELS["lv_myocardium"], "myocardium")]
        if p.infarct is not None:
            layers.append((LABELS["infarct"], "scar"))
        if p.defect is not None:
            layers.append((LABELS["lv_myocardium"], "ischaemic_myocardium"))
        layers.append((LABELS["lv_blood"], "blood"))
        lo, hi = self.bounds(st)

        def field(pts: Points) -> list[torch.Tensor]:
            h, rho, rho2, phi0, h0 = self._coordinates(pts, st)
            endo2, epi2, dendo, depi, epi0_2 = self._walls(phi0, h0, st.kappa, st.lam)
            base = h - st.lam * self.base_height
            d_endo = torch.maximum((rho2 - endo2) / torch.sqrt(4 * rho2 + dendo * dendo + 1e-6), base)
            d_epi = torch.maximum((rho2 - epi2) / torch.sqrt(4 * rho2 + depi * depi + 1e-6), base)
            rho_rv, rho_out = self._outer_radius(phi0, h0, st, epi2, epi0_2)
            d_rv = torch.maximum(torch.maximum(rho - rho_rv, rho * (phi0.abs() - self.rv_half)),
                                 torch.maximum(base, st.lam * self.rv_apex - h))
            d_rv_wall = torch.maximum(torch.maximum(rho - rho_out, rho * (phi0.abs() - self.rv_wall_half)),
                                      torch.maximum(base, st.lam * (self.rv_apex - 6.0) - h))
            fields = [d_rv_wall, d_rv, d_epi]
            if p.infarct is not None:
                fields.append(torch.maximum(d_epi, self._region_distance(phi0, h0, p.infarct.region)))
            if p.defect is not None:
                fields.append(torch.maximum(d_epi, self._region_distance(phi0, h0, p.defect.region)))
            fields.append(d_endo)
            return fields

        return Shape("ventricles", tuple(layers), field, lo, hi, moving=True)
