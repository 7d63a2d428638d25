"""LV reorientation and the 17-segment polar map of MPI SPECT against the phantom's truth.

Phantom activity is rendered on a clinical 64×64×48 grid of 6.4 mm voxels and blurred to
~12 mm FWHM like a reconstruction; a crude non-attenuation-corrected version multiplies it by
the mean transmission over a 180° orbit (RAO to LPO), which depresses the inferior wall.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import ndimage

from meddiffusion.io import Volume
from meddiffusion.phantoms import Grid, Phantom, render_spect
from meddiffusion.tasks.spect.bullseye import bullseye_picture
from meddiffusion.tasks.spect.polarmap import (NORMAL_PERCENT, SEGMENTS, TERRITORY, categories, compare, polar_map,
                                               segment_of)
from meddiffusion.tasks.spect.reorient import LVFrame, fit_lv, long_axis_volumes, short_axis_volume

VOXEL_MM = 6.4
FWHM_MM = 12.0
GRID = Grid.centred((64, 64, 48), (VOXEL_MM,) * 3, (0.0, 0.0, 0.0))


@functools.lru_cache(maxsize=None)
def phantom(preset: str, seed: int, defect: str | None = None) -> Phantom:
    return Phantom.sample(preset, seed=seed, defect=defect)


@functools.lru_cache(maxsize=None)
def spect(preset: str, seed: int, defect: str | None = None) -> tuple[Volume, Volume]:
    """(activity blurred to SPECT resolution, μ-map) of a phantom at end-diastole."""
    activity, mu = render_spect(phantom(preset, seed, defect), GRID, 0.0)
    sigma = FWHM_MM / (2 * math.sqrt(2 * math.log(2))) / VOXEL_MM
    activity.array[:] = ndimage.gaussian_filter(activity.array, sigma)
    return activity, mu


@functools.lru_cache(maxsize=None)
def fitted(preset: str, seed: int, defect: str | None = None) -> LVFrame:
    return fit_lv(spect(preset, seed, defect)[0])


def nac(activity: Volume, mu: Volume, views: int = 8) -> Volume:
    """Activity × the mean transmission toward a camera orbiting 180° from RAO 45° to LPO 45°."""
    step_cm = VOXEL_MM / 10.0
    total = np.zeros_like(activity.array)
    for angle in np.linspace(-45.0, 135.0, views):
        turned = ndimage.rotate(mu.array, angle, axes=(1, 2), reshape=False, order=1)
        # the camera sits anterior (−y, row 0) of the turned volume: path from each voxel to row 0
        path = np.cumsum(turned, axis=1) - 0.5 * turned
        total += ndimage.rotate(np.exp(-path * step_cm), -angle, axes=(1, 2), reshape=False, order=1, cval=1.0)
    return activity.with_array((activity.array * total / views).astype(np.float32))


def truth(ph: Phantom) -> dict:
    h = ph.heart
    st = h.state(0.0)
    base = st.apex + h.base_height * h.e_h
    return {"axis": -h.e_h, "centre": 0.5 * (st.apex + base), "septal": h.e1}


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(a @ b, -1.0, 1.0))))


# -- reorientation -----------------------------------------------------------------------------
FITS = [("NOR", 0), ("DCM", 1), ("HCM", 2), ("RV", 3), ("MINF", 2)]


@pytest.mark.parametrize("preset,seed", FITS)
def test_fit_recovers_long_axis_and_centre(preset, seed):
    frame = fitted(preset, seed)
    want = truth(phantom(preset, seed))
    assert angle_deg(frame.long_axis, want["axis"]) < 10.0
    assert np.linalg.norm(frame.centre - want["centre"]) < VOXEL_MM
    # septum from anatomy: within the phantom's roll (±10°) of the true septal direction
    assert angle_deg(frame.septal, want["septal"]) < 15.0
    assert abs(frame.septal @ frame.long_axis) < 1e-9
    assert np.linalg.norm(frame.base - frame.apex) == pytest.approx(frame.length_mm)


def test_fit_on_nac_matches_the_truth():
    """The depressed inferior wall of NAC does not tilt the axis: fit once, sample both."""
    activity, mu = spect("NOR", 0)
    uncorrected = nac(activity, mu)
    frame = fit_lv(uncorrected)
    want = truth(phantom("NOR", 0))
    assert angle_deg(frame.long_axis, want["axis"]) < 10.0
    assert np.linalg.norm(frame.centre - want["centre"]) < VOXEL_MM
    # and the NAC polar map shows the classic inferior attenuation artefact
    pm = polar_map(uncorrected, frame)
    assert pm.percent[[3, 9]].mean() < pm.percent[[0, 6]].mean()


@pytest.mark.parametrize("make", [
    lambda: np.zeros((48, 64, 64), np.float32),
    lambda: np.random.default_rng(0).poisson(20.0, (48, 64, 64)).astype(np.float32),
    lambda: (np.hypot(*np.ogrid[-32:32, -32:32]) < 25).astype(np.float32)[None].repeat(48, 0) * 5.0,
], ids=["empty", "noise", "cylinder"])
def test_no_heart_is_refused(make):
    volume = Volume(make(), (VOXEL_MM,) * 3, modality="NM")
    with pytest.raises(ValueError, match="no left-ventricular myocardium found: .*myocardial perfusion SPECT"):
        fit_lv(volume)


def test_frame_round_trips_and_reoriented_volumes():
    activity, _ = spect("NOR", 0)
    frame = fitted("NOR", 0)
    again = LVFrame.from_dict(frame.to_dict())
    assert np.allclose(again.long_axis, frame.long_axis, atol=1e-4)
    sa = short_axis_volume(activity, frame)
    d = np.asarray(sa.direction).reshape(3, 3)
    assert np.allclose(d @ d.T, np.eye(3), atol=1e-9) and np.linalg.det(d) > 0
    assert np.allclose(d[:, 2], -frame.long_axis)                  # slices run apex -> base
    # the mid SA slice is a ring: hot wall, cold centre
    mid = sa.array[sa.shape[0] // 2]
    c = mid.shape[0] // 2
    assert mid[c, c] < 0.5 * mid.max()
    assert sa.index_to_physical((0, c, c)) @ frame.long_axis > frame.apex @ frame.long_axis
    las = long_axis_volumes(activity, frame)
    assert set(las) == {"vla", "hla"}
    for vol in las.values():
        m = np.asarray(vol.direction).reshape(3, 3)
        assert np.allclose(m @ m.T, np.eye(3), atol=1e-9) and np.linalg.det(m) > 0


# -- polar map ---------------------------------------------------------------------------------
def test_segments_and_territories_follow_aha():
    assert len(SEGMENTS) == 17 and SEGMENTS[0] == "basal anterior" and SEGMENTS[16] == "apex"
    assert sorted(n for n, t in TERRITORY.items() if t == "LAD") == [1, 2, 7, 8, 13, 14, 17]
    assert sorted(n for n, t in TERRITORY.items() if t == "RCA") == [3, 4, 9, 10, 15]
    assert sorted(n for n, t in TERRITORY.items() if t == "LCX") == [5, 6, 11, 12, 16]
    psi = np.array([30.0, 90.0, 150.0, 210.0, 270.0, 330.0])
    assert segment_of(np.full(6, 0.9), psi, np.zeros(6, bool)).tolist() == [2, 1, 6, 5, 4, 3]
    assert segment_of(np.full(6, 0.5), psi, np.zeros(6, bool)).tolist() == [8, 7, 12, 11, 10, 9]
    assert segment_of(np.full(4, 0.1), np.array([0.0, 90, 180, 270]), np.zeros(4, bool)).tolist() == [14, 13, 16, 15]
    assert categories(np.array([85.0, 70.0, 69.9, 50.0, 49.9])) == [
        "normal", "normal", "mildly reduced", "mildly reduced", "severely reduced"]


@pytest.mark.parametrize("preset,seed", [("NOR", 0), ("DCM", 1), ("HCM", 2)])
def test_no_defect_all_segments_normal(preset, seed):
    pm = polar_map(spect(preset, seed)[0], fitted(preset, seed))
    assert pm.image.shape == pm.segments.shape
    assert set(np.unique(pm.segments)) == set(range(1, 18))
    assert np.all(pm.percent >= NORMAL_PERCENT), pm.percent.round(1)


def defect_coverage(ph: Phantom, start: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    """Per AHA segment: the share of its wall inside the phantom's defect region, and whether
    all of it lies more than 10 mm clear of that region.

    Segments are laid on the phantom's material coordinates as the polar map lays them on
    the image: cap below ``start`` of the base height, thirds above it.
    """
    heart = ph.heart
    region = ph.params.heart.defect.region
    phi, h = np.meshgrid(np.radians(np.arange(-179.0, 180.0, 2.0)), np.linspace(0.0, heart.base_height, 120))
    import torch
    d = heart._region_distance(torch.tensor(phi), torch.tensor(h), region).numpy()
    f = h / heart.base_height
    seg = segment_of((f - start) / (1 - start), np.degrees(heart.ant_sign * phi), f < start)
    inside = np.array([(d[seg == n] < 0).mean() for n in range(1, 18)])
    clear = np.array([(d[seg == n] > 10.0).all() for n in range(1, 18)])
    return inside, clear


@pytest.mark.parametrize("territory,seed", [("LAD", 1), ("LCX", 2), ("RCA", 3)])
def test_defect_lowers_its_territory(territory, seed):
    activity, _ = spect("NOR", seed, territory)
    pm = polar_map(activity, fit_lv(activity))
    inside, clear = defect_coverage(phantom("NOR", seed, territory))
    lowest = np.argsort(pm.percent)[:3] + 1
    assert all(TERRITORY[int(n)] == territory for n in lowest), (lowest, pm.percent.round(1))
    mostly = inside >= 0.5
    assert mostly.sum() >= 3
    assert np.all(pm.percent[mostly] < NORMAL_PERCENT), (np.nonzero(mostly)[0] + 1, pm.percent.round(1))
    assert np.all(pm.percent[clear] >= NORMAL_PERCENT), (np.nonzero(clear)[0] + 1, pm.percent.round(1))
    others = [n for n in range(1, 18) if TERRITORY[n] != territory and clear[n - 1]]
    assert len(others) >= 4


def test_compare_flags_category_changes_and_bullseye_picture():
    normal, _ = spect("NOR", 3)
    defect, _ = spect("NOR", 3, "RCA")
    frame = fit_lv(defect)
    before, after = polar_map(normal, frame), polar_map(defect, frame)
    rows = compare(before, after, names=("rest", "stress"))
    assert [r["segment"] for r in rows] == list(range(1, 18))
    changed = {r["segment"] for r in rows if r["changed"]}
    assert {4, 10} <= changed and 7 not in changed
    row = rows[3]
    assert row["name"] == "basal inferior" and row["territory"] == "RCA"
    assert row["rest category"] == "normal" and row["stress category"] != "normal"
    assert row["rest %"] == pytest.approx(before.percent[3], abs=0.05)
    picture = bullseye_picture({"rest": before, "stress": after}, title="NOR 3")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[1] > 1.5 * picture.shape[0]                   # two maps side by side
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 50        # colours, not a blank canvas
    single = bullseye_picture({"AC": after})
    assert single.shape[0] == picture.shape[0] and single.shape[1] < picture.shape[1]
