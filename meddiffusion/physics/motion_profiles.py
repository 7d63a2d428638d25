"""The 21 motion profiles of ProDM's simulation engine: how coronary calcium moves during a scan.

ProDM (arXiv 2512.24948) corrupts gated CTs with 21 trajectory generators in four families,
each set by a 3D direction, a displacement magnitude and a velocity, mostly in-plane. This
module is that registry. A profile maps acquisition time t in [0, T] (T: the duration of the
half-scan, 175 ms at a 0.35 s rotation) to a displacement Δ(t) in millimetres, LPS (x to the
patient's left, y posterior, z superior), of the calcium from where the gated CT shows it.

Every profile obeys two bounds, whatever the seed: |Δ(t)| <= magnitude, and |dΔ/dt| <= velocity.

- **jitter**: a random walk between random points of the ball of radius ``magnitude``, at
  constant speed ``velocity``, no rest. The walk starts at a random point.
- **translational**: a straight drift from -magnitude to +magnitude along ``direction`` at
  ``velocity``. It passes through the gated position at mid-scan and rests at the ends if it
  gets there before the scan ends.
- **oscillatory**: magnitude · sin(ω (t - T/2) + φ) along ``direction``, or a circle in the
  slice plane (``circular``). ω = velocity / magnitude, so the peak speed is ``velocity`` and
  the frequency is ω / 2π. The phase φ is random.
- **piecewise**: a path through ``waypoints`` at ``velocity``. A waypoint (a, b, c) is at
  magnitude · (a·u + b·w + c·n), where u is ``direction``, w is perpendicular to u in the axial
  plane, and n = u × w. The time left over is spent resting, in equal shares, at every
  waypoint: stop and go. If the path takes longer than the scan, the scan sees its middle.

``direction`` is a unit vector, or a rule drawn afresh for each seed: ``random-inplane`` (an
angle in the axial plane) or ``random-3d`` (elevation within ±30° of the plane, the
mostly-in-plane motion ProDM describes). Randomness comes from
``numpy.random.default_rng([seed, id])``, so a profile and a seed always give the same path.
``profiles_table()`` writes the registry as a Markdown table.

ProDM does not publish its 21 parameter sets. The ones here span 0.5-5 mm and 10-100 mm/s
over a half-scan, the range of coronary motion: tens of mm/s, fastest in the right coronary
artery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FAMILIES", "DIRECTION_RULES", "ALLOWED_VIEWS", "DEFAULT_ROTATION_S", "MotionProfile", "PROFILES",
           "acquisition_times", "get_profile", "profiles_table"]

FAMILIES = ("jitter", "translational", "oscillatory", "piecewise")
DIRECTION_RULES = ("random-inplane", "random-3d")
#: largest elevation out of the axial plane of a ``random-3d`` direction
MAX_ELEVATION_DEG = 30.0

#: projection counts ProDM samples from
ALLOWED_VIEWS = (180, 360, 540, 720, 1080)
#: gantry rotation (360°) of a modern CT; a half-scan then lasts 175 ms
DEFAULT_ROTATION_S = 0.35

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class MotionProfile:
    """One trajectory generator. ``displacement`` gives its path for a seed."""

    id: int
    family: str
    name: str
    direction: Vector | str
    magnitude_mm: float
    velocity_mm_s: float
    waypoints: tuple[Vector, ...] = ()
    circular: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, (int, np.integer)) or self.id < 0:
            raise ValueError(f"profile id must be a whole number >= 0, got {self.id!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"profile family must be one of {', '.join(FAMILIES)}, got '{self.family}'")
        if not (math.isfinite(self.magnitude_mm) and self.magnitude_mm >= 0):
            raise ValueError(f"magnitude_mm must be a finite number >= 0, got {self.magnitude_mm}")
        if not (math.isfinite(self.velocity_mm_s) and self.velocity_mm_s >= 0):
            raise ValueError(f"velocity_mm_s must be a finite number >= 0, got {self.velocity_mm_s}")
        if isinstance(self.direction, str):
            if self.direction not in DIRECTION_RULES:
                raise ValueError(f"direction must be a 3D unit vector or one of {', '.join(DIRECTION_RULES)}, "
                                 f"got '{self.direction}'")
        else:
            vector = np.asarray(self.direction, dtype=float)
            if vector.shape != (3,) or not np.isfinite(vector).all() or abs(np.linalg.norm(vector) - 1) > 1e-6:
                raise ValueError(f"direction must be a 3D unit vector (x, y, z), got {self.direction}")
        if self.family == "piecewise":
            points = np.asarray(self.waypoints, dtype=float)
            if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2:
                raise ValueError("a piecewise profile needs at least 2 waypoints (a, b, c), got "
                                 f"{self.waypoints}")
            if np.linalg.norm(points, axis=1).max() > 1 + 1e-9:
                raise ValueError("waypoints are in units of the magnitude and must lie within the unit ball, "
                                 f"got {self.waypoints}")
        elif self.waypoints:
            raise ValueError(f"waypoints belong to piecewise profiles, not to a {self.family} profile")
        if self.circular and self.family != "oscillatory":
            raise ValueError("circular motion is an oscillatory profile option")

    @property
    def frequency_hz(self) -> float | None:
        """Oscillation frequency v / (2π m); None for the other families."""
        if self.family != "oscillatory" or self.magnitude_mm == 0:
            return None
        return self.velocity_mm_s / (2 * math.pi * self.magnitude_mm)

    def displacement(self, times_s, duration_s: float, seed: int = 0) -> np.ndarray:
        """Δ(t) in mm, shape (n, 3) (x, y, z LPS), at ``times_s`` in [0, ``duration_s``]."""
        times = np.asarray(times_s, dtype=float).reshape(-1)
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"the scan duration must be > 0 s, got {duration_s}")
        if times.size and (not np.isfinite(times).all() or times.min() < 0 or times.max() > duration_s + 1e-12):
            raise ValueError(f"times must lie in [0, {duration_s}] s (the scan)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
        if self.magnitude_mm == 0 or self.velocity_mm_s == 0:
            return np.zeros((times.size, 3))
        rng = np.random.default_rng([int(seed), int(self.id)])
        if self.family == "oscillatory":
            return self._oscillation(times, duration_s, rng)
        if self.family == "jitter":
            points, start = self._jitter_points(duration_s, rng), 0.0
        else:
            points = self._waypoints_mm(rng)
            start = None
        return _follow_path(points, self.velocity_mm_s, times, duration_s, start)

    # -- families -------------------------------------------------------------------------------
    def _oscillation(self, times: np.ndarray, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        u, w, _ = _frame(self._direction(rng))
        omega = self.velocity_mm_s / self.magnitude_mm
        phase = omega * (times - duration_s / 2) + rng.uniform(0, 2 * math.pi)
        path = np.sin(phase)[:, None] * u
        if self.circular:
            path = path + np.cos(phase)[:, None] * w
        return self.magnitude_mm * path

    def _jitter_points(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        """Random points of the ball, enough for the walk to last the whole scan."""
        points, length = [self._random_point(rng)], 0.0
        while length < self.velocity_mm_s * duration_s:
            points.append(self._random_point(rng))
            length += float(np.linalg.norm(points[-1] - points[-2]))
        return np.array(points)

    def _random_point(self, rng: np.random.Generator) -> np.ndarray:
        return self.magnitude_mm * rng.uniform(0, 1) * self._direction(rng)

    def _waypoints_mm(self, rng: np.random.Generator) -> np.ndarray:
        if self.family == "translational":
            local = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        else:
            local = np.asarray(self.waypoints, dtype=float)
        frame = np.stack(_frame(self._direction(rng)))  # rows u, w, n
        return self.magnitude_mm * local @ frame

    def _direction(self, rng: np.random.Generator) -> np.ndarray:
        if self.direction == "random-inplane":
            angle = rng.uniform(0, 2 * math.pi)
            return np.array([math.cos(angle), math.sin(angle), 0.0])
        if self.direction == "random-3d":
            angle = rng.uniform(0, 2 * math.pi)
            limit = math.sin(math.radians(MAX_ELEVATION_DEG))
            z = rng.uniform(-limit, limit)  # uniform in z: uniform over that band of the sphere
            r = math.sqrt(1 - z * z)
            return np.array([r * math.cos(angle), r * math.sin(angle), z])
        return np.asarray(self.direction, dtype=float)

    def summary(self) -> str:
        """One line: id, family, name, magnitude and velocity (for ``--help``)."""
        return f"{self.id:2d}  {self.family:<13} {self.name:<26} {self.magnitude_mm:g} mm, {self.velocity_mm_s:g} mm/s"


def _frame(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal (u, w, n): w is in the axial plane, perpendicular to u (x when u is along z)."""
    w = np.array([-u[1], u[0], 0.0])
    norm = np.linalg.norm(w)
    w = w / norm if norm > 1e-9 else np.array([1.0, 0.0, 0.0])
    return u, w, np.cross(u, w)


