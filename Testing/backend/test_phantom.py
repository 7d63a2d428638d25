"""The 4D thorax phantom: volumes, motion, calcium, determinism, renderers, bad input.

Expected values come from the requested parameters or closed forms, never from the
phantom's own bookkeeping.  Tolerances: ventricular volumes are voxel counts of smooth shapes
on a typical cine/CT grid (1.5 × 1.5 × 2.5 mm); for a 100 ml cavity about 15 % of the voxels
straddle the surface, and centre sampling errs in both directions there, so counts land well
inside the required 5 % (typically < 0.5 %).
"""

import math

import numpy as np
import pytest

from meddiffusion.metrics.agatston import agatston
from meddiffusion.phantoms import (LABELS, Grid, Phantom, Plaque, acdc_labels, bssfp_signal, chest_grid, mu_from_hu,
                                   render_calcium, render_ct, render_mr, render_pet, render_sequence, render_spect,
                                   sample_params, short_axis_grid, view_times)

MYO = (LABELS["lv_myocardium"], LABELS["infarct"])


def heart_grid(phantom, spacing=(1.5, 1.5, 2.5)):
    """An axial grid just covering the heart at end-diastole."""
    lo, hi = phantom.heart.bounds(phantom.heart.state(0.0), pad=4.0)
    size = np.ceil((hi - lo) / np.array(spacing)).astype(int) + 1
    return Grid.centred(size, spacing, (lo + hi) / 2)


def volumes_ml(label_map, grid):
    voxel_ml = np.prod(grid.spacing) / 1000.0
    return {"lv": (label_map == LABELS["lv_blood"]).sum() * voxel_ml,
            "rv": (label_map == LABELS["rv_blood"]).sum() * voxel_ml,
            "myo": np.isin(label_map, MYO).sum() * voxel_ml}


@pytest.fixture(scope="module")
def normal():
    return Phantom.sample("NOR", seed=7, plaques=3)


@pytest.fixture(scope="module")
def small_chest():
    return chest_grid((64, 64, 32), (6.0, 6.0, 10.0))


# -- volumes and motion ----------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["NOR", "DCM", "HCM", "MINF", "RV"])
def test_label_volumes_match_requested_edv_esv_and_ef(preset):
    phantom = Phantom.sample(preset, seed=1)
    p = phantom.params.heart
    grid = heart_grid(phantom)
    es = phantom.rr_s * p.systolic_fraction
    ed_v = volumes_ml(phantom.labels(grid, 0.0).array, grid)
    es_v = volumes_ml(phantom.labels(grid, es).array, grid)
    assert ed_v["lv"] == pytest.approx(p.edv_ml, rel=0.05)
    assert es_v["lv"] == pytest.approx(p.edv_ml * (1 - p.ef), rel=0.05)
    assert 100 * (ed_v["lv"] - es_v["lv"]) / ed_v["lv"] == pytest.approx(100 * p.ef, abs=3.0)
    assert ed_v["rv"] == pytest.approx(p.rv_edv_ml, rel=0.05)
    assert es_v["rv"] == pytest.approx(p.rv_edv_ml * (1 - p.rv_ef), rel=0.05)
    assert 100 * (ed_v["rv"] - es_v["rv"]) / ed_v["rv"] == pytest.approx(100 * p.rv_ef, abs=3.0)


def test_overrides_set_the_volumes_on_a_short_axis_stack():
    phantom = Phantom.sample("NOR", seed=4, edv_ml=150.0, ef=0.5, heart_rate_bpm=60.0)
    grid = short_axis_grid(phantom, (96, 96, 24), (1.5, 1.5, 5.0))
    ed = volumes_ml(phantom.labels(grid, 0.0).array, grid)
    es = volumes_ml(phantom.labels(grid, 1.0 * phantom.params.heart.systolic_fraction).array, grid)
    assert ed["lv"] == pytest.approx(150.0, rel=0.05)
    assert es["lv"] == pytest.approx(75.0, rel=0.05)
    acdc = acdc_labels(phantom.labels(grid, 0.0).array)
    assert set(np.unique(acdc)) == {0, 1, 2, 3}


@pytest.mark.parametrize("preset", ["NOR", "MINF"])
def test_myocardial_volume_is_conserved_over_the_cycle(preset):
    phantom = Phantom.sample(preset, seed=2)
    grid = heart_grid(phantom)
    myo = [volumes_ml(phantom.labels(grid, t).array, grid)["myo"] for t in phantom.frame_times(6)]
    assert max(myo) / min(myo) < 1.05
    mass = phantom.truth()["lv"]["myocardial_mass_g"]
    assert np.mean(myo) * 1.05 == pytest.approx(mass, rel=0.05)


