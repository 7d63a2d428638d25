"""SPECT acquisition and reconstruction (pytomography): attenuation correction, counts, Chang, HU→μ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiffusion.io import Volume
from meddiffusion.physics.spect import (SpectProtocol, chang_correction, hu_to_mu140, project, reconstruct,
                                        sample_spect_patient, simulate_study)
from meddiffusion.phantoms import LABELS, Phantom
from meddiffusion.phantoms.grid import Grid

torch.set_num_threads(2)
#: a small full-circle protocol: uniformity of a centred cylinder needs 360°
SMALL = SpectProtocol(matrix=32, pixel_mm=6.4, slices=6, views=32, orbit_deg=360.0, iterations=10, subsets=4,
                      postfilter_fwhm_mm=0.0, frames=1)
RADIUS_PX = 13


@pytest.fixture(scope="module")
def cylinder():
    """A uniform water cylinder (radius 83 mm) of uniform activity: NAC, AC and what they came from."""
    y, x = np.mgrid[:32, :32] - 15.5
    r = np.hypot(x, y)
    inside = np.broadcast_to(r < RADIUS_PX, (SMALL.slices, 32, 32))
    activity = inside.astype(np.float32)
    mu = 0.153 * activity
    data = project(activity, mu, SMALL)
    grid = Grid.centred((32, 32, SMALL.slices), (6.4, 6.4, 6.4))
    nac, ac = reconstruct(data, SMALL, None), reconstruct(data, SMALL, mu)
    return dict(r=r, mu=mu, data=data, grid=grid, nac=nac, ac=ac)


def _ring(image: np.ndarray, r: np.ndarray, lo: float, hi: float) -> float:
    mid = image[2:-2]                                   # away from the axial ends
    return float(mid[:, (r >= lo) & (r < hi)].mean())


def test_ac_recovers_a_uniform_cylinder_and_nac_does_not(cylinder):
    r, nac, ac = cylinder["r"], cylinder["nac"], cylinder["ac"]
    centre, edge = _ring(ac, r, 0, 3), _ring(ac, r, 7, 10)
    assert centre == pytest.approx(edge, rel=0.05)
    assert _ring(nac, r, 0, 3) < 0.85 * _ring(nac, r, 7, 10)            # the classic central depression
    assert 1.8 < centre / _ring(nac, r, 0, 3) < 4.0                    # AC/NAC at the centre: exp(0.153·8.3)/~1.2


def test_nac_and_ac_share_units(cylinder):
    """Each reconstruction reproduces the measured counts through its own model: same units."""
    total = cylinder["data"].sum()
    assert project(cylinder["nac"], None, SMALL).sum() == pytest.approx(total, rel=0.03)
    assert project(cylinder["ac"], cylinder["mu"], SMALL).sum() == pytest.approx(total, rel=0.03)


def test_chang_with_true_mu_flattens_the_cylinder(cylinder):
    r, grid = cylinder["r"], cylinder["grid"]
    nac = grid.volume(cylinder["nac"], modality="NM", units="counts")
    for mu in (grid.volume(cylinder["mu"], units="1/cm"), None):        # true μ, then the NAC's own outline
        corrected = chang_correction(nac, mu).array
        assert _ring(corrected, r, 0, 3) == pytest.approx(_ring(corrected, r, 7, 10), rel=0.12)
        assert corrected.shape == nac.shape


def test_hu_to_mu140_maps_air_water_bone_onto_the_spect_grid():
    hu = np.full((16, 64, 64), -1000.0, np.float32)
    hu[:, 8:56, 12:28] = 0.0
    hu[:, 8:56, 40:60] = 1000.0
    ct = Volume(hu, (3.2, 3.2, 3.2), (-100.8, -100.8, -24.0), modality="CT")
    target = Grid.centred((32, 32, 8), (6.4, 6.4, 6.4), (0.0, 0.0, 0.0)).volume(np.zeros((8, 32, 32)))
    mu = hu_to_mu140(ct, target)
    assert mu.shape == target.shape and mu.spacing == target.spacing and mu.origin == target.origin
    assert mu.units == "1/cm"
    assert mu.array[4, 16, 3] == pytest.approx(0.0, abs=1e-4)          # air (x = -80 mm)
    assert mu.array[4, 16, 10] == pytest.approx(0.153, abs=0.003)      # water (x = -35.2 mm)
    assert mu.array[4, 16, 25] == pytest.approx(0.153 * 1.63, abs=0.005)   # bone at 1000 HU (x = 60.8 mm)


def test_study_counts_units_and_determinism():
    protocol = SpectProtocol(matrix=32, pixel_mm=12.8, slices=12, views=16, counts=2e5, iterations=2, subsets=2,
                             postfilter_fwhm_mm=0.0, frames=1, ct_pixel_mm=6.4)
    params = sample_spect_patient(5, sex="female", breast_mm=50.0, defect="LAD", severity=0.6)
    phantom = Phantom(params)
    study = simulate_study(phantom, protocol, seed=3)
    assert study.info["counts"] == study.projections.sum()
    assert abs(study.info["counts"] - 2e5) < 5 * np.sqrt(2e5)          # Poisson around the protocol's counts
    assert study.nac.units == study.ac.units == "counts" and study.mu.units == "1/cm" and study.ct.units == "HU"
    assert study.ct.spacing == (6.4, 6.4, 6.4) and study.nac.spacing == (12.8, 12.8, 12.8)
    assert study.info["patient"]["sex"] == "female" and study.info["patient"]["defect"] == "LAD"
    again = simulate_study(phantom, protocol, seed=3)
    assert np.array_equal(again.nac.array, study.nac.array) and np.array_equal(again.ac.array, study.ac.array)
    body = study.mu.array > 0.05
    assert study.ac.array[body].mean() > 1.5 * study.nac.array[body].mean()


def test_sampler_draws_the_documented_population():
    patients = [sample_spect_patient(s) for s in range(60)]
    women = [p for p in patients if p.thorax.sex == "female"]
    assert 10 <= len(women) <= 40
    assert all(p.thorax.breast_mm > 0 for p in women)
    assert all(p.thorax.breast_mm == 0 for p in patients if p.thorax.sex == "male")
    assert 15 <= sum(p.heart.defect is not None for p in patients) <= 45
    assert all(0.25 <= p.heart.defect.severity <= 0.8 for p in patients if p.heart.defect is not None)
    assert any(p.thorax.half_width_mm > 175 for p in patients)         # some obese
    assert sample_spect_patient(9) == sample_spect_patient(9)
    with pytest.raises(ValueError, match="women"):
        sample_spect_patient(1, sex="male", breast_mm=40.0)
    assert LABELS["breast"] == 22
