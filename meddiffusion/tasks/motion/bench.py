"""Coronary calcium motion correction on a held-out synthetic set: Agatston MAE, risk class, Pearson r, speed.

**Held-out set.** ``tasks.motion.cases.make_case`` with seed ``HELDOUT_SEED`` (training uses
seed 0, so every patient, plaque and motion draw is new): 42 cases, each of the 21 motion
profiles twice and the five view counts in turn, from calcium-free patients to Agatston
above 400 (1-12 plaques of 1.5-12 mm at 150-1300 HU). ``--quick`` takes the first 6.

**Truth and scoring.** The reference score is the Agatston score of the case's *static* image
(the same acquisition with the calcium at rest); every method is scored with the same
function inside the same coronary region (arteries and plaques grown by 3 mm), so the
figures measure motion alone.

**Methods.** (a) the uncorrected input; (b) the ProDM network trained as a plain L1
regressor (``motion-unet-l1-small``); (c) ProDM with lambda = 0 (``motion-prodm-nocal-small``);
(d) ProDM with lambda = 20 (``motion-prodm-small``). Each model runs the user's pipeline
(``tasks.motion.correct_volume``: calcium region found inside the case's heart, which the
automatic heart finder cannot locate in these heart-centred fields of view; default sampler
steps).
Metrics: Agatston mean absolute error, accuracy of the five risk classes (0, 1-10, 11-100,
101-400, > 400) and Pearson r against the reference, and seconds per case. The MAE cut comes
with a 95% paired bootstrap interval over cases (``metrics.agreement.cut_interval``): a few large plaques carry
most of the error, so on tens of cases two models a few points apart are not told apart.
Because a score can look right while the image is wrong, two image figures against the static
CT go beside them, inside the coronary region of the corrected slices: the mean absolute error
and the mean signed error (bias) in HU.

``--model ID`` adds a row for any further catalogue model (one you trained and registered),
scored the same way.

**Lesion picture.** With ``-o``, ``<name>_lesions.png`` shows, for the three cases whose
uncorrected score is furthest off, a 32² crop around the largest lesion (on the slice where
it is widest) in the static image, the input and every method's output, window [-200, 800] HU.

**Whole chest CT.** A 512² x 200 chest (0.7 mm pixels, 1.5 mm slices) of a phantom patient
with moving calcium, corrected end to end by ``correct_volume`` with the default model:
wall time, of which finding the region.
"""

from __future__ import annotations

import numpy as np
import torch

from meddiffusion.benchmarks.harness import clocked, each_case, machine, markdown_table, result
from meddiffusion.figures import tile_image
from meddiffusion.metrics.agreement import agreement, cut_interval

HELDOUT_SEED = 9001
CASES, QUICK_CASES = 42, 6
#: --split: (data seed, first case index, cases). ``validation`` is the 40 validation patients of
#: ``meddiff train motion`` at its defaults (seed 0, cases 160-199): choose settings there, report on ``heldout``
SPLITS = {"heldout": (HELDOUT_SEED, 0, CASES), "validation": (0, 160, 40)}
#: (label, model id or None for the uncorrected input)
METHODS = (
    ("(a) uncorrected input", None),
    ("(b) same network, plain L1 regressor", "motion-unet-l1-small"),
    ("(c) ProDM, lambda = 0", "motion-prodm-nocal-small"),
    ("(d) ProDM, lambda = 20", "motion-prodm-small"),
)
PAPER = {"mae": 9.391, "accuracy": 95.334, "pearson": 0.993}
#: short tile labels of the lesion picture
FIGURE_LABELS = {"(a) uncorrected input": "input", "(b) same network, plain L1 regressor": "(b) L1 regressor",
                 "(c) ProDM, lambda = 0": "(c) lambda 0", "(d) ProDM, lambda = 20": "(d) lambda 20"}
#: the picture shows the largest lesion of the cases the motion corrupts most, this many, in crops this big
FIGURE_CASES, FIGURE_CROP = 3, 32
#: ``meddiff bench motion`` also takes ``--model`` and ``--split``
OPTIONS = ("models", "split")


