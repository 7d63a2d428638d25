"""A short-axis cine study of a phantom patient, acquired as a scanner plans one.

The stack is planned on the end-diastolic frame as technologists do: slices perpendicular to
the LV long axis, from one slice below the apex to beyond the mitral plane, so the whole LV is
covered at end-diastole; the slice count follows (8-16 at 10 mm, more for a dilated heart).
In-plane the field of view is centred on the LV with a few millimetres of planning jitter.
Every frame is a bSSFP magnitude image (``phantoms.render_mr``: coil shading, Rician noise)
with its ACDC labels (0 background, 1 RV, 2 MYO, 3 LV). Between patients the noise level and the
contrast (a gamma on the magnitude) vary, as they do between scanners and sequences.

Images are normalised per study as the paper's preprocessing does: the 0.5-99.5 percentiles
of the whole cine map to [-1, 1] (clipped).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CineProtocol", "CineStudy", "PRESET_ORDER", "acquire", "plan_stack", "phase_of_frames",
           "normalize_cine", "NORMALIZE_PERCENTILES"]

#: the five ACDC groups, drawn in turn so every dataset is balanced
PRESET_ORDER = ("NOR", "MINF", "DCM", "HCM", "RV")
NORMALIZE_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class CineProtocol:
    """The acquisition: matrix and voxel size, frames per cycle, the ranges patients draw from.

    The defaults are a CPU-sized grid: 96² at 1.75 mm (168 mm field of view, enough for a
    dilated heart with its RV) and 10 mm slices (8 mm thick with a 2 mm gap, typical of cine
    SSFP), 20 frames per cycle. ``extra_slices`` is how many slices beyond the base the
    planning adds (drawn per patient); ``depth`` is the stack depth the networks read (studies
    of fewer slices are padded, centred).
    """

    matrix: int = 96
    pixel_mm: float = 1.75
    slice_mm: float = 10.0
    frames: int = 20
    depth: int = 16
    min_slices: int = 8
    extra_slices: tuple[int, int] = (0, 2)
    noise: tuple[float, float] = (0.02, 0.08)
    gamma: tuple[float, float] = (0.8, 1.25)
    jitter_mm: float = 5.0

    def __post_init__(self) -> None:
        checks = [
            (32 <= self.matrix <= 256 and self.matrix % 8 == 0, f"cine matrix must be 32-256 and a multiple of 8, "
                                                                f"got {self.matrix}"),
            (0.5 <= self.pixel_mm <= 6.0, f"cine pixel must be 0.5-6 mm, got {self.pixel_mm}"),
            (4.0 <= self.slice_mm <= 15.0, f"slice spacing must be 4-15 mm, got {self.slice_mm}"),
            (4 <= self.frames <= 60, f"frames per cycle must be 4-60, got {self.frames}"),
            (self.min_slices <= self.depth <= 32, f"stack depth must be {self.min_slices}-32, got {self.depth}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CineStudy:
    """One study: normalised images and labels (F, S, H, W), each frame's phase, geometry and record."""

    images: np.ndarray          # float32 in [-1, 1]
    labels: np.ndarray          # uint8, ACDC labels
    tau: np.ndarray             # (F,) phase: 0 ED, 100 ES, 200 next ED
    times_ms: np.ndarray        # (F,) acquisition time of each frame in the cycle
    grid: object                # phantoms.Grid of one frame
    info: dict


def plan_stack(phantom, protocol: CineProtocol, rng: np.random.Generator):
    """The short-axis grid: from one slice below the apex to ``extra`` slices beyond the ED base."""
    from meddiffusion.phantoms import Grid

    heart = phantom.heart
    ed = heart.state(0.0)
    lv_length = heart.base_height                      # epicardial apex to base plane, mm
    covering = int(math.ceil(lv_length / protocol.slice_mm)) + 1
    extra = int(rng.integers(protocol.extra_slices[0], protocol.extra_slices[1] + 1))
    slices = int(np.clip(covering + extra, protocol.min_slices, protocol.depth))
    first = -0.5 * protocol.slice_mm                   # the first slice just below the apex
    centre_h = first + 0.5 * (slices - 1) * protocol.slice_mm
    jitter = rng.uniform(-protocol.jitter_mm, protocol.jitter_mm, 2)
    centre = ed.apex + centre_h * heart.e_h + jitter[0] * heart.e1 + jitter[1] * heart.e2
    frame = np.stack([heart.e1, heart.e2, heart.e_h], axis=1)   # columns: grid x, y, z in LPS
    size = (protocol.matrix, protocol.matrix, slices)
    spacing = (protocol.pixel_mm, protocol.pixel_mm, protocol.slice_mm)
    return Grid.centred(size, spacing, tuple(centre), tuple(frame.ravel()))


def phase_of_frames(n_frames: int, systolic_fraction: float) -> np.ndarray:
    """τ of ``n`` equally spaced frames: 100·t/ts in systole, 100 + 100·(t − ts)/(1 − ts) after (paper's phase)."""
    if not 0 < systolic_fraction < 1:
        raise ValueError(f"systolic fraction must be in (0, 1), got {systolic_fraction}")
    t = np.arange(n_frames) / n_frames
    return np.where(t <= systolic_fraction, 100.0 * t / systolic_fraction,
                    100.0 + 100.0 * (t - systolic_fraction) / (1.0 - systolic_fraction))


def normalize_cine(magnitude: np.ndarray) -> np.ndarray:
    """The 0.5-99.5 percentiles of the whole cine to [-1, 1], clipped (one scale for every frame)."""
    lo, hi = np.percentile(magnitude, NORMALIZE_PERCENTILES)
    if not hi > lo:
        raise ValueError("the cine has no contrast (its 0.5 and 99.5 percentiles are equal)")
    return np.clip(2.0 * (magnitude - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)


def acquire(phantom, protocol: CineProtocol, seed: int) -> CineStudy:
    """The cine of ``phantom``: plan the stack, render every frame with its labels, normalise."""
    from meddiffusion.phantoms import render_mr
    from meddiffusion.phantoms.tissues import acdc_labels

    rng = np.random.default_rng([int(seed), 41])
    grid = plan_stack(phantom, protocol, rng)
    noise = float(rng.uniform(*protocol.noise))
    gamma = float(rng.uniform(*protocol.gamma))
    times = phantom.frame_times(protocol.frames)
    magnitude, labels = [], []
    for t in times:
        magnitude.append(render_mr(phantom, grid, t, seed=int(seed), noise=noise).array)
        labels.append(acdc_labels(phantom.labels(grid, t).array))
    magnitude = np.maximum(np.stack(magnitude), 0.0) ** gamma
    ts = phantom.params.heart.systolic_fraction
    truth = phantom.truth()
    info = {"preset": phantom.params.preset, "seed": int(seed), "slices": grid.shape[0], "noise": noise,
            "gamma": gamma, "systolic_fraction": ts, "heart_rate_bpm": truth["heart_rate_bpm"],
            "truth": {"lv": truth["lv"], "rv": truth["rv"], "infarct": truth["infarct"]}}
    return CineStudy(normalize_cine(magnitude), np.stack(labels).astype(np.uint8), phase_of_frames(len(times), ts),
                     1000.0 * np.asarray(times), grid, info)
