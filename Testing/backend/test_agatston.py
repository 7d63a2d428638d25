"""Agatston score against hand-worked lesions (every expected value is worked out here)."""

import csv

import numpy as np
import pytest

from meddiffusion.metrics.agatston import ROW_FIELDS, agatston, density_weight, risk_category

BACKGROUND_HU = 40.0
PIXEL_MM = 0.5  # in-plane spacing: 4 × 4 pixels make a 2 × 2 mm = 4 mm² square


def blank(slices=1, size=24):
    return np.full((slices, size, size), BACKGROUND_HU)


def square(image, z, y, x, side_px, hu):
    image[z, y:y + side_px, x:x + side_px] = hu


# -- single lesions -----------------------------------------------------------------------
def test_2mm_square_peak_250_on_one_3mm_slice_scores_8():
    hu = blank()
    square(hu, 0, 5, 5, 4, 210.0)
    hu[0, 6, 6] = 250.0                                    # the peak sets the weight
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    assert result.total == pytest.approx(4.0 * 2)          # 4 mm² × weight 2
    (lesion,) = result.lesions
    assert (lesion.area_mm2, lesion.peak_hu, lesion.weight) == (pytest.approx(4.0), 250.0, 2)
    assert (lesion.slice_first, lesion.slice_last) == (0, 0)
    assert result.category == "minimal"


def test_same_lesion_on_two_1p5mm_slices_scores_8():
    hu = blank(slices=3)
    for z in (0, 1):
        square(hu, z, 5, 5, 4, 250.0)
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 1.5))
    assert result.total == pytest.approx(4.0 * 2 * 2 * (1.5 / 3.0))  # area × w × slices × factor
    (lesion,) = result.lesions
    assert (lesion.slice_first, lesion.slice_last) == (0, 1)
    assert lesion.area_mm2 == pytest.approx(8.0)


def test_slice_thickness_override_scales_the_score():
    hu = blank()
    square(hu, 0, 5, 5, 4, 250.0)
    thin = agatston(hu, (PIXEL_MM, PIXEL_MM, 1.5))
    overridden = agatston(hu, (PIXEL_MM, PIXEL_MM, 1.5), slice_thickness_mm=3.0)
    assert thin.total == pytest.approx(8.0 * 0.5)
    assert overridden.total == pytest.approx(8.0)
    assert overridden.slice_thickness_mm == 3.0


@pytest.mark.parametrize("peak, weight", [
    (129.9, 0), (130.0, 1), (199.9, 1), (200.0, 2), (299.0, 2), (300.0, 3), (399.0, 3), (400.0, 4), (1000.0, 4),
])
def test_density_weight_boundaries(peak, weight):
    hu = blank()
    square(hu, 0, 5, 5, 4, peak)                            # uniform 4 mm² square
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    assert result.total == pytest.approx(4.0 * weight)
    assert len(result.lesions) == (1 if weight else 0)
    if weight:
        assert density_weight(peak) == weight == result.lesions[0].weight


def test_components_below_1mm2_are_dropped():
    hu = blank()
    hu[0, 2, 2] = 800.0                                    # one 0.5 × 0.5 mm pixel: 0.25 mm²
    hu[0, 10, 10:13] = 800.0                               # three pixels: 0.75 mm²
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    assert result.total == 0.0
    assert result.lesions == []
    assert result.volume_mm3 == 0.0


def test_diagonal_pixels_join_in_plane_8_connectivity():
    hu = blank()
    for i in range(4):                                     # a diagonal of 4 pixels = 1 mm²
        hu[0, 5 + i, 5 + i] = 500.0
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    assert result.total == pytest.approx(1.0 * 4)          # counted only as one component


def test_per_slice_peak_sets_each_slice_weight():
    hu = blank(slices=2)
    square(hu, 0, 5, 5, 4, 450.0)                          # slice 0: 4 mm², weight 4
    square(hu, 1, 5, 5, 4, 180.0)                          # slice 1: 4 mm², weight 1
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    (lesion,) = result.lesions
    assert lesion.agatston == pytest.approx(4.0 * 4 + 4.0 * 1)
    assert lesion.weight == 4 and lesion.peak_hu == 450.0
    assert result.total == pytest.approx(20.0)


