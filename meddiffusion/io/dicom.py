"""DICOM series folders: one series per folder in, one int16 file per axial slice out."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from meddiffusion.io.volume import Volume, VolumeError, first_line

__all__ = ["read_dicom_series", "write_dicom_series"]


def read_dicom_series(folder: Path) -> tuple[sitk.Image, str]:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError(f"no DICOM series found in folder {folder}")
    if len(series) > 1:
        sizes = {s: len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
        raise VolumeError(f"folder {folder} holds {len(series)} DICOM series "
                          f"({', '.join(f'{s}: {n} files' for s, n in sizes.items())}); "
                          "put one series per folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"cannot read the DICOM series in {folder} ({first_line(exc)})") from None
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    check_slice_positions(reader, len(files), folder)
    return image, modality


#: slice gaps may differ by this share of the typical gap (rounding in the position tags)
GAP_TOLERANCE = 0.05


def check_slice_positions(reader: sitk.ImageSeriesReader, count: int, folder: Path) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing, unreadable or duplicated slice).

    ITK stacks such a series on a regular grid from the first gap and only warns, so a lost
    slice would silently shift every slice after it.
    """
    if count < 3 or not all(reader.HasMetaDataKey(i, "0020|0032") for i in range(count)):
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
                              for i in range(count)])
        cosines = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
    except ValueError:
        return  # malformed position tags: ITK's own geometry stands
    normal = np.cross(cosines[:3], cosines[3:6])
    gaps = np.diff(np.sort(positions @ normal))
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    if typical <= 0 or abs(gaps[worst] - typical) > GAP_TOLERANCE * typical:
        raise VolumeError(f"the DICOM series in {folder} has irregular slice positions: slices {worst} and "
                          f"{worst + 1} are {gaps[worst]:.2f} mm apart where the others are {typical:.2f} mm "
                          "(a missing, unreadable or duplicated slice?); put the complete series in the folder")




def write_dicom_series(volume: Volume, folder: Path) -> Path:
    """One file per axial slice, stored as int16 with a rescale slope chosen so values survive.

    Integer-valued data (CT in HU) is stored exactly with slope 1; anything else (PET, MR,
    model outputs) gets slope max|v|/32000, a relative precision of about 3e-5.
    """
    modality = volume.modality or "OT"
    lo, hi = float(volume.array.min()), float(volume.array.max())
    integral = np.allclose(volume.array, np.round(volume.array)) and lo >= -32768 and hi <= 32767
    slope = 1.0 if integral else max(abs(lo), abs(hi), 1e-12) / 32000.0
    if integral:
        image = sitk.GetImageFromArray(np.round(volume.array).astype(np.int16))
    else:  # GDCM applies the inverse rescale to float pixels using the tags below
        image = sitk.GetImageFromArray(volume.array.astype(np.float32))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)

    study_uid, series_uid = _dicom_uid(), _dicom_uid()
    d = np.asarray(volume.direction).reshape(3, 3)
    orientation = "\\".join(f"{v:.10g}" for v in (*d[:, 0], *d[:, 1]))
    tags = {
        "0008|0060": modality, "0020|000d": study_uid, "0020|000e": series_uid,
        "0008|103e": volume.metadata.get("SeriesDescription", "SlicerMedDiffusion output"),
        "0020|0037": orientation, "0028|1052": "0", "0028|1053": f"{slope:.10g}",
        "0018|0050": f"{volume.spacing[2]:.10g}",
        "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(volume.array.shape[0]):
            s = image[:, :, k]
            for key, value in tags.items():
                s.SetMetaData(key, value)
            s.SetMetaData("0008|0018", _dicom_uid())
            s.SetMetaData("0020|0013", str(k + 1))
            s.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
            writer.SetFileName(str(tmp / f"slice{k:04d}.dcm"))
            writer.Execute(s)
        if folder.exists():
            if not folder.is_dir() or any(folder.iterdir()):
                raise VolumeError(f"DICOM output folder {folder} exists and is not empty; choose a new folder")
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dicom_uid() -> str:
    # 2.25.<uuid as integer> is the standard way to make a UID without a registered root.
    return "2.25." + str(uuid.uuid4().int)
