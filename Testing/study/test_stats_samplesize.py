"""Sample-size estimates against RJafroc and against an independent noncentral-t computation."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import TTestPower

from meddiffusion.study import samplesize

# Obuchowski–Rockette components of the Van Dyke pilot (114 cases), as in RJafroc's
# SsPowerGivenJK documentation (example 4A) and OR-DBM MRMC 2.5's output
VAN_DYKE = {"var_tr": 0.00020040252, "cov1": 0.00034661371, "cov2": 0.00034407483,
            "cov3": 0.00023902837, "var": 0.00080228827}


def test_or_power_matches_rjafroc_for_the_van_dyke_pilot():
    """RJafroc tests/testthat/test-SsSampleSizeRoc.R: SsPowerGivenJK(dataset02, method = "OR",
    effectSize = -0.043800322, J = 10, K = 165) → powerRRRC 0.80541995 (Hillis et al. 2011, eq. 10)."""
    power = samplesize.or_power(-0.043800322, 10, 165, 114, **VAN_DYKE)
    assert power == pytest.approx(0.80541995, abs=1e-7)


def test_or_cases_is_the_smallest_number_reaching_the_power():
    k = samplesize.or_cases(-0.043800322, 10, 114, VAN_DYKE)
    assert k <= 165
    assert samplesize.or_power(-0.043800322, 10, k, 114, **VAN_DYKE) >= 0.8
    assert samplesize.or_power(-0.043800322, 10, k - 1, 114, **VAN_DYKE) < 0.8
    assert samplesize.or_cases(0.001, 2, 114, VAN_DYKE) is None  # Var(T×R) alone is too large


def test_paired_likert_cases_is_the_t_test_size_over_the_wilcoxon_efficiency():
    n = samplesize.paired_likert_cases(0.5, 1.0)
    n_t = TTestPower().solve_power(effect_size=0.5, alpha=0.05, power=0.8)  # statsmodels: 33.37 pairs
    assert math.ceil(n_t) == 34 and n == math.ceil(34 * math.pi / 3)
    assert samplesize.paired_t_power(0.5, 34) == pytest.approx(TTestPower().power(0.5, 34, 0.05), abs=1e-9)
    assert samplesize.paired_t_power(60.0, 3) == pytest.approx(1.0)  # where scipy's tails give NaN
    assert samplesize.paired_likert_cases(0.0, 1.0) is None


def test_paired_likert_cases_never_below_what_the_exact_test_needs():
    assert samplesize.paired_likert_cases(2.0, 0.5) == 6  # 2/2⁶ < 0.05 ≤ 2/2⁵


def test_planning_lines_plan_for_the_observed_difference_against_the_reference_only():
    likert_rows = [
        {"test": "Wilcoxon signed-rank", "question": "q", "criterion": "noise", "first": "original", "second": "B",
         "difference": 0.9, "sd_difference": 1.0},
        {"test": "Wilcoxon signed-rank", "question": "q", "criterion": "noise", "first": "original", "second": "C",
         "difference": 0.02, "sd_difference": 1.0},
        {"test": "Wilcoxon signed-rank", "question": "q", "criterion": "noise", "first": "B", "second": "C",
         "difference": -0.9, "sd_difference": 1.0},
        {"test": "Friedman", "question": "q", "criterion": "noise", "first": "all methods", "second": None},
    ]
    mrmc_rows = [{"question": "d", "criterion": "lesion", "comparison": "all methods equal", "n_readers": 5},
                 {"question": "d", "criterion": "lesion", "comparison": "difference", "first": "original",
                  "second": "cine", "difference": 0.043800322, "n_readers": 5, "n_cases": 114, **VAN_DYKE}]
    lines = samplesize.planning_lines(likert_rows, mrmc_rows)
    assert len(lines) == 3
    assert f"about {samplesize.paired_likert_cases(0.9, 1.0)} cases" in lines[0] and "+0.90" in lines[0]
    assert "a 0.5-point difference (observed +0.02)" in lines[1]
    k = samplesize.or_cases(0.043800322, 5, 114, VAN_DYKE)
    assert lines[2].startswith("lesion, cine vs original") and f"5 readers need about {k} cases" in lines[2]