# -- several lesions, 3D grouping ---------------------------------------------------------
def test_two_separate_lesions_keep_their_own_weights():
    hu = blank()
    square(hu, 0, 2, 2, 4, 180.0)                          # 4 mm² × 1 = 4
    hu[0, 15:17, 15:19] = 350.0                            # 2 × 4 pixels = 2 mm² × 3 = 6
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    first, second = result.lesions
    assert (first.id, first.agatston, first.weight) == (1, pytest.approx(4.0), 1)
    assert (second.id, second.agatston, second.weight) == (2, pytest.approx(6.0), 3)
    assert second.area_mm2 == pytest.approx(2.0)
    assert result.total == pytest.approx(10.0)
    assert result.category == "minimal"


def test_blocks_touching_only_diagonally_across_slices_form_one_lesion():
    hu = blank(slices=2)
    square(hu, 0, 2, 2, 4, 300.0)                          # rows/cols 2..5
    square(hu, 1, 6, 6, 4, 300.0)                          # rows/cols 6..9: corner-to-corner
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0))
    (lesion,) = result.lesions
    assert (lesion.slice_first, lesion.slice_last) == (0, 1)
    assert lesion.agatston == pytest.approx(2 * 4.0 * 3)
    assert lesion.centroid_zyx == pytest.approx((0.5, 5.5, 5.5))


def test_volume_score_counts_voxels_of_kept_components():
    hu = blank(slices=3)
    for z in (0, 1):
        square(hu, z, 5, 5, 4, 250.0)                      # 2 × 16 voxels
    hu[2, 20, 20] = 900.0                                  # 0.25 mm²: dropped, not in the volume
    spacing = (PIXEL_MM, PIXEL_MM, 1.5)
    result = agatston(hu, spacing)
    voxel_mm3 = 0.5 * 0.5 * 1.5
    assert result.volume_mm3 == pytest.approx(32 * voxel_mm3)
    assert result.lesions[0].volume_mm3 == pytest.approx(32 * voxel_mm3)
    assert result.lesions[0].voxels == 32


def test_physical_centroid_follows_itk_geometry():
    hu = blank(slices=2)
    square(hu, 1, 4, 8, 4, 500.0)                          # centroid index z=1, y=5.5, x=9.5
    direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    result = agatston(hu, (0.5, 0.5, 2.0), origin_xyz=(10.0, 20.0, 30.0), direction=direction)
    (lesion,) = result.lesions
    assert lesion.centroid_zyx == pytest.approx((1.0, 5.5, 9.5))
    assert lesion.centroid_xyz_mm == pytest.approx((10.0 - 9.5 * 0.5, 20.0 - 5.5 * 0.5, 30.0 + 1.0 * 2.0))
    assert agatston(hu, (0.5, 0.5, 2.0)).lesions[0].centroid_xyz_mm is None


# -- mask ---------------------------------------------------------------------------------
def test_mask_restricts_candidates_and_names_the_majority_label():
    hu = blank()
    square(hu, 0, 2, 2, 4, 500.0)                          # inside the mask
    square(hu, 0, 14, 14, 4, 500.0)                        # outside the mask
    mask = np.zeros(hu.shape, dtype=np.uint8)
    mask[0, 2:4, 2:6] = 1                                  # 8 of the 16 pixels
    mask[0, 4:6, 2:6] = 3                                  # the other 8 ...
    mask[0, 3, 2] = 3                                      # ... plus one: label 3 has 9
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0), mask=mask)
    (lesion,) = result.lesions
    assert lesion.mask_label == 3
    assert result.total == pytest.approx(4.0 * 4)
    assert agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0)).total == pytest.approx(2 * 4.0 * 4)


def test_mask_can_cut_a_component_below_the_area_limit():
    hu = blank()
    square(hu, 0, 2, 2, 4, 500.0)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[0, 2, 2:5] = True                                 # only 3 pixels = 0.75 mm² remain
    assert agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0), mask=mask).total == 0.0


