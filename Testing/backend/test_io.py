"""meddiffusion.io: geometry round trips, atomic writes and clear errors for bad input."""

import os

import numpy as np
import pytest
import SimpleITK as sitk

from meddiffusion.io import Volume, VolumeError, read_sequence, read_volume, write_sequence, write_volume

OBLIQUE = (0.0, 1.0, 0.0, 0.8, 0.0, -0.6, -0.6, 0.0, -0.8)   # a proper rotation (det = 1)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    array = np.round(rng.normal(0, 300, size=(4, 6, 5))).astype(np.float32)
    return Volume(array, spacing=(0.7, 0.8, 2.5), origin=(10.5, -20.25, 30.0), direction=OBLIQUE, modality="CT")


@pytest.mark.parametrize("suffix,exact", [(".nrrd", True), (".mha", True), (".nii.gz", False), (".nii", False)])
def test_file_round_trip_keeps_values_and_geometry(tmp_path, volume, suffix, exact):
    back = read_volume(write_volume(volume, tmp_path / f"ct{suffix}"))
    np.testing.assert_array_equal(back.array, volume.array)
    tol = 0 if exact else 1e-6   # NIfTI stores geometry in float32
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=tol)
    np.testing.assert_allclose(back.origin, volume.origin, atol=tol * 100)
    np.testing.assert_allclose(back.direction, volume.direction, atol=tol)
    assert back.array.dtype == np.float32 and back.shape == (4, 6, 5)


def test_dicom_series_round_trip(tmp_path, volume):
    folder = write_volume(volume, tmp_path / "series")
    assert len(os.listdir(folder)) == volume.shape[0]
    back = read_volume(folder)
    np.testing.assert_array_equal(back.array, volume.array)       # integer HU stored exactly
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-6)
    assert back.modality == "CT" and back.units == "HU"


def test_dicom_series_keeps_non_integer_values_within_rescale_precision(tmp_path, volume):
    pet = volume.with_array(np.abs(volume.array) / 7.0 + 0.123, modality="PT")
    back = read_volume(write_volume(pet, tmp_path / "pet"))
    slope = np.abs(pet.array).max() / 32000
    assert np.abs(back.array - pet.array).max() <= slope


def test_index_to_physical_matches_simpleitk(volume):
    image = volume.to_sitk()
    for zyx in [(0, 0, 0), (3, 5, 4), (1, 2, 3)]:
        expected = image.TransformIndexToPhysicalPoint(tuple(int(i) for i in zyx[::-1]))
        np.testing.assert_allclose(volume.index_to_physical(zyx), expected, atol=1e-9)


def test_write_is_atomic_and_leaves_no_temp_file_on_failure(tmp_path, volume, monkeypatch):
    target = tmp_path / "out.nrrd"
    write_volume(volume, target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(RuntimeError):
        write_volume(volume.with_array(volume.array + 1), target)
    assert target.read_bytes() == before               # the old file is intact
    assert os.listdir(tmp_path) == ["out.nrrd"]         # no temp file left behind


def test_sequence_round_trip(tmp_path, volume):
    frames = [volume.with_array(volume.array + 10 * k) for k in range(3)]
    path = write_sequence(frames, tmp_path / "cine.seq.nrrd", index_values=[0, 33.5, 67])
    back, values = read_sequence(path)
    assert values == [0, 33.5, 67]
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_allclose(b.spacing, a.spacing)
        np.testing.assert_allclose(b.origin, a.origin)
        np.testing.assert_allclose(b.direction, a.direction, atol=1e-12)


def test_sequence_rejects_frames_on_different_grids(tmp_path, volume):
    other = Volume(volume.array.copy(), spacing=(1, 1, 1))
    with pytest.raises(VolumeError, match="different grid"):
        write_sequence([volume, other], tmp_path / "x.seq.nrrd")


def _write(image, path):
    sitk.WriteImage(image, str(path))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="not found"):
        read_volume(tmp_path / "nope.nrrd")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "garbage.nrrd"
    bad.write_text("this is not an image")
    with pytest.raises(VolumeError, match="cannot read"):
        read_volume(bad)


def test_2d_image_is_refused(tmp_path):
    path = _write(sitk.Image(8, 8, sitk.sitkFloat32), tmp_path / "slice.nrrd")
    with pytest.raises(VolumeError, match="2D image; a 3D volume"):
        read_volume(path)


def test_4d_image_is_refused(tmp_path):
    path = _write(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), tmp_path / "cine.nrrd")
    with pytest.raises(VolumeError, match="4D; a 3D volume"):
        read_volume(path)


def test_vector_pixels_are_refused(tmp_path):
    path = _write(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), tmp_path / "rgb.nrrd")
    with pytest.raises(VolumeError, match="3 components per voxel"):
        read_volume(path)


def test_nan_is_refused(tmp_path):
    array = np.zeros((3, 4, 4), np.float32)
    array[1, 2, 2] = np.nan
    array[0, 0, 0] = np.inf
    path = _write(sitk.GetImageFromArray(array), tmp_path / "nan.nrrd")
    with pytest.raises(VolumeError, match="2 NaN/Inf voxels"):
        read_volume(path)


def test_empty_array_is_refused(tmp_path):
    with pytest.raises(VolumeError, match="empty"):
        write_volume(Volume(np.zeros((0, 4, 4), np.float32)), tmp_path / "e.nrrd")


def test_with_array_refuses_a_different_grid(volume):
    with pytest.raises(VolumeError, match="differs from the input grid"):
        volume.with_array(np.zeros((2, 2, 2), np.float32))


def test_dicom_folder_with_two_series_is_refused(tmp_path, volume):
    write_volume(volume, tmp_path / "a")
    write_volume(volume, tmp_path / "b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("a", "b"):
        for f in (tmp_path / sub).iterdir():
            f.rename(mixed / f"{sub}_{f.name}")
    with pytest.raises(VolumeError, match="holds 2 DICOM series"):
        read_volume(mixed)


def test_integer_storage_rounds_and_refuses_out_of_range(tmp_path, volume):
    back = read_volume(write_volume(volume.with_array(volume.array + 0.4), tmp_path / "ct.nrrd", dtype="int16"))
    np.testing.assert_array_equal(back.array, volume.array)
    assert sitk.ReadImage(str(tmp_path / "ct.nrrd")).GetPixelID() == sitk.sitkInt16
    with pytest.raises(VolumeError, match="do not fit in uint8"):
        write_volume(volume, tmp_path / "labels.nrrd", dtype="uint8")
