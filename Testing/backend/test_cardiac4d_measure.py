"""cardiac4d label measurements: volumes against analytic shapes, ED/ES frames, every validity rule.

The synthetic heart is built here from circles on a 0.5 mm grid: in each slice an LV disc of
radius r, a myocardial ring out to R = √(r² + A/π) (area A, the same in every frame, as muscle
is incompressible) and an RV crescent: a disc beside the LV minus the epicardial disc. Its
volumes are the exact areas (π r², A, disc minus lens) × slice spacing; a disc of ≥ 10 mm
radius rasterised at 0.5 mm is within 1 % of π r², so 2 % is the tolerance.
"""

import math

import numpy as np
import pytest

from meddiffusion.tasks.cardiac4d.measure import (MYO_DENSITY_G_PER_ML, check_sample, clinical_values,
                                                 exclude_open_end_slices, volumes_ml)

SPACING = (0.5, 0.5, 10.0)          # x, y, z mm
SIZE = 200                          # pixels per side (100 mm)
SCALES = (0.0, 0.55, 0.85, 1.0, 1.0, 0.95, 0.8, 0.0)      # LV radius per slice relative to mid-ventricle
FRAMES = 10
ES_FRAME = 4
R_ED, R_ES = 24.0, 16.0             # mid-ventricular LV radius (mm)
MYO_AREA = 600.0                    # mid-ventricular ring area (mm²)
RV_OFFSET, RV_RADIUS = 30.0, 26.0   # RV disc centre to the LV's right (mm), its radius


def lv_radius(frame):
    """ED at frame 0, ES at ES_FRAME, back by the last frame (half-cosine each way)."""
    phase = frame / ES_FRAME if frame <= ES_FRAME else 1 - (frame - ES_FRAME) / (FRAMES - ES_FRAME)
    return R_ES + (R_ED - R_ES) * 0.5 * (1 + math.cos(math.pi * phase))


def lens_area(r1, r2, d):
    """Area of the intersection of two discs of radii r1, r2 with centres d apart."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = r1 ** 2 * math.acos((d ** 2 + r1 ** 2 - r2 ** 2) / (2 * d * r1))
    a2 = r2 ** 2 * math.acos((d ** 2 + r2 ** 2 - r1 ** 2) / (2 * d * r2))
    return a1 + a2 - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))


def slice_shapes(scale, r):
    """(LV radius, epicardial radius, RV disc radius) of a slice at ``scale``, mid-ventricular LV radius ``r``."""
    lv = scale * r
    epi = math.sqrt(lv ** 2 + scale ** 2 * MYO_AREA / math.pi)
    return lv, epi, scale * RV_RADIUS


def synthetic_heart(myo_growth=0.0):
    """(F, S, H, W) ACDC labels and the analytic volumes (ml) per frame; ``myo_growth`` inflates the muscle at ES."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    x = (xx - SIZE / 2 + 0.5) * SPACING[0] + 10.0          # LV centre 10 mm left of the image centre
    y = (yy - SIZE / 2 + 0.5) * SPACING[1]
    d_lv = np.hypot(x, y)
    d_rv = np.hypot(x - RV_OFFSET, y)
    labels = np.zeros((FRAMES, len(SCALES), SIZE, SIZE), np.uint8)
    truth = {"lv": np.zeros(FRAMES), "rv": np.zeros(FRAMES), "myo": np.zeros(FRAMES)}
    dz = SPACING[2]
    for f in range(FRAMES):
        growth = 1 + myo_growth * max(0.0, 1 - abs(f - ES_FRAME) / ES_FRAME)     # muscle area × growth, peak at ES
        for s, scale in enumerate(SCALES):
            if scale == 0:
                continue
            lv, epi, rv = slice_shapes(scale, lv_radius(f))
            epi = math.sqrt(lv ** 2 + growth * (epi ** 2 - lv ** 2))
            labels[f, s][(d_rv <= rv) & (d_lv > epi)] = 1
            labels[f, s][d_lv <= epi] = 2
            labels[f, s][d_lv <= lv] = 3
            truth["lv"][f] += math.pi * lv ** 2 * dz / 1000
            truth["myo"][f] += math.pi * (epi ** 2 - lv ** 2) * dz / 1000
            truth["rv"][f] += (math.pi * rv ** 2 - lens_area(rv, epi, RV_OFFSET)) * dz / 1000
    return labels, truth


