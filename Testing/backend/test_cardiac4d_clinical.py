"""cardiac4d requests: what is accepted, every refusal and its message, EF↔ESV, training-range warnings.

Expected values are written out from the definitions (EF = 100 · (EDV − ESV) / EDV) and the
phantom's presets, never taken from the module's own constants where the point is to check them.
"""

import math

import pytest

from meddiffusion.tasks.cardiac4d.clinical import (DIAGNOSIS_IDS, TRAINING_MARGIN, TRAINING_RANGES, Request,
                                                   make_request, outside_training)


# -- accepted requests ---------------------------------------------------------------------------
@pytest.mark.parametrize("diagnosis, edv, kwargs", [
    ("DCM", 230, {"esv_ml": 170}),        # the command's example
    ("NOR", 140, {"ef_percent": 62}),
    ("MINF", 200, {"esv_ml": 130}),
    ("HCM", 110, {"ef_percent": 70}),
    ("RV", 120, {"ef_percent": 60}),
])
def test_plausible_requests_of_each_group_are_accepted(diagnosis, edv, kwargs):
    request = make_request(diagnosis, edv, **kwargs)
    assert request.diagnosis == diagnosis
    assert outside_training(request) == []


def test_network_ids_are_the_documented_ones():
    assert DIAGNOSIS_IDS == {"NOR": 1, "MINF": 2, "DCM": 3, "HCM": 4, "RV": 5}
    assert make_request("hcm", 110, ef_percent=70).diagnosis_id == 4


def test_ef_gives_esv_and_esv_gives_ef():
    by_ef = make_request("NOR", 150, ef_percent=60, slices=12, frames=30)
    assert by_ef.esv_ml == pytest.approx(60.0)
    assert by_ef.ef_percent == pytest.approx(60.0)
    assert by_ef.stroke_volume_ml == pytest.approx(90.0)
    by_esv = make_request("DCM", 230, esv_ml=170)
    assert by_esv.ef_percent == pytest.approx(100 * 60 / 230)
    assert by_esv.stroke_volume_ml == pytest.approx(60.0)
    d = by_ef.to_dict()
    assert d == {"diagnosis": "NOR", "edv_ml": 150.0, "esv_ml": pytest.approx(60.0), "slices": 12, "frames": 30,
                 "diagnosis_id": 1, "ef_percent": pytest.approx(60.0), "stroke_volume_ml": pytest.approx(90.0)}


def test_diagnosis_is_case_insensitive_and_numbers_are_normalised():
    request = make_request(" dcm ", "230", esv_ml=170, slices=10.0, frames=25)
    assert request.diagnosis == "DCM" and request.edv_ml == 230.0
    assert isinstance(request.slices, int) and request.slices == 10


def test_request_is_checked_when_constructed_directly():
    with pytest.raises(ValueError, match="smaller than end-diastolic"):
        Request("NOR", 100.0, 120.0, 10, 25)
    assert Request("nor", 140.0, 56.0, 10, 25).diagnosis == "NOR"


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, kwargs, words", [
    (("XYZ", 150), {"ef_percent": 60}, ["unknown diagnosis 'XYZ'", "NOR", "MINF", "DCM", "HCM", "RV"]),
    (("XYZ", 150), {"ef_percent": 3}, ["unknown diagnosis 'XYZ'"]),        # the diagnosis is checked first
    (("NOR", 150), {}, ["exactly one", "neither"]),
    (("NOR", 150), {"esv_ml": 60, "ef_percent": 60}, ["exactly one", "both"]),
    (("NOR", float("nan")), {"ef_percent": 60}, ["end-diastolic volume", "finite"]),
    (("NOR", 150), {"esv_ml": float("inf")}, ["end-systolic volume", "finite"]),
    (("NOR", 150), {"ef_percent": float("nan")}, ["ejection fraction", "finite"]),
    (("NOR", "lots"), {"ef_percent": 60}, ["end-diastolic volume", "must be a number", "'lots'"]),
    (("NOR", 30), {"ef_percent": 60}, ["end-diastolic volume", "30 ml", "40-500 ml"]),
    (("DCM", 520), {"ef_percent": 30}, ["end-diastolic volume", "520 ml", "40-500 ml"]),
    (("NOR", 150), {"esv_ml": 150}, ["end-systolic volume must be smaller than end-diastolic"]),
    (("NOR", 150), {"esv_ml": 180}, ["end-systolic volume must be smaller than end-diastolic", "180", "150"]),
    (("NOR", 150), {"esv_ml": 0}, ["end-systolic volume must be positive"]),
    (("NOR", 150), {"esv_ml": -10}, ["end-systolic volume must be positive"]),
    (("HCM", 150), {"ef_percent": 90}, ["ejection fraction 90 %", "5-85 %"]),
    (("DCM", 300), {"ef_percent": 3}, ["ejection fraction 3 %", "5-85 %"]),
    (("HCM", 100), {"esv_ml": 10}, ["ejection fraction 90 %", "ESV 10 ml", "5-85 %"]),       # derived EF
    (("NOR", 150), {"ef_percent": 60, "slices": 5}, ["number of slices 5", "6-16", "16 slices deep"]),
    (("NOR", 150), {"ef_percent": 60, "slices": 17}, ["number of slices 17", "6-16"]),
    (("NOR", 150), {"ef_percent": 60, "slices": 10.5}, ["number of slices", "whole number"]),
    (("NOR", 150), {"ef_percent": 60, "frames": 9}, ["number of frames 9", "10-50"]),
    (("NOR", 150), {"ef_percent": 60, "frames": 51}, ["number of frames 51", "10-50"]),
])
def test_each_refusal_names_the_problem_and_the_expectation(args, kwargs, words):
    with pytest.raises(ValueError) as caught:
        make_request(*args, **kwargs)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