def agatston_agreement(reference: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Agatston MAE, five-class risk accuracy (%) and Pearson r of ``scores`` against ``reference``."""
    from meddiffusion.metrics.agatston import risk_category

    return agreement(reference, scores, classify=risk_category)


def run(device: torch.device, quick: bool = False, progress=None, models: list[str] | None = None,
        split: str = "heldout") -> dict:
    """The table and figures; ``models`` adds rows for further catalogue models (e.g. user-trained ones).

    ``split`` picks the cases (``SPLITS``): the held-out set the README reports, or the training
    run's validation patients, on which settings such as lambda are chosen.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    seed, first, count = SPLITS[split]
    from meddiffusion.metrics.agatston import CALCIUM_THRESHOLD_HU
    from meddiffusion.tasks.motion.correct import correct_volume
    from meddiffusion.tasks.motion.model import load_model
    from meddiffusion.tasks.motion.region import find_region
    from meddiffusion.tasks.motion.scoring import agatston_total
    from meddiffusion.tasks.motion.cases import make_case

    methods = METHODS + tuple((model_id, model_id) for model_id in (models or ())
                              if model_id not in {m for _, m in METHODS})
    models = {model_id: load_model(model_id, device) for _, model_id in methods if model_id is not None}
    count = min(QUICK_CASES, count) if quick else count
    reference, cases, crops = [], [], []
    scores, seconds, hu_abs, hu_bias = ({label: [] for label, _ in methods} for _ in range(4))
    for index in each_case(progress, "cases", range(first, first + count)):
        case = make_case(seed, index)
        reference.append(agatston_total(case.static, case.region))
        cases.append({"index": index, "profile": case.profile, "views": case.views, "reference": reference[-1]})
        # heart-centred cases show too little lung for the automatic heart finder: give it the heart
        region, region_s = clocked(find_region, case.corrupted, heart=case.heart)   # found once for every model
        window = largest_lesion_window(case.static.array >= CALCIUM_THRESHOLD_HU, case.region, FIGURE_CROP)
        crops.append([] if window is None else [(f"case {index} static", case.static.array[window])])
        for label, model_id in methods:
            if model_id is None:
                volume = case.corrupted
                seconds[label].append(0.0)
            else:
                corrected, correct_s = clocked(correct_volume, case.corrupted, models[model_id], region=region)
                volume = corrected.corrected
                seconds[label].append(correct_s + region_s)
            scores[label].append(agatston_total(volume, case.region))
            error = _hu_error(volume, case, region)
            if error is not None:
                hu_abs[label].append(abs(error).mean())
                hu_bias[label].append(error.mean())
            cases[-1][label] = scores[label][-1]
            if window is not None:
                crops[-1].append((FIGURE_LABELS.get(label, label), volume.array[window]))

    rows = {label: {**agatston_agreement(np.array(reference), np.array(scores[label])),
                    "hu_mae": float(np.mean(hu_abs[label])) if hu_abs[label] else float("nan"),
                    "hu_bias": float(np.mean(hu_bias[label])) if hu_bias[label] else float("nan"),
                    "seconds_per_case": float(np.mean(seconds[label])),
                    "cut_ci": cut_interval(reference, scores[METHODS[0][0]], scores[label])} for label, _ in methods}
    uncorrected = rows[METHODS[0][0]]["mae"]
    whole = whole_ct_timing(models["motion-prodm-small"], quick)
    table = _table(rows, uncorrected, count, reference, whole, device, split, seed, first)
    errors = [abs(case[METHODS[0][0]] - case["reference"]) if crops[i] else -1.0 for i, case in enumerate(cases)]
    shown = [i for i in np.argsort(errors)[::-1][:FIGURE_CASES] if errors[i] > 0]
    pictures = {"lesions": tile_image([crops[i] for i in sorted(shown)])} if shown else {}
    return result(table, device, machine_line=False, rows=rows, cases=cases, whole_ct=whole, paper=PAPER,
                  split=split, seed=seed, lesion_cases=sorted(int(cases[i]["index"]) for i in shown),
                  pictures=pictures)


def largest_lesion_window(calcium: np.ndarray, region: np.ndarray, size: int) -> tuple[int, slice, slice] | None:
    """(slice, rows, columns) of a ``size``² crop centred on the largest calcium component in ``region``.

    The slice is the one where that component is widest; None without calcium.
    """
    from scipy import ndimage

    labels, count = ndimage.label(calcium & region)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, range(1, count + 1))
    zs, ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    z = int(np.bincount(zs).argmax())
    rows, cols = calcium.shape[1:]
    top = int(min(max(round(ys[zs == z].mean()) - size // 2, 0), max(rows - size, 0)))
    left = int(min(max(round(xs[zs == z].mean()) - size // 2, 0), max(cols - size, 0)))
    return z, slice(top, top + size), slice(left, left + size)


def _hu_error(volume, case, region) -> np.ndarray | None:
    """HU differences to the static CT inside the coronary region of the slices the model corrected."""
    inside = np.zeros(case.region.shape, bool)
    for box in region.boxes:
        inside[box.slices] = True
    inside &= case.region
    if not inside.any():
        return None
    return (volume.array[inside] - case.static.array[inside]).astype(np.float64)


def whole_ct_timing(model, quick: bool) -> dict:
    """Seconds to correct a 512² x 200 phantom chest CT (256² x 48 with ``quick``) end to end."""
    from meddiffusion.phantoms import PLAQUE_LABEL_BASE, Grid, Phantom, render_ct
    from meddiffusion.physics.motion import simulate_motion
    from meddiffusion.tasks.motion.correct import correct_volume
    from meddiffusion.tasks.motion.region import find_region

    size, slices = ((256, 48) if quick else (512, 200))
    phantom = Phantom.sample("NOR", seed=5, plaques=8)
    heart = phantom.heart
    centre = heart.state(0.0).apex + 0.5 * heart.base_height * heart.e_h
    grid = Grid.centred((size, size, slices), (0.7, 0.7, 1.5), (0.0, 0.0, float(centre[2])))
    t = 0.7 * phantom.rr_s
    ct = render_ct(phantom, grid, t, seed=5)
    calcium = phantom.labels(grid, t).array >= PLAQUE_LABEL_BASE
    corrupted = simulate_motion(ct, calcium, 7, 720, seed=5).corrupted
    region, region_s = clocked(find_region, corrupted)
    _, total_s = clocked(correct_volume, corrupted, model)
    return {"shape_xyz": [size, size, slices], "seconds": total_s, "region_seconds": region_s,
            "boxes": len(region.boxes)}


def _table(rows, uncorrected, count, reference, whole, device, split, seed, first) -> list[str]:
    name = "Held-out synthetic set" if split == "heldout" else "Validation set (training patients' validation split)"
    start = f", cases {first}-{first + count - 1}" if first else ""
    lines = [f"{name}: {count} cases (seed {seed}{start}), reference Agatston "
             f"{min(reference):.0f}-{max(reference):.0f}; {machine(device)}", ""]
    cells = []
    for label, row in rows.items():
        cut = 100.0 * (1 - row["mae"] / uncorrected) if uncorrected > 0 else float("nan")
        low, high = (v if np.isnan(v) else round(v) for v in row["cut_ci"])   # round(): no "-0" in the table
        cells.append((label, f"{row['mae']:.2f}", f"{cut:.0f}% ({low} to {high})", f"{row['accuracy']:.1f}%",
                      f"{row['pearson']:.3f}", f"{row['hu_mae']:.1f} / {row['hu_bias']:+.1f}",
                      f"{row['seconds_per_case']:.1f}"))
    cells.append(("ProDM paper (COCA, synthetic test set)", PAPER["mae"], "—", f"{PAPER['accuracy']}%",
                  PAPER["pearson"], "—", "—"))
    lines += markdown_table(("method", "Agatston MAE", "MAE cut vs input (95% CI)", "risk-class accuracy",
                             "Pearson r", "HU MAE / bias", "s/case"), cells)
    x, y, z = whole["shape_xyz"]
    lines += ["", f"Whole chest CT {x}×{y}×{z}: {whole['seconds']:.1f} s end to end "
                  f"({whole['region_seconds']:.1f} s finding the region, {whole['boxes']} boxes)."]
    return lines
