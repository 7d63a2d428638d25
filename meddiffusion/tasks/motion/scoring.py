"""Agatston before and after motion correction, inside the same region: table rows and segment layers."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from meddiffusion.io import Volume
from meddiffusion.metrics.agatston import AgatstonResult, agatston
from meddiffusion.tasks.motion.region import MotionRegion, _bounding_box, _hu

__all__ = ["TABLE_FIELDS", "score_region", "score_before_after", "agatston_total", "evaluate", "table_rows",
           "write_table", "segmentation_layers", "largest_lesion_lps", "summary_of"]

#: columns of the before/after table (--table); lesion rows leave "category" empty, total rows the lesion details
TABLE_FIELDS = ("scan", "lesion", "first_slice", "last_slice", "area_mm2", "peak_hu", "weight", "agatston",
                "volume_mm3", "category")



def score_region(volume: Volume, region: MotionRegion | np.ndarray) -> AgatstonResult:
    """Agatston of ``volume`` inside the region's scoring mask, with physical lesion centroids.

    Scored on the mask's bounding box, then put back on the full grid (slice numbers, label
    map, centroids), which is the same as scoring the whole volume, only faster.
    """
    mask = region.scoring if isinstance(region, MotionRegion) else np.asarray(region) > 0
    hu = _hu(volume)
    if mask.shape != hu.shape:
        raise ValueError(f"scoring region has shape {mask.shape} but the CT has {hu.shape}")
    if not mask.any():
        return _empty_score(volume)
    box = _bounding_box(mask)
    corner = volume.index_to_physical([box.z0, box.y0, box.x0])
    result = agatston(hu[box.slices], volume.spacing, mask=mask[box.slices].view(np.uint8), origin_xyz=corner,
                      direction=volume.direction)
    label_map = np.zeros(hu.shape, np.int32)
    label_map[box.slices] = result.label_map
    lesions = [replace(lesion, slice_first=lesion.slice_first + box.z0, slice_last=lesion.slice_last + box.z0,
                       centroid_zyx=tuple(c + o for c, o in zip(lesion.centroid_zyx, (box.z0, box.y0, box.x0))))
               for lesion in result.lesions]
    return replace(result, lesions=lesions, label_map=label_map)


def _empty_score(volume: Volume) -> AgatstonResult:
    return AgatstonResult([], 0.0, 0.0, "zero", float(volume.spacing[2]), np.zeros(volume.shape, np.int32))


def score_before_after(before: Volume, after: Volume,
                       region: MotionRegion | np.ndarray) -> tuple[AgatstonResult, AgatstonResult]:
    """Agatston of the input and of the corrected CT, both inside the same region."""
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must be on one grid")
    return score_region(before, region), score_region(after, region)


def agatston_total(volume: Volume, region: MotionRegion | np.ndarray) -> float:
    """The total Agatston score of ``volume`` inside the region (for benches)."""
    return float(score_region(volume, region).total)


def evaluate(corrupted: Volume, corrected: Volume, static: Volume,
             region: MotionRegion | np.ndarray) -> dict[str, Any]:
    """Agatston of the non-gated input, the corrected CT and the motion-free reference in one region.

    Returns each scan's :func:`summary_of` plus the absolute Agatston errors of the input and of
    the correction against the reference and whether their risk categories match it.
    """
    scores = {name: score_region(volume, region) for name, volume in
              (("corrupted", corrupted), ("corrected", corrected), ("static", static))}
    reference = scores["static"]
    out: dict[str, Any] = {name: summary_of(result) for name, result in scores.items()}
    for name in ("corrupted", "corrected"):
        out[f"{name}_abs_error"] = abs(scores[name].total - reference.total)
        out[f"{name}_category_match"] = scores[name].category == reference.category
    return out


def table_rows(before: AgatstonResult, after: AgatstonResult) -> list[dict[str, Any]]:
    """Rows with ``TABLE_FIELDS``: one per lesion of each scan, then that scan's total row."""
    rows = []
    for scan, result in (("before", before), ("after", after)):
        for lesion in result.lesions:
            rows.append({"scan": scan, "lesion": lesion.id, "first_slice": lesion.slice_first,
                         "last_slice": lesion.slice_last, "area_mm2": lesion.area_mm2, "peak_hu": lesion.peak_hu,
                         "weight": lesion.weight, "agatston": lesion.agatston, "volume_mm3": lesion.volume_mm3,
                         "category": ""})
        rows.append({"scan": scan, "lesion": "total", "first_slice": "", "last_slice": "", "area_mm2": "",
                     "peak_hu": "", "weight": "", "agatston": result.total, "volume_mm3": result.volume_mm3,
                     "category": result.category})
    return rows


def write_table(path: str | os.PathLike, before: AgatstonResult, after: AgatstonResult) -> Path:
    """Write :func:`table_rows` as CSV, atomically."""
    from meddiffusion.tasks.job import Table

    return Table(TABLE_FIELDS, table_rows(before, after)).write(path)


#: segment colours: warm for the input's lesions, cool for the corrected ones
_BEFORE_COLOURS = ((0.95, 0.35, 0.2), (0.95, 0.65, 0.15), (0.85, 0.2, 0.45), (0.95, 0.85, 0.3))
_AFTER_COLOURS = ((0.2, 0.55, 0.95), (0.25, 0.85, 0.7), (0.55, 0.4, 0.95), (0.3, 0.75, 0.95))


def segmentation_layers(before: AgatstonResult, after: AgatstonResult) -> tuple[list[np.ndarray], list[dict]]:
    """Layers (before, after lesion label maps) and segments "before L1", ..., "after L1", ... for
    :func:`meddiffusion.io.write_segmentation`."""
    layers, segments = [], []
    for layer, (scan, result, colours) in enumerate((("before", before, _BEFORE_COLOURS),
                                                     ("after", after, _AFTER_COLOURS))):
        layers.append(result.label_map)
        for lesion in result.lesions:
            segments.append({"name": f"{scan} L{lesion.id}", "layer": layer, "label": lesion.id,
                             "color": colours[(lesion.id - 1) % len(colours)],
                             "tags": {"Scan": scan, "Agatston": f"{lesion.agatston:.2f}"}})
    return layers, segments


def largest_lesion_lps(result: AgatstonResult) -> list[float] | None:
    """LPS centroid (mm) of the lesion with the largest volume; None without calcium."""
    if not result.lesions:
        return None
    largest = max(result.lesions, key=lambda lesion: (lesion.volume_mm3, -lesion.id))
    return [float(c) for c in largest.centroid_xyz_mm]


def summary_of(result: AgatstonResult) -> dict[str, Any]:
    """The result-event dict of one scan: agatston, volume_mm3, lesions, category."""
    return {"agatston": float(result.total), "volume_mm3": float(result.volume_mm3),
            "lesions": len(result.lesions), "category": result.category}

