"""Volumes in and out: one ``Volume`` type, read from and written to NRRD, NIfTI, MHA and DICOM.

Geometry follows SimpleITK/ITK (LPS physical space): ``spacing`` and ``origin`` are (x, y, z)
in mm and ``direction`` is the row-major 3×3 cosine matrix, while ``array`` is indexed
(z, y, x).  Reading and writing round-trips geometry exactly, and every write is atomic
(temporary file in the target folder, then rename), so a crash or Cancel never leaves a
half-written output.

``volume`` holds the type and its validation, ``images`` single files, ``dicom`` series
folders, ``sequences`` Slicer 4D sequences and ``segmentations`` Slicer segmentations, ``resample`` moves a volume onto another grid.
"""

from meddiffusion.io.images import read_volume, write_volume
from meddiffusion.io.resample import overlap_fraction, resample_inplane, resample_onto
from meddiffusion.io.segmentations import read_segmentation, write_segmentation
from meddiffusion.io.sequences import read_sequence, write_sequence
from meddiffusion.io.volume import VOLUME_SUFFIXES, Volume, VolumeError, validate_array, validate_image

__all__ = [
    "Volume", "VolumeError", "read_volume", "write_volume", "read_sequence", "write_sequence",
    "VOLUME_SUFFIXES", "write_segmentation", "read_segmentation", "validate_array", "validate_image",
    "resample_onto", "resample_inplane", "overlap_fraction",
]
