"""Training data of the PET/MR task: simulated subjects, cut into random 3D patches with their coordinates.

Each subject (a brain from the MNI152 template or a phantom thorax, ``physics.pet``) costs
seconds to simulate, so it is made once into ``subject_NNNN.npz`` in a cache folder
(``training.cache``) that several runs share. A subject keeps its full-count PET, its
low-count PETs at the *training* dose-reduction factors only (CSRD: 4, 6 and 8; the held-out
DRF 10 is never simulated into the cache), the MR and the lesion labels, all on one grid.

Training reads patches (CSRD: 64³) at random places: per subject and DRF, the low-count and
full-count images scaled by the low-count image's min/max, the residual r = full − low in
that space times ``model.RESIDUAL_SCALE``, the MR scaled by its min/p99, and the patch's x, y, z coordinates in the whole
volume (``nets.csrd.global_coordinates``). Volumes smaller than a patch are zero-padded
(CSRD pads to multiples of 8), the coordinates continuing beyond the volume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from meddiffusion.tasks.petmr.model import RESIDUAL_SCALE, normalize_mr, normalize_pet, pet_range
from meddiffusion.training import cache
from meddiffusion.training.cache import item_seed as subject_seed  # the one seed rule of cached datasets

__all__ = ["STEM", "KIND_CHOICES", "subject_kind", "subject_seed", "describe", "make_subject", "build_cache",
           "PetmrPatches"]

STEM = "subject"
#: ``--kind``: which anatomies a dataset holds (``both`` alternates brain and thorax by index)
KIND_CHOICES = {"brain": ("brain",), "thorax": ("thorax",), "both": ("brain", "thorax")}


def subject_kind(index: int, kinds: tuple[str, ...]) -> str:
    return kinds[int(index) % len(kinds)]



def _check_protocol(protocol) -> None:
    if set(protocol.drf_train) & set(protocol.drf_heldout):
        raise ValueError("a held-out dose-reduction factor must never enter training")


def describe(index: int, dataset_seed: int, kind: str, protocol) -> dict:
    return {"kind": "petmr-subject", "version": 1, "dataset_seed": int(dataset_seed), "index": int(index),
            "subject": kind, "protocol": protocol.to_dict(), "drfs": list(protocol.drf_train)}


def make_subject(index: int, dataset_seed: int, kind: str, protocol) -> tuple[dict[str, np.ndarray], dict]:
    """One subject at the protocol's training DRFs only; arrays (z, y, x) on the PET grid."""
    from meddiffusion.physics.pet import simulate_pet_subject

    _check_protocol(protocol)
    subject = simulate_pet_subject(kind, subject_seed(dataset_seed, index), protocol, drfs=protocol.drf_train)
    grid = subject.full
    arrays = {"full": subject.full.array.astype(np.float32),
              "low": np.stack([subject.low[d].array for d in protocol.drf_train]).astype(np.float32),
              "drfs": np.asarray(protocol.drf_train, np.int32), "mr": subject.mr.array.astype(np.float32),
              "lesions": subject.lesions.array.astype(np.int16),
              "spacing": np.asarray(grid.spacing, np.float64), "origin": np.asarray(grid.origin, np.float64),
              "direction": np.asarray(grid.direction, np.float64)}
    info = {"kind": kind, "seed": subject.info["seed"], "drf": subject.info["drf"],
            "lesions": len(subject.info.get("lesions", [])), "shape": list(grid.shape),
            "voxel_mm": float(grid.spacing[0])}
    return arrays, info


def build_cache(folder: str | Path, indices, dataset_seed: int, kinds: tuple[str, ...], protocols: dict,
                callback: Callable[[int, int], None] | None = None) -> list[Path]:
    """Make the subjects ``indices`` of dataset ``dataset_seed`` that ``folder`` lacks; return all their paths.

    ``protocols`` maps each kind to its ``PetProtocol`` (``PetProtocol.for_kind`` by default).
    """
    for protocol in protocols.values():
        _check_protocol(protocol)
    Path(folder).mkdir(parents=True, exist_ok=True)

    def kind_of(i: int) -> str:
        return subject_kind(i, kinds)

    return cache.build_cache(folder, STEM, indices,
                             lambda i: describe(i, dataset_seed, kind_of(i), protocols[kind_of(i)]),
                             lambda i: make_subject(i, dataset_seed, kind_of(i), protocols[kind_of(i)]), callback)


class PetmrPatches(Dataset):
    """Random patches of cached subjects, one volume per (subject, training DRF).

    Item ``i`` is patch ``i % per_volume`` of volume ``i // per_volume``, its place drawn from
    (``seed``, ``i``), so the data are the same on every run and worker. Items are
    ``{"r", "low", "mr": (1, P, P, P), "coords": (3, P, P, P)}``, normalised as ``model`` says.
    The raw images stay in memory (a 128² × 104 brain with three DRFs: 35 MB).
    """

    def __init__(self, paths: list[Path], patch: int = 64, per_volume: int = 32, seed: int = 0):
        if patch < 1 or per_volume < 1:
            raise ValueError(f"patch and patches per volume must be >= 1, got {patch} and {per_volume}")
        self.patch, self.per_volume, self.seed = int(patch), int(per_volume), int(seed)
        self.subjects, self.volumes = [], []
        for number, path in enumerate(paths):
            full, low, drfs, mr = cache.read_item(path, "full", "low", "drfs", "mr")
            self.subjects.append({"full": full, "low": low, "mr": normalize_mr(mr)})
            for k, drf in enumerate(drfs):
                self.volumes.append((number, k, int(drf), pet_range(low[k])))
        if not self.volumes:
            raise ValueError("no cached subject to cut patches from")

    def __len__(self) -> int:
        return len(self.volumes) * self.per_volume

    def place(self, index: int) -> tuple[int, tuple[int, int, int]]:
        """(volume number, patch start (z, y, x)) of item ``index``."""
        volume = index // self.per_volume
        shape = self.subjects[self.volumes[volume][0]]["full"].shape
        rng = np.random.default_rng([self.seed, int(index), 59])
        return volume, tuple(int(rng.integers(0, max(s - self.patch, 0) + 1)) for s in shape)

    def _cut(self, array: np.ndarray, start, scale=None) -> np.ndarray:
        """The patch at ``start`` (normalised by ``scale`` if given), zero beyond the volume as at inference."""
        out = np.zeros((self.patch,) * 3, np.float32)
        piece = array[tuple(slice(s, s + self.patch) for s in start)]
        out[: piece.shape[0], : piece.shape[1], : piece.shape[2]] = piece if scale is None else normalize_pet(piece,
                                                                                                             scale)
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from meddiffusion.nets.csrd import global_coordinates

        volume, start = self.place(index)
        number, k, _, scale = self.volumes[volume]
        subject = self.subjects[number]
        low, full = self._cut(subject["low"][k], start, scale), self._cut(subject["full"], start, scale)
        return {"r": torch.from_numpy((full - low) * RESIDUAL_SCALE)[None], "low": torch.from_numpy(low)[None],
                "mr": torch.from_numpy(self._cut(subject["mr"], start))[None],
                "coords": global_coordinates((self.patch,) * 3, subject["full"].shape, start)}
