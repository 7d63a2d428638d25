"""Labels (what a voxel is) and tissues (what it looks like), in one place.

A *label* is the anatomical answer a segmentation gives (LV blood, lung, bone...); a *tissue*
is a set of physical properties.  Several tissues can share a label (cortical and trabecular
bone are both ``BONE``), and every imaging modality is a lookup from tissue to value, so all
four renderers show the same anatomy.

Property sources
----------------
- **CT (HU, non-contrast, 120 kVp):** typical values of unenhanced chest/abdomen CT: air
  -1000, lung -850, fat -100, muscle 45, unenhanced blood 40, liver 60, cortical bone ~1200,
  vertebral trabecular bone ~220 (Hounsfield-scale tables in Bushberg, *The Essential Physics
  of Medical Imaging*, 3rd ed., ch. 10; coronary calcium ≥ 130 HU as defined by Agatston
  et al., JACC 1990).  ``texture`` is the standard deviation (HU) of the mild tissue texture.
- **μ at 140 keV (Tc-99m) and 511 keV (PET), 1/cm:** from the tissue's HU with the bilinear
  CT-to-μ transform used for clinical attenuation correction (Brown et al., Appl Radiat Isot
  66:1206, 2008; Carney et al., Med Phys 33:976, 2006): μ = μ_w (1 + HU/1000) below 0 HU
  (air-water mixture), μ = μ_w (1 + b·HU/1000) above (water-bone mixture), with water
  μ_w = 0.153 / 0.096 cm⁻¹ and bone slopes b = 0.63 / 0.51, which give cortical bone
  0.27 / 0.155 cm⁻¹ and fat 0.138 / 0.086 cm⁻¹ as NIST XCOM mass attenuation × density.
- **SPECT (Tc-99m sestamibi, rest, ~60 min p.i.), relative concentration, soft tissue = 1:**
  myocardium 20× background (physics-data-speed.md §3), liver ~15 and bowel ~25 from
  hepatobiliary clearance, blood pool ~2, lung ~0.5, scar ~20 % of normal myocardium,
  breast ~0.7 (normal breast takes up little sestamibi).
- **Breast:** a fibroglandular/fat mix of -50 to +20 HU on CT depending on density
  (default -30 HU, μ140 ≈ 0.148 cm⁻¹; per patient ``ThoraxParams.breast_hu``).
- **PET (18F-FDG, SUV g/ml):** myocardium 6 (fed/glucose-loaded patient), blood 1.8,
  liver 2.2, spleen 1.8, lung 0.5, muscle 0.7, fat 0.3, marrow 1.5, bowel 2.0, scar 1.0
  (typical SUVmean ranges, e.g. Boellaard et al., EJNMMI 42:328, 2015).
- **MR at 1.5 T (PD relative to water, T1/T2 in ms):** Stanisz et al., MRM 54:507, 2005
  (blood 1441/290, heart 1030/40, liver 576/46, muscle 1008/44, cartilage 1024/30);
  de Bazelaire et al., Radiology 230:652, 2004 (fat 343/58, spleen 1057/79); CSF and
  fluid ~4000/2000; lung and cortical bone have too little signal-bearing water (PD ≤ 0.1,
  short T2) to show.  The cine signal uses :func:`bssfp_signal`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = [
    "LABELS", "LABEL_NAMES", "PLAQUE_LABEL_BASE", "ACDC_LABELS", "Tissue", "TISSUES", "acdc_labels",
    "label_name", "mu_from_hu", "bssfp_signal", "plaque_tissue", "calcium_mask", "MU_WATER", "BSSFP",
]

# -- labels ---------------------------------------------------------------------------------
LABELS: dict[str, int] = {
    "background": 0,        # air outside the body
    "body": 1,              # soft tissue not named below: muscle, mediastinum, discs, CSF, abdomen
    "fat": 2,               # subcutaneous, mediastinal and epicardial fat
    "lung": 3,
    "lung_vessel": 4,       # pulmonary arteries and veins inside the lungs
    "airway": 5,            # trachea and main bronchi lumen
    "bone": 6,              # spine, ribs, sternum
    "liver": 7,
    "spleen": 8,
    "stomach": 9,
    "bowel": 10,
    "lv_blood": 11,
    "rv_blood": 12,
    "lv_myocardium": 13,
    "rv_myocardium": 14,
    "la": 15,
    "ra": 16,
    "aorta": 17,
    "pulmonary_artery": 18,
    "vena_cava": 19,
    "coronary_artery": 20,
    "infarct": 21,          # LV myocardial scar (part of the LV myocardium)
    "breast": 22,           # glandular and fatty breast tissue (women; see ThoraxParams.breast_mm)
}
#: coronary calcified plaque i (1, 2, ...) has label PLAQUE_LABEL_BASE + i
PLAQUE_LABEL_BASE = 100
LABEL_NAMES = {v: k for k, v in LABELS.items()}

#: ACDC / Cardiac4DSynth convention: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity
ACDC_LABELS = {"background": 0, "rv": 1, "myo": 2, "lv": 3}


def label_name(value: int) -> str:
    if value > PLAQUE_LABEL_BASE:
        return f"plaque_{value - PLAQUE_LABEL_BASE}"
    return LABEL_NAMES[value]


def acdc_labels(label_map):
    """Map a phantom label map to ACDC's 0 BG / 1 RV / 2 MYO / 3 LV (scar counts as MYO)."""
    import numpy as np

    lab = np.asarray(label_map)
    out = np.zeros(lab.shape, dtype=np.uint8)
    out[lab == LABELS["rv_blood"]] = 1
    out[(lab == LABELS["lv_myocardium"]) | (lab == LABELS["infarct"])] = 2
    out[lab == LABELS["lv_blood"]] = 3
    return out


