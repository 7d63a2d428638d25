"""Phantom features behind attenuation artefacts in perfusion SPECT: breasts, diaphragm, gut, rest/stress."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from meddiffusion.phantoms import LABELS, Grid, Phantom, render_spect, sample_params
from meddiffusion.phantoms.thorax import ThoraxParams

torch.set_num_threads(2)
GRID = Grid.centred((64, 64, 48), (6.0, 6.0, 6.0), (0.0, 0.0, -10.0))
#: label map of NOR seed 3 on GRID, recorded before breasts, diaphragm raise and gut uptake existed
NOR3_LABELS_SHA = "edc1ac83d503054c"


def _phantom(seed: int = 3, preset: str = "NOR", **thorax) -> Phantom:
    params = sample_params(preset, seed)
    for name, value in thorax.items():
        setattr(params.thorax, name, value)
    return Phantom(params)


def _centroid(mask: np.ndarray) -> np.ndarray:
    """Mean LPS position (x, y, z) of a mask on GRID."""
    zyx = np.argwhere(mask).mean(axis=0)
    return GRID.index_to_world(zyx[::-1])


def test_defaults_reproduce_the_previous_phantom():
    labels = _phantom().labels(GRID).array
    assert hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()[:16] == NOR3_LABELS_SHA
    explicit = _phantom(sex="male", breast_mm=0.0, diaphragm_mm=0.0, gut_uptake=1.0, bowel_loop=False)
    assert np.array_equal(explicit.labels(GRID).array, labels)
    a, b = render_spect(_phantom(), GRID), render_spect(explicit, GRID)
    assert all(np.array_equal(x.array, y.array) for x, y in zip(a, b))


def test_breasts_only_for_women_and_anterior_to_the_heart():
    with pytest.raises(ValueError, match="0 for men"):
        ThoraxParams(sex="male", breast_mm=40.0).validate()
    male = _phantom().labels(GRID).array
    assert not (male == LABELS["breast"]).any()
    female = _phantom(sex="female", breast_mm=60.0, breast_ptosis_mm=20.0).labels(GRID).array
    breast = female == LABELS["breast"]
    assert breast.sum() * 0.216 > 300          # ml: two breasts of several hundred ml
    heart = _centroid(female == LABELS["lv_myocardium"])
    left = _centroid(breast & (np.arange(64)[None, None, :] >= 32))
    right = _centroid(breast & (np.arange(64)[None, None, :] < 32))
    assert left[1] < heart[1] - 60 and right[1] < heart[1] - 60      # anterior (y is posterior)
    assert left[0] > 30 and right[0] < -30                            # one on each side
    _, mu = render_spect(_phantom(sex="female", breast_mm=60.0), GRID)
    assert np.median(mu.array[breast]) == pytest.approx(0.153 * 0.97, abs=0.006)


def test_diaphragm_raise_moves_the_liver_up():
    def liver_top(phantom):
        labels = phantom.labels(GRID).array
        slices = np.nonzero((labels == LABELS["liver"]).any(axis=(1, 2)))[0]
        return GRID.index_to_world(np.array([0, 0, slices.max()]))[2]

    assert liver_top(_phantom(diaphragm_mm=24.0)) - liver_top(_phantom()) == pytest.approx(24.0, abs=6.0)


def test_gut_uptake_scales_liver_and_bowel_and_loop_sits_under_the_heart():
    base, gut = _phantom(), _phantom(gut_uptake=2.0, bowel_loop=True)
    labels = gut.labels(GRID).array
    a0, _ = render_spect(base, GRID)
    a1, _ = render_spect(gut, GRID)
    deep_liver = (labels == LABELS["liver"]) & (base.labels(GRID).array == LABELS["liver"])
    assert np.median(a1.array[deep_liver] / a0.array[deep_liver]) == pytest.approx(2.0, rel=0.02)
    loop = (labels == LABELS["bowel"]) & (base.labels(GRID).array != LABELS["bowel"])
    assert loop.sum() > 10
    heart = _centroid(labels == LABELS["lv_myocardium"])
    assert 0 < heart[2] - _centroid(loop)[2] < 90                     # below the heart, within 9 cm


def test_rest_and_stress_differ_only_in_the_defect():
    params = sample_params("MINF", 4, defect="LAD", defect_severity=0.6)
    phantom = Phantom(params)
    stress, mu_s = render_spect(phantom, GRID, stress=True)
    rest, mu_r = render_spect(phantom, GRID, stress=False)
    assert np.array_equal(mu_s.array, mu_r.array)
    changed = np.abs(stress.array - rest.array) > 1e-4
    assert changed.any() and (rest.array >= stress.array - 1e-4).all()
    labels = phantom.labels(GRID).array
    myo = (labels == LABELS["lv_myocardium"]) | (labels == LABELS["infarct"])
    near = torch.nn.functional.max_pool3d(torch.tensor(myo[None, None], dtype=torch.float32), 3, 1, 1)[0, 0] > 0
    assert not (changed & ~near.numpy()).any()                        # only at the LV wall
    assert np.array_equal(render_spect(phantom, GRID, stress=True)[0].array, stress.array)   # cache keeps both
    no_defect = copy.deepcopy(params)
    no_defect.heart.defect = None
    plain = Phantom(no_defect)
    assert np.array_equal(render_spect(plain, GRID, stress=True)[0].array,
                          render_spect(plain, GRID, stress=False)[0].array)