@pytest.fixture(scope="module")
def heart():
    return synthetic_heart()


# -- volumes and clinical values -----------------------------------------------------------------
def test_volumes_match_the_analytic_shapes(heart):
    labels, truth = heart
    measured = volumes_ml(labels, SPACING)
    assert set(measured) == {"lv", "rv", "myo"}
    for name in ("lv", "rv", "myo"):
        assert measured[name].shape == (FRAMES,)
        np.testing.assert_allclose(measured[name], truth[name], rtol=0.02, err_msg=name)
    assert np.ptp(truth["myo"]) < 1e-9                      # the builder conserves the muscle exactly


def test_single_frame_gives_arrays_of_length_one(heart):
    labels, truth = heart
    one = volumes_ml(labels[ES_FRAME], SPACING)
    assert one["lv"].shape == (1,)
    assert one["lv"][0] == pytest.approx(truth["lv"][ES_FRAME], rel=0.02)
    values = clinical_values(labels[0], SPACING)
    assert values["ed_frame"] == values["es_frame"] == 0 and values["lv_ef_percent"] == 0.0


def test_voxel_volume_uses_all_three_spacings(heart):
    labels, _ = heart
    base = volumes_ml(labels, SPACING)["lv"]
    np.testing.assert_allclose(volumes_ml(labels, (1.0, 0.5, 5.0))["lv"], base * 2 * 0.5)


def test_clinical_values_pick_ed_and_es_frames(heart):
    labels, truth = heart
    values = clinical_values(labels, SPACING)
    assert values["ed_frame"] == 0 and values["es_frame"] == ES_FRAME
    edv, esv = truth["lv"][0], truth["lv"][ES_FRAME]
    assert values["lv_edv_ml"] == pytest.approx(edv, rel=0.02)
    assert values["lv_esv_ml"] == pytest.approx(esv, rel=0.02)
    assert values["lv_ef_percent"] == pytest.approx(100 * (edv - esv) / edv, abs=1.0)
    assert values["lv_sv_ml"] == pytest.approx(values["lv_edv_ml"] - values["lv_esv_ml"])
    rv_edv, rv_esv = truth["rv"][0], truth["rv"][ES_FRAME]          # the RV at the LV's ED and ES frames
    assert values["rv_edv_ml"] == pytest.approx(rv_edv, rel=0.02)
    assert values["rv_ef_percent"] == pytest.approx(100 * (rv_edv - rv_esv) / rv_edv, abs=1.0)
    assert values["myo_volume_ml"] == pytest.approx(truth["myo"][0], rel=0.02)
    assert values["myo_mass_g"] == pytest.approx(1.05 * values["myo_volume_ml"])
    assert MYO_DENSITY_G_PER_ML == 1.05


def test_es_in_the_middle_of_a_rolled_cine(heart):
    labels, _ = heart
    rolled = np.roll(labels, 3, axis=0)
    values = clinical_values(rolled, SPACING)
    assert (values["ed_frame"], values["es_frame"]) == (3, ES_FRAME + 3)


@pytest.mark.parametrize("labels, spacing, words", [
    (np.zeros((2, 2, 4, 4, 4), np.uint8), SPACING, ["shape", "(frames, slices, rows, cols)"]),
    (np.full((2, 4, 4), 7, np.uint8), SPACING, ["values 7", "0 background, 1 RV cavity"]),
    (np.full((2, 4, 4), 1.5), SPACING, ["whole numbers"]),
    (np.zeros((2, 4, 4), np.uint8), (1.0, 1.0), ["spacing", "three positive"]),
    (np.zeros((2, 4, 4), np.uint8), (1.0, -1.0, 10.0), ["spacing", "three positive"]),
])
def test_bad_input_is_refused(labels, spacing, words):
    with pytest.raises(ValueError) as caught:
        volumes_ml(labels, spacing)
    for word in words:
        assert word in str(caught.value)


def test_float_labels_from_a_volume_are_accepted(heart):
    labels, _ = heart
    np.testing.assert_allclose(volumes_ml(labels.astype(np.float32), SPACING)["lv"],
                               volumes_ml(labels, SPACING)["lv"])


# -- validity ------------------------------------------------------------------------------------
def test_the_synthetic_heart_is_valid(heart):
    labels, _ = heart
    result = check_sample(labels, SPACING)
    assert result.valid, result.reasons
    assert result.reasons == []
    assert result.figures["ed_frame"] == 0 and result.figures["lv_slices_ed"] == 6
    assert result.figures["lv_enclosed_min_percent"] == pytest.approx(100.0)
    assert result.figures["myo_volume_ratio"] < 1.03
    assert check_sample(labels[0], SPACING).valid


