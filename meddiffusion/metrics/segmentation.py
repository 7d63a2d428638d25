"""Overlap and boundary agreement of two label maps: Dice and the 95th-percentile Hausdorff
distance (HD95), label by label.

Empty labels are scored by a fixed convention so a table never holds a silent surprise:

=================  ======  ======
label present in   Dice    HD95
=================  ======  ======
both               formula formula
neither            1.0     NaN
only one           0.0     inf
=================  ======  ======

HD95 follows MONAI: surface voxels (mask minus its erosion), the exact Euclidean distance
from each surface voxel to the other surface in mm, the 95th percentile (linear
interpolation) of each direction, and the larger of the two.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

__all__ = ["dice", "hd95"]

Array = np.ndarray | torch.Tensor


def _as_label_map(labels: Array, name: str) -> np.ndarray:
    a = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2D (y, x) or 3D (z, y, x) label map, got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected an integer label map, got dtype {a.dtype}")
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and np.array_equal(a, np.round(a))):
        raise ValueError(f"{name}: label maps hold whole numbers; got non-integer or non-finite values")
    return a.astype(np.int64)


def _label_pair(pred: Array, ref: Array) -> tuple[np.ndarray, np.ndarray]:
    p, r = _as_label_map(pred, "pred_labels"), _as_label_map(ref, "ref_labels")
    if p.shape != r.shape:
        raise ValueError(f"pred_labels and ref_labels must have the same shape, got {p.shape} and {r.shape}")
    return p, r


def _labels_to_score(p: np.ndarray, r: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    """The requested labels, or every non-zero label found in either map."""
    if labels is None:
        return sorted(int(v) for v in np.union1d(np.unique(p), np.unique(r)) if v != 0)
    return [int(v) for v in labels]


def dice(pred_labels: Array, ref_labels: Array, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice coefficient 2|P∩R| / (|P| + |R|) per label (1.0 if absent from both, 0.0 if from one)."""
    p, r = _label_pair(pred_labels, ref_labels)
    scores = {}
    for label in _labels_to_score(p, r, labels):
        in_p, in_r = p == label, r == label
        total = int(in_p.sum()) + int(in_r.sum())
        scores[label] = 1.0 if total == 0 else 2.0 * int((in_p & in_r).sum()) / total
    return scores


def hd95(pred_labels: Array, ref_labels: Array, spacing_xyz: Sequence[float],
         labels: Iterable[int] | None = None) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance in mm per label.

    ``spacing_xyz`` is the voxel size in mm in (x, y[, z]) order, as SimpleITK reports it,
    one value per array axis.  NaN if the label is absent from both maps, inf if from one.
    """
    p, r = _label_pair(pred_labels, ref_labels)
    spacing = tuple(float(s) for s in spacing_xyz)
    if len(spacing) != p.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_xyz must hold {p.ndim} positive sizes in mm (x, y[, z]), got {spacing_xyz}")
    spacing_array_order = spacing[::-1]
    distances = {}
    for label in _labels_to_score(p, r, labels):
        in_p, in_r = p == label, r == label
        if not in_p.any() and not in_r.any():
            distances[label] = math.nan
        elif not in_p.any() or not in_r.any():
            distances[label] = math.inf
        else:
            with warnings.catch_warnings():  # MONAI passes one of its own deprecated arguments
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(
                    torch.from_numpy(in_p)[None, None], torch.from_numpy(in_r)[None, None],
                    include_background=True, percentile=95, spacing=spacing_array_order)
            distances[label] = float(hd.item())
    return distances
