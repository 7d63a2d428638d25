"""A small synthetic myocardial perfusion NAC study for the SPECT module's tests.

A hot ellipsoidal LV shell (about 60 x 60 x 80 mm, open at the base, its apex toward the
patient's left, front and feet, as in the standard anatomy) in a warm body, the inferior
wall dimmed as attenuation dims it, on a 6.4 mm grid placed as a DICOM study is (LPS axes).
"""

from __future__ import annotations

import numpy as np

#: the grid of a clinical 64² cardiac SPECT: 6.4 mm voxels, i -> patient left, j -> posterior
SPACING_MM = 6.4
#: the LV's long axis, base -> apex, in the volume's (i, j, k) = LPS directions
APEX_DIRECTION = np.array([1.0, -1.0, -0.8]) / np.linalg.norm([1.0, -1.0, -0.8])


def ijk_to_ras(spacing_mm: float = SPACING_MM, origin_ras=(100.0, 110.0, -60.0)) -> np.ndarray:
    """IJKToRAS of the study: LPS axes (i to the patient's left, j posterior, k up)."""
    matrix = np.diag([-spacing_mm, -spacing_mm, spacing_mm, 1.0])
    matrix[:3, 3] = origin_ras
    return matrix


def heart_array(shape=(24, 32, 32), *, counts: float = 100.0, body: float = 6.0, noise: float = 0.0,
                spacing_mm: float = SPACING_MM, seed: int = 0) -> np.ndarray:
    """The study as a float32 (k, j, i) array of counts (never negative)."""
    k, j, i = np.indices(shape, dtype=float)
    centre = (np.array(shape, dtype=float)[::-1] - 1) / 2  # (i, j, k)
    offset = np.stack([i - centre[0], j - centre[1], k - centre[2]], axis=-1) * spacing_mm
    along = offset @ APEX_DIRECTION
    across = np.linalg.norm(offset - along[..., None] * APEX_DIRECTION, axis=-1)
    radius = np.sqrt((along / 40.0) ** 2 + (across / 30.0) ** 2)
    wall = np.exp(-(((radius - 0.8) / 0.2) ** 2)) * (along > -22.0)  # open at the valve plane
    inferior = offset[..., 2] < -8.0
    wall *= np.where(inferior, 0.65, 1.0)
    torso = ((i - centre[0]) / (shape[2] * 0.48)) ** 2 + ((j - centre[1]) / (shape[1] * 0.4)) ** 2 < 1
    array = counts * wall + body * torso
    if noise:
        array = array + np.random.default_rng(seed).normal(0.0, noise, shape)
    return np.clip(array, 0.0, None).astype(np.float32)