def test_wall_thickens_and_base_descends_in_systole(normal):
    grid = short_axis_grid(normal, (96, 96, 30), (1.5, 1.5, 4.0))
    es = normal.truth()["es_time_ms"] / 1000.0

    def mid_wall_mm(t):
        acdc = acdc_labels(normal.labels(grid, t).array)[12]          # a mid-ventricular slice
        cavity, myo = (acdc == 3).sum() * 2.25, (acdc == 2).sum() * 2.25
        return math.sqrt((cavity + myo) / math.pi) - math.sqrt(cavity / math.pi)

    assert mid_wall_mm(es) > 1.25 * mid_wall_mm(0.0)
    base_ed = normal.heart.state(0.0).base_centre(normal.heart)
    base_es = normal.heart.state(es).base_centre(normal.heart)
    descent = np.linalg.norm(base_ed - base_es)
    assert descent == pytest.approx(normal.params.heart.long_shortening * normal.heart.base_height, rel=1e-6)
    assert 8.0 < descent < 20.0


def test_end_of_cycle_coincides_with_end_diastole(normal, small_chest):
    rr = normal.rr_s
    assert np.array_equal(normal.labels(small_chest, 0.0).array, normal.labels(small_chest, rr).array)
    assert np.array_equal(render_ct(normal, small_chest, 0.0).array, render_ct(normal, small_chest, rr).array)
    assert np.allclose(normal.plaque_positions(0.0), normal.plaque_positions(rr))
    assert normal.lv_volume(rr) == pytest.approx(normal.params.heart.edv_ml)


def test_ct_texture_scale_sets_the_tissue_texture_amplitude(normal, small_chest):
    """Scale 0 leaves each tissue flat at its HU; scale 2 doubles every deviation from it."""
    flat = render_ct(normal, small_chest, 0.0, texture_scale=0.0).array
    textured = render_ct(normal, small_chest, 0.0).array
    double = render_ct(normal, small_chest, 0.0, texture_scale=2.0).array
    assert np.allclose(double - flat, 2.0 * (textured - flat), atol=1e-3)
    assert (textured - flat).std() > 1.0
    with pytest.raises(ValueError, match="texture_scale"):
        render_ct(normal, small_chest, 0.0, texture_scale=-1.0)


def test_plaques_ride_on_the_moving_epicardium(normal):
    es = normal.truth()["es_time_ms"] / 1000.0
    ed_pos, es_pos = normal.plaque_positions(0.0), normal.plaque_positions(es)
    shift = np.linalg.norm(es_pos - ed_pos, axis=1)
    assert np.all(shift > 2.0) and np.all(shift < 30.0)
    plaque = normal.params.plaques[0]
    grid = Grid.centred((30, 30, 20), (0.4, 0.4, 0.6), es_pos[0])
    inside = np.argwhere(normal.labels(grid, es).array == 100 + plaque.id)
    assert len(inside) * 0.4 * 0.4 * 0.6 == pytest.approx(plaque.volume_mm3, rel=0.1)
    centroid = grid.index_to_world(inside.mean(axis=0)[::-1])
    assert np.linalg.norm(centroid - es_pos[0]) < 0.3


def test_breathing_moves_the_diaphragm_and_the_heart():
    params = sample_params("NOR", seed=5, plaques=0, breathing_mm=15.0)
    params.thorax.breathing_period_s = 4 * 60.0 / params.heart.heart_rate_bpm   # inhale at end-diastole
    phantom = Phantom(params)
    grid = chest_grid((48, 48, 64), (8.0, 8.0, 5.0))
    inhale = phantom.params.thorax.breathing_period_s / 2

    def liver_top_and_heart_z(t):
        lab = phantom.labels(grid, t).array
        zs = grid.index_to_world(np.stack([np.zeros(64), np.zeros(64), np.arange(64)], 1))[:, 2]
        liver_top = zs[np.nonzero((lab == LABELS["liver"]).any(axis=(1, 2)))[0].max()]
        heart = np.argwhere(lab == LABELS["lv_myocardium"])[:, 0].mean()
        return liver_top, heart * 5.0

    (liver0, heart0), (liver1, heart1) = liver_top_and_heart_z(0.0), liver_top_and_heart_z(inhale)
    assert liver0 - liver1 == pytest.approx(15.0, abs=5.0)             # 5 mm slices
    assert heart0 - heart1 == pytest.approx(0.6 * 15.0, abs=2.5)


