"""What each modality's input must look like: one rule per modality, shared by ``meddiff`` and Slicer.

This module imports numpy only (no torch, no SimpleITK), so a Slicer module's logic checks a
volume node with exactly the rule and the message the backend would give, before any child
process starts. Every check raises ``ValueError`` naming the image, what is wrong and what is
expected.

- **CT** (:data:`CT`): values in Hounsfield units. Air is -1000 HU, lung about -800, fat about
  -100, so the low tail (0.5th percentile) lies below -200 HU, unless the file says it is a CT
  (DICOM modality ``CT``), which may be cropped to soft tissue. Dense bone stays below 4000 HU,
  so the high tail (99.5th percentile) must too. MR, PET and CT stored without its rescale
  intercept have no negative values and are refused.
- **PET/SPECT** (:data:`EMISSION`): activity (Bq/ml, SUV or counts) is never negative beyond
  reconstruction noise, so the low tail must stay above -5 % of the high tail.
- **MR** (:data:`MR`): magnitude images are non-negative in the same sense.
- **Attenuation map** (:data:`ATTENUATION`): linear attenuation coefficients in 1/cm, as SPECT
  and PET reconstructions use them: not negative, water 0.15 (140 keV) or 0.096 (511 keV), so
  the high tail lies between 0.05 and 1 /cm. A map in 1/mm (ten times smaller), one stored
  scaled to integers (e.g. × 10 000) or a CT in HU is refused with that diagnosis.

A single slice (1 × H × W) is a valid volume for every rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Rule", "CT", "EMISSION", "MR", "ATTENUATION", "RULES", "rule_for", "check_values", "sample_values", "Limits",
           "AGATSTON_SLICE_MM"]

#: voxels sampled for the percentiles (enough for 0.5 % tails, fast on a 512³ volume)
SAMPLE_VOXELS = 1_000_000
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


@dataclass(frozen=True)
class Rule:
    """One modality's rule: the DICOM modalities it accepts and the values it expects."""

    name: str
    modalities: tuple[str, ...]
    expected: str
    skip_flag: str = ""

    def check(self, values: np.ndarray, *, name: str, modality: str = "", skip: bool = False) -> None:
        """Raise ``ValueError`` unless ``values`` (any shape) may be this modality's image."""
        check_values(values, self, name=name, modality=modality, skip=skip)


CT = Rule("ct", ("CT", "OT"), "a CT volume in Hounsfield units (air about -1000 HU, bone below 4000 HU)",
          skip_flag="--no-hu-check")
EMISSION = Rule("emission", ("PT", "NM", "OT"), "a PET or SPECT volume of activity (Bq/ml, SUV or counts, "
                "not negative)", skip_flag="--no-value-check")
MR = Rule("mr", ("MR", "OT"), "an MR magnitude volume (not negative)", skip_flag="--no-value-check")
ATTENUATION = Rule("attenuation", ("NM", "PT", "OT", "CT"), "an attenuation map in 1/cm (water about 0.15 at "
                   "140 keV, 0.096 at 511 keV; bone below 0.5)", skip_flag="--no-value-check")
RULES = {rule.name: rule for rule in (CT, EMISSION, MR, ATTENUATION)}

#: the high tail of an attenuation map in 1/cm: soft tissue and bone lie between these
MU_HIGH_RANGE = (0.05, 1.0)

MAX_LOW_HU = -200.0
MAX_HIGH_HU = 4000.0
#: activity / magnitude may dip below zero by this share of the high tail (reconstruction noise)
NEGATIVE_SHARE = 0.05


