"""Motion-corrupted CT from a gated one: ProDM's calcium motion simulation, view by view.

A non-gated scan sees a moving coronary calcium at a different place in every projection.
ProDM (arXiv 2512.24948) simulates this from a motion-free (gated) CT x0 and its calcium mask:

1. Inpaint the calcium to get the background x0′ (``calcium.inpaint_calcium``). The mask is
   first grown by one voxel so that the partial-volume rim moves with the calcium. The calcium
   layer c = x0 − x0′ is the calcium's HU above its background, and x0 = x0′ + c exactly.
2. Pick a trajectory Δ(t) (``motion_profiles``) and N views over a half-scan: view i at angle
   θ_i = i·180°/N and time t_i = i·T/N, with T = rotation time / 2 (parallel beam).
3. View i sees the calcium displaced by Δ(t_i): p_i = R_i[x0′] + R_i[c(· − Δ(t_i))].
   Reconstruct by filtered back-projection (FBP).

Translating an object translates its parallel projections along the detector. The projection
at θ of c(· − Δ) is that of c, shifted by Δ_x·cos θ + Δ_y·sin θ. So the calcium layer is
projected **once**, for all views, lesion by lesion in small patches at up to 8× resolution
(detector samples 1/8 bin apart). Each view then reads its lesion profiles at shifted detector
positions, interpolating linearly between the fine samples, which neither blurs nor rings. The
patch's offset from the rotation centre rides on the same shift. Motion across slices (Δ_z)
is linear interpolation between the projections of neighbouring slices, the same as
interpolating the layer in z. The result is the projection of the layer moved rigidly and
continuously. Projecting every view of a resampled, moved image instead would blur or ring a
calcium only a few pixels wide, and would cost a full projection per slice. Only the FBP runs
over whole slices, and only for slices the calcium reaches.

FBP is linear, so the reconstruction splits into background plus calcium. Two modes:

- default: corrupted = x0′ + FBP(p_calcium), static = x0′ + FBP(p_calcium with Δ = 0). The
  background keeps the input's resolution and noise, so the pair differs by motion alone.
- ``full_fbp=True``: the background is reconstructed too, FBP(R[x0′]) with the same views and
  filter. Both images then carry the FBP's blur and sparse-view streaks everywhere, as a real
  N-view scan would. This reconstructs every slice, so it is slower.

With Δ ≡ 0 the corrupted image is the static one, bit for bit, because both go through the same
code with the same numbers. Slices the calcium never reaches are the background in both
images. Calcium is added to the background wherever it moves. It is not pasted over it, so
where it lands the tissue it covers (fat rather than muscle, say) shows through. The error is
the difference of the two backgrounds, some tens of HU on a calcium of hundreds.

The calcium goes through one projection and FBP. Like any reconstruction on the same grid,
this blurs it by about a pixel: a 3-pixel calcium keeps about 90 % of its peak with the
Ram-Lak filter, and a calcium barely above 130 HU can lose score. Compare ``corrupted`` with
``static``, not with the input.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from meddiffusion.io import Volume
from meddiffusion.physics.calcium import detect_calcium, inpaint_calcium
from meddiffusion.physics.lowdose import hu_to_mu, mu_to_hu
from meddiffusion.physics.motion_profiles import (ALLOWED_VIEWS, DEFAULT_ROTATION_S, MotionProfile, acquisition_times,
                                                  get_profile)
from meddiffusion.physics.radon import FILTERS, ParallelBeamGeometry, RadonTransform

__all__ = ["ALLOWED_VIEWS", "DEFAULT_ROTATION_S", "MotionResult", "simulate_motion", "acquisition_times"]

_PATCH_MARGIN_PX = 2
#: patches are projected at up to 8× the pixel resolution, within a 320-pixel fine patch
_MAX_UPSAMPLE, _FINE_PATCH_PX = 8, 320
_AIR_HU = -1000.0
TRAJECTORY_FIELDS = ("view", "angle_deg", "time_s", "dx_mm", "dy_mm", "dz_mm")


@dataclass
class MotionResult:
    """A motion-corrupted CT, its motion-free counterpart on the same grid, and the motion.

    ``static`` went through the same acquisition and FBP with the calcium at rest: with no
    motion it equals ``corrupted`` exactly. ``calcium_mask`` is the calcium that moved, before
    the one-voxel rim was added. ``slices_with_motion`` lists the slices that were
    reconstructed for it; the others are the background in both images.
    ``displacement_mm`` holds (dx, dy, dz) in LPS mm, one row per view, taken at
    ``times_s``, with the view angles in ``angles_deg``.
    """

    corrupted: Volume
    static: Volume
    calcium_mask: np.ndarray
    profile: MotionProfile
    views: int
    seed: int
    rotation_s: float
    filter: str
    full_fbp: bool
    times_s: np.ndarray
    angles_deg: np.ndarray
    displacement_mm: np.ndarray
    slices_with_motion: list[int] = field(default_factory=list)

    @property
    def trajectory(self) -> np.ndarray:
        """(views, 4): time s, dx, dy, dz mm."""
        return np.column_stack([self.times_s, self.displacement_mm])

    def trajectory_rows(self) -> list[dict[str, float]]:
        """One dict per view with the keys in ``TRAJECTORY_FIELDS``."""
        return [dict(zip(TRAJECTORY_FIELDS, (i, float(a), float(t), *map(float, d))))
                for i, (a, t, d) in enumerate(zip(self.angles_deg, self.times_s, self.displacement_mm))]

    def write_trajectory_csv(self, path: str | os.PathLike) -> Path:
        """One row per view (see ``TRAJECTORY_FIELDS``), written atomically."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=TRAJECTORY_FIELDS)
                writer.writeheader()
                writer.writerows(self.trajectory_rows())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def simulate_motion(volume: Volume, calcium_mask: np.ndarray | None, profile: int | MotionProfile, views: int, *,
                    seed: int = 0, heart_region: np.ndarray | None = None,
                    rotation_s: float = DEFAULT_ROTATION_S, filter: str = "ram-lak", full_fbp: bool = False,
                    device: torch.device | str | None = None,
                    callback: Callable[[int, int], None] | None = None) -> MotionResult:
    """Simulate a non-gated acquisition of ``volume`` (a gated CT in HU) with moving calcium.

    ``calcium_mask`` (z, y, x; voxels > 0) marks the calcium. If it is None, the calcium is
    detected inside ``heart_region``, or inside a region the detector finds itself
    (``calcium.detect_calcium``). ``profile`` is an id 0-20 or a ``MotionProfile``. ``views``
    is one of ``ALLOWED_VIEWS``. The same ``seed`` gives the same motion. ``callback(done,
    total)`` is called after each reconstructed slice. Without calcium, both images are the
    background: the input, or its FBP with ``full_fbp``.
    """
    profile = get_profile(profile)
    hu = _check_inputs(volume, views, rotation_s, filter)
    mask = (detect_calcium(volume, heart_region) if calcium_mask is None
            else _check_mask(calcium_mask, hu.shape, "calcium mask"))
    times, duration = acquisition_times(views, rotation_s)
    displacement = profile.displacement(times, duration, seed)
    angles = np.arange(views) * (180.0 / views)
    device = torch.device(device) if device is not None else torch.device("cpu")

    if mask.any():  # the layer: calcium plus a one-voxel rim, as HU above the inpainted background
        layer_mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool))
        background = inpaint_calcium(hu, layer_mask)
    else:
        layer_mask, background = mask, hu.copy()
    layer = np.where(layer_mask, hu - background, 0.0).astype(np.float32)

    shifts = _index_shift(volume, displacement)
    moving_slices = _reached_slices(layer_mask, shifts[:, 2])
    scanner = _Scanner(hu.shape, volume.spacing[0], views, filter, device)
    total = len(moving_slices) + (hu.shape[0] if full_fbp else 0)
    base = scanner.reconstruct_background(background, callback, total) if full_fbp else background
    corrupted, static = base.copy(), base.copy()
    lesions = _Lesions(layer, layer_mask, scanner) if moving_slices else None
    for done, z in enumerate(moving_slices, start=total - len(moving_slices) + 1):
        moved, still = scanner.fbp_pair(lesions.sinogram(z, shifts), lesions.sinogram(z, np.zeros_like(shifts)))
        corrupted[z] += moved
        static[z] += still
        if callback is not None:
            callback(done, total)
    return MotionResult(
        corrupted=volume.with_array(corrupted.astype(np.float32)),
        static=volume.with_array(static.astype(np.float32)),
        calcium_mask=mask, profile=profile, views=views, seed=int(seed), rotation_s=float(rotation_s),
        filter=filter, full_fbp=bool(full_fbp), times_s=times, angles_deg=angles, displacement_mm=displacement,
        slices_with_motion=list(moving_slices))


