"""The report's figures: Likert distributions, Bradley–Terry scores, ROC curves (PNG).

Drawn with matplotlib's object interface on an Agg canvas, never through pyplot, so that the
report can be written inside Slicer without changing its matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from meddiffusion.files import atomic_write
from meddiffusion.study.stats.roc import roc_points


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))


def likert_distribution(rows: list[dict], title: str, path: Path) -> Path:
    """Stacked horizontal bars: the share of each score per method (rows of ``likert.summarise``)."""
    levels = sorted(int(k[2:]) for k in rows[0] if k.startswith("n_"))
    colours = [tuple(c) for c in colormaps["RdYlGn"](np.linspace(0.1, 0.9, len(levels)))]
    figure = Figure(figsize=(7, 1.2 + 0.5 * len(rows)))
    axes = figure.add_subplot()
    for y, row in enumerate(rows):
        left = 0.0
        for level, colour in zip(levels, colours):
            share = row[f"n_{level}"] / row["n"]
            axes.barh(y, share, left=left, color=colour, label=str(level) if y == 0 else None)
            left += share
    axes.set_yticks(range(len(rows)), [f"{r['method']} (mean {r['mean']:.2f})" for r in rows])
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of answers")
    axes.set_title(title)
    axes.legend(title="score", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(figure, path)


def bradley_terry(rows: list[dict], title: str, path: Path) -> Path:
    """Bradley–Terry scores with their bootstrap intervals, best method on top."""
    rows = sorted(rows, key=lambda r: r["rank"])
    figure = Figure(figsize=(6, 1 + 0.5 * len(rows)))
    axes = figure.add_subplot()
    scores = np.array([r["score"] for r in rows])
    error = np.abs(np.array([[r["ci_low"] for r in rows], [r["ci_high"] for r in rows]]) - scores)
    axes.errorbar(scores, range(len(rows)), xerr=np.nan_to_num(error), fmt="o", capsize=4)
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set_yticks(range(len(rows)), [r["method"] for r in rows])
    axes.invert_yaxis()
    axes.set_xlabel("Bradley–Terry score (log-strength, 95 % bootstrap interval)")
    axes.set_title(title)
    return _save(figure, path)


def roc_curves(data: dict, method_aucs: list[float], title: str, path: Path) -> Path:
    """Empirical ROC curves, one thin line per reader, one colour per method (``roc.rating_array``)."""
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    colours = colormaps["tab10"]
    for m, method in enumerate(data["methods"]):
        for j, scores in enumerate(data["ratings"][m]):
            fpf, tpf = roc_points(scores, data["truth"])
            label = f"{method} (mean AUC {method_aucs[m]:.3f})" if j == 0 else None
            axes.plot(fpf, tpf, color=colours(m % 10), linewidth=1.2, alpha=0.8, label=label)
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_aspect("equal")
    axes.set_xlabel("false-positive fraction")
    axes.set_ylabel("true-positive fraction")
    axes.set_title(title)
    axes.legend(loc="lower right")
    return _save(figure, path)
