"""Files that are not what they claim: truncated NIfTI, forged headers, DICOM series with a gap, odd suffixes."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from meddiffusion.commands.paths import check_output, check_writable
from meddiffusion.io import Volume, VolumeError, read_volume, write_volume


def ct_array(shape=(8, 16, 16)) -> np.ndarray:
    return np.round(np.random.default_rng(0).normal(0, 100, shape)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_truncated_nifti_is_refused_not_filled_with_zeros(tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(ct_array().astype(np.int16)), str(path), suffix.endswith(".gz"))
    assert read_volume(path).shape == (8, 16, 16)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(path)


def test_a_nifti_header_declaring_more_data_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "forged.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4), np.int16)), str(path))
    header = bytearray(path.read_bytes())
    header[40:56] = struct.pack("<8h", 3, 512, 512, 1000, 1, 1, 1, 1)
    path.write_bytes(bytes(header))
    with pytest.raises(VolumeError, match=r"512×512×1000 voxels of 16 bits \(500.0 MB\)"):
        read_volume(path)


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    folder = tmp_path / "series"
    write_volume(Volume(ct_array(), spacing=(0.7, 0.7, 3.0), modality="CT"), folder)
    assert read_volume(folder).spacing[2] == pytest.approx(3.0)
    os.remove(sorted(folder.iterdir())[4])
    with pytest.raises(VolumeError, match="irregular slice positions: slices 3 and 4 are 6.00 mm apart"):
        read_volume(folder)


@pytest.mark.parametrize("name", ["out.jpg", "out.nii.bz2", "lesions.png"])
def test_unknown_volume_suffixes_are_refused_not_written_as_dicom(tmp_path, name):
    with pytest.raises(ValueError, match="use one of .nrrd"):
        check_output("-o", tmp_path / name, "volume")
    with pytest.raises(VolumeError, match="use one of .nrrd"):
        write_volume(Volume(ct_array()), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_outputs_under_a_file_or_a_read_only_folder_are_refused_before_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable("-o", tmp_path / "file" / "sub" / "out.nrrd")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere")
        with pytest.raises(ValueError, match="is not writable"):
            check_writable("-o", locked / "out.nrrd")
    finally:
        locked.chmod(0o700)


def test_reading_and_writing_dicom_keeps_the_process_locale(tmp_path):
    import locale

    before = locale.setlocale(locale.LC_CTYPE)
    write_volume(Volume(ct_array(), spacing=(0.7, 0.7, 3.0), modality="CT"), tmp_path / "series")
    read_volume(tmp_path / "series")
    assert locale.setlocale(locale.LC_CTYPE) == before  # GDCM would leave "C": text files then read as ASCII