def only_reason(labels, *words, **kwargs):
    result = check_sample(labels, SPACING, **kwargs)
    assert not result.valid
    assert len(result.reasons) == 1, result.reasons
    for word in words:
        assert word in result.reasons[0], (word, result.reasons[0])
    return result.reasons[0]


def test_too_few_voxels_at_ed(heart):
    labels, _ = heart
    tiny = labels.copy()
    tiny[tiny == 3] = 2
    tiny[:, 3, 98:103, 77:82] = 3                     # a 5 × 5 cavity inside the muscle of slice 3
    reasons = check_sample(tiny, SPACING).reasons
    assert "LV cavity has 25 voxels at end-diastolic frame 0; at least 100 are needed" in reasons, reasons
    assert check_sample(tiny, SPACING, min_voxels=25).reasons == reasons[1:]
    no_rv = np.where(labels == 1, 0, labels)
    only_reason(no_rv, "RV cavity has 0 voxels at end-diastolic frame 0", "at least 100")


def test_too_little_myocardium_at_ed(heart):
    labels, _ = heart
    thin = labels.copy()
    thin[thin == 2] = 0
    result = check_sample(thin, SPACING)
    assert not result.valid
    assert any(r.startswith("myocardium has 0 voxels at end-diastolic frame 0") for r in result.reasons)


def test_lv_slices_must_be_one_run(heart):
    labels, _ = heart
    gap = labels.copy()
    gap[:, 4] = 0                                   # slice 4 empty in every frame
    reason = only_reason(gap, "not one run")
    assert reason == ("the slices holding LV cavity are not one run in frame 0 (slices 1-3, 5-6); also 9 other "
                      "frames")
    one_frame = only_reason(gap[ES_FRAME], "not one run")
    assert one_frame == "the slices holding LV cavity are not one run (slices 1-3, 5-6)"


def bite(labels, frame, slice_, degrees):
    """Remove the myocardium in a sector of ``degrees`` pointing away from the RV (to −y) in one slice."""
    out = labels.copy()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    angle = np.degrees(np.arctan2(-(yy - 99.5), xx - 79.5))        # LV centre pixel (79.5, 99.5); 90° = −y
    sector = np.abs(angle - 90.0) < degrees / 2
    out[frame, slice_][sector & (out[frame, slice_] == 2)] = 0
    return out


def test_lv_must_be_enclosed_by_myocardium(heart):
    labels, _ = heart
    reason = only_reason(bite(labels, 2, 3, 90), "LV cavity is not enclosed by myocardium in slice 3 of frame 2",
                         "85 % expected", "the rest touches background")
    share = int(reason.split("(")[1].split(" %")[0])
    assert 70 <= share <= 80                          # a quarter of the ring gone


def test_end_slices_are_lenient(heart):
    """A 60° bite passes at the base and apex (first and last LV slice, 50 %) and fails mid-ventricle (85 %)."""
    labels, _ = heart
    assert check_sample(bite(labels, 0, 6, 60), SPACING).valid
    assert check_sample(bite(labels, 0, 1, 60), SPACING).valid
    only_reason(bite(labels, 0, 5, 60), "slice 5 of frame 0", "85 % expected")
    only_reason(bite(labels, 0, 6, 200), "slice 6 of frame 0", "50 % expected")


def test_lv_touching_the_rv_directly_is_not_enclosed(heart):
    labels, _ = heart
    septum = labels.copy()
    f, s = 0, 3
    ring = septum[f, s] == 2
    cols = np.flatnonzero(ring.any(axis=0))
    septum[f, s][:, cols[-1] - 25:][ring[:, cols[-1] - 25:]] = 1       # the septal side of the ring becomes RV
    result = check_sample(septum, SPACING)
    assert any("slice 3 of frame 0" in r and "the rest touches the RV cavity" in r for r in result.reasons), result.reasons


def test_rv_must_touch_the_myocardium(heart):
    labels, _ = heart
    apart = labels.copy()
    apart[apart == 1] = 0
    apart[:, 3, :20, -20:] = 1                         # an RV far in the image corner
    reason = only_reason(apart, "RV cavity does not touch the myocardium in any slice of frame 0",
                         "also 9 other frames")
    assert "apart" in reason


