"""Before/after PNG pictures: size, content, orientation and bad input."""

import numpy as np
import pytest
import SimpleITK as sitk

from meddiffusion.figures import (SEPARATOR_PX, axial_slice_count, before_after_image, before_after_png, tile_image,
                                  write_png)
from meddiffusion.io import Volume


def pair(shape=(5, 48, 64), spacing=(0.8, 0.8, 2.0)):
    """A soft-tissue block with air around it, and the same with one brighter patch on the middle slice."""
    before = np.full(shape, -1000.0, np.float32)
    before[:, 8:44, 4:60] = 40.0
    after = before.copy()
    after[shape[0] // 2, 25:35, 30:40] = 200.0
    return Volume(before, spacing, modality="CT"), Volume(after, spacing, modality="CT")


def read_png(path):
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 3
    return sitk.GetArrayFromImage(image)


def test_png_shows_both_slices_side_by_side_and_differs_only_where_the_volumes_do(tmp_path):
    before, after = pair()
    path = before_after_png(tmp_path / "ba.png", before, after)
    assert path == tmp_path / "ba.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ba.png"]
    rgb = read_png(path)
    assert rgb.shape == (48, 2 * 64 + SEPARATOR_PX, 3)
    assert (rgb[:, 64:64 + SEPARATOR_PX] == 255).all()
    left, right = rgb[:, :64].astype(int), rgb[:, 64 + SEPARATOR_PX:].astype(int)
    assert (left[..., 0] == left[..., 1]).all()  # grey, apart from nothing
    # soft-tissue window (-160, 240): air black, 40 HU mid-grey, 200 HU near white
    assert left[40, 2, 0] == 0 and left[30, 10, 0] == 128 and right[30, 35, 0] == 230
    changed = (left != right).any(axis=2)
    expected = np.zeros((48, 64), bool)
    expected[25:35, 30:40] = True
    below_labels = slice(16, None)
    np.testing.assert_array_equal(changed[below_labels], expected[below_labels])
    # the labels ("LOW DOSE", "DENOISED") are drawn top-left as white text on black, and differ
    top_left = left[:12, :60, 0]
    assert (top_left == 255).sum() > 40 and (top_left == 0).sum() > 40
    assert (left[:12] != right[:12]).any()


def test_labels_can_be_left_out_and_difference_added():
    before, after = pair()
    plain = before_after_image(before, after, labels=None)
    np.testing.assert_array_equal(plain[:20, :64], plain[:20, 64 + SEPARATOR_PX:])
    three = before_after_image(before, after, labels=("before", "after"), difference=True)
    assert three.shape == (48, 3 * 64 + 2 * SEPARATOR_PX, 3)
    difference = three[:, 2 * (64 + SEPARATOR_PX):, 0].astype(int)
    # window ±100 HU: no change mid-grey, +160 HU white; "DIFFERENCE" is too wide for 64 pixels
    assert difference[40, 20] == 128 and difference[30, 35] == 255
    assert (difference[:12] == 128).all()
    wide = before_after_image(*pair(shape=(5, 48, 80)), labels=("before", "after"), difference=True)
    assert (wide[:12, 2 * (80 + SEPARATOR_PX):][:, :64, 0] == 255).sum() > 40  # its label


def test_slice_index_picks_the_axial_slice():
    array = np.tile(np.arange(5, dtype=np.float32)[:, None, None] * 50.0 - 100.0, (1, 8, 8))
    volume = Volume(array, modality="CT")
    for k in (0, 3):
        rgb = before_after_image(volume, volume, slice_index=k, labels=None)
        expected = round((array[k, 0, 0] + 160) / 400 * 255)
        assert (rgb[:, :8] == expected).all()
    middle = before_after_image(volume, volume, labels=None)
    assert (middle[:, :8] == round((0 + 160) / 400 * 255)).all()


def test_radiological_orientation_whatever_the_direction_matrix():
    """Anterior at the top and the patient's left on the right, for a reoriented copy of the same scan."""
    array = np.full((5, 20, 30), -1000.0, np.float32)
    array[:, 2:5, 24:28] = 300.0          # anterior (small y) and patient's left (large x in LPS)
    volume = Volume(array, (0.7, 0.7, 2.0), (10.0, -5.0, 3.0), modality="CT")
    reference = before_after_image(volume, volume, labels=None)[:, :30, 0]
    bright = np.argwhere(reference > 200)
    assert bright[:, 0].max() < 10 and bright[:, 1].min() > 15

    image = volume.to_sitk()
    for orientation in ("RAI", "LAS", "PIR"):   # flipped and permuted voxel axes, same physical image
        other = Volume.from_sitk(sitk.DICOMOrient(image, orientation), modality="CT")
        assert axial_slice_count(other) == 5
        np.testing.assert_array_equal(before_after_image(other, other, labels=None)[:, :30, 0], reference)


def test_non_square_pixels_are_stretched_to_square():
    before, after = pair(shape=(3, 20, 40), spacing=(0.5, 1.0, 2.0))
    assert before_after_image(before, after, labels=None).shape == (40, 2 * 40 + SEPARATOR_PX, 3)


def test_bad_input_raises_and_writes_nothing(tmp_path):
    before, after = pair()
    other = Volume(np.zeros((5, 48, 60), np.float32))
    with pytest.raises(ValueError, match="share one grid"):
        before_after_png(tmp_path / "a.png", before, other)
    with pytest.raises(ValueError, match="must end in .png"):
        before_after_png(tmp_path / "a.jpg", before, after)
    with pytest.raises(ValueError, match=r"slice_index must be an integer in 0\.\.4"):
        before_after_png(tmp_path / "a.png", before, after, slice_index=5)
    with pytest.raises(ValueError, match="font lacks"):
        before_after_png(tmp_path / "a.png", before, after, labels=("vor", "näch"))
    with pytest.raises(ValueError, match="low < high"):
        before_after_png(tmp_path / "a.png", before, after, window=(100, -100))
    with pytest.raises(ValueError, match=r"\(h, w, 3\) uint8"):
        write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_tiles_are_zoomed_windowed_labelled_and_separated():
    dark, bright = np.full((4, 6), -200.0), np.full((4, 6), 800.0)
    bright[1, 2] = -200.0                                     # one dark voxel becomes a 3×3 block
    rgb = tile_image([[("a", dark), ("b", bright)], [("c", dark)]], zoom=3)
    assert rgb.dtype == np.uint8 and rgb.shape == (2 * 12 + SEPARATOR_PX, 2 * 18 + SEPARATOR_PX, 3)
    assert (rgb[:12, 18:18 + SEPARATOR_PX] == 255).all()     # white line between tiles
    assert (rgb[12:12 + SEPARATOR_PX] == 255).all()          # and between rows
    second = rgb[:12, 18 + SEPARATOR_PX:]
    assert (second[3:6, 6:9] == 0).all() and (second[9:, :] == 255).all()
    assert (rgb[12 + SEPARATOR_PX:, 18:] == 255).all()       # a short row is padded with white
    with pytest.raises(ValueError, match="one shape"):
        tile_image([[("a", dark), ("b", bright[:2])]])
    with pytest.raises(ValueError, match="font lacks"):
        tile_image([[("a#b", dark)]])
    with pytest.raises(ValueError, match="zoom"):
        tile_image([[("a", dark)]], zoom=0)
