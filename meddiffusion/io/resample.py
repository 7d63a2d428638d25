"""Moving a volume onto another grid (SimpleITK, physical space), for inputs that come on their own grids.

A CT or μ-map beside a SPECT, or a SPECT whose pixels differ from the ones a model learned,
is resampled in LPS world coordinates, so any spacing, origin and direction line up; voxels
that fall outside the moving image get ``default``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from meddiffusion.io.volume import Volume

__all__ = ["resample_onto", "resample_inplane", "overlap_fraction"]

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def resample_onto(volume: Volume, reference: Volume, *, default: float = 0.0, interpolation: str = "linear") -> Volume:
    """``volume`` sampled on ``reference``'s grid (its modality and units kept)."""
    image = sitk.Resample(volume.to_sitk(), reference.to_sitk(), sitk.Transform(), _INTERPOLATORS[interpolation],
                          float(default), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    return Volume(array, reference.spacing, reference.origin, reference.direction, modality=volume.modality,
                  units=volume.units, metadata=dict(volume.metadata))


def resample_inplane(volume: Volume, pixel_mm: float, *, multiple: int = 1) -> Volume:
    """``volume`` with in-plane pixels of ``pixel_mm`` over the same field of view and the same slices.

    The new matrix is rounded up to a multiple of ``multiple`` (a network's pooling); the grid
    keeps the first voxel's centre and the direction, so :func:`resample_onto` brings a result back.
    """
    size = []
    for n, spacing in zip(volume.shape[::-1][:2], volume.spacing[:2]):
        count = max(1, int(round(n * spacing / pixel_mm)))
        size.append(-(-count // multiple) * multiple)
    shape = (volume.shape[0], size[1], size[0])
    target = Volume(np.zeros(shape, np.float32), (pixel_mm, pixel_mm, volume.spacing[2]), volume.origin,
                    volume.direction)
    return resample_onto(volume, target)


def overlap_fraction(volume: Volume, reference: Volume) -> float:
    """Share of ``reference``'s voxels that lie inside ``volume``'s field of view."""
    ones = volume.with_array(np.ones(volume.shape, np.float32))
    return float(resample_onto(ones, reference, interpolation="nearest").array.mean())
