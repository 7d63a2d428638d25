"""How the training caches store images: HU as int16 (1 HU steps, a quarter of float32's disk)."""

from __future__ import annotations

import numpy as np

__all__ = ["hu_to_int16"]


def hu_to_int16(hu: np.ndarray) -> np.ndarray:
    """HU rounded to whole units and clipped to the int16 range."""
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