@pytest.mark.parametrize("diagnosis, edv, ef, words", [
    ("NOR", 150, 25, ["NOR (normal) contradicts", "EF 25 % is reduced", "at least 50 %"]),
    ("NOR", 250, 60, ["NOR (normal) contradicts", "EDV 250 ml is dilated", "198 ml"]),
    ("DCM", 230, 65, ["DCM (dilated cardiomyopathy) contradicts", "EF 65 % is not reduced", "below 45 %"]),
    ("DCM", 140, 30, ["DCM", "EDV 140 ml is not dilated", "160 ml"]),
    ("HCM", 110, 30, ["HCM (hypertrophic cardiomyopathy) contradicts", "EF 30 % is reduced", "at least 50 %"]),
    ("MINF", 180, 60, ["MINF (myocardial infarction) contradicts", "EF 60 % is preserved", "below 50 %"]),
    ("RV", 260, 30, ["RV (abnormal right ventricle) contradicts", "dilated cardiomyopathy (DCM)"]),
])
def test_a_diagnosis_contradicting_the_volumes_is_refused(diagnosis, edv, ef, words):
    with pytest.raises(ValueError) as caught:
        make_request(diagnosis, edv, ef_percent=ef)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


@pytest.mark.parametrize("diagnosis, edv, ef", [
    ("NOR", 198, 50),       # upper-normal EDV at BSA 2.2, lowest normal EF
    ("DCM", 160, 44),       # ACDC's 100 ml/m² at BSA 1.6, EF just below Mestroni's 45 %
    ("MINF", 120, 49),      # mildly reduced EF, non-dilated
    ("HCM", 90, 50),
    ("RV", 220, 30),        # LV not dilated at BSA 2.2
    ("RV", 300, 40),        # dilated LV but EF not reduced below 40 %
])
def test_borderline_patients_are_not_refused(diagnosis, edv, ef):
    make_request(diagnosis, edv, ef_percent=ef)


# -- training ranges -----------------------------------------------------------------------------
def test_training_ranges_are_the_phantom_presets():
    """Every patient the phantom draws lies in TRAINING_RANGES (a drift in presets.py shows here)."""
    from meddiffusion.phantoms.presets import sample_params

    assert set(TRAINING_RANGES) == set(DIAGNOSIS_IDS)
    for preset, ranges in TRAINING_RANGES.items():
        edv = [sample_params(preset, seed).heart.edv_ml for seed in range(150)]
        ef = [100 * sample_params(preset, seed).heart.ef for seed in range(150)]
        for drawn, (low, high) in ((edv, ranges["edv_ml"]), (ef, ranges["ef_percent"])):
            assert low <= min(drawn) and max(drawn) <= high, (preset, low, high, min(drawn), max(drawn))
            assert min(drawn) < low + 0.1 * (high - low) and max(drawn) > high - 0.1 * (high - low), preset


@pytest.mark.parametrize("diagnosis", sorted(TRAINING_RANGES))
def test_no_training_patient_is_refused_or_warned(diagnosis):
    ranges = TRAINING_RANGES[diagnosis]
    for edv in ranges["edv_ml"]:
        for ef in ranges["ef_percent"]:
            assert outside_training(make_request(diagnosis, edv, ef_percent=ef)) == []
    (edv_lo, edv_hi), (ef_lo, ef_hi) = ranges["edv_ml"], ranges["ef_percent"]
    for edv in (edv_lo * (1 - TRAINING_MARGIN), edv_hi * (1 + TRAINING_MARGIN)):
        for ef in (ef_lo * (1 - TRAINING_MARGIN), min(85.0, ef_hi * (1 + TRAINING_MARGIN))):
            make_request(diagnosis, edv, ef_percent=ef)


def test_outside_training_warns_with_the_range():
    request = make_request("DCM", 400, ef_percent=25)
    assert outside_training(request) == [
        "EDV 400 ml is outside the DCM training range 220-320 ml: the model extrapolates"]
    request = make_request("DCM", 230, ef_percent=42)
    assert outside_training(request) == [
        "EF 42 % is outside the DCM training range 15-35 %: the model extrapolates"]
    both = outside_training(make_request("NOR", 60, ef_percent=80))
    assert len(both) == 2 and both[0].startswith("EDV 60 ml") and both[1].startswith("EF 80 %")


def test_a_stack_shorter_or_longer_than_the_groups_training_stacks_warns():
    assert outside_training(make_request("DCM", 280, ef_percent=25, slices=10)) == []
    assert outside_training(make_request("DCM", 280, ef_percent=25, slices=9)) == [
        "9 slices is outside the DCM training stacks' 10-14 slices (the stack covers the heart): the model "
        "extrapolates"]
    assert outside_training(make_request("NOR", 140, ef_percent=62, slices=9)) == []
    assert outside_training(make_request("HCM", 110, ef_percent=70, slices=14))[0].startswith("14 slices")


def test_within_the_margin_there_is_no_warning():
    assert outside_training(make_request("DCM", 340, ef_percent=37)) == []      # 320 · 1.0625, 35 · 1.057
    assert math.isclose(TRAINING_MARGIN, 0.10)
    assert outside_training(make_request("DCM", 355, ef_percent=30))             # 320 · 1.11
