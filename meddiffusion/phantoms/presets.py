"""Patient groups like ACDC's, each a distribution of phantom parameters sampled from a seed.

The ranges follow typical cine-MR values of each group (ACDC: Bernard et al., IEEE TMI
37:2514, 2018; normal ranges: Kawel-Boehm et al., JCMR 17:29, 2015):

- NOR: EDV 110-160 ml, EF 56-68 %, wall 8-10 mm.
- DCM: dilated, spherical LV (EDV 220-320 ml), EF 15-35 %, thin walls, little long-axis motion.
- HCM: small cavity (EDV 90-130 ml), EF 65-78 %, walls 13-17 mm with extra septal thickness.
- MINF: scar in one coronary territory (LAD 60 %, RCA 25 %, LCX 15 %): thinned, akinetic;
  EF 25-45 %, dilated LV.
- RV: dilated RV (EDV 220-320 ml, EF 20-40 %) wrapping further around a normal LV.

Coronary calcium: a share of patients has none (more with infarction); otherwise 1-10
plaques, placed proximally more often, 1-5 mm long, 150-1300 HU (log-uniform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from meddiffusion.phantoms.coronaries import Plaque
from meddiffusion.phantoms.heart import TERRITORIES, Defect, HeartParams, Infarct, Region
from meddiffusion.phantoms.thorax import ThoraxParams

__all__ = ["PRESETS", "PhantomParams", "sample_params"]

PRESETS = {
    "NOR": "normal",
    "DCM": "dilated cardiomyopathy",
    "HCM": "hypertrophic cardiomyopathy",
    "MINF": "myocardial infarction",
    "RV": "abnormal (dilated) right ventricle",
}

_NO_CALCIUM = {"NOR": 0.4, "DCM": 0.3, "HCM": 0.4, "MINF": 0.1, "RV": 0.4}
_VESSEL_WEIGHTS = {"LM": 0.1, "LAD": 0.4, "LCX": 0.2, "RCA": 0.3}


@dataclass
class PhantomParams:
    """Everything needed to rebuild a phantom exactly (JSON-serialisable via ``asdict``)."""

    preset: str
    seed: int
    heart: HeartParams
    thorax: ThoraxParams
    plaques: list[Plaque] = field(default_factory=list)


def _heart(preset: str, rng: np.random.Generator) -> HeartParams:
    u = rng.uniform
    common = dict(
        heart_rate_bpm=u(55, 80), systolic_fraction=u(0.32, 0.38), elongation=u(2.0, 2.4),
        wall_mm=u(8, 10), apex_wall_mm=u(6, 8), long_shortening=u(0.12, 0.16), twist_deg=u(10, 15),
        rv_ef=u(0.5, 0.62), rv_half_angle_deg=u(75, 85), rv_wall_mm=u(3, 4), epicardial_fat_mm=u(2, 5),
        apex_mm=(62.0 + u(-5, 5), -68.0 + u(-5, 5), -40.0 + u(-5, 5)),
        azimuth_deg=45.0 + u(-7, 7), elevation_deg=30.0 + u(-6, 6), roll_deg=u(-10, 10),
    )
    if preset == "NOR":
        edv = u(110, 160)
        p = HeartParams(edv_ml=edv, ef=u(0.56, 0.68), rv_edv_ml=edv * u(1.0, 1.15), **common)
    elif preset == "DCM":
        common.update(heart_rate_bpm=u(70, 95), elongation=u(1.5, 1.8), wall_mm=u(6.5, 8.5), apex_wall_mm=u(5, 7),
                      long_shortening=u(0.05, 0.09), twist_deg=u(3, 7), rv_ef=u(0.35, 0.5))
        p = HeartParams(edv_ml=u(220, 320), ef=u(0.15, 0.35), rv_edv_ml=u(150, 200), **common)
    elif preset == "HCM":
        common.update(wall_mm=u(13, 17), apex_wall_mm=u(9, 13), long_shortening=u(0.08, 0.12), twist_deg=u(12, 18),
                      rv_ef=u(0.55, 0.65))
        p = HeartParams(edv_ml=u(90, 130), ef=u(0.65, 0.78), septal_extra_mm=u(4, 9), rv_edv_ml=u(100, 140),
                        **common)
    elif preset == "MINF":
        territory = rng.choice(["LAD", "RCA", "LCX"], p=[0.6, 0.25, 0.15])
        base = TERRITORIES[territory]
        region = Region(base.centre_deg + u(-15, 15), base.half_width_deg * u(0.8, 1.1), base.low, base.high,
                        base.cap)
        common.update(long_shortening=u(0.08, 0.12), twist_deg=u(5, 9))
        p = HeartParams(edv_ml=u(160, 230), ef=u(0.25, 0.45), rv_edv_ml=u(130, 180),
                        infarct=Infarct(str(territory), region, thinning=u(0.35, 0.6), akinesia=u(0.7, 1.0)),
                        **common)
    elif preset == "RV":
        common.update(rv_ef=u(0.2, 0.4), rv_half_angle_deg=u(90, 105), rv_wall_mm=u(4, 6))
        p = HeartParams(edv_ml=u(100, 140), ef=u(0.55, 0.65), rv_edv_ml=u(220, 320), **common)
    else:
        raise ValueError(f"unknown preset '{preset}'; expected one of {', '.join(PRESETS)}")
    return p


def _plaques(preset: str, count: int | None, rng: np.random.Generator) -> list[Plaque]:
    if count is None:
        count = 0 if rng.uniform() < _NO_CALCIUM[preset] else int(min(10, 1 + rng.poisson(3)))
    names, weights = zip(*_VESSEL_WEIGHTS.items())
    plaques: list[Plaque] = []
    while len(plaques) < count:
        vessel = str(rng.choice(names, p=weights))
        size = rng.uniform(1.0, 5.0)
        for _ in range(20):                    # keep plaques on one vessel apart (distinct lesions)
            position = float(rng.beta(1.3, 2.5)) if vessel != "LM" else float(rng.uniform(0.1, 0.9))
            if all(q.vessel != vessel or abs(q.position - position) > 0.08 for q in plaques):
                break
        plaques.append(Plaque(id=len(plaques) + 1, vessel=vessel, position=position, size_mm=float(size),
                              aspect=float(rng.uniform(0.5, 0.9)), hu=float(math.exp(rng.uniform(math.log(150),
                                                                                              math.log(1300)))),
                              angle_deg=float(rng.uniform(-70, 70))))
    return plaques


def sample_params(preset: str = "NOR", seed: int = 0, *, edv_ml: float | None = None, ef: float | None = None,
                  heart_rate_bpm: float | None = None, rv_edv_ml: float | None = None, rv_ef: float | None = None,
                  plaques: int | None = None, calcium: bool = True, breathing_mm: float = 0.0,
                  defect: str | None = None, defect_severity: float = 0.6) -> PhantomParams:
    """Draw one patient of ``preset``; keyword arguments override the sampled values.

    ``ef`` and ``rv_ef`` are fractions (0.6 = 60 %).  ``plaques`` fixes the number of
    calcified plaques, ``calcium=False`` makes a calcium-free case, ``breathing_mm`` sets the
    diaphragm excursion (0 = breath-hold) and ``defect`` ("LAD", "LCX" or "RCA") adds a
    reversible perfusion defect of that territory for SPECT/PET.
    """
    preset = str(preset).upper()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; expected one of {', '.join(PRESETS)}")
    if plaques is not None and not 0 <= int(plaques) <= 50:
        raise ValueError(f"number of plaques must be 0-50, got {plaques}")
    if defect is not None and defect not in TERRITORIES:
        raise ValueError(f"unknown defect territory '{defect}'; expected one of {', '.join(TERRITORIES)}")
    if not 0 < defect_severity <= 1:
        raise ValueError(f"defect severity must be in (0, 1], got {defect_severity}")
    rng = np.random.default_rng(seed)
    heart = _heart(preset, rng)
    u = rng.uniform
    thorax = ThoraxParams(half_width_mm=u(148, 172), front_mm=u(104, 120), back_mm=u(110, 124), fat_mm=u(8, 26),
                          breathing_mm=float(breathing_mm))
    plaque_list = _plaques(preset, 0 if not calcium else plaques, rng)
    for name, value in (("edv_ml", edv_ml), ("ef", ef), ("heart_rate_bpm", heart_rate_bpm),
                        ("rv_edv_ml", rv_edv_ml), ("rv_ef", rv_ef)):
        if value is not None:
            setattr(heart, name, float(value))
    if defect is not None:
        heart.defect = Defect(defect, TERRITORIES[defect], float(defect_severity))
    _to_python(heart)
    return PhantomParams(preset=preset, seed=int(seed), heart=heart, thorax=thorax, plaques=plaque_list)


def _to_python(heart: HeartParams) -> None:
    """numpy scalars -> floats, so the parameters serialise to JSON as they are."""
    for name, value in vars(heart).items():
        if isinstance(value, np.floating):
            setattr(heart, name, float(value))
        elif isinstance(value, tuple):
            setattr(heart, name, tuple(float(v) for v in value))
