"""Augmentations shared by the tasks' training crops."""

from __future__ import annotations

import torch

__all__ = ["dihedral", "crop_room"]


def dihedral(image: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/transposes of the last two axes: bit 0 flips columns, bit 1 rows, bit 2 transposes.

    Stacks of input and target slices go through together, so the pair stays aligned; CT has
    no preferred in-plane orientation at the patch scale, so all 8 are valid training views.
    """
    if not 0 <= code < 8:
        raise ValueError(f"dihedral code must be in 0..7, got {code}")
    if code & 1:
        image = image.flip(-1)
    if code & 2:
        image = image.flip(-2)
    if code & 4:
        image = image.transpose(-1, -2)
    return image


def crop_room(images: torch.Tensor, crop: int, what: str) -> tuple[int, int]:
    """The (height, width) of ``images``, checked to hold a ``crop``-pixel square crop."""
    height, width = images.shape[-2:]
    if crop > min(height, width):
        raise ValueError(f"crop {crop} is larger than the {what} ({height}×{width})")
    return height, width
