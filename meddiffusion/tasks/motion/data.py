"""Training data for coronary calcium motion correction: each simulated case (``cases``) cut into patches.

Simulation costs seconds per case, so each case is reduced once to patches and written to
``case_NNNN.npz`` (int16 HU) in a cache folder (``training.cache``) that several training runs
can share; an interrupted build resumes. For every slice the calcium reaches and every calcium
component there, a patch holds the corrupted slices z-1, z, z+1 (edges replicate) and the
static slice z, 80×80 around the component with a random offset; about 15 % more patches sit
at random places of the heart without calcium, so the network also learns to leave
calcium-free anatomy alone. Training cuts a random 64² crop out of each patch and flips or
transposes it, with the trainer's per-step generator, so a resumed run repeats the same crops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from meddiffusion.tasks.motion.cases import MAX_MOTION_MM, MotionCase, MotionDataOptions, case_spec, make_case
from meddiffusion.tasks.motion.model import CONTEXT_SLICES, normalize
from meddiffusion.training import cache
from meddiffusion.training.augment import crop_room, dihedral
from meddiffusion.training.storage import hu_to_int16

__all__ = ["extract_patches", "patches_of", "build_cache", "describe", "read_case_info", "MotionPatches",
           "random_crops"]


def extract_patches(case: MotionCase, options: MotionDataOptions) -> dict[str, np.ndarray]:
    """Training patches of one case, int16 HU.

    Returns ``corrupted`` (N, 3, P, P): slices z-1, z, z+1 of the corrupted CT; ``static``
    (N, 1, P, P): slice z of the static CT; ``calcium`` (N,): whether the patch was centred on
    calcium; ``position`` (N, 3): its (z, row, col) centre.
    """
    return patches_of(case.corrupted.array, case.static.array, case.calcium_mask, case.heart,
                      case.slices_with_motion, math.ceil(MAX_MOTION_MM / options.slice_mm), case.spec.patch_seed,
                      options)


def patches_of(corrupted_hu: np.ndarray, static_hu: np.ndarray, calcium_mask: np.ndarray, heart: np.ndarray,
               slices: list[int], reach: int, seed: int, options: MotionDataOptions) -> dict[str, np.ndarray]:
    """:func:`extract_patches` of any (corrupted, static) pair on one grid: the user's data goes through it too.

    Calcium patches are centred on ``calcium_mask`` components within ``reach`` slices of each of
    ``slices``; background patches at random ``heart`` voxels, drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    size, (depth, rows, cols) = options.patch, corrupted_hu.shape
    if size > min(rows, cols):
        raise ValueError(f"patch size {size} is larger than the slices ({rows}×{cols})")
    centres = [(z, r, c, True) for z, r, c in _calcium_centres(calcium_mask, slices, rng, options.jitter, reach)]
    wanted = (round(len(centres) * options.background_share / (1 - options.background_share)) if centres
              else options.free_case_patches)
    centres += [(z, r, c, False) for z, r, c in _background_centres(calcium_mask, heart, wanted, size, reach, rng)]
    corrupted = np.empty((len(centres), CONTEXT_SLICES, size, size), np.int16)
    static = np.empty((len(centres), 1, size, size), np.int16)
    half = CONTEXT_SLICES // 2
    for n, (z, r, c, _) in enumerate(centres):
        top = int(min(max(round(r - size / 2), 0), rows - size))
        left = int(min(max(round(c - size / 2), 0), cols - size))
        window = (slice(top, top + size), slice(left, left + size))
        stack = [min(max(z + d, 0), depth - 1) for d in range(-half, half + 1)]
        corrupted[n] = hu_to_int16(corrupted_hu[stack][(slice(None), *window)])
        static[n, 0] = hu_to_int16(static_hu[z][window])
    return {"corrupted": corrupted, "static": static,
            "calcium": np.array([flag for *_, flag in centres], bool),
            "position": np.array([(z, r, c) for z, r, c, _ in centres], np.float32).reshape(-1, 3)}


def _calcium_centres(mask: np.ndarray, slices: list[int], rng: np.random.Generator, jitter: int,
                     reach: int) -> list[tuple[int, float, float]]:
    """One centre per calcium component (within ``reach`` slices) per slice the calcium reaches, offset at random."""
    centres = []
    for z in slices:
        footprint = mask[max(z - reach, 0) : z + reach + 1].any(axis=0)
        if not footprint.any():
            continue
        labels, _ = ndimage.label(ndimage.binary_dilation(footprint, iterations=2), structure=np.ones((3, 3), bool))
        for rows, cols in ndimage.find_objects(labels):
            dr, dc = rng.integers(-jitter, jitter + 1, 2)
            centres.append((int(z), (rows.start + rows.stop - 1) / 2 + dr, (cols.start + cols.stop - 1) / 2 + dc))
    return centres


