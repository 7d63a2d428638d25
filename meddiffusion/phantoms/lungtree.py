"""Branching pulmonary vessel trees that fill the lungs.

A tree grows from a hilum by recursive halving of a cloud of random points inside the lung
(the idea of space-colonisation models of vascular trees, e.g. Runions et al., Eurographics
Workshop on Natural Phenomena 2007): a branch heads toward the centroid of the points it
serves, the points are split in two along their longest spread, and each half gets a child.
Radii follow Murray's law, r³ ∝ the territory served, so vessels taper from ~10 mm at the
hilum to ~1 mm in the periphery, and branch lengths shrink with the territories.  One
arterial and one venous tree per lung give the dots-and-lines texture of lung CT.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from meddiffusion.phantoms.shapes import Capsule

__all__ = ["grow_tree", "sample_inside"]


def sample_inside(inside: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform random points of the region ``inside`` (a vectorised test) within [lo, hi]."""
    found = []
    count = 0
    for _ in range(50):
        candidates = rng.uniform(lo, hi, size=(4 * n, 3))
        keep = candidates[inside(candidates)]
        found.append(keep)
        count += len(keep)
        if count >= n:
            break
    points = np.concatenate(found)[:n]
    if len(points) < n // 2:
        raise ValueError("the lung region is too small to grow a vessel tree")
    return points


def grow_tree(root: np.ndarray, points: np.ndarray, root_radius: float, *, reach: float = 0.6,
              min_radius: float = 0.8, max_depth: int = 8) -> list[Capsule]:
    """Segments of a tree from ``root`` serving ``points`` (N, 3)."""
    segments: list[Capsule] = []
    total = len(points)

    def branch(start: np.ndarray, served: np.ndarray, radius: float, depth: int) -> None:
        centroid = served.mean(axis=0)
        end = start + reach * (centroid - start) if depth > 0 else centroid
        child_radius = root_radius * (len(served) / total) ** (1 / 3)
        segments.append(Capsule(tuple(start), tuple(end), float(radius), float(max(child_radius, min_radius))))
        if depth >= max_depth or len(served) < 4 or child_radius < min_radius:
            return
        centred = served - centroid
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        order = np.argsort(centred @ axis)
        half = len(order) // 2
        for part in (served[order[:half]], served[order[half:]]):
            branch(end, part, child_radius, depth + 1)

    branch(np.asarray(root, float), points, root_radius, 0)
    return segments
