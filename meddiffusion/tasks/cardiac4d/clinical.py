"""What a generation request is (a diagnosis and the LV volumes to reach) and whether it is possible.

A request names an ACDC group and the left ventricle's end-diastolic volume (EDV) with either
its end-systolic volume (ESV) or its ejection fraction (EF = 100 · (EDV − ESV) / EDV). It is
refused when a number is outside what the model can draw (EDV 40-500 ml, EF 5-85 %, 6-16
slices, the network's stack depth being 16, and 10-50 frames) or when the volumes contradict the
diagnosis's own definition. Volumes and slice counts outside the group's training range are
allowed, with a warning (:func:`outside_training`).

Diagnostic criteria
-------------------
The groups are ACDC's (Bernard et al., IEEE TMI 37:2514, 2018, §III; the challenge's
classification rules, creatis.insa-lyon.fr/Challenge/acdc): NOR normal LV (EF > 50 %, EDV
< 90 ml/m²); MINF LV EF < 40 % with abnormally contracting segments; DCM LV EDV > 100 ml/m² and
EF < 40 %; HCM normal EF (> 55 %) with walls > 15 mm and mass > 110 g/m²; RV an RV EDV
> 110 ml/m² or RV EF < 40 %, and a patient whose LV and RV are both dilated is DCM. A request
sets the LV only, so only LV criteria can be contradicted. Indexed limits are converted with an
adult body surface area of 1.6-2.2 m², each at the end that accepts more, and EF limits are
widened to the clinical bands around them, so that only a request no patient of the group could
have is refused:

- NOR: EF ≥ 50 % and EDV ≤ 198 ml (90 ml/m² × 2.2). An EF below 50 % is reduced or mildly
  reduced (ESC heart-failure guidelines, McDonagh et al., Eur Heart J 42:3599, 2021).
- MINF: EF < 50 %: ACDC's 40 % widened by ESC's mildly reduced band (41-49 %).
- DCM: EF < 45 % and EDV ≥ 160 ml (100 ml/m² × 1.6). EF < 45 % is the familial-DCM criterion
  of Mestroni et al. (Eur Heart J 20:93, 1999), looser than ACDC's 40 %.
- HCM: EF ≥ 50 %. Below 50 % is end-stage ("burnt-out") HCM (ESC HCM guidelines, Elliott et
  al., Eur Heart J 35:2733, 2014), which ACDC's normal-EF group excludes.
- RV: not (EF < 40 % and EDV > 220 ml, 100 ml/m² × 2.2): such an LV is dilated and failing at
  every body size, which ACDC classifies as DCM.

Every training range of the phantom (``presets.py``), widened by its margin, satisfies them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["DIAGNOSIS_IDS", "DIAGNOSIS_NAMES", "Request", "make_request", "TRAINING_RANGES", "TRAINING_MARGIN",
           "TRAINING_SLICES", "outside_training", "LIMITS", "BSA_RANGE_M2"]

#: the network's class ids (0 is "unknown")
DIAGNOSIS_IDS = {"NOR": 1, "MINF": 2, "DCM": 3, "HCM": 4, "RV": 5}
DIAGNOSIS_NAMES = {"NOR": "normal", "MINF": "myocardial infarction", "DCM": "dilated cardiomyopathy",
                   "HCM": "hypertrophic cardiomyopathy", "RV": "abnormal right ventricle"}

#: what the model can draw: (low, high), inclusive
LIMITS = {"edv_ml": (40.0, 500.0), "ef_percent": (5.0, 85.0), "slices": (6, 16), "frames": (10, 50)}
#: adult body surface area that converts the per-m² criteria
BSA_RANGE_M2 = (1.6, 2.2)

#: the phantom groups' sampled LV parameters (meddiffusion/phantoms/presets.py): EDV ml, EF %
TRAINING_RANGES = {
    "NOR": {"edv_ml": (110.0, 160.0), "ef_percent": (56.0, 68.0)},
    "MINF": {"edv_ml": (160.0, 230.0), "ef_percent": (25.0, 45.0)},
    "DCM": {"edv_ml": (220.0, 320.0), "ef_percent": (15.0, 35.0)},
    "HCM": {"edv_ml": (90.0, 130.0), "ef_percent": (65.0, 78.0)},
    "RV": {"edv_ml": (100.0, 140.0), "ef_percent": (55.0, 65.0)},
}
#: the model learned volumes measured on the phantom's labels, which differ a few % from its parameters
TRAINING_MARGIN = 0.10
#: slices of the training stacks by group (the shipped models' 440 studies, dataset seed 1): the
#: stack covers the heart, so larger hearts have more slices and a dilated heart was never drawn
#: in 9
TRAINING_SLICES = {"NOR": (9, 13), "MINF": (10, 14), "DCM": (10, 14), "HCM": (10, 13), "RV": (9, 13)}

_NOR_EDV_MAX = 90.0 * BSA_RANGE_M2[1]       # 198 ml
_DCM_EDV_MIN = 100.0 * BSA_RANGE_M2[0]      # 160 ml
_DILATED_ANY_BSA = 100.0 * BSA_RANGE_M2[1]  # 220 ml


@dataclass(frozen=True)
class Request:
    """One cine to generate: the ACDC group, the LV volumes (ml) and the stack (slices × frames).

    Built by :func:`make_request`, which checks it; constructing one directly checks it too.
    """

    diagnosis: str
    edv_ml: float
    esv_ml: float
    slices: int
    frames: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "diagnosis", _diagnosis(self.diagnosis))
        object.__setattr__(self, "edv_ml", _number(self.edv_ml, "end-diastolic volume (EDV)"))
        object.__setattr__(self, "esv_ml", _number(self.esv_ml, "end-systolic volume (ESV)"))
        object.__setattr__(self, "slices", _whole(self.slices, "number of slices"))
        object.__setattr__(self, "frames", _whole(self.frames, "number of frames"))
        _check(self)

    @property
    def ef_percent(self) -> float:
        return 100.0 * (self.edv_ml - self.esv_ml) / self.edv_ml

    @property
    def stroke_volume_ml(self) -> float:
        return self.edv_ml - self.esv_ml

    @property
    def diagnosis_id(self) -> int:
        return DIAGNOSIS_IDS[self.diagnosis]

    def to_dict(self) -> dict:
        return {**asdict(self), "diagnosis_id": self.diagnosis_id, "ef_percent": self.ef_percent,
                "stroke_volume_ml": self.stroke_volume_ml}


def make_request(diagnosis: str, edv_ml: float, esv_ml: float | None = None, ef_percent: float | None = None,
                 slices: int = 10, frames: int = 25) -> Request:
    """A checked :class:`Request`; give exactly one of ``esv_ml`` and ``ef_percent`` (ESV = EDV · (1 − EF/100))."""
    if (esv_ml is None) == (ef_percent is None):
        raise ValueError("give exactly one of the end-systolic volume (ESV) and the ejection fraction (EF); "
                         + ("both were given" if esv_ml is not None else "neither was given"))
    diagnosis = _diagnosis(diagnosis)
    edv = _number(edv_ml, "end-diastolic volume (EDV)")
    if ef_percent is not None:
        ef = _number(ef_percent, "ejection fraction (EF)")
        _in_range(ef, LIMITS["ef_percent"], "ejection fraction", " %")
        esv_ml = edv * (1.0 - ef / 100.0)
    return Request(diagnosis, edv, esv_ml, slices, frames)


def outside_training(request: Request) -> list[str]:
    """Warnings (not errors) for values outside the group's training range widened by ``TRAINING_MARGIN``."""
    ranges = TRAINING_RANGES[request.diagnosis]
    warnings = []
    for key, label, unit, value in (("edv_ml", "EDV", " ml", request.edv_ml),
                                    ("ef_percent", "EF", " %", request.ef_percent)):
        low, high = ranges[key]
        if not low * (1 - TRAINING_MARGIN) <= value <= high * (1 + TRAINING_MARGIN):
            warnings.append(f"{label} {_fmt(value)}{unit} is outside the {request.diagnosis} training range "
                            f"{_fmt(low)}-{_fmt(high)}{unit}: the model extrapolates")
    low, high = TRAINING_SLICES[request.diagnosis]
    if not low <= request.slices <= high:
        warnings.append(f"{request.slices} slices is outside the {request.diagnosis} training stacks' {low}-{high} "
                        f"slices (the stack covers the heart): the model extrapolates")
    return warnings


