"""A small synthetic brain FDG PET and its T1 MR for the PET/MR module's tests.

A warm ellipsoidal head (SUV 1) holding a brain whose cortex is hot (SUV 8) around warm white
matter (SUV 2), a hot lesion (SUV 12) in the right hemisphere, with multiplicative noise as a
low-count PET has; the MR shows the same anatomy in T1 contrast (white matter bright, cortex
grey, the scalp bright).  3 mm voxels on a grid placed as a DICOM study is (LPS axes).
"""

from __future__ import annotations

import numpy as np

SPACING_MM = 3.0
#: the lesion's centre as an offset from the volume's centre, in voxels (i, j, k)
LESION_OFFSET_IJK = np.array([-4.0, 1.0, 0.0])
LESION_RADIUS_MM = 6.0
LESION_SUV = 12.0


def ijk_to_ras(spacing_mm: float = SPACING_MM, origin_ras=(36.0, 40.0, -20.0)) -> np.ndarray:
    """IJKToRAS of the study: LPS axes (i to the patient's left, j posterior, k up)."""
    matrix = np.diag([-spacing_mm, -spacing_mm, spacing_mm, 1.0])
    matrix[:3, 3] = origin_ras
    return matrix


def _regions(shape):
    k, j, i = np.indices(shape, dtype=float)
    centre = (np.array(shape, dtype=float)[::-1] - 1) / 2  # (i, j, k)
    radius = np.sqrt(((i - centre[0]) / (0.42 * shape[2])) ** 2 + ((j - centre[1]) / (0.46 * shape[1])) ** 2
                     + ((k - centre[2]) / (0.46 * shape[0])) ** 2)
    lesion_ijk = centre + LESION_OFFSET_IJK
    distance = np.sqrt((i - lesion_ijk[0]) ** 2 + (j - lesion_ijk[1]) ** 2 + (k - lesion_ijk[2]) ** 2) * SPACING_MM
    return radius, distance <= LESION_RADIUS_MM


def lesion_centre_ras(shape=(12, 24, 24), matrix=None) -> np.ndarray:
    """Where the lesion's centre lies in RAS on the grid ``matrix`` (default :func:`ijk_to_ras`)."""
    matrix = ijk_to_ras() if matrix is None else np.asarray(matrix)
    centre = (np.array(shape, dtype=float)[::-1] - 1) / 2 + LESION_OFFSET_IJK
    return (matrix @ np.append(centre, 1.0))[:3]


def brain_pet(shape=(12, 24, 24), *, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """The PET as a float32 (k, j, i) array in SUV (never negative)."""
    radius, lesion = _regions(shape)
    array = np.where(radius < 1.0, 1.0, 0.05) + np.where(radius < 0.85, 7.0, 0.0) - np.where(radius < 0.6, 6.0, 0.0)
    array = np.where(lesion, LESION_SUV, array)
    if noise:
        array = array * np.random.default_rng(seed).gamma(1 / noise ** 2, noise ** 2, shape)
    return np.clip(array, 0.0, None).astype(np.float32)


def brain_mr(shape=(12, 24, 24), *, seed: int = 1) -> np.ndarray:
    """The T1 MR as a float32 (k, j, i) array in arbitrary units (never negative)."""
    radius, lesion = _regions(shape)
    array = np.select([lesion, radius < 0.6, radius < 0.85, radius < 1.0], [40.0, 90.0, 50.0, 70.0], 2.0)
    array = array + np.abs(np.random.default_rng(seed).normal(0.0, 2.0, shape))
    return array.astype(np.float32)
