"""What the task modules' self-tests inside Slicer share: a small CT phantom on an oblique grid."""

from __future__ import annotations

import numpy as np

__all__ = ["OBLIQUE_IJK_TO_RAS", "ct_phantom"]

#: anisotropic, slightly rotated, offset: a grid on which a lost direction or spacing shows
OBLIQUE_IJK_TO_RAS = np.array([[0.0, -0.7, 0.1, 10.0], [0.7, 0.0, 0.0, -5.0],
                               [0.0, 0.05, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])


def ct_phantom(name: str, *, air: float = -1000.0, calcium: bool = False, noise_hu: float = 30.0):
    """A new 6 x 64 x 64 CT-like volume node: air around a soft-tissue disc, optionally a
    450 HU calcification in its middle slices."""
    import slicer

    rng = np.random.default_rng(0)
    _, j, i = np.mgrid[0:6, 0:64, 0:64]
    array = np.where((j - 32) ** 2 + (i - 32) ** 2 < 24 ** 2, 40.0, air)
    if calcium:
        array[2:4, 30:34, 30:34] = 450.0
    array = (array + rng.normal(0, noise_hu, array.shape)).astype(np.int16)
    return slicer.util.addVolumeFromArray(array, ijkToRAS=OBLIQUE_IJK_TO_RAS, name=name)
