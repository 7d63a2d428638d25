"""PET physics for PETMRDenoise: thinning, OSEM with attenuation correction, dose and noise, subjects, command."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from meddiffusion.physics.brain import brain_subject
from meddiffusion.physics.pet import (BACKGROUND_LABEL, PetProtocol, acquire, attenuation, forward, reconstruct,
                                      simulate_pet_subject, thin)
from meddiffusion.progress import Progress

#: a small protocol: 64² × 8 slices of 4 mm, 64 views, enough OSEM updates to converge
SMALL = PetProtocol(voxel_mm=4.0, matrix=64, slices=8, views=64, counts=3e6, iterations=6, subsets=8,
                    psf_fwhm_mm=5.0, postfilter_fwhm_mm=6.0)
#: a small brain or thorax: 4 mm voxels, 64² × 48 slices, two doses
TINY = replace(SMALL, slices=48, counts=2e7, iterations=2, drf_train=(4,), drf_heldout=(10,), frames=1)
#: the thorax needs a 512 mm field: 8 mm voxels
TINY_THORAX = replace(TINY, voxel_mm=8.0, slices=24, psf_fwhm_mm=8.0, postfilter_fwhm_mm=8.0)
RADIUS_MM = 100.0


def _cylinder(protocol: PetProtocol):
    n = protocol.matrix
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.hypot(x, y) * protocol.voxel_mm
    inside = np.broadcast_to(r < RADIUS_MM, (protocol.slices, n, n)).astype(np.float32)
    return r, inside, 0.096 * inside


def _central(image: np.ndarray, r: np.ndarray, radius: float = 60.0) -> np.ndarray:
    return image[2:-2][:, r < radius]                      # away from the axial ends and the edge


def test_thinning_is_poisson_of_the_reduced_mean():
    rng = np.random.default_rng(0)
    lam = np.repeat([0.5, 4.0, 30.0], 200_000)
    prompts = rng.poisson(lam).astype(np.float64)
    for drf in (4, 10):
        low = thin(prompts, drf, rng).reshape(3, -1)
        for k, value in enumerate((0.5, 4.0, 30.0)):
            expected = value / drf
            assert low[k].mean() == pytest.approx(expected, rel=0.02)
            assert low[k].var() / low[k].mean() == pytest.approx(1.0, abs=0.03)     # Poisson, not binomial
            assert (low[k] == 0).mean() == pytest.approx(np.exp(-expected), abs=0.005)


def test_osem_with_attenuation_correction_recovers_a_uniform_cylinder():
    r, activity, mu = _cylinder(SMALL)
    att = attenuation(mu, SMALL)
    centre = att.reshape(SMALL.views, SMALL.matrix, -1)[:, SMALL.matrix // 2, 4]
    assert centre.mean() == pytest.approx(np.exp(-0.096 * 2 * RADIUS_MM / 10.0), rel=0.03)   # through the axis
    acq = acquire(activity, mu, SMALL, np.random.default_rng(1))
    acq.prompts = att * forward(activity, SMALL) * acq.scale + acq.additive      # the noise-free data
    image = reconstruct(acq.prompts, acq, replace(SMALL, iterations=10), postfilter=False)
    assert _central(image, r).mean() == pytest.approx(1.0, abs=0.02)
    assert _central(image, r).std() < 0.02                                       # flat: attenuation undone
    assert image[:, r > RADIUS_MM + 20].max() < 0.05


def test_low_counts_are_noisier_with_the_same_mean():
    r, activity, mu = _cylinder(SMALL)
    rng = np.random.default_rng(2)
    acq = acquire(activity, mu, SMALL, rng)
    assert acq.prompts.sum() == pytest.approx(SMALL.counts / (1 - SMALL.scatter_fraction - SMALL.randoms_fraction),
                                              rel=0.01)
    full = _central(reconstruct(acq.prompts, acq, SMALL), r)
    cov = {1: full.std() / full.mean()}
    for drf in (4, 10):
        low = _central(reconstruct(thin(acq.prompts, drf, rng), acq, SMALL, drf=drf), r)
        assert low.mean() == pytest.approx(full.mean(), rel=0.03)                 # SUV does not depend on dose
        cov[drf] = low.std() / low.mean()
    assert full.mean() == pytest.approx(1.0, abs=0.03)
    for drf in (4, 10):
        assert cov[drf] / cov[1] == pytest.approx(np.sqrt(drf), rel=0.35)


def test_brain_subjects_have_real_anatomy_lesions_and_vary_with_the_seed():
    a = brain_subject(3)
    f, activity, labels = a.fractions, a.activity.array, a.lesions.array
    free = labels == 0
    design = np.stack([f[k][free] for k in ("gm", "wm", "csf", "bone", "scalp")], 1)
    coef = np.linalg.lstsq(design, activity[free], rcond=None)[0]
    assert coef[0] / coef[1] == pytest.approx(a.info["suv"]["gm_wm_ratio"], rel=0.05)
    assert 3.5 < coef[0] / coef[1] < 4.5                                          # grey ≈ 4 × white
    gm, wm = free & (f["gm"] > 0.9), free & (f["wm"] > 0.97)
    assert activity[gm].mean() > 2.8 * activity[wm].mean()
    assert a.mr.array[wm].mean() > a.mr.array[gm].mean() > a.mr.array[free & (f["csf"] > 0.9)].mean()
    assert a.mu.array.max() == pytest.approx(0.150, abs=0.003) and a.mu.array.min() == 0.0
    assert a.info["lesions"], "at least one lesion"
    for lesion in a.info["lesions"]:
        inside = labels == lesion["label"]
        assert inside.sum() == lesion["voxels"] > 0
        assert np.allclose(activity[inside], lesion["suv"], rtol=1e-4)
        assert (lesion["suv"] > lesion["background_suv"]) == (lesion["type"] == "hyper")
    assert (labels == BACKGROUND_LABEL).sum() > 100
    again, other = brain_subject(3), brain_subject(4)
    assert np.array_equal(again.activity.array, activity) and np.array_equal(again.mr.array, a.mr.array)
    assert np.abs(other.fractions["gm"] - f["gm"]).mean() > 0.05                 # other anatomy


@pytest.mark.parametrize("kind", ["brain", "thorax"])
def test_subject_images_share_the_grid_and_state_their_units(kind):
    s = simulate_pet_subject(kind, 5, TINY if kind == "brain" else TINY_THORAX)
    assert set(s.low) == {4, 10} and s.info["drf_heldout"] == [10]
    for volume in (s.full, *s.low.values(), s.activity):
        assert (volume.modality, volume.units, volume.metadata["units"]) == ("PT", "SUV", "SUV")
    assert s.mu.units == "1/cm" and s.mr.modality == "MR" and s.lesions.units == "label"
    for volume in (s.full, *s.low.values(), s.mr, s.mu, s.lesions):
        assert (volume.shape, volume.spacing, volume.origin) == (s.activity.shape, s.activity.spacing,
                                                               s.activity.origin)
    body = s.activity.array > 0.5
    assert s.full.array[body].mean() == pytest.approx(s.activity.array[body].mean(), rel=0.15)
    assert s.low[10].array[body].mean() == pytest.approx(s.full.array[body].mean(), rel=0.05)
    labels = set(np.unique(s.lesions.array).astype(int)) - {0}
    assert labels == {r["label"] for r in s.info["lesions"]} | {BACKGROUND_LABEL}


def test_a_subject_wider_than_the_field_is_refused():
    with pytest.raises(ValueError, match="outside the 256 mm field of view"):
        simulate_pet_subject("thorax", 5, TINY)


def test_simulate_pet_command_writes_the_subject_folder(tmp_path, monkeypatch):
    from meddiffusion.commands import simulate_pet

    monkeypatch.setattr(PetProtocol, "for_kind", classmethod(lambda cls, kind, **changes: TINY))
    parser = argparse.ArgumentParser()
    simulate_pet.add_parser(parser.add_subparsers())
    out = tmp_path / "subject"
    args = parser.parse_args(["simulate-pet", "-o", str(out), "--kind", "brain", "--seed", "2", "--drf", "4", "10"])
    result = simulate_pet.run(args, Progress())
    names = {"full.nrrd", "low_drf4.nrrd", "low_drf10.nrrd", "mr.nrrd", "mumap.nrrd", "activity.nrrd",
             "lesions.nrrd", "subject.json"}
    assert {p.name for p in out.iterdir()} == names
    image = sitk.ReadImage(str(out / "low_drf10.nrrd"))
    assert image.GetMetaData("units") == "SUV" and image.GetMetaData("modality") == "PT"
    assert sitk.ReadImage(str(out / "mumap.nrrd")).GetMetaData("units") == "1/cm"
    info = json.loads((out / "subject.json").read_text(encoding="utf-8"))
    assert info["drf"] == [4, 10] and info["units"]["pet"] == "SUV (g/ml)" and "summary" in result
    with pytest.raises(ValueError, match="new or empty"):
        simulate_pet.run(args, Progress())
    with pytest.raises(ValueError, match="> 1"):
        simulate_pet.run(parser.parse_args(["simulate-pet", "-o", str(tmp_path / "x"), "--drf", "1"]), Progress())
    assert not (tmp_path / "x").exists()