# -- categories ---------------------------------------------------------------------------
@pytest.mark.parametrize("score, category", [
    (0, "zero"), (0.3, "minimal"), (1, "minimal"), (10, "minimal"), (10.5, "mild"), (11, "mild"),
    (100, "mild"), (101, "moderate"), (400, "moderate"), (401, "severe"),
])
def test_risk_categories(score, category):
    assert risk_category(score) == category


@pytest.mark.parametrize("score", [-1.0, float("nan"), float("inf")])
def test_risk_category_rejects_impossible_scores(score):
    with pytest.raises(ValueError, match="score"):
        risk_category(score)


def test_empty_image_scores_zero():
    result = agatston(blank(slices=2), (PIXEL_MM, PIXEL_MM, 3.0))
    assert (result.total, result.volume_mm3, result.category, result.lesions) == (0.0, 0.0, "zero", [])
    (totals,) = result.to_rows()
    assert totals["lesion"] == "total" and totals["agatston"] == 0.0 and totals["peak_hu"] is None


# -- table and CSV ------------------------------------------------------------------------
def test_rows_and_csv_round_trip(tmp_path):
    hu = blank(slices=2)
    square(hu, 0, 2, 2, 4, 180.0)
    square(hu, 1, 14, 14, 4, 420.0)
    mask = np.where(hu > 100, 2, 0)
    result = agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0), mask=mask, origin_xyz=(0.0, 0.0, 0.0))
    rows = result.to_rows()
    assert [r["lesion"] for r in rows] == [1, 2, "total"]
    assert [r["agatston"] for r in rows] == pytest.approx([4.0, 16.0, 20.0])
    assert rows[-1]["category"] == "mild" and rows[-1]["weight"] == 4
    assert rows[-1]["slice_first"] == 0 and rows[-1]["slice_last"] == 1
    assert all(tuple(r) == ROW_FIELDS for r in rows)

    path = result.write_csv(tmp_path / "calcium.csv")
    with open(path, newline="", encoding="utf-8") as f:
        read_back = list(csv.DictReader(f))
    expected = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    assert read_back == expected
    assert [p.name for p in tmp_path.iterdir()] == ["calcium.csv"]   # no temporary file left


def test_csv_into_missing_folder_fails_clearly(tmp_path):
    result = agatston(blank(), (PIXEL_MM, PIXEL_MM, 3.0))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        result.write_csv(tmp_path / "missing" / "calcium.csv")


# -- bad input ----------------------------------------------------------------------------
def test_bad_input_is_rejected():
    hu = blank()
    with pytest.raises(ValueError, match="3D"):
        agatston(hu[0], (PIXEL_MM, PIXEL_MM, 3.0))
    nan_hu = hu.copy()
    nan_hu[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        agatston(nan_hu, (PIXEL_MM, PIXEL_MM, 3.0))
    with pytest.raises(ValueError, match="spacing"):
        agatston(hu, (PIXEL_MM, -PIXEL_MM, 3.0))
    with pytest.raises(ValueError, match="spacing"):
        agatston(hu, (PIXEL_MM, PIXEL_MM))
    with pytest.raises(ValueError, match="slice_thickness"):
        agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0), slice_thickness_mm=0.0)
    with pytest.raises(ValueError, match="mask shape"):
        agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0), mask=np.ones((1, 5, 5)))
    with pytest.raises(ValueError, match="origin"):
        agatston(hu, (PIXEL_MM, PIXEL_MM, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_label_map_marks_each_lesion_with_its_id():
    hu = np.full((3, 12, 12), -50.0)
    hu[1, 1:3, 1:3] = 250.0
    hu[1, 8:11, 8:10] = 500.0
    result = agatston(hu, (1.0, 1.0, 3.0))
    assert result.label_map.shape == hu.shape
    for lesion in result.lesions:
        assert (result.label_map == lesion.id).sum() == lesion.voxels
    assert ((result.label_map > 0) == (hu >= 130)).all()
