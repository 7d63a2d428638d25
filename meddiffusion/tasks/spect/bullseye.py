"""The bull's-eye picture: polar maps side by side with the 17 AHA segments.

Drawn in the display convention of nuclear cardiology: apex at the centre, base at the rim,
anterior wall up, septum on the left, lateral wall on the right, inferior wall down.  Each
segment shows its number and its uptake in % of the map's peak, on one 0-100 % colour scale
shared by all maps so that NAC and AC compare by eye.  Matplotlib renders off screen (Agg
canvas, no pyplot state), so this works in a headless backend.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure

from meddiffusion.tasks.spect.polarmap import NORMAL_PERCENT, SEVERE_PERCENT, PolarMap

__all__ = ["bullseye_picture", "NUCLEAR_CMAP"]

#: black - blue - cyan - green - yellow - red - white, like the scales of clinical MPI software
NUCLEAR_CMAP = LinearSegmentedColormap.from_list(
    "nuclear", [(0.0, "#000000"), (0.15, "#1a1a8c"), (0.32, "#0077ff"), (0.45, "#00c8c8"), (0.58, "#00b400"),
                (0.72, "#f0f000"), (0.86, "#ff3300"), (1.0, "#ffffff")])

_RING_EDGES = {17: 0, 13: 1, 7: 2, 1: 3}      # first segment of each ring -> ring order


def _display_angle(psi_deg: np.ndarray) -> np.ndarray:
    """Polar-plot angle (radians, counter-clockwise from 3 o'clock) of anatomical angle ψ:
    septum (0°) at 9 o'clock, anterior (90°) at 12."""
    return np.radians(180.0 - np.asarray(psi_deg, float))


def _ring_class(segments: np.ndarray) -> np.ndarray:
    """0 apex cap, 1 apical, 2 mid, 3 basal, per row of the map."""
    seg = segments[:, 0]
    return np.where(seg == 17, 0, np.where(seg >= 13, 1, np.where(seg >= 7, 2, 3)))


def _draw(ax, pm: PolarMap, name: str, norm: Normalize) -> None:
    rings, sectors = pm.image.shape
    psi_edges = np.arange(sectors + 1) * 360.0 / sectors
    theta = _display_angle(psi_edges)
    radius = np.arange(rings + 1)
    values = 100.0 * pm.image / pm.peak
    ax.pcolormesh(theta, radius, values, cmap=NUCLEAR_CMAP, norm=norm, shading="flat")
    classes = _ring_class(pm.segments)
    borders = [0] + [r for r in range(1, rings) if classes[r] != classes[r - 1]] + [rings]
    circle = np.linspace(0, 2 * np.pi, 361)
    for r in borders[1:]:
        ax.plot(circle, np.full_like(circle, r), color="black", lw=1.2)
    for lo, hi, cls in zip(borders[:-1], borders[1:], range(4)):
        spokes = {0: [], 1: [45, 135, 225, 315], 2: list(range(0, 360, 60)), 3: list(range(0, 360, 60))}[cls]
        for psi in spokes:
            ax.plot([_display_angle(psi)] * 2, [lo, hi], color="black", lw=1.2)
    for n in range(1, 18):
        where = pm.segments == n
        if not where.any():
            continue
        rows, cols = np.nonzero(where)
        psi = (cols + 0.5) * 360.0 / sectors
        mean_angle = np.degrees(np.angle(np.exp(1j * np.radians(psi)).mean()))
        r = 0.0 if n == 17 else rows.mean() + 0.5
        text = f"{n}\n{pm.percent[n - 1]:.0f}%"
        ax.text(_display_angle(mean_angle), r, text, ha="center", va="center", fontsize=7, fontweight="bold",
                color="black", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.6))
    ax.set_ylim(0, rings)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines["polar"].set_visible(False)
    ax.set_title(name, fontsize=11, pad=16)
    for label, angle in (("ANT", 90), ("SEPT", 0), ("LAT", 180), ("INF", 270)):
        ax.text(_display_angle(angle), rings * 1.09, label, ha="center", va="center", fontsize=6, rotation=0)


def bullseye_picture(maps: dict[str, PolarMap], *, title: str | None = None, dpi: int = 100) -> np.ndarray:
    """RGB uint8 (H, W, 3): one bull's-eye per map, left to right, and a shared colour bar
    marked at the normal and severe thresholds."""
    if not maps:
        raise ValueError("bull's-eye picture needs at least one polar map")
    n = len(maps)
    fig = Figure(figsize=(3.4 * n + 1.0, 3.9), dpi=dpi)
    FigureCanvasAgg(fig)
    norm = Normalize(0.0, 100.0)
    width = 0.86 / n
    for k, (name, pm) in enumerate(maps.items()):
        ax = fig.add_axes([0.02 + k * width + 0.1 * width, 0.08, 0.8 * width, 0.72], projection="polar")
        _draw(ax, pm, name, norm)
    cax = fig.add_axes([0.91, 0.12, 0.02, 0.68])
    bar = fig.colorbar(_mappable(norm), cax=cax)
    bar.set_ticks([0, SEVERE_PERCENT, NORMAL_PERCENT, 100])
    bar.ax.tick_params(labelsize=7)
    bar.set_label("% of peak", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _mappable(norm: Normalize):
    from matplotlib.cm import ScalarMappable
    return ScalarMappable(norm=norm, cmap=NUCLEAR_CMAP)