# -- calcium ---------------------------------------------------------------------------------
def ellipse_areas_mm2(frame, axes, centre_z, zs):
    """Closed form: area of the axial cut z of an ellipsoid (axes along the columns of frame)."""
    a = frame @ np.diag(1.0 / np.asarray(axes) ** 2) @ frame.T
    b, c, cz = a[:2, :2], a[:2, 2], a[2, 2]
    s = cz - c @ np.linalg.solve(b, c)
    return np.pi * np.clip(1 - (zs - centre_z) ** 2 * s, 0.0, None) / math.sqrt(np.linalg.det(b))


def test_agatston_of_a_plaque_matches_its_geometry():
    """A 220 HU plaque on 40 HU: partial-volume voxels reach 130 HU at half coverage, so the
    thresholded lesion is the plaque itself; its score is 2 (weight of 200-299 HU) × the
    closed-form cross-section areas × slice thickness / 3 mm."""
    params = sample_params("NOR", seed=3)
    params.plaques = [Plaque(id=1, vessel="LAD", position=0.3, size_mm=4.5, aspect=0.8, hu=220.0)]
    phantom = Phantom(params)
    centre, frame = phantom.coronaries.plaque_frames(phantom.heart.state(0.0))[0]
    grid = Grid.centred((44, 44, 24), (0.25, 0.25, 0.5), centre)
    alpha, hu = render_calcium(phantom, grid, 0.0)
    ct = 40.0 * (1 - alpha.array) + alpha.array * hu.array
    result = agatston(ct, grid.spacing, origin_xyz=grid.origin)
    zs = grid.index_to_world(np.stack([np.zeros(24), np.zeros(24), np.arange(24)], 1))[:, 2]
    areas = ellipse_areas_mm2(frame, params.plaques[0].semi_axes_mm, centre[2], zs)
    expected = 2.0 * areas[areas >= 1.0].sum() * 0.5 / 3.0
    assert len(result.lesions) == 1
    assert result.total == pytest.approx(expected, rel=0.05)
    assert result.lesions[0].peak_hu == pytest.approx(220.0, abs=1.0)
    assert np.allclose(result.lesions[0].centroid_xyz_mm, centre, atol=0.2)


def test_ct_is_the_calcium_free_ct_with_the_plaques_composited_on_top(normal):
    centre = normal.plaque_positions(0.1)[0]
    grid = Grid.centred((24, 24, 12), (0.5, 0.5, 1.0), centre)
    full = render_ct(normal, grid, 0.1).array
    background = render_ct(normal, grid, 0.1, calcium=False).array
    alpha, hu = render_calcium(normal, grid, 0.1)
    assert alpha.array.max() > 0.99
    assert np.allclose(full, background * (1 - alpha.array) + alpha.array * hu.array, atol=1e-3)


def test_calcium_free_cases_and_plaque_truth():
    free = Phantom.sample("NOR", seed=11, calcium=False)
    assert free.truth()["plaques"] == [] and free.plaque_positions(0.0).shape == (0, 3)
    many = Phantom.sample("MINF", seed=11, plaques=6)
    plaques = many.truth()["plaques"]
    assert len(plaques) == 6
    for p in plaques:
        assert 1.0 <= p["size_mm"] <= 5.0 and 130.0 <= p["peak_hu"] <= 1300.0
        assert p["label"] == 100 + p["id"]


# -- determinism and presets -----------------------------------------------------------------
def test_same_seed_gives_identical_output(small_chest):
    a, b = Phantom.sample("HCM", seed=9), Phantom.sample("HCM", seed=9)
    assert a.truth() == b.truth()
    assert np.array_equal(render_ct(a, small_chest, 0.2).array, render_ct(b, small_chest, 0.2).array)
    assert np.array_equal(a.labels(small_chest, 0.2).array, b.labels(small_chest, 0.2).array)
    assert np.array_equal(render_mr(a, small_chest, 0.2, noise=0.05).array,
                          render_mr(b, small_chest, 0.2, noise=0.05).array)
    other = Phantom.sample("HCM", seed=10)
    assert not np.array_equal(render_ct(a, small_chest, 0.2).array, render_ct(other, small_chest, 0.2).array)


def test_presets_differ_as_their_groups_do():
    def params(preset):
        return [sample_params(preset, seed=s).heart for s in range(6)]

    nor, dcm, hcm, minf, rv = (params(p) for p in ("NOR", "DCM", "HCM", "MINF", "RV"))
    assert min(h.edv_ml for h in dcm) > max(h.edv_ml for h in nor)
    assert max(h.ef for h in dcm) < min(h.ef for h in nor)
    assert min(h.wall_mm for h in hcm) > max(h.wall_mm for h in nor)
    assert all(h.infarct is not None for h in minf) and all(h.infarct is None for h in nor)
    assert all(h.rv_edv_ml > 1.5 * h.edv_ml for h in rv)
    phantom = Phantom.sample("MINF", seed=0)
    assert (phantom.labels(heart_grid(phantom, (3.0, 3.0, 3.0)), 0.0).array == LABELS["infarct"]).any()


