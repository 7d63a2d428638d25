"""Single image files (NRRD, NIfTI, MHA, one DICOM file) and the dispatch to DICOM series folders."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from meddiffusion.files import atomic_write
from meddiffusion.io.dicom import read_dicom_series, write_dicom_series
from meddiffusion.io.volume import VOLUME_SUFFIXES, Volume, VolumeError, first_line, validate_array, validate_image

__all__ = ["read_volume", "write_volume"]


def read_volume(path: str | os.PathLike, modality: str = "") -> Volume:
    """Read a 3D scalar volume from a file (NRRD, NIfTI, MHA, single DICOM) or a DICOM folder.

    For DICOM, CT values are returned in HU (rescale slope/intercept applied) and the
    modality is taken from the header; for other formats pass ``modality`` if known.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"input not found: {path}")
    if path.is_dir():
        image, dicom_modality = read_dicom_series(path)
    else:
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            dicom_modality = reader.GetMetaData("0008|0060").strip() if reader.HasMetaDataKey("0008|0060") else ""
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeError(f"cannot read {path}: not a readable NRRD, NIfTI, MHA or DICOM image "
                              f"({first_line(exc)})") from None
        if image.GetDimension() == 2:  # a single DICOM/2D file: one slice
            image = sitk.JoinSeries(image)
            if not dicom_modality:
                raise VolumeError(f"{path} is a 2D image; a 3D volume (z, y, x) is needed")
    validate_image(image, source=str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    validate_array(array, source=str(path))
    return Volume(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                  modality=modality or dicom_modality)



def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True,
                 dtype: str | None = None) -> Path:
    """Write atomically.  A path without a known suffix is taken as a DICOM series folder.

    ``dtype`` (e.g. ``"int16"`` for CT in HU, ``"uint8"`` for label maps) stores the voxels
    rounded in that type, halving file size; values outside its range are an error.
    """
    path = Path(path)
    validate_array(volume.array, source="volume to write")
    if _has_volume_suffix(path):
        image = volume.to_sitk() if dtype is None else _cast(volume, dtype).to_sitk()
        for key, value in volume.metadata.items():
            image.SetMetaData(key, value)
        return atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), compress))
    return write_dicom_series(volume, path)


def _cast(volume: Volume, dtype: str) -> Volume:
    target = np.dtype(dtype)
    array = volume.array
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise VolumeError(f"values {array.min():g}..{array.max():g} do not fit in {dtype}")
        array = np.rint(array)
    return replace(volume, array=array.astype(target))


def _has_volume_suffix(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES)


