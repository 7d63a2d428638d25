"""The SPECT bench's polar-map figures on segment values whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from meddiffusion.tasks.spect.bench import segment_figures
from meddiffusion.tasks.spect.polarmap import TERRITORY


def _segments(territory: str) -> list[int]:
    return [k - 1 for k, t in TERRITORY.items() if t == territory]


def test_false_defects_count_reduced_segments_of_a_patient_without_a_defect():
    reference = np.full(17, 85.0)
    reference[1] = 65.0                      # a basal segment the reference itself reads reduced: not false
    row = reference.copy()
    row[[3, 9]] = 60.0                       # the inferior wall reads reduced: two false defect segments
    row[1] = 75.0
    figures = segment_figures(row, reference, defect=False)
    assert figures["false_defects"] == 2
    assert figures["defect_segments"] is None and figures["defects"] is None
    assert figures["segment_mae"] == pytest.approx((25 + 25 + 10) / 17)


def test_true_defects_are_counted_by_segment_and_by_territory():
    reference = np.full(17, 85.0)
    lad, lcx = _segments("LAD"), _segments("LCX")
    reference[lad[:3]] = 55.0                # the LAD defect shows in three segments
    reference[lcx[0]] = 68.0                 # a scar in the LCX territory, one segment
    reference[_segments("RCA")[0]] = 69.0    # a reduced basal segment outside any true territory
    row = reference.copy()
    row[lad[0]] = 72.0                       # one LAD segment now reads normal: the LAD defect is still seen
    row[lcx[0]] = 71.0                       # the LCX scar vanishes
    figures = segment_figures(row, reference, defect=True, territories={"LAD", "LCX"})
    assert figures["defect_segments"] == 5 and figures["defect_kept"] == 3
    assert figures["defects"] == 2 and figures["defects_kept"] == 1
    assert figures["false_defects"] is None
    none_shown = segment_figures(row, np.full(17, 85.0), defect=True, territories={"LAD"})
    assert none_shown["defects"] == 0 and none_shown["defect_segments"] == 0