def test_acdc_labels_mapping():
    lab = np.array([LABELS["background"], LABELS["lung"], LABELS["rv_blood"], LABELS["lv_myocardium"],
                    LABELS["infarct"], LABELS["lv_blood"], LABELS["rv_myocardium"], 103])
    assert acdc_labels(lab).tolist() == [0, 0, 1, 2, 2, 3, 0, 0]


# -- renderers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest_images(normal):
    grid = chest_grid((96, 96, 48), (4.0, 4.0, 6.0))
    labels = normal.labels(grid, 0.0).array
    return grid, labels, render_ct(normal, grid, 0.0).array, render_spect(normal, grid, 0.0), \
        render_pet(normal, grid, 0.0), render_mr(normal, grid, 0.0).array


def test_ct_tissue_values(chest_images):
    grid, labels, hu, *_ = chest_images
    assert np.median(hu[labels == LABELS["lung"]]) == pytest.approx(-850, abs=40)
    assert np.median(hu[labels == LABELS["fat"]]) == pytest.approx(-100, abs=30)
    assert np.median(hu[labels == LABELS["liver"]]) == pytest.approx(60, abs=15)
    assert np.median(hu[labels == LABELS["bone"]]) > 200
    assert np.all(hu[:, :3] < -990)                          # air in front of the chest


def test_spect_and_pet_uptake_and_attenuation(chest_images):
    grid, labels, _, (activity, mu140), (suv, mu511), _ = chest_images
    body = labels == LABELS["body"]
    myo = labels == LABELS["lv_myocardium"]
    ratio = np.percentile(activity.array[myo], 90) / np.median(activity.array[body])
    assert 12 < ratio <= 20.5                                   # 20× background, partial volume at 4 mm
    liver = labels == LABELS["liver"]
    assert np.median(mu140.array[liver]) == pytest.approx(0.153 * (1 + 0.63 * 0.060), abs=0.003)
    assert np.median(mu511.array[liver]) == pytest.approx(0.096 * (1 + 0.51 * 0.060), abs=0.003)
    assert np.median(mu140.array[labels == LABELS["lung"]]) == pytest.approx(0.153 * 0.15, abs=0.01)
    assert np.all(mu140.array[:, :3] == 0)
    assert np.percentile(suv.array[myo], 90) == pytest.approx(6.0, rel=0.1)


def test_mr_contrast_follows_the_bssfp_equation(chest_images):
    grid, labels, *_, mr = chest_images
    # closed form for blood (PD 0.9, T1 1441, T2 290 ms) at TR 3 ms, 60°
    e1, e2 = math.exp(-3 / 1441), math.exp(-3 / 290)
    blood = 0.9 * math.sin(math.pi / 3) * (1 - e1) / (1 - (e1 - e2) * 0.5 - e1 * e2) * math.sqrt(e2)
    assert bssfp_signal(0.9, 1441, 290) == pytest.approx(blood, rel=1e-9)
    lv, myo, lung = (np.median(mr[labels == LABELS[k]]) for k in ("lv_blood", "lv_myocardium", "lung"))
    assert lv > 1.5 * myo > 3 * lung


def test_mu_from_hu_bilinear():
    assert mu_from_hu(0, 140) == pytest.approx(0.153)
    assert mu_from_hu(-1000, 511) == 0.0
    assert mu_from_hu(1000, 140) == pytest.approx(0.153 * 1.63)
    assert mu_from_hu(-500, 511) == pytest.approx(0.048)


def test_view_times():
    times = view_times(4, 0.28, start_s=0.1, arc_deg=180)
    assert np.allclose(times, 0.1 + np.arange(4) * 0.035)


def test_render_sequence_reports_progress_and_can_be_cancelled(normal, small_chest):
    calls = []
    frames = render_sequence(normal, small_chest, "pet", normal.frame_times(2), callback=lambda d, t: calls.append(d))
    assert calls == [1, 2] and set(frames[0]) == {"image", "mu", "labels"}

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_sequence(normal, small_chest, "ct", normal.frame_times(3), callback=stop)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: Phantom.sample("XYZ"), "unknown preset"),
    (lambda: Phantom.sample("NOR", ef=0.95), "EF"),
    (lambda: Phantom.sample("NOR", plaques=-1), "plaques"),
    (lambda: Phantom.sample("NOR", defect="LM"), "territory"),
    (lambda: Grid((10, 10, 10), (1.0, -1.0, 1.0)), "spacing"),
    (lambda: view_times(0, 0.3), "views"),
])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