def _background_centres(mask: np.ndarray, heart: np.ndarray, count: int, size: int, reach: int,
                        rng: np.random.Generator) -> list[tuple[int, float, float]]:
    """Up to ``count`` random heart positions whose patch (and its neighbour slices) holds no calcium."""
    candidates = np.argwhere(heart)
    if count == 0 or candidates.size == 0:
        return []
    _, rows, cols = mask.shape
    centres = []
    for _ in range(20 * count):
        z, r, c = candidates[rng.integers(len(candidates))]
        top, left = min(max(r - size // 2, 0), rows - size), min(max(c - size // 2, 0), cols - size)
        near = mask[max(z - reach, 0) : z + reach + 1, top : top + size, left : left + size]
        if not near.any():
            centres.append((int(z), float(r), float(c)))
            if len(centres) == count:
                break
    return centres


def build_cache(folder: str | Path, count: int, seed: int, options: MotionDataOptions | None = None,
                callback: Callable[[int, int], None] | None = None, first: int = 0) -> list[Path]:
    """Simulate cases ``first .. first + count - 1`` of dataset ``seed`` into ``folder`` as patch files.

    Cases already there are kept, so an interrupted build resumes and several training runs can
    share one folder (see ``training.cache``). A case's ``info`` holds its Agatston scores.
    """
    options = options or MotionDataOptions()
    if count < 1 or first < 0:
        raise ValueError(f"need count >= 1 and first >= 0, got {count} and {first}")

    def make(index: int) -> tuple[dict[str, np.ndarray], dict]:
        start = time.monotonic()
        case = make_case(seed, index, options)
        info = {"agatston": case.agatston("static"), "agatston_corrupted": case.agatston("corrupted"),
                "slices_with_motion": case.slices_with_motion, "seconds": round(time.monotonic() - start, 2)}
        return extract_patches(case, options), info

    return cache.build_cache(folder, "case", range(first, first + count), lambda index: describe(seed, index, options),
                             make, callback)


def describe(seed: int, index: int, options: MotionDataOptions) -> dict:
    """What defines case ``index`` of dataset ``seed``: the cache's ``meta``."""
    return {"seed": int(seed), "index": index, "spec": asdict(case_spec(seed, index, options)),
            "options": asdict(options)}


def read_case_info(path: str | Path) -> dict:
    """A cached case's Agatston scores, motion profile, view count and patch counts."""
    meta, info = cache.read_meta(path)
    static, calcium = cache.read_item(path, "static", "calcium")
    return {**info, "profile": meta["spec"]["profile"], "views": meta["spec"]["views"], "patches": len(static),
            "calcium_patches": int(calcium.sum())}


class MotionPatches(Dataset):
    """Every patch of the cached cases: int16 HU ``corrupted`` (3, P, P) and ``static`` (1, P, P).

    :func:`random_crops` cuts the training crops from a batch with the trainer's generator.
    """

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise ValueError("no training cases given; generate them with build_cache first")
        items = [cache.read_item(path, "corrupted", "static", "calcium") for path in paths]
        self.corrupted, self.static, self.calcium = (np.concatenate(arrays) for arrays in zip(*items))
        if len(self.static) == 0:
            raise ValueError(f"the {len(paths)} cached cases hold no patches")

    def __len__(self) -> int:
        return len(self.static)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"corrupted": torch.from_numpy(self.corrupted[index]), "static": torch.from_numpy(self.static[index])}


def random_crops(batch: dict[str, torch.Tensor], crop: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (B, 3, c, c) corrupted context and (B, 1, c, c) static crops, each flipped/transposed at random."""
    corrupted, static = batch["corrupted"], batch["static"]
    height, width = crop_room(corrupted, crop, "patches")
    uniform = torch.rand((corrupted.shape[0], 3), generator=generator, device=generator.device).cpu()
    conditions, targets = [], []
    for i in range(corrupted.shape[0]):
        top = int(uniform[i, 0] * (height - crop + 1))
        left = int(uniform[i, 1] * (width - crop + 1))
        pair = torch.cat([corrupted[i], static[i]])[:, top : top + crop, left : left + crop].float()
        pair = dihedral(pair, int(uniform[i, 2] * 8))
        conditions.append(pair[:CONTEXT_SLICES])
        targets.append(pair[CONTEXT_SLICES:])
    return normalize(torch.stack(conditions)), normalize(torch.stack(targets))
