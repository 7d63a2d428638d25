"""The toy task's bench: how far blending moves each case's mean HU back to the truth.

Each generated case is tissue at the model's constant plus a little structure (the truth),
and the same with a random offset and noise (the input). Every method is scored by the mean
HU of its output against the truth's, as the motion bench scores Agatston; it runs in
milliseconds, so tests drive the whole ``meddiff bench`` path with it.
"""

from __future__ import annotations

import numpy as np
import torch

from meddiffusion.benchmarks.harness import clocked, each_case, markdown_table, result
from meddiffusion.figures import tile_image
from meddiffusion.metrics.agreement import agreement, cut_interval

CASES, QUICK_CASES = 8, 4
SHAPE = (4, 16, 16)
#: (label, blend strength); strength 0 is the input itself
METHODS = (("input", 0.0), ("blend 0.5", 0.5), ("blend 0.9", 0.9))


def make_case(seed: int, constant: float) -> tuple[np.ndarray, np.ndarray]:
    """(truth, input) of one case, in HU."""
    rng = np.random.default_rng(seed)
    truth = constant + rng.normal(0.0, 5.0, SHAPE)
    return truth, truth + rng.normal(0.0, 40.0) + rng.normal(0.0, 20.0, SHAPE)


def run(device: torch.device, quick: bool = False, progress=None) -> dict:
    from toy_task.core import ToyModel

    model = ToyModel(constant=40.0)
    reference, scores, seconds = [], {label: [] for label, _ in METHODS}, {label: [] for label, _ in METHODS}
    crops = []
    for index in each_case(progress, "cases", range(QUICK_CASES if quick else CASES)):
        truth, ct = make_case(index, model.constant)
        reference.append(float(truth.mean()))
        crops.append([("truth", truth[0])])
        for label, strength in METHODS:
            output, spent = clocked(lambda s=strength: (1 - s) * ct + s * model.constant)
            scores[label].append(float(output.mean()))
            seconds[label].append(spent)
            crops[-1].append((label, output[0]))
    rows = {label: {**agreement(reference, scores[label]), "seconds_per_case": float(np.mean(seconds[label])),
                    "cut_ci": cut_interval(reference, scores["input"], scores[label])} for label, _ in METHODS}
    cells = [(label, f"{row['mae']:.2f}", "({:.0f} to {:.0f})".format(*row["cut_ci"]), f"{row['pearson']:.3f}",
              f"{1e6 * row['seconds_per_case']:.0f}") for label, row in rows.items()]
    lines = [f"Toy set: {len(reference)} generated cases, model constant {model.constant:g} HU", ""]
    lines += markdown_table(("method", "mean-HU MAE", "MAE cut vs input (95% CI)", "Pearson r", "µs/case"), cells)
    return result(lines, device, rows=rows, reference=reference, pictures={"cases": tile_image(crops[:2])})