def _follow_path(points: np.ndarray, speed: float, times: np.ndarray, duration_s: float,
                 start_s: float | None) -> np.ndarray:
    """Positions along a polyline travelled at ``speed``, resting at the waypoints.

    With ``start_s`` the walk begins then and never rests. Without it the rest time left by
    the scan is shared equally by all waypoints; a path longer than the scan is centred on it.
    """
    legs = np.linalg.norm(np.diff(points, axis=0), axis=1) / speed
    if start_s is None:
        rest = max(duration_s - legs.sum(), 0.0) / len(points)
        start_s = min(0.0, (duration_s - legs.sum()) / 2)
    else:
        rest = 0.0
    knots_t, knots_p, t = [], [], start_s
    for i, point in enumerate(points):
        knots_t.append(t)
        knots_p.append(point)
        if rest > 0:
            t += rest
            knots_t.append(t)
            knots_p.append(point)
        if i < len(legs):
            t += legs[i]
    knots_t, knots_p = np.array(knots_t), np.array(knots_p)
    return np.stack([np.interp(times, knots_t, knots_p[:, axis]) for axis in range(3)], axis=1)


_X, _Y = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
_OBLIQUE_XY = (math.sqrt(0.5), math.sqrt(0.5), 0.0)
_OBLIQUE_XYZ = (0.6, 0.48, 0.64)
_STEP_Z = (0.6, 0.0, 0.8)
_DIAG = math.sqrt(0.5)