# -- acquisition ------------------------------------------------------------------------------
class _Scanner:
    """The parallel-beam scanner of one slice: a square canvas, N views, one FBP filter.

    A slice that is not square sits in the top-left corner of a square canvas padded with air;
    results are cropped back to the slice.
    """

    def __init__(self, shape: tuple[int, int, int], pixel_mm: float, views: int, filter: str, device: torch.device):
        self.rows, self.cols = shape[1], shape[2]
        self.size = max(self.rows, self.cols)
        self.pixel_mm = pixel_mm
        self.views = views
        self.filter = filter
        self.device = device
        self.radon = RadonTransform(ParallelBeamGeometry(self.size, views, pixel_size_mm=pixel_mm), device=device)
        self.detectors = self.radon.geometry.num_detectors
        angles = torch.as_tensor(np.arange(views) * (math.pi / views), dtype=torch.float64)
        self.cos, self.sin = angles.cos(), angles.sin()
        self._patch_radon: dict[tuple[int, int], RadonTransform] = {}

    def fine_radon(self, size: int, upsample: int) -> RadonTransform:
        """Projector of a ``size``-pixel patch upsampled ``upsample`` times."""
        key = (size, upsample)
        if key not in self._patch_radon:
            geometry = ParallelBeamGeometry(size * upsample, self.views, pixel_size_mm=self.pixel_mm / upsample)
            self._patch_radon[key] = RadonTransform(geometry, device=self.device)
        return self._patch_radon[key]

    def offset(self, row: float, col: float) -> tuple[float, float]:
        """(x, y) pixels from the rotation centre to canvas position (row, col)."""
        centre = (self.size - 1) / 2
        return col - centre, row - centre

    def fbp_pair(self, moved: torch.Tensor, still: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """FBP of two calcium sinograms (HU·mm) -> two slice images in HU."""
        images = self.radon.fbp(torch.stack([moved, still]), self.filter)
        images = images[:, : self.rows, : self.cols].cpu().numpy()
        return images[0], images[1]

    def reconstruct_background(self, background: np.ndarray, callback, total: int) -> np.ndarray:
        """FBP(R[μ]) of every slice, in HU, for ``full_fbp``."""
        out = np.empty_like(background)
        for z in range(background.shape[0]):
            canvas = torch.full((1, self.size, self.size), _AIR_HU, dtype=torch.float32)
            canvas[0, : self.rows, : self.cols] = torch.from_numpy(background[z])
            mu = hu_to_mu(canvas.to(self.device))
            image = mu_to_hu(self.radon.fbp(self.radon(mu), self.filter))
            out[z] = image[0, : self.rows, : self.cols].cpu().numpy()
            if callback is not None:
                callback(z + 1, total)
        return out


class _Lesions:
    """The calcium layer, lesion by lesion: each projected once in its own small patch.

    A patch is projected at u = 2-8 times the pixel resolution (8 for lesions up to 40 pixels
    across; bilinear upsampling samples the very image the projector interpolates), so its
    detector profiles are sampled every 1/u bin, and linear interpolation at shifted positions
    neither blurs nor rings: the error falls as 1/u², to that of the whole-slice projector at 8.
    ``sinogram(z, shifts)`` is what output slice z records when view i sees the layer moved
    by ``shifts[i]`` (x, y pixels; z slices). It interpolates the patch projections in z, then
    reads them at detector positions shifted by (patch offset + motion)·(cos θ_i, sin θ_i).
    """

    def __init__(self, layer: np.ndarray, layer_mask: np.ndarray, scanner: _Scanner):
        self.scanner = scanner
        labels, _ = ndimage.label(layer_mask, structure=np.ones((3, 3, 3), bool))
        self.parts = []
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            zs, ys, xs = box
            size = max(ys.stop - ys.start, xs.stop - xs.start) + 2 * _PATCH_MARGIN_PX
            row0 = ys.start - (size - (ys.stop - ys.start)) // 2
            col0 = xs.start - (size - (xs.stop - xs.start)) // 2
            patch = np.zeros((zs.stop - zs.start, size, size), np.float32)
            inside = labels[box] == index
            r, c = ys.start - row0, xs.start - col0  # where the box starts inside the patch
            patch[:, r:r + inside.shape[1], c:c + inside.shape[2]] = np.where(inside, layer[box], 0.0)
            upsample = min(_MAX_UPSAMPLE, max(2, _FINE_PATCH_PX // size))
            fine = F.interpolate(torch.from_numpy(patch)[:, None], scale_factor=upsample, mode="bilinear",
                                 align_corners=False)[:, 0]
            projections = scanner.fine_radon(size, upsample).forward(fine.to(scanner.device))  # (slices, views, bins)
            centre = scanner.offset(row0 + (size - 1) / 2, col0 + (size - 1) / 2)
            self.parts.append((zs.start, projections, centre, upsample))

    def sinogram(self, z: int, shifts: np.ndarray) -> torch.Tensor:
        """(views, detectors) line integrals in HU·mm of the layer seen by output slice z."""
        scanner = self.scanner
        source = z - torch.as_tensor(shifts[:, 2], dtype=torch.float64)  # layer slice each view sees
        lower = torch.floor(source)
        weight = (source - lower).to(torch.float32)[:, None]
        lower = lower.long()
        total = torch.zeros(scanner.views, scanner.detectors, dtype=torch.float32, device=scanner.device)
        for first, projections, (cx, cy), upsample in self.parts:
            rows = (1 - weight) * _pick(projections, lower - first) + weight * _pick(projections, lower + 1 - first)
            if not rows.any():
                continue
            sx = cx + torch.as_tensor(shifts[:, 0], dtype=torch.float64)
            sy = cy + torch.as_tensor(shifts[:, 1], dtype=torch.float64)
            total += _read_detector(rows, sx * scanner.cos + sy * scanner.sin, scanner.detectors, upsample)
        return total


def _pick(projections: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row v of slice index[v] of ``projections`` (slices, views, D); zeros outside the slices."""
    slices, views, _ = projections.shape
    inside = (index >= 0) & (index < slices)
    device = projections.device
    rows = projections[index.clamp(0, slices - 1).to(device), torch.arange(views, device=device)]
    return rows * inside.to(rows.device, rows.dtype)[:, None]


def _read_detector(rows: torch.Tensor, shift_px: torch.Tensor, detectors: int, upsample: int) -> torch.Tensor:
    """Fine patch profiles (views, W; bins 1/upsample pixel apart, centred on the patch) read at s − shift.

    Detector bin k sits at s_k = k − (detectors − 1)/2 pixels from the rotation centre; the
    profile is linearly interpolated there, zero beyond its ends.
    """
    views, width = rows.shape
    s = torch.arange(detectors, dtype=torch.float64) - (detectors - 1) / 2
    position = (s[None, :] - shift_px[:, None]) * upsample + (width - 1) / 2
    lower = torch.floor(position)
    weight = (position - lower).to(rows.device, rows.dtype)
    padded = F.pad(rows, (1, 1))  # a zero on each side: indices clamp onto it
    lower = (lower.long() + 1).to(rows.device)
    left = padded.gather(1, lower.clamp(0, width + 1))
    right = padded.gather(1, (lower + 1).clamp(0, width + 1))
    return (1 - weight) * left + weight * right


# -- geometry and checks -----------------------------------------------------------------------
def _index_shift(volume: Volume, displacement_mm: np.ndarray) -> np.ndarray:
    """LPS mm (n, 3) -> index steps (n, 3) as (x columns, y rows, z slices)."""
    matrix = np.asarray(volume.direction, dtype=float).reshape(3, 3) * np.asarray(volume.spacing)
    return np.linalg.solve(matrix, displacement_mm.T).T


def _reached_slices(layer_mask: np.ndarray, dz: np.ndarray) -> list[int]:
    """Output slices that see some calcium at some view (slice z sees layer slice z − dz)."""
    occupied = np.flatnonzero(layer_mask.any(axis=(1, 2)))
    if occupied.size == 0:
        return []
    first = occupied.min() + math.floor(min(dz.min(), 0.0))  # the static calcium's own slices count too
    last = occupied.max() + math.ceil(max(dz.max(), 0.0))
    return list(range(max(first, 0), min(last, layer_mask.shape[0] - 1) + 1))


def _check_inputs(volume: Volume, views: int, rotation_s: float, filter: str) -> np.ndarray:
    if not isinstance(volume, Volume):
        raise ValueError(f"expected a meddiffusion.io.Volume (CT in HU), got {type(volume).__name__}")
    if isinstance(views, bool) or views not in ALLOWED_VIEWS:
        raise ValueError(f"views must be one of {', '.join(map(str, ALLOWED_VIEWS))}, got {views!r}")
    if not (isinstance(rotation_s, (int, float)) and math.isfinite(rotation_s) and rotation_s > 0):
        raise ValueError(f"rotation time must be > 0 s (e.g. 0.35), got {rotation_s!r}")
    if filter not in FILTERS:
        raise ValueError(f"unknown filter '{filter}'; expected one of {', '.join(FILTERS)}")
    sx, sy = volume.spacing[:2]
    if abs(sx - sy) > 1e-3 * max(sx, sy):
        raise ValueError(f"in-plane pixels must be square for the CT geometry, got {sx} x {sy} mm; "
                         "resample the volume first")
    return np.asarray(volume.array, dtype=np.float32)


def _check_mask(mask, shape: tuple[int, ...], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} has shape {mask.shape} but the CT has {tuple(shape)}; it must be on the CT's grid")
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a boolean mask or a label map, got dtype {mask.dtype}")
    return mask > 0
