"""The README picture of the Training module's live curves, drawn from a real run.

Runs a short detached ``meddiff train ldct`` (a fine-tune of the shipped ``ldct-corediff-small``
to 1.6-2 mm pixels at 10 % dose on six phantom thorax slabs, a few minutes on two CPU cores),
follows it with the module's own logic, RunMonitor on a slicer-core scene, exactly as the
panel's timer does, and draws the curve table it filled (train and validation loss, and the
validation PSNR, by step, as the Plots charts show them) beside the last preview (before |
current model | reference)::

    python Resources/Screenshots/make_training_curves.py [RUN_FOLDER]

Writes ``training_curves.png`` beside this script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "MedDiffusionUtils"), str(REPO / "Training")]

COMMAND = ["train", "ldct", "--from-model", "ldct-corediff-small", "--steps", "300", "--lr", "3e-4",
           "--size", "128", "--slabs", "6", "--val-slabs", "1", "--crop", "64", "--pixel-range", "1.6", "2.0",
           "--noise-range", "8", "15", "--dose", "0.1", "--procedural", "0", "--val-every", "25",
           "--preview-every", "50",
           "--device", "cpu", "--detach", "--events", "jsonl"]


def follow(folder: Path):
    """The run followed as the module does: the curve table node and preview nodes, polled every second."""
    import slicer

    from TrainingLib.logic import RunMonitor

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    monitor = RunMonitor(scene, folder)
    while not monitor.poll().finished:
        time.sleep(1.0)
    monitor.poll()
    if monitor.status.state != "done":
        raise SystemExit(f"the run ended {monitor.status.state}: {monitor.status.message}")
    return monitor


def draw(monitor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import slicer

    curves = monitor.curves
    steps = curves.values("step")
    figure = plt.figure(figsize=(12, 5.6), dpi=110)
    grid = figure.add_gridspec(1, 4, width_ratios=(2.4, 1, 1, 1), wspace=0.15)
    left = grid[0, 0].subgridspec(2, 1, hspace=0.45)
    chart = figure.add_subplot(left[0])
    for column, color in ((curves.TRAIN, "#1f77b4"), (curves.VAL, "#d95f02")):
        values = curves.values(column)
        kept = ~np.isnan(values)
        chart.plot(steps[kept], values[kept], "o-", color=color, markersize=3, label=column)
    chart.set_yscale("log")
    chart.set_ylabel("loss")
    chart.set_title("Training curves: the run's table node, as the Plots charts draw it", fontsize=10)
    chart.legend()
    chart.grid(alpha=0.3)
    metric = figure.add_subplot(left[1], sharex=chart)
    values = curves.values("val psnr")
    kept = ~np.isnan(values)
    metric.plot(steps[kept], values[kept], "o-", color="#1b9e77", markersize=3, label="val psnr")
    metric.set_xlabel("step")
    metric.set_ylabel("PSNR (dB)")
    metric.set_title("the task's validation metric", fontsize=9)
    metric.grid(alpha=0.3)
    panels = [("input", "before"), ("model", f"current model (step {monitor.preview_step})"),
              ("reference", "reference")]
    window = np.percentile(slicer.util.arrayFromVolume(monitor.preview["reference"]), (1, 99))
    for index, (kind, title) in enumerate(panels):
        axes = figure.add_subplot(grid[0, 1 + index])
        array = slicer.util.arrayFromVolume(monitor.preview[kind])
        axes.imshow(array[array.shape[0] // 2], cmap="gray", vmin=window[0], vmax=window[1])
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    figure.text(0.66, 0.02, "the fixed validation case, shown in three linked slice views", fontsize=9, ha="center")
    figure.savefig(path, bbox_inches="tight")


def main() -> None:
    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
    else:
        folder = Path(tempfile.mkdtemp(prefix="training-curves-")) / "ldct-readme"
        environment = {**os.environ, "MEDDIFF_MODEL_DIR": str(folder.parent / "models"),
                       "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "meddiffusion", *COMMAND[:-3], "--out", str(folder), *COMMAND[-3:]],
                       check=True, env=environment, cwd=folder.parent)
    draw(follow(folder), HERE / "training_curves.png")
    print(HERE / "training_curves.png")


if __name__ == "__main__":
    main()
