"""Single image files (NRRD, NIfTI, MHA, one DICOM file) and the dispatch to DICOM series folders."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from meddiffusion.files import atomic_write
from meddiffusion.io.dicom import read_dicom_series, write_dicom_series
from meddiffusion.io.volume import (VOLUME_SUFFIXES, Volume, VolumeError, first_line, keeps_locale, validate_array,
                                      validate_image)

__all__ = ["read_volume", "write_volume", "check_volume_path", "check_nifti_length"]


@keeps_locale
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
        if path.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti_length(path)  # ITK fills a short NIfTI with zeros instead of failing
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


def check_nifti_length(path: Path) -> None:
    """Refuse a NIfTI file whose voxel data is shorter than its header declares (truncated or forged).

    NRRD and MetaImage readers fail on short data by themselves; ITK's NIfTI reader does not.
    The header is read with ``struct`` (NIfTI-1: 348 bytes, NIfTI-2: 540), the data length by
    streaming the (decompressed) file, so a header declaring gigabytes costs nothing.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(540)
            available = len(head) + _stream_length(handle)
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(f"cannot read {path}: the compressed data is damaged or truncated ({exc})") from None
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix, offset = struct.unpack(order + "h", head[72:74])[0], struct.unpack(order + "f", head[108:112])[0]
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix, offset = struct.unpack(order + "h", head[14:16])[0], struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        raise VolumeError(f"cannot read {path}: not a NIfTI-1 or NIfTI-2 file (no valid header)")
    count = int(np.prod([max(int(d), 1) for d in dims[1: 1 + max(0, min(int(dims[0]), 7))]], dtype=np.float64))
    needed = int(max(offset, 348)) + count * max(int(bitpix), 8) // 8
    if available < needed:
        shape = "×".join(str(int(d)) for d in dims[1: 1 + int(dims[0])])
        raise VolumeError(f"{path} is truncated: its header declares {shape} voxels of {bitpix} bits "
                          f"({_size(needed)}) but the file holds {_size(available)}; the file was cut short or "
                          "its header is wrong")


def _stream_length(handle, chunk: int = 1 << 22) -> int:
    total = 0
    while block := handle.read(chunk):
        total += len(block)
    return total


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"



@keeps_locale
def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True,
                 dtype: str | None = None) -> Path:
    """Write atomically.  A path without a known suffix is taken as a DICOM series folder.

    ``dtype`` (e.g. ``"int16"`` for CT in HU, ``"uint8"`` for label maps) stores the voxels
    rounded in that type, halving file size; values outside its range are an error.
    """
    path = Path(path)
    validate_array(volume.array, source="volume to write")
    check_volume_path(path)
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


def check_volume_path(path: str | os.PathLike) -> None:
    """A volume is written as one of :data:`VOLUME_SUFFIXES`, or as a DICOM series into a folder named without one."""
    path = Path(path)
    if not _has_volume_suffix(path) and Path(path.name.lstrip(".")).suffix:
        raise VolumeError(f"cannot write a volume as '{path.name}': use one of {', '.join(VOLUME_SUFFIXES)}, or a "
                          "folder name without a suffix for a DICOM series")


def _has_volume_suffix(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES)


