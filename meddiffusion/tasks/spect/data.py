"""Training data of the SPECT task: simulated phantom studies, cut into 2.5D transaxial slices.

Each study (one phantom patient, rest or stress, ``physics.spect.simulate_study``) costs
seconds, so it is made once into ``study_NNNN.npz`` in a cache folder (``training.cache``)
that several runs share; an interrupted build resumes. A study keeps its NAC, its AC (OSEM
with the true μ-map, the target) and the μ-map, all on the SPECT grid.

Training reads slices: the NAC slice with its two neighbours, the μ-map slices at the same
places (for the teacher) and the AC slice, each normalised by the study's own scale
(``model.study_scale``). Slices with almost no counts (above the heart and below the liver,
outside the camera's useful axial field) are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from meddiffusion.tasks.spect.model import normalize_ac, normalize_mu, normalize_nac, study_scale
from meddiffusion.training import cache
from meddiffusion.training.cache import item_seed as study_seed  # the one seed rule of cached datasets

__all__ = ["STEM", "describe", "make_study", "build_cache", "SpectSlices", "study_seed", "MIN_SLICE_SHARE"]

STEM = "study"
#: a slice trains when its brightest NAC voxel reaches this share of the study's scale
MIN_SLICE_SHARE = 0.1



def describe(index: int, dataset_seed: int, protocol) -> dict:
    return {"kind": "spect-study", "version": 1, "dataset_seed": int(dataset_seed), "index": int(index),
            "protocol": protocol.to_dict()}


def make_study(index: int, dataset_seed: int, protocol) -> tuple[dict[str, np.ndarray], dict]:
    """One patient of the dataset: rest or stress drawn from its seed; arrays on the SPECT grid."""
    from meddiffusion.phantoms import Phantom
    from meddiffusion.physics.spect import sample_spect_patient, simulate_study

    seed = study_seed(dataset_seed, index)
    params = sample_spect_patient(seed)
    stress = bool(np.random.default_rng(seed).uniform() < 0.5)
    study = simulate_study(Phantom(params), protocol, stress=stress, seed=seed)
    arrays = {"nac": study.nac.array.astype(np.float32), "ac": study.ac.array.astype(np.float32),
              "mu": study.mu.array.astype(np.float32),
              "spacing": np.asarray(study.nac.spacing, np.float64), "origin": np.asarray(study.nac.origin, np.float64),
              "direction": np.asarray(study.nac.direction, np.float64)}
    return arrays, _jsonable(study.info)


def build_cache(folder: str | Path, indices, dataset_seed: int, protocol,
                callback: Callable[[int, int], None] | None = None) -> list[Path]:
    """Make the studies ``indices`` of dataset ``dataset_seed`` that ``folder`` lacks; return all their paths."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return cache.build_cache(folder, STEM, indices, lambda i: describe(i, dataset_seed, protocol),
                             lambda i: make_study(i, dataset_seed, protocol), callback)


def read_study(path: str | Path):
    """(NAC, AC, μ) Volumes of a cached study."""
    from meddiffusion.io import Volume

    nac, ac, mu, spacing, origin, direction = cache.read_item(path, "nac", "ac", "mu", "spacing", "origin",
                                                              "direction")
    geometry = dict(spacing=tuple(spacing), origin=tuple(origin), direction=tuple(direction))
    return (Volume(nac, modality="NM", units="counts", **geometry), Volume(ac, modality="NM", units="counts", **geometry),
            Volume(mu, units="1/cm", **geometry))


class SpectSlices(Dataset):
    """2.5D slices of cached studies: ``{"nac": (3, H, W), "mu": (3, H, W), "ac": (1, H, W)}`` in [−1, 1].

    All studies are held in memory normalised (a 64² × 40 study is 2 MB); ``study`` (N,) says
    which study each slice came from. Studies of smaller matrices (the user's, each on its own
    field of view) are padded with empty space (no counts, no attenuation) to the largest, at the
    bottom and right, so a batch stacks and no pixel moves.
    """

    def __init__(self, paths: list[Path]):
        from meddiffusion.tasks.spect.infer import context_stack

        studies = []
        for path in paths:
            n, a, m = cache.read_item(path, "nac", "ac", "mu")
            scale = study_scale(n)
            studies.append((normalize_nac(n, scale), normalize_ac(a, scale), normalize_mu(m)))
        size = tuple(max((n.shape[i] for n, _, _ in studies), default=0) for i in (1, 2))
        nac, mu, ac, study = [], [], [], []
        for number, arrays in enumerate(studies):
            n, a, m = (_pad(x, size) for x in arrays)
            keep = np.flatnonzero((n + 1).reshape(n.shape[0], -1).max(axis=1) / 2 >= MIN_SLICE_SHARE)
            for k in keep:
                nac.append(context_stack(n, k))
                mu.append(context_stack(m, k))
                ac.append(a[k : k + 1])
                study.append(number)
        if not nac:
            raise ValueError("the cached studies hold no slice with counts; the simulation or the cache is broken")
        self.nac = torch.from_numpy(np.stack(nac).astype(np.float32))
        self.mu = torch.from_numpy(np.stack(mu).astype(np.float32))
        self.ac = torch.from_numpy(np.stack(ac).astype(np.float32))
        self.study = np.asarray(study)

    def __len__(self) -> int:
        return len(self.ac)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"nac": self.nac[index], "mu": self.mu[index], "ac": self.ac[index]}


def _pad(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A normalised (z, y, x) study padded to ``size`` in-plane with −1 (nothing) at the bottom and right."""
    rows, cols = size[0] - array.shape[1], size[1] - array.shape[2]
    return np.pad(array, ((0, 0), (0, rows), (0, cols)), constant_values=-1.0) if rows or cols else array


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