def calcium_mask(label_map):
    """Boolean mask of the calcified plaques in a phantom label map (labels above 100)."""
    import numpy as np

    return np.asarray(label_map) > PLAQUE_LABEL_BASE


# -- tissue properties ----------------------------------------------------------------------
MU_WATER = {140: 0.153, 511: 0.096}       # 1/cm
_BONE_SLOPE = {140: 0.63, 511: 0.51}


def mu_from_hu(hu, kev: int):
    """Linear attenuation (1/cm) at 140 or 511 keV from CT number (bilinear model).

    A number gives a float, an array (a CT converted for attenuation correction) a float64 array.
    """
    import numpy as np

    if kev not in MU_WATER:
        raise ValueError(f"μ is tabulated at 140 keV (Tc-99m) and 511 keV (PET), got {kev} keV")
    values = np.asarray(hu, dtype=np.float64)
    scale = np.where(values <= 0, 1.0, _BONE_SLOPE[kev])
    mu = np.maximum(0.0, MU_WATER[kev] * (1.0 + scale * values / 1000.0))
    return float(mu) if mu.ndim == 0 else mu


@dataclass(frozen=True)
class Tissue:
    """Physical properties of one tissue (see the module docstring for sources)."""

    hu: float
    texture: float           # CT texture standard deviation, HU
    spect: float             # Tc-99m sestamibi concentration relative to soft tissue
    pet: float               # FDG SUV
    pd: float                # MR proton density relative to water
    t1: float                # ms at 1.5 T
    t2: float                # ms at 1.5 T

    @property
    def mu140(self) -> float:
        return mu_from_hu(self.hu, 140)

    @property
    def mu511(self) -> float:
        return mu_from_hu(self.hu, 511)


TISSUES: dict[str, Tissue] = {
    #                          HU   tex  SPECT  PET   PD    T1     T2
    "air":              Tissue(-1000, 0, 0.0, 0.0, 0.0, 1000, 1),
    "fat":              Tissue(-100, 8, 0.5, 0.3, 0.9, 343, 58),
    "muscle":           Tissue(45, 8, 1.0, 0.7, 0.75, 1008, 44),
    "soft_tissue":      Tissue(35, 8, 1.0, 0.8, 0.8, 1100, 60),     # mediastinum, abdomen, walls
    "lung":             Tissue(-850, 30, 0.5, 0.5, 0.08, 1200, 30),
    "blood":            Tissue(40, 3, 2.0, 1.8, 0.9, 1441, 290),
    "myocardium":       Tissue(45, 3, 20.0, 6.0, 0.75, 1030, 40),
    "scar":             Tissue(40, 3, 4.0, 1.0, 0.7, 1200, 45),
    "liver":            Tissue(60, 6, 15.0, 2.2, 0.7, 576, 46),
    "spleen":           Tissue(48, 6, 5.0, 1.8, 0.8, 1057, 79),
    "stomach_wall":     Tissue(40, 5, 3.0, 2.0, 0.75, 1000, 50),
    "stomach_fluid":    Tissue(10, 3, 1.0, 0.5, 1.0, 3000, 1000),
    "bowel":            Tissue(30, 8, 25.0, 2.0, 0.8, 1200, 100),
    "cortical_bone":    Tissue(1200, 40, 1.0, 0.3, 0.05, 1000, 1),
    "trabecular_bone":  Tissue(220, 40, 1.0, 1.5, 0.7, 550, 50),
    "cartilage":        Tissue(110, 10, 1.0, 0.7, 0.7, 1024, 30),
    "disc":             Tissue(80, 8, 1.0, 0.7, 0.8, 1100, 90),
    "csf":              Tissue(10, 3, 0.5, 0.3, 1.0, 4000, 2000),
    "airway_wall":      Tissue(60, 5, 1.0, 0.8, 0.7, 1024, 30),
    "breast":           Tissue(-30, 10, 0.7, 0.4, 0.85, 800, 55),
}


def plaque_tissue(hu: float) -> Tissue:
    """A calcified plaque of a given density: calcium has no tracer uptake and no MR signal."""
    return replace(TISSUES["cortical_bone"], hu=float(hu), texture=0.0, spect=0.0, pet=0.0)


# -- MR signal ------------------------------------------------------------------------------
#: cine bSSFP sequence at 1.5 T: repetition time (ms) and flip angle (degrees)
BSSFP = {"tr_ms": 3.0, "flip_deg": 60.0}


def bssfp_signal(pd: float, t1: float, t2: float, tr_ms: float = BSSFP["tr_ms"],
                 flip_deg: float = BSSFP["flip_deg"]) -> float:
    """Steady-state balanced SSFP signal at TE = TR/2, on resonance.

    S = PD · sin α · (1 − E1) / (1 − (E1 − E2) cos α − E1·E2) · √E2, with E1 = exp(−TR/T1)
    and E2 = exp(−TR/T2) (Scheffler & Lehnhardt, Eur Radiol 13:2409, 2003).  Blood (high
    T2/T1) is bright against myocardium, as in clinical cine imaging.
    """
    if pd <= 0:
        return 0.0
    e1, e2 = math.exp(-tr_ms / t1), math.exp(-tr_ms / t2)
    alpha = math.radians(flip_deg)
    return pd * math.sin(alpha) * (1 - e1) / (1 - (e1 - e2) * math.cos(alpha) - e1 * e2) * math.sqrt(e2)
