"""ProDM's motion simulation engine: profiles, calcium detection and inpainting, per-view acquisition.

Independent references computed here:
- profile bounds and speeds by finite differences on a fine time grid, and each family's shape
  (a line through the gated position, the oscillator equation Δ'' = -ω²Δ, rests);
- per-view acquisition against ``project_views`` of a Gaussian blob rendered at each view's
  displaced position (the brute-force way: one moved image per view);
- a constant shift of one voxel must carry the calcium to the neighbouring voxel, along the
  axes the volume's direction matrix says;
- the full-FBP static image against FBP(R[μ(input)]) computed directly.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import meddiffusion
from meddiffusion.io import Volume, read_volume
from meddiffusion.metrics.agatston import agatston
from meddiffusion.phantoms import Grid, Phantom, Plaque, calcium_mask, render_ct
from meddiffusion.phantoms.presets import sample_params
from meddiffusion.physics.calcium import bone_mask, detect_calcium, heart_region, inpaint_calcium
from meddiffusion.physics.lowdose import hu_to_mu, mu_to_hu
from meddiffusion.physics.motion import ALLOWED_VIEWS, simulate_motion
from meddiffusion.physics.motion_profiles import (FAMILIES, PROFILES, MotionProfile, acquisition_times, get_profile,
                                                  profiles_table)
from meddiffusion.physics.radon import ParallelBeamGeometry, RadonTransform

DATA = Path(meddiffusion.__file__).parent / "data"
DURATION_S = acquisition_times(360)[1]
FINE_TIMES = np.linspace(0.0, DURATION_S, 20001)
BACKGROUND_HU = 40.0


def speeds(displacement: np.ndarray, times: np.ndarray = FINE_TIMES) -> np.ndarray:
    return np.linalg.norm(np.diff(displacement, axis=0), axis=1) / np.diff(times)


def constant_shift(direction, magnitude_mm: float) -> MotionProfile:
    """Calcium displaced by a fixed vector for the whole scan (a zero-length piecewise path)."""
    return MotionProfile(99, "piecewise", "fixed-offset", tuple(direction), magnitude_mm, 10.0,
                         waypoints=((1.0, 0.0, 0.0), (1.0, 0.0, 0.0)))


# -- profiles ---------------------------------------------------------------------------------------
def test_registry_has_21_profiles_in_four_families():
    assert [p.id for p in PROFILES] == list(range(21))
    assert {p.family for p in PROFILES} == set(FAMILIES)
    assert len({p.name for p in PROFILES}) == 21
    assert all(p.magnitude_mm > 0 and p.velocity_mm_s > 0 for p in PROFILES)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profile_is_seeded_and_respects_its_magnitude_and_velocity(profile):
    first = profile.displacement(FINE_TIMES, DURATION_S, seed=5)
    assert np.array_equal(first, profile.displacement(FINE_TIMES, DURATION_S, seed=5))
    random = isinstance(profile.direction, str) or profile.family in ("jitter", "oscillatory")
    assert (not np.array_equal(first, profile.displacement(FINE_TIMES, DURATION_S, seed=6))) == random
    assert np.linalg.norm(first, axis=1).max() <= profile.magnitude_mm + 1e-9
    assert np.linalg.norm(first, axis=1).max() >= 0.3 * profile.magnitude_mm
    top = speeds(first).max()
    assert 0.95 * profile.velocity_mm_s <= top <= profile.velocity_mm_s * (1 + 1e-6)


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.family == "translational"], ids=lambda p: p.name)
def test_translational_is_a_straight_drift_through_the_gated_position(profile):
    path = profile.displacement(FINE_TIMES, DURATION_S, seed=2)
    axis = path[-1] - path[0]
    axis /= np.linalg.norm(axis)
    along = path @ axis
    assert np.allclose(path, along[:, None] * axis, atol=1e-9)       # on one line
    assert np.all(np.diff(along) >= -1e-12)                           # never turns back
    assert abs(along[len(along) // 2]) < 1e-6                         # gated position at mid-scan


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.family == "oscillatory"], ids=lambda p: p.name)
def test_oscillatory_obeys_the_oscillator_equation(profile):
    times = np.linspace(0.0, DURATION_S, 4001)
    path = profile.displacement(times, DURATION_S, seed=3)
    dt = times[1] - times[0]
    acceleration = (path[2:] - 2 * path[1:-1] + path[:-2]) / dt**2
    omega = 2 * math.pi * profile.frequency_hz
    assert np.allclose(acceleration, -omega**2 * path[1:-1], atol=1e-3 * omega**2 * profile.magnitude_mm)
    if profile.circular:  # constant radius in the axial plane
        assert np.allclose(np.linalg.norm(path, axis=1), profile.magnitude_mm) and np.allclose(path[:, 2], 0)


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.family in ("jitter", "piecewise")], ids=lambda p: p.name)
def test_walks_move_at_their_velocity_and_only_piecewise_paths_rest(profile):
    v = speeds(profile.displacement(FINE_TIMES, DURATION_S, seed=4))
    at_speed = np.isclose(v, profile.velocity_mm_s, rtol=1e-6)
    resting = v < 1e-9
    assert (at_speed | resting).mean() > 0.99                         # only steps across a corner differ
    if profile.family == "jitter":
        assert not resting.any()
    else:                                                             # stop and go: the spare time rests
        length = profile.magnitude_mm * np.linalg.norm(np.diff(profile.waypoints, axis=0), axis=1).sum()
        spare = 1 - length / (profile.velocity_mm_s * DURATION_S)
        assert spare > 0.1 and resting.mean() == pytest.approx(spare, abs=0.01)


def test_profiles_table_lists_every_profile():
    lines = profiles_table().splitlines()
    assert len(lines) == 2 + 21
    for profile, line in zip(PROFILES, lines[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [str(profile.id), profile.family, profile.name]
        assert float(cells[4]) == profile.magnitude_mm and float(cells[5]) == profile.velocity_mm_s


@pytest.mark.parametrize("bad", [21, -1, "3", 2.0, True])
def test_unknown_profile_id_is_refused(bad):
    with pytest.raises(ValueError, match="motion profile must be an id 0-20"):
        get_profile(bad)


def test_invalid_profile_parameters_are_refused():
    with pytest.raises(ValueError, match="unit vector"):
        MotionProfile(0, "translational", "x", (1.0, 1.0, 0.0), 1.0, 10.0)
    with pytest.raises(ValueError, match="unit ball"):
        MotionProfile(0, "piecewise", "p", (1.0, 0.0, 0.0), 1.0, 10.0, waypoints=((0, 0, 0), (2, 0, 0)))
    with pytest.raises(ValueError, match="family"):
        MotionProfile(0, "helical", "h", (1.0, 0.0, 0.0), 1.0, 10.0)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        PROFILES[0].displacement(FINE_TIMES, DURATION_S, seed=-1)
    with pytest.raises(ValueError, match="times must lie in"):
        PROFILES[0].displacement([0.0, 2 * DURATION_S], DURATION_S)


# -- calcium detection and inpainting -----------------------------------------------------------------
@pytest.fixture(scope="module")
def sample():
    """The bundled gated sample (a phantom, 180 mm heart-centred field of view: spine, ribs and
    sternum in view) and the coronary region a reader would draw on it."""
    return read_volume(DATA / "sample_chest_ct.nrrd"), read_volume(DATA / "sample_chest_coronaries.nrrd").array > 0


def test_detection_without_labels_finds_the_coronary_lesions_and_no_bone(sample):
    ct, coronaries = sample
    found = detect_calcium(ct)
    scored_by_reader = agatston(ct.array, ct.spacing, mask=coronaries).label_map > 0
    assert scored_by_reader.sum() >= 10 and np.array_equal(found, scored_by_reader)
    dense_elsewhere = (ct.array >= 130) & ~coronaries                 # spine, ribs, sternum
    assert dense_elsewhere.sum() > 50_000 and not (found & dense_elsewhere).any()
    assert bone_mask(ct)[dense_elsewhere].mean() > 0.98


def test_heart_region_covers_the_coronaries_and_little_else(sample):
    ct, coronaries = sample
    region = heart_region(ct)
    assert region[coronaries].mean() > 0.95
    assert region.mean() < 0.35


def test_detection_keeps_to_a_given_region(sample):
    ct, coronaries = sample
    lesions = agatston(ct.array, ct.spacing, mask=coronaries).label_map
    region = ndimage.binary_dilation(lesions == 1, iterations=2)
    found = detect_calcium(ct, region)
    assert found.any() and np.array_equal(found, lesions == 1)
    with pytest.raises(ValueError, match="heart region has shape"):
        detect_calcium(ct, region[:-1])


def test_heart_region_without_a_heart_asks_for_one():
    air = np.full((6, 40, 40), -1000.0, np.float32)
    air[:, 15:25, 15:25] = 40.0  # a 10 mm block, far below the 24 mm the heart needs
    with pytest.raises(ValueError, match="pass a heart region"):
        heart_region(Volume(air, (1.0, 1.0, 3.0), modality="CT"))


def test_inpainting_removes_the_calcium_and_keeps_every_other_voxel():
    rng = np.random.default_rng(0)
    hu = np.full((3, 40, 40), BACKGROUND_HU, np.float32) + rng.normal(0, 10, (3, 40, 40)).astype(np.float32)
    hu[:, :, :20] -= 140.0                                           # fat on the left half
    hu[1, 18:23, 18:23] = 600.0                                      # calcium on the fat/tissue border
    hu[1, 18:23, 23:26] = 1000.0                                     # bone right next to it, not masked
    mask = np.zeros(hu.shape, bool)
    mask[1, 18:23, 18:23] = True
    out = inpaint_calcium(hu, mask)
    assert np.array_equal(out[~mask], hu[~mask])
    assert out[mask].max() < 130 and out[mask].min() > -100 - 40
    left, right = out[1, 18:23, 18], out[1, 18:23, 22]               # follows the local background
    assert left.mean() < right.mean()


# -- acquisition ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plaque_ct():
    """A 96 × 96 × 5 crop of the phantom around one 4 mm, 800 HU plaque, and its mask."""
    params = sample_params("NOR", 3, plaques=1)
    params.plaques = [Plaque(id=1, vessel="LAD", position=0.2, size_mm=4.0, aspect=0.8, hu=800.0)]
    phantom = Phantom(params)
    grid = Grid.centred((96, 96, 5), (0.5, 0.5, 3.0), centre_xyz=tuple(phantom.plaque_positions(0.0)[0]))
    return render_ct(phantom, grid, 0.0), calcium_mask(phantom.labels(grid, 0.0).array)


@pytest.mark.parametrize("views", [180, 540, 1080])
def test_zero_motion_reproduces_the_static_reconstruction_exactly(plaque_ct, views):
    ct, mask = plaque_ct
    still = dataclasses.replace(PROFILES[3], magnitude_mm=0.0)
    result = simulate_motion(ct, mask, still, views, seed=1)
    assert np.array_equal(result.corrupted.array, result.static.array)
    assert not np.array_equal(result.static.array, ct.array)          # the calcium did go through FBP
    layer_slices = ndimage.binary_dilation(mask.any(axis=(1, 2)))     # the calcium and its one-voxel rim
    assert np.array_equal(result.static.array[~layer_slices], ct.array[~layer_slices])
    score = agatston(ct.array, ct.spacing).total
    assert agatston(result.static.array, ct.spacing).total == pytest.approx(score, rel=0.15)


def test_full_fbp_static_is_the_fbp_of_the_input(plaque_ct):
    ct, mask = plaque_ct
    result = simulate_motion(ct, mask, dataclasses.replace(PROFILES[8], velocity_mm_s=0.0), 180, full_fbp=True)
    assert np.array_equal(result.corrupted.array, result.static.array)
    radon = RadonTransform(ParallelBeamGeometry(96, 180, pixel_size_mm=0.5))
    mu = hu_to_mu(torch.from_numpy(ct.array))
    expected = mu_to_hu(radon.fbp(radon(mu), "ram-lak")).numpy()
    error = np.abs(result.static.array - expected)
    layer_slices = ndimage.binary_dilation(mask.any(axis=(1, 2)))
    assert error[~layer_slices].max() < 0.01
    # the calcium is projected in its own patch: the two projectors differ by their discretisation
    contrast = expected[mask].max() - BACKGROUND_HU
    assert error.max() < 0.02 * contrast


def test_agatston_error_grows_with_motion_magnitude(plaque_ct):
    ct, mask = plaque_ct
    errors = []
    for magnitude in (0.0, 1.0, 3.0, 6.0):
        profile = dataclasses.replace(PROFILES[8], magnitude_mm=magnitude, velocity_mm_s=80.0)
        result = simulate_motion(ct, mask, profile, 360, seed=0)
        errors.append(abs(agatston(result.corrupted.array, ct.spacing).total
                          - agatston(result.static.array, ct.spacing).total))
    assert errors[0] == 0
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def gaussian_image(size: int, centre_xy, sigma_px: float, amplitude: float, supersample: int = 8) -> np.ndarray:
    c = (np.arange(size * supersample) + 0.5) / supersample - 0.5
    y, x = np.meshgrid(c, c, indexing="ij")
    image = amplitude * np.exp(-((x - centre_xy[0]) ** 2 + (y - centre_xy[1]) ** 2) / (2 * sigma_px**2))
    return image.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def test_each_view_sees_the_calcium_where_it_is_at_that_instant():
    size, pixel, views, centre, sigma, peak = 64, 0.5, 180, (40.3, 22.6), 1.5, 600.0
    blob = gaussian_image(size, centre, sigma, peak)
    ct = Volume((BACKGROUND_HU + blob)[None].astype(np.float32), (pixel, pixel, 3.0), modality="CT")
    yy, xx = np.mgrid[:size, :size]
    mask = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= 7**2)[None]
    profile = MotionProfile(0, "oscillatory", "orbit", (1.0, 0.0, 0.0), 2.0, 40.0, circular=True)
    result = simulate_motion(ct, mask, profile, views, seed=2)
    motion = result.corrupted.array[0] - result.static.array[0]

    shifts_px = result.displacement_mm[:, :2] / pixel                  # x → columns, y → rows
    moved = np.stack([gaussian_image(size, (centre[0] + dx, centre[1] + dy), sigma, peak) for dx, dy in shifts_px])
    radon = RadonTransform(ParallelBeamGeometry(size, views, pixel_size_mm=pixel))
    per_view = radon.project_views(torch.from_numpy(moved).float(), list(range(views)))
    at_rest = radon(torch.from_numpy(blob).float()[None])[0]
    expected = radon.fbp((per_view - at_rest)[None], "ram-lak")[0].numpy()
    assert np.abs(expected).max() > 0.3 * peak                         # the motion matters
    assert np.abs(motion - expected).max() < 0.04 * peak


@pytest.mark.parametrize("axis, flip", [(0, 1), (0, -1), (1, 1), (2, 1), (2, -1)])
def test_a_one_voxel_shift_moves_the_calcium_one_voxel_along_the_right_axis(axis, flip):
    spacing = (0.6, 0.6, 2.0)
    hu = np.full((5, 40, 52), BACKGROUND_HU, np.float32)            # non-square slices
    hu[2, 19:22, 24:27] = 500.0
    direction = np.eye(3)
    direction[axis, axis] = flip
    ct = Volume(hu, spacing, direction=tuple(direction.ravel()), modality="CT")
    vector = np.zeros(3)
    vector[axis] = 1.0                                                # one voxel along LPS axis
    result = simulate_motion(ct, hu > 300, constant_shift(vector, spacing[axis]), 360)
    static = result.static.array - BACKGROUND_HU
    moved = result.corrupted.array - BACKGROUND_HU
    step = [0, 0, 0]                                                  # expected move in (z, y, x) index
    step[2 - axis] = flip
    if axis == 2:
        assert np.allclose(moved[2 + flip], static[2], atol=1e-3) and np.abs(moved[2]).max() < 1e-3
    else:
        before = np.array(ndimage.center_of_mass(static[2]))
        after = np.array(ndimage.center_of_mass(moved[2]))
        assert np.allclose(after - before, step[1:], atol=0.05)


def test_same_seed_same_motion_and_a_new_seed_moves_differently(plaque_ct):
    ct, mask = plaque_ct
    first = simulate_motion(ct, mask, 3, 180, seed=7)
    again = simulate_motion(ct, mask, 3, 180, seed=7)
    other = simulate_motion(ct, mask, 3, 180, seed=8)
    assert np.array_equal(first.corrupted.array, again.corrupted.array)
    assert not np.array_equal(first.corrupted.array, other.corrupted.array)
    assert first.trajectory.shape == (180, 4)
    assert np.allclose(first.trajectory[:, 0], np.arange(180) * DURATION_S / 180)
    assert first.corrupted.spacing == ct.spacing and first.corrupted.origin == ct.origin


def test_progress_callback_counts_the_reconstructed_slices(plaque_ct):
    ct, mask = plaque_ct
    calls = []
    result = simulate_motion(ct, mask, 6, 180, callback=lambda done, total: calls.append((done, total)))
    assert calls == [(k, len(result.slices_with_motion)) for k in range(1, len(result.slices_with_motion) + 1)]


def test_bad_inputs_are_refused_with_a_clear_message(plaque_ct):
    ct, mask = plaque_ct
    with pytest.raises(ValueError, match="views must be one of 180, 360, 540, 720, 1080"):
        simulate_motion(ct, mask, 3, 200)
    with pytest.raises(ValueError, match="motion profile must be an id"):
        simulate_motion(ct, mask, 21, 360)
    with pytest.raises(ValueError, match="calcium mask has shape"):
        simulate_motion(ct, mask[:, :-1], 3, 360)
    with pytest.raises(ValueError, match="unknown filter"):
        simulate_motion(ct, mask, 3, 360, filter="sharp")
    stretched = Volume(ct.array, (0.5, 0.6, 3.0), modality="CT")
    with pytest.raises(ValueError, match="pixels must be square"):
        simulate_motion(stretched, mask, 3, 360)
    assert ALLOWED_VIEWS == (180, 360, 540, 720, 1080)
