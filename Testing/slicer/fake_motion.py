"""A stand-in for ``meddiff motion-correct`` that speaks the same protocol, without a model.

``python fake_motion.py CT.nrrd -o OUT.nrrd --seg calcium.seg.nrrd --table agatston.csv
[--roi I0 I1 J0 J1 K0 K1] [--steps N] [--model ID] [--device D] --events jsonl``

"Corrects" the region (the ROI box, else the whole volume) by setting its voxels from 130 to
299 HU to 40 HU, as if the motion blur around each calcification were removed: a lesion
keeps its >= 300 HU core.  Scores both scans in the region with the real Agatston code and
writes, atomically, the corrected CT (the input outside the region), the two-layer
``.seg.nrrd`` ("before L<n>" in layer 0, "after L<n>" in layer 1), the per-lesion CSV and
the result event with "before"/"after" totals, "largest_lesion_lps" (the before lesion with
the largest volume; null without calcium) and "corrected_slices".  One ``correct`` progress
event per slice of the region.

Exit codes: 0 done, 2 bad input (unknown ``--model``, an ROI outside the volume), 130 after
SIGTERM/SIGINT, with no output file then.  Environment: ``FAKE_MOTION_SLICE_S`` is the time
spent per slice, so tests can cancel mid-run; ``FAKE_MOTION_FAULT`` makes a faulty backend
that still exits 0: "shifted-seg" writes the segmentation 5 mm off the input's grid,
"no-after" leaves the "after" scores out of the result.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from dataclasses import replace

import importlib.util
from pathlib import Path

import numpy as np

import meddiffusion
from meddiffusion.files import atomic_write
from meddiffusion.io import read_volume, write_segmentation, write_volume


def _load_agatston():
    """The real scorer, loaded from its file: importing ``meddiffusion.metrics`` would import
    torch and MONAI for the package's other metrics, seconds per fake run."""
    path = Path(meddiffusion.__file__).parent / "metrics" / "agatston.py"
    spec = importlib.util.spec_from_file_location("fake_motion_agatston", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.agatston


agatston = _load_agatston()

KNOWN_MODELS = ("fake-motion-prodm", "fake-motion-l1")
BLUR_HU = (130.0, 300.0)
FILLED_HU = 40.0
CSV_FIELDS = ("scan", "lesion", "first_slice", "last_slice", "area_mm2", "peak_hu", "weight",
              "agatston", "volume_mm3", "category")
COLORS = {"before": (0.95, 0.45, 0.1), "after": (0.2, 0.55, 1.0)}
cancel_requested = False


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    global cancel_requested
    cancel_requested = True


def cancelled() -> int:
    emit({"event": "cancelled", "message": "cancelled; no output was written"})
    return 130


def rows_of(scan: str, score) -> list[dict]:
    rows = [{"scan": scan, "lesion": lesion.id, "first_slice": lesion.slice_first,
             "last_slice": lesion.slice_last, "area_mm2": lesion.area_mm2, "peak_hu": lesion.peak_hu,
             "weight": lesion.weight, "agatston": lesion.agatston, "volume_mm3": lesion.volume_mm3}
            for lesion in score.lesions]
    rows.append({"scan": scan, "lesion": "total", "agatston": score.total,
                 "volume_mm3": score.volume_mm3, "category": score.category})
    return rows


def write_table(path: str, rows: list[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--seg", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--roi", type=int, nargs=6)
    parser.add_argument("--model", default=KNOWN_MODELS[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--events", choices=["jsonl", "bar", "none"], default="bar")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    slice_s = float(os.environ.get("FAKE_MOTION_SLICE_S", "0"))
    fault = os.environ.get("FAKE_MOTION_FAULT", "")

    if args.model not in KNOWN_MODELS:
        emit({"event": "error", "kind": "input",
              "message": f"unknown model '{args.model}'; expected one of {', '.join(KNOWN_MODELS)}"})
        return 2
    start = time.monotonic()
    ct = read_volume(args.input)
    depth, rows, columns = ct.shape
    i0, i1, j0, j1, k0, k1 = args.roi or (0, columns, 0, rows, 0, depth)
    if not (0 <= i0 < i1 <= columns and 0 <= j0 < j1 <= rows and 0 <= k0 < k1 <= depth):
        emit({"event": "error", "kind": "input",
              "message": f"--roi {args.roi} is outside the volume (x 0..{columns}, y 0..{rows}, z 0..{depth})"})
        return 2
    emit({"event": "log", "message": f"{args.model}, {args.steps} steps on {args.device}: "
                                     f"slices {k0}..{k1 - 1}, box x {i0}..{i1 - 1} y {j0}..{j1 - 1}"})

    corrected = ct.array.copy()
    for index, k in enumerate(range(k0, k1)):
        if cancel_requested:
            return cancelled()
        region = corrected[k, j0:j1, i0:i1]
        region[(region >= BLUR_HU[0]) & (region < BLUR_HU[1])] = FILLED_HU
        time.sleep(slice_s)
        emit({"event": "progress", "stage": "correct", "done": index + 1, "total": k1 - k0})
    if cancel_requested:
        return cancelled()

    mask = np.zeros(ct.shape, np.uint8)
    mask[k0:k1, j0:j1, i0:i1] = 1
    geometry = {"origin_xyz": ct.origin, "direction": ct.direction}
    scores = {"before": agatston(ct.array, ct.spacing, mask=mask, **geometry),
              "after": agatston(corrected, ct.spacing, mask=mask, **geometry)}
    segments = [{"name": f"{scan} L{lesion.id}", "layer": layer, "label": lesion.id, "color": COLORS[scan]}
                for layer, (scan, score) in enumerate(scores.items()) for lesion in score.lesions]
    write_volume(ct.with_array(corrected), args.output)
    seg_grid = replace(ct, origin=tuple(np.add(ct.origin, 5.0))) if fault == "shifted-seg" else ct
    write_segmentation(args.seg, [score.label_map for score in scores.values()], segments, seg_grid)
    write_table(args.table, rows_of("before", scores["before"]) + rows_of("after", scores["after"]))

    largest = max(scores["before"].lesions, key=lambda lesion: lesion.volume_mm3, default=None)
    totals = {scan: {"agatston": score.total, "volume_mm3": score.volume_mm3,
                     "lesions": len(score.lesions), "category": score.category}
              for scan, score in scores.items()}
    if fault == "no-after":
        del totals["after"]
    emit({"event": "result", "output": args.output, "seg": args.seg, "table": args.table,
          "model": args.model, "steps": args.steps, "seconds": round(time.monotonic() - start, 3),
          **totals, "largest_lesion_lps": list(largest.centroid_xyz_mm) if largest else None,
          "corrected_slices": [k0, k1],
          "summary": f"Agatston before {totals['before']['agatston']:.1f}, {len(segments)} segments"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