def test_rv_inside_the_lv_is_refused(heart):
    labels, _ = heart
    inside = labels.copy()
    ring = np.argwhere(inside[1, 4] == 2)
    y, x = ring[len(ring) // 3]
    patch = inside[1, 4, y - 1:y + 2, x - 1:x + 2]
    patch[patch == 2] = 1                               # RV voxels within the muscle ring
    only_reason(inside, "RV cavity lies inside the LV (within its epicardial border) in slice 4 of frame 1")


def test_myocardium_must_keep_its_volume():
    swollen, truth = synthetic_heart(myo_growth=0.4)
    ratio = truth["myo"].max() / truth["myo"].min()
    assert 1.3 < ratio < 1.5
    reason = only_reason(swollen, "myocardial volume changes by a factor", "at most a factor 1.25")
    assert f"{ratio:.2f}"[:3] in reason
    mild, truth = synthetic_heart(myo_growth=0.15)
    assert check_sample(mild, SPACING).valid


def test_myocardium_vanishing_in_a_frame(heart):
    labels, _ = heart
    gone = labels.copy()
    gone[5][gone[5] == 2] = 0
    result = check_sample(gone, SPACING)
    assert any("myocardial volume vanishes in frame 5" in r for r in result.reasons), result.reasons


# -- the basal-slice reading convention ----------------------------------------------------------
def test_open_basal_slices_are_read_as_atrium(heart):
    """An end slice whose cavity is mostly bare loses its LV label, then the next end is judged; the rest stays."""
    labels, _ = heart
    base = bite(bite(labels, 0, 6, 300), 0, 5, 300)      # the two basal slices of frame 0 lose 5/6 of their ring
    base[2, 1][base[2, 1] == 2] = 0                      # and the apical slice of frame 2 all of it
    read, removed = exclude_open_end_slices(base)
    assert removed == 3
    assert not (read[0, 5:] == 3).any() and not (read[2, 1] == 3).any()
    assert (read[0, 5:][base[0, 5:] == 3] == 0).all()    # cavity became background, nothing else moved
    unchanged = np.ones(base.shape, bool)
    unchanged[0, 5:] = unchanged[2, 1] = False
    assert (read[unchanged] == base[unchanged]).all()
    assert (base[0, 5:] == 3).any(), "the input must not be modified"
    assert any("not enclosed" in r for r in check_sample(base, SPACING).reasons)
    assert not any("not enclosed" in r for r in check_sample(read, SPACING).reasons)


def test_the_convention_leaves_enclosed_hearts_and_inner_gaps_alone(heart):
    labels, _ = heart
    read, removed = exclude_open_end_slices(labels)
    assert removed == 0 and (read == labels).all()
    inner = bite(labels, 0, 3, 300)                      # mid-ventricle: still an invalid sample
    read, removed = exclude_open_end_slices(inner)
    assert removed == 0
    only_reason(read, "slice 3 of frame 0", "85 % expected")
    one, removed = exclude_open_end_slices(bite(labels, 0, 6, 300)[0])      # one frame in, one frame out
    assert one.shape == labels.shape[1:] and removed == 1


# -- the phantom ---------------------------------------------------------------------------------
def test_phantom_labels_measure_its_volumes_and_are_valid():
    """A NOR phantom on a cine grid: EDV and ESV within 15 % of its truth, and a valid sample."""
    import torch

    from meddiffusion.phantoms import Phantom, short_axis_grid
    from meddiffusion.phantoms.tissues import acdc_labels

    phantom = Phantom.sample("NOR", 3)
    grid = short_axis_grid(phantom, (96, 96, 14), (1.75, 1.75, 10.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # a small grid: one thread is fastest on a shared machine (~1 s, not ~30)
    try:
        labels = np.stack([acdc_labels(phantom.labels(grid, t).array) for t in phantom.frame_times(10)])
    finally:
        torch.set_num_threads(threads)
    truth = phantom.truth()
    values = clinical_values(labels, grid.spacing)
    assert values["ed_frame"] == 0
    assert values["lv_edv_ml"] == pytest.approx(truth["lv"]["edv_ml"], rel=0.15)
    assert values["lv_esv_ml"] == pytest.approx(truth["lv"]["esv_ml"], rel=0.15)
    result = check_sample(labels, grid.spacing)
    assert result.valid, result.reasons