#: the registry; ``PROFILES[k].id == k``
PROFILES: tuple[MotionProfile, ...] = (
    MotionProfile(0, "jitter", "jitter-subtle", "random-3d", 0.5, 15.0),
    MotionProfile(1, "jitter", "jitter-mild", "random-3d", 1.0, 30.0),
    MotionProfile(2, "jitter", "jitter-moderate-inplane", "random-inplane", 1.5, 50.0),
    MotionProfile(3, "jitter", "jitter-strong", "random-3d", 2.5, 70.0),
    MotionProfile(4, "jitter", "jitter-fast-inplane", "random-inplane", 1.0, 100.0),
    MotionProfile(5, "translational", "drift-x-slow", _X, 1.0, 10.0),
    MotionProfile(6, "translational", "drift-x", _X, 3.0, 30.0),
    MotionProfile(7, "translational", "drift-y", _Y, 3.0, 30.0),
    MotionProfile(8, "translational", "drift-oblique-fast", _OBLIQUE_XY, 5.0, 60.0),
    MotionProfile(9, "translational", "drift-random-inplane", "random-inplane", 4.0, 45.0),
    MotionProfile(10, "translational", "drift-oblique-3d", _OBLIQUE_XYZ, 4.0, 40.0),
    MotionProfile(11, "oscillatory", "sway-x", _X, 1.5, 30.0),
    MotionProfile(12, "oscillatory", "sway-y", _Y, 2.0, 40.0),
    MotionProfile(13, "oscillatory", "sway-random-fast", "random-inplane", 2.0, 70.0),
    MotionProfile(14, "oscillatory", "orbit-inplane", _X, 2.0, 40.0, circular=True),
    MotionProfile(15, "oscillatory", "sway-random-3d", "random-3d", 2.5, 50.0),
    MotionProfile(16, "piecewise", "stop-and-go", "random-inplane", 3.0, 60.0,
                  waypoints=((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (1.0, 0.0, 0.0))),
    MotionProfile(17, "piecewise", "there-and-back", "random-inplane", 2.5, 50.0,
                  waypoints=((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0))),
    MotionProfile(18, "piecewise", "right-angle-turn", "random-inplane", 3.0, 70.0,
                  waypoints=((-_DIAG, -_DIAG, 0.0), (_DIAG, -_DIAG, 0.0), (_DIAG, _DIAG, 0.0))),
    MotionProfile(19, "piecewise", "zigzag", "random-inplane", 4.0, 90.0,
                  waypoints=((-1.0, 0.0, 0.0), (-1 / 3, 0.5, 0.0), (1 / 3, -0.5, 0.0), (1.0, 0.0, 0.0))),
    MotionProfile(20, "piecewise", "step-through-plane", _STEP_Z, 3.0, 40.0,
                  waypoints=((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))),
)


def acquisition_times(views: int, rotation_s: float = DEFAULT_ROTATION_S) -> tuple[np.ndarray, float]:
    """View times of a parallel-beam half-scan and its duration T: view i at i·T/N, T = rotation / 2."""
    duration = rotation_s / 2
    return np.arange(views) * (duration / views), duration


def get_profile(profile: int | MotionProfile) -> MotionProfile:
    """A profile by id (0-20), or the given ``MotionProfile`` itself (e.g. a modified copy)."""
    if isinstance(profile, MotionProfile):
        return profile
    if isinstance(profile, bool) or not isinstance(profile, (int, np.integer)) or not 0 <= profile < len(PROFILES):
        raise ValueError(f"motion profile must be an id 0-{len(PROFILES) - 1}, got {profile!r}")
    return PROFILES[int(profile)]


def profiles_table() -> str:
    """The registry as a Markdown table (for the README)."""
    rows = ["| id | family | name | direction | magnitude (mm) | velocity (mm/s) | path |",
            "|---|---|---|---|---|---|---|"]
    for p in PROFILES:
        direction = p.direction if isinstance(p.direction, str) else _vector_text(p.direction)
        rows.append(f"| {p.id} | {p.family} | {p.name} | {direction} | {p.magnitude_mm:g} | "
                    f"{p.velocity_mm_s:g} | {_path_text(p)} |")
    return "\n".join(rows)


def _path_text(p: MotionProfile) -> str:
    if p.family == "jitter":
        return "random walk inside the ball"
    if p.family == "translational":
        return "straight drift through the gated position"
    if p.family == "oscillatory":
        shape = "circle in the axial plane" if p.circular else "sine along the direction"
        return f"{shape}, {p.frequency_hz:.2f} Hz"
    points = " → ".join(_vector_text(w) for w in p.waypoints)
    return f"waypoints {points} with rests"


def _vector_text(vector) -> str:
    return "(" + ", ".join(f"{c:.2g}" for c in vector) + ")"