# -- checks --------------------------------------------------------------------------------------
def _check(r: Request) -> None:
    _in_range(r.edv_ml, LIMITS["edv_ml"], "end-diastolic volume (EDV)", " ml")
    if r.esv_ml <= 0:
        raise ValueError(f"end-systolic volume must be positive, got {_fmt(r.esv_ml)} ml")
    if r.esv_ml >= r.edv_ml:
        raise ValueError(f"end-systolic volume must be smaller than end-diastolic: ESV {_fmt(r.esv_ml)} ml ≥ "
                         f"EDV {_fmt(r.edv_ml)} ml")
    low, high = LIMITS["ef_percent"]
    if not low <= r.ef_percent <= high:
        raise ValueError(f"ejection fraction {_fmt(r.ef_percent)} % (EDV {_fmt(r.edv_ml)} ml, ESV "
                         f"{_fmt(r.esv_ml)} ml) is outside {_fmt(low)}-{_fmt(high)} %")
    _in_range(r.slices, LIMITS["slices"], "number of slices", "",
              why=" (the model's stack is 16 slices deep; fewer than 6 do not cover a ventricle)")
    _in_range(r.frames, LIMITS["frames"], "number of frames", "")
    problem = _contradiction(r.diagnosis, r.edv_ml, r.ef_percent)
    if problem:
        raise ValueError(f"{r.diagnosis} ({DIAGNOSIS_NAMES[r.diagnosis]}) contradicts the volumes: {problem}")


