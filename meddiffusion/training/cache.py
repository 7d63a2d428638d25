"""The one on-disk cache of simulated training data: one ``.npz`` per item, JSON metadata, atomic writes.

Simulation costs seconds per item (an LDCT slab, the patches of a motion case), so each item is
made once into a cache folder and training reads it back at no cost. An item file holds its
arrays and two JSON texts: ``meta``, everything that defines the item (dataset seed, index,
its random draw, the data options), and ``info``, figures measured while making it.

A build keeps every item whose file is already there with the same ``meta``, so an interrupted
build resumes and several runs can share one folder; a file with another ``meta`` is an error,
since mixing them would silently change the training data. Files are written through
:func:`meddiffusion.files.atomic_write`, so a cancelled build never leaves half an item.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from meddiffusion.files import atomic_write

__all__ = ["build_cache", "item_path", "item_seed", "read_item", "read_meta"]

#: ``make(index) -> (arrays, info)``: the item's arrays and the figures measured while making it
MakeItem = Callable[[int], tuple[dict[str, np.ndarray], dict[str, Any]]]


def item_seed(dataset_seed: int, index: int) -> int:
    """The seed of item ``index`` of dataset ``dataset_seed``: disjoint seeds for datasets up to 100 000 items."""
    return int(dataset_seed) * 100_003 + int(index)


def item_path(folder: str | Path, stem: str, index: int) -> Path:
    return Path(folder) / f"{stem}_{index:04d}.npz"


def build_cache(folder: str | Path, stem: str, indices: Iterable[int], describe: Callable[[int], dict],
                make: MakeItem, callback: Callable[[int, int], None] | None = None) -> list[Path]:
    """Make the items ``indices`` that ``folder`` lacks, as ``<stem>_NNNN.npz``; return all their paths.

    ``describe(index)`` is the item's ``meta`` (a JSON-able dict, cheap to compute), ``make``
    simulates it. ``callback(done, total)`` reports progress after every item.
    """
    indices = list(indices)
    if not indices or min(indices) < 0:
        raise ValueError(f"a cache needs at least one item and indices >= 0, got {indices[:3]}")
    paths = []
    for done, index in enumerate(indices, 1):
        path = item_path(folder, stem, index)
        meta = json.loads(json.dumps(describe(index)))  # as it reads back: tuples become lists
        if path.exists():
            if read_meta(path)[0] != meta:
                raise ValueError(f"{path} was generated with another seed or other data options; use another "
                                 "data folder or delete this one")
        else:
            arrays, info = make(index)
            atomic_write(path, lambda tmp: _save(tmp, arrays, meta, info))
        paths.append(path)
        if callback is not None:
            callback(done, len(indices))
    return paths


def read_meta(path: str | Path) -> tuple[dict, dict]:
    """An item's ``meta`` and ``info`` (without decompressing its arrays)."""
    with np.load(path) as stored:
        return json.loads(str(stored["meta"])), json.loads(str(stored["info"]))


def read_item(path: str | Path, *names: str) -> list[np.ndarray]:
    """The arrays ``names`` of an item."""
    with np.load(path) as stored:
        return [stored[name] for name in names]


def _save(tmp: Path, arrays: dict[str, np.ndarray], meta: dict, info: dict) -> None:
    with open(tmp, "wb") as handle:  # a file object: numpy would append .npz to the temporary name
        np.savez_compressed(handle, meta=np.array(json.dumps(meta)), info=np.array(json.dumps(info)), **arrays)
