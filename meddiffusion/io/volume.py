"""The ``Volume`` type: a 3D scalar image with its physical geometry, and the checks every reader applies."""

from __future__ import annotations

import functools
import locale
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

__all__ = ["VOLUME_SUFFIXES", "VolumeError", "Volume", "validate_image", "validate_array", "first_line",
           "keeps_locale"]

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
_UNITS_BY_MODALITY = {"CT": "HU", "PT": "Bq/ml", "NM": "counts", "MR": "a.u."}


class VolumeError(ValueError):
    """A volume could not be read or is not what the operation needs."""


@dataclass
class Volume:
    """A 3D scalar image with its physical geometry.

    ``array`` is float32 (z, y, x).  ``modality`` uses DICOM terms (CT, MR, PT, NM) and
    ``units`` says what the numbers mean (HU for CT), so a result can stay in HU.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    modality: str = ""
    units: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in self.direction)
        if not self.units and self.modality in _UNITS_BY_MODALITY:
            self.units = _UNITS_BY_MODALITY[self.modality]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.spacing[::-1]

    def with_array(self, array: np.ndarray, **changes) -> "Volume":
        """A new volume on the same grid (e.g. a model's output), input left untouched."""
        if array.shape != self.array.shape:
            raise VolumeError(f"result shape {array.shape} differs from the input grid {self.array.shape}")
        return replace(self, array=array, metadata=dict(self.metadata), **changes)

    def index_to_physical(self, zyx) -> np.ndarray:
        """Physical (LPS, mm) coordinates of a (z, y, x) index."""
        ijk = np.asarray(zyx, dtype=float)[::-1]
        d = np.asarray(self.direction).reshape(3, 3)
        return np.asarray(self.origin) + d @ (ijk * np.asarray(self.spacing))

    # -- SimpleITK bridge ---------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, modality: str = "", units: str = "") -> "Volume":
        validate_image(image)
        array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
        validate_array(array)
        return cls(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                   modality=modality, units=units)


# -- validation ------------------------------------------------------------------------------
def validate_image(image: sitk.Image, source: str = "image") -> None:
    if image.GetDimension() != 3:
        raise VolumeError(
            f"{source} is {image.GetDimension()}D; a 3D volume (z, y, x) is needed"
            + (" — for a 4D series, use a sequence input" if image.GetDimension() == 4 else ""))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(colour or vector image); a scalar (grey-level) volume is needed")
    if 0 in image.GetSize():
        raise VolumeError(f"{source} is empty (size {image.GetSize()})")


def validate_array(array: np.ndarray, source: str = "image") -> None:
    if array.ndim != 3:
        raise VolumeError(f"{source} has {array.ndim} dimensions; a 3D array (z, y, x) is needed")
    if array.size == 0:
        raise VolumeError(f"{source} is empty (shape {array.shape})")
    bad = ~np.isfinite(array)
    if bad.any():
        raise VolumeError(f"{source} contains {int(bad.sum())} NaN/Inf voxels; all voxels must be finite")


def first_line(exc: Exception) -> str:
    """The last non-empty line of an ITK error (the one that says what went wrong)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__



def keeps_locale(function):
    """Restore the process's locale after ``function``: ITK's DICOM layer (GDCM) switches it to "C",
    after which Python would read and write text files as ASCII."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        saved = {category: locale.setlocale(category) for category in (locale.LC_CTYPE, locale.LC_NUMERIC)}
        try:
            return function(*args, **kwargs)
        finally:
            for category, value in saved.items():
                locale.setlocale(category, value)

    return wrapper