def _contradiction(diagnosis: str, edv: float, ef: float) -> str | None:
    """The diagnostic criterion the LV volumes violate (see the module's table), or None."""
    vols = f"EDV {_fmt(edv)} ml"
    if diagnosis == "NOR":
        if ef < 50:
            return f"EF {_fmt(ef)} % is reduced; a normal LV has an EF of at least 50 %"
        if edv > _NOR_EDV_MAX:
            return (f"{vols} is dilated even for a body surface area of {BSA_RANGE_M2[1]} m²; a normal LV has an "
                    f"EDV of at most {_fmt(_NOR_EDV_MAX)} ml (90 ml/m²)")
    elif diagnosis == "MINF":
        if ef >= 50:
            return f"EF {_fmt(ef)} % is preserved; the infarction group has a reduced EF (below 50 %)"
    elif diagnosis == "DCM":
        if ef >= 45:
            return f"EF {_fmt(ef)} % is not reduced; dilated cardiomyopathy needs an EF below 45 %"
        if edv < _DCM_EDV_MIN:
            return (f"{vols} is not dilated even for a body surface area of {BSA_RANGE_M2[0]} m²; dilated "
                    f"cardiomyopathy needs an EDV of at least {_fmt(_DCM_EDV_MIN)} ml (100 ml/m²)")
    elif diagnosis == "HCM":
        if ef < 50:
            return (f"EF {_fmt(ef)} % is reduced; hypertrophic cardiomyopathy in ACDC has a normal EF "
                    "(at least 50 %)")
    elif diagnosis == "RV":
        if ef < 40 and edv > _DILATED_ANY_BSA:
            return (f"an LV of {vols} and EF {_fmt(ef)} % is dilated and failing, which ACDC classifies as "
                    f"dilated cardiomyopathy (DCM); the RV group needs an LV that is not both (EF ≥ 40 % or "
                    f"EDV ≤ {_fmt(_DILATED_ANY_BSA)} ml)")
    return None


def _diagnosis(value) -> str:
    name = str(value).strip().upper()
    if name not in DIAGNOSIS_IDS:
        raise ValueError(f"unknown diagnosis '{value}'; expected one of "
                         + ", ".join(f"{k} ({v})" for k, v in DIAGNOSIS_NAMES.items()))
    return name


def _number(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _whole(value, what: str) -> int:
    number = _number(value, what)
    if number != int(number):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def _in_range(value: float, limits: tuple, what: str, unit: str, why: str = "") -> None:
    low, high = limits
    if not low <= value <= high:
        raise ValueError(f"{what} {_fmt(value)}{unit} is outside {_fmt(low)}-{_fmt(high)}{unit}{why}")


def _fmt(value: float) -> str:
    """A number as a reader writes it: 230, 26.1, 0.5."""
    return f"{float(value):.1f}".rstrip("0").rstrip(".")
