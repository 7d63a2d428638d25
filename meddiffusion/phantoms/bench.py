"""Seconds per phantom frame on the CPU (the issue's target: a 256×256×128 CT frame ≤ 2 s, 2 cores).

"cold" is the first frame on a new grid: it includes the static anatomy (body, lungs and
their vessel tree, bones), which is then cached; "warm" is every later frame, which only
redraws the heart (and the upper abdomen when breathing).  Phantom construction (random
patient, vessel tree growth) is timed separately.
"""

from __future__ import annotations

import time

import torch

__all__ = ["bench_phantom"]


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_phantom(quick: bool = False, threads: int | None = None, repeats: int = 3) -> dict:
    """Time phantom construction and CT/SPECT/PET/MR/label frames; returns a Markdown ``table``.

    ``threads`` sets torch's CPU threads for the run (default: leave the current setting,
    e.g. ``meddiff bench phantom --threads 2``).
    """
    from meddiffusion.phantoms import Phantom, chest_grid, render

    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    try:
        size = (128, 128, 64) if quick else (256, 256, 128)
        spacing = (3.0, 3.0, 5.0) if quick else (1.5, 1.5, 2.5)
        grid = chest_grid(size, spacing)
        rows = []
        phantom = None

        def build():
            nonlocal phantom
            phantom = Phantom.sample("NOR", seed=7, plaques=4)

        rows.append(("construct phantom (NOR, 4 plaques)", _seconds(build)))
        times = phantom.frame_times(repeats + 1)
        for modality in ("ct", "spect", "pet", "mr"):
            cold = _seconds(lambda: render(phantom, grid, modality, times[0]))
            warm = sorted(_seconds(lambda t=t: render(phantom, grid, modality, t)) for t in times[1:])
            rows.append((f"{modality.upper()} frame, cold (first on this grid)", cold))
            rows.append((f"{modality.upper()} frame, warm (median of {repeats})", warm[len(warm) // 2]))
        cold = _seconds(lambda: phantom.labels(grid, times[0]))
        warm = sorted(_seconds(lambda t=t: phantom.labels(grid, t)) for t in times[1:])
        rows.append(("label map, cold", cold))
        rows.append((f"label map, warm (median of {repeats})", warm[len(warm) // 2]))
    finally:
        torch.set_num_threads(previous)
    grid_text = f"{'×'.join(map(str, size))} voxels at {'×'.join(f'{s:g}' for s in spacing)} mm"
    table = "\n".join([f"Phantom frame times, {grid_text}, {threads} CPU threads", "",
                       "| step | seconds |", "|---|---|"] + [f"| {name} | {sec:.2f} |" for name, sec in rows])
    return {"table": table, "grid": list(size), "spacing_mm": list(spacing), "threads": threads,
            "seconds": {name: round(sec, 4) for name, sec in rows}}