def rule_for(name: str) -> Rule:
    """The rule called ``name`` ("ct", "emission", "mr")."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown input rule '{name}'; expected one of {', '.join(RULES)}") from None


def sample_values(values: np.ndarray) -> np.ndarray:
    """Up to :data:`SAMPLE_VOXELS` voxels drawn at random with a fixed seed (a stride could follow one column)."""
    flat = np.asarray(values).ravel()
    if flat.size > SAMPLE_VOXELS:
        flat = flat[np.random.default_rng(0).integers(0, flat.size, SAMPLE_VOXELS)]
    return flat.astype(np.float64)


def check_values(values: np.ndarray, rule: Rule, *, name: str, modality: str = "", skip: bool = False) -> None:
    """The shared check: declared modality first, then the value tails (``skip`` drops the latter)."""
    modality = (modality or "").upper()
    if modality and modality not in rule.modalities:
        raise ValueError(f"'{name}' is a {modality} image; expected {rule.expected}")
    sample = sample_values(values)
    if sample.size == 0:
        raise ValueError(f"'{name}' holds no voxels; expected {rule.expected}")
    if not np.isfinite(sample).all():
        raise ValueError(f"'{name}' contains NaN or infinite values; expected {rule.expected}")
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        raise ValueError(f"'{name}' has the same value {low:g} almost everywhere; expected {rule.expected}")
    if skip:
        return
    hint = f" (pass {rule.skip_flag} if you are sure)" if rule.skip_flag else ""
    if rule is CT:
        if modality != "CT" and low > MAX_LOW_HU:
            raise ValueError(f"'{name}' does not look like CT in Hounsfield units: almost no voxel is below "
                             f"{MAX_LOW_HU:g} HU ({LOW_PERCENTILE:g}th percentile {low:g}), so it has no air, lung "
                             f"or fat (MR, PET or CT without its rescale intercept); expected {rule.expected}"
                             f"{hint}")
        if high > MAX_HIGH_HU:
            raise ValueError(f"'{name}' does not look like CT in Hounsfield units: {100 - HIGH_PERCENTILE:g} % of "
                             f"its voxels exceed {high:g}, above the {MAX_HIGH_HU:g} HU of dense bone; expected "
                             f"{rule.expected}{hint}")
        return
    if rule is ATTENUATION:
        _check_attenuation(name, low, high, rule, hint)
        return
    if low < -NEGATIVE_SHARE * max(abs(high), 1e-12):
        raise ValueError(f"'{name}' has negative values ({LOW_PERCENTILE:g}th percentile {low:g} against "
                         f"{high:g} at the {HIGH_PERCENTILE:g}th); it looks like CT in HU or a difference image; "
                         f"expected {rule.expected}{hint}")


def _check_attenuation(name: str, low: float, high: float, rule: Rule, hint: str) -> None:
    if low < -0.01:
        raise ValueError(f"'{name}' has negative values ({LOW_PERCENTILE:g}th percentile {low:g}): it looks like a CT "
                         f"in HU, not an attenuation map (give a CT with --ct); expected {rule.expected}{hint}")
    lowest, highest = MU_HIGH_RANGE
    if high < lowest:
        unit = " (it may be in 1/mm: multiply by 10)" if high >= lowest / 10 else ""
        raise ValueError(f"'{name}' is too small for an attenuation map in 1/cm: {HIGH_PERCENTILE:g}th percentile "
                         f"{high:g}{unit}; expected {rule.expected}{hint}")
    if high > highest:
        raise ValueError(f"'{name}' is too large for an attenuation map in 1/cm: {HIGH_PERCENTILE:g}th percentile "
                         f"{high:g} (a scaled map or a CT in HU); expected {rule.expected}{hint}")


@dataclass(frozen=True)
class Limits:
    """Where a task's result means something: slice count and thickness, pixel size (mm).

    Outside ``slice_mm`` / ``pixel_mm`` the input is refused; outside the ``*_usual`` ranges
    (what the models were trained on, or what a score is defined for) it runs with a warning.
    """

    min_slices: int = 1
    slice_mm: tuple[float, float] | None = None
    slice_mm_usual: tuple[float, float] | None = None
    pixel_mm: tuple[float, float] | None = None
    pixel_mm_usual: tuple[float, float] | None = None
    why: str = ""

    def check(self, shape_zyx, spacing_xyz, *, name: str) -> list[str]:
        """Raise ``ValueError`` outside the limits; return warnings for inputs outside the usual ranges."""
        slices, pixel, thickness = int(shape_zyx[0]), float(min(spacing_xyz[:2])), float(spacing_xyz[2])
        because = f" ({self.why})" if self.why else ""
        if slices < self.min_slices:
            raise ValueError(f"'{name}' has {slices} axial slice(s); at least {self.min_slices} are needed{because}")
        warnings = []
        for what, value, hard, usual in (("slice spacing", thickness, self.slice_mm, self.slice_mm_usual),
                                         ("pixel size", pixel, self.pixel_mm, self.pixel_mm_usual)):
            if slices == 1 and what == "slice spacing":
                continue  # one slice has no spacing of its own
            if hard and not hard[0] <= value <= hard[1]:
                raise ValueError(f"'{name}' has a {what} of {value:g} mm; expected {hard[0]:g}-{hard[1]:g} mm"
                                 f"{because}")
            if usual and not usual[0] <= value <= usual[1]:
                warnings.append(f"'{name}' has a {what} of {value:g} mm, outside the usual {usual[0]:g}-"
                                f"{usual[1]:g} mm{because}; check the result with care")
        return warnings


#: Agatston scoring is defined on 3 mm slices; 0.5-6 mm still scale meaningfully, 2.5-3.5 mm is the protocol
AGATSTON_SLICE_MM = Limits(slice_mm=(0.5, 6.0), slice_mm_usual=(2.5, 3.5),
                           why="the Agatston score is defined for 3 mm slices")
