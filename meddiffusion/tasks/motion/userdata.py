"""Fine-tuning the motion model on the user's own CT: paired non-gated/gated scans, or gated scans alone.

``meddiff train motion --source paired-folder|clean-folder --data DIR`` reads the volumes with
:mod:`meddiffusion.training.userdata` (pair checks, by-patient split) and cuts each patient into
the patches the phantom cases give (``data.patches_of``), cached one file per patient:

- **paired**: ``input/`` holds the non-gated (motion-corrupted) CT, ``target/`` the gated
  (motion-free) CT of the same patient on the same grid; the pair must pass the grid, CT-value
  and alignment checks, since a target that does not sit on its input teaches the network to
  move anatomy;
- **clean**: gated CTs only, corrupted by the task's own physics, ProDM's motion simulation
  (``physics.motion.simulate_motion``) with the calcium the region finder found; the profile,
  view count and motion are drawn from ``--seed`` and the volume's index, so the same command
  makes the same pairs. The target is the simulation's ``static`` image (the same acquisition
  with the calcium at rest), so the pair differs by the motion alone, as in the phantom cases.

Patches sit on the calcium, as for the phantom: the candidates of the task's region finder
(``region.find_region``: Agatston lesions in the heart, bone excluded), on the gated and on the
non-gated scan. When the heart is not found (a field of view too small to show the lungs) the
candidates are searched in the whole body; a patient without any calcium gives random patches
of the heart (or of the body), and the log says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from meddiffusion.io import Volume
from meddiffusion.tasks.motion.cases import MAX_MOTION_MM, MotionDataOptions
from meddiffusion.tasks.motion.model import CONTEXT_SLICES
from meddiffusion.training import cache, userdata
from meddiffusion.training.recipe import CLEAN_FOLDER, PAIRED_FOLDER, TrainingData
from meddiffusion.training.sampler import STREAM_DATA, derive_seed

__all__ = ["STEMS", "USER_SOURCES", "build_user_data", "candidates", "simulate_pair", "motion_draw"]

STEMS = {PAIRED_FOLDER: "pair", CLEAN_FOLDER: "clean"}
USER_SOURCES = tuple(STEMS)
#: a voxel is body above this HU, where background patches fall back to when no heart is found
_BODY_HU = -500.0


def motion_draw(seed: int, index: int) -> dict:
    """The motion that corrupts clean volume ``index`` of a run with ``--seed``: profile, views, motion seed."""
    from meddiffusion.physics.motion_profiles import ALLOWED_VIEWS, PROFILES

    rng = np.random.default_rng(derive_seed(seed, STREAM_DATA, index))
    return {"profile": int(rng.integers(len(PROFILES))), "views": int(ALLOWED_VIEWS[rng.integers(len(ALLOWED_VIEWS))]),
            "motion_seed": int(rng.integers(2**31))}


def candidates(volume: Volume) -> tuple[np.ndarray, np.ndarray, str]:
    """(calcium, heart, where) of one CT by the task's region finder; ``where`` says which region was searched.

    The heart is the finder's scoring region (heart without bone). A CT whose heart is not found
    is searched inside its body instead (bone still excluded), so a heart-centred field of view
    still gives calcium patches.
    """
    from meddiffusion.tasks.motion.region import find_region

    try:
        region = find_region(volume)
        if region.scoring.any():
            return region.calcium, region.scoring, "heart"
    except ValueError:
        pass
    body = volume.array > _BODY_HU
    if not body.any():
        return np.zeros(volume.shape, bool), np.ones(volume.shape, bool), "image"
    region = find_region(volume, heart=body)
    return region.calcium, region.scoring if region.scoring.any() else body, "body"


def simulate_pair(gated: Volume, calcium: np.ndarray, seed: int, index: int) -> tuple[Volume, Volume, dict]:
    """(non-gated, static, facts) of a gated CT: ProDM's motion simulation of its ``calcium``, drawn by
    :func:`motion_draw` (reproducible from ``seed`` and ``index``)."""
    from meddiffusion.physics.motion import simulate_motion

    draw = motion_draw(seed, index)
    result = simulate_motion(gated, calcium, draw["profile"], draw["views"], seed=draw["motion_seed"])
    return result.corrupted, result.static, {**draw, "slices_with_motion": list(result.slices_with_motion)}


def _check_shape(volume: Volume, name: str, patch: int) -> None:
    depth, rows, cols = volume.shape
    if depth < CONTEXT_SLICES:
        raise ValueError(f"'{name}' has {depth} slice(s); the motion model reads each slice with its two "
                         f"neighbours and needs at least {CONTEXT_SLICES}")
    if min(rows, cols) < patch:
        raise ValueError(f"'{name}' has slices of {rows}×{cols} pixels, smaller than the {patch}-pixel training "
                         "patches; use the whole axial field of view")


def build_user_data(args, progress, options: MotionDataOptions | None = None) -> TrainingData:
    """The cached patches of ``--data``, split by patient; provenance and per-patient facts in ``info``."""
    from meddiffusion.tasks.motion.data import MotionPatches, patches_of

    if args.source not in USER_SOURCES:
        raise ValueError(f"motion training reads the user's data with --source {' or '.join(USER_SOURCES)}, not "
                         f"'{args.source}'")
    if not args.data:
        raise ValueError(f"--source {args.source} needs --data: a folder or a CSV manifest of the volumes")
    options = options or MotionDataOptions()
    entries = userdata.list_entries(args.data, args.source)
    patients = sorted({entry.patient for entry in entries})
    train_ids, val_ids = userdata.split_patients(patients, args.val_patients, args.seed)
    hashes = {path: userdata.file_sha256(path) for entry in entries for path in entry.files}

    def describe(index: int) -> dict:
        entry = entries[index]
        return {"source": args.source, "name": entry.name, "patient": entry.patient, "seed": args.seed,
                "sha256": [hashes[path] for path in entry.files], "patch": options.patch, "jitter": options.jitter,
                "background_share": options.background_share, "free_case_patches": options.free_case_patches}

    def make(index: int):
        entry = entries[index]
        corrupted, gated, info = userdata.read_checked(entry, "ct")
        _check_shape(gated, entry.name, options.patch)
        calcium, heart, where = candidates(gated)
        if args.source == CLEAN_FOLDER:
            corrupted, static, facts = simulate_pair(gated, calcium, args.seed, index)
            info |= facts
        else:
            static = gated
            more, _, _ = candidates(corrupted)  # smeared calcium the gated scan shows elsewhere, or not at all
            calcium = calcium | more
        reach = math.ceil(MAX_MOTION_MM / float(gated.spacing[2]))
        patches = patches_of(corrupted.array, static.array, calcium, heart, list(range(gated.shape[0])), reach,
                             derive_seed(args.seed, STREAM_DATA, index, 1), options)
        info |= {"searched": where, "calcium_voxels": int(calcium.sum()), "patches": len(patches["static"]),
                 "calcium_patches": int(patches["calcium"].sum())}
        return patches, info

    folder = Path(args.out) / "data"
    paths = cache.build_cache(folder, STEMS[args.source], range(len(entries)), describe, make,
                              progress.callback("read", len(entries)))
    infos = [cache.read_meta(path)[1] for path in paths]
    for entry, info in zip(entries, infos):
        if info["searched"] != "heart":
            progress.log(f"{entry.name}: the heart was not found; calcium candidates were searched in the whole "
                         f"{info['searched']}")
        if not info["calcium_patches"]:
            progress.log(f"{entry.name}: no calcium found; its {info['patches']} patches are random places of the "
                         f"{'heart' if info['searched'] == 'heart' else info['searched']}")

    data = TrainingData(MotionPatches(userdata.by_patient(paths, entries, train_ids)),
                        MotionPatches(userdata.by_patient(paths, entries, val_ids)))
    data.info["provenance"] = userdata.provenance(args, entries, hashes, {"train": train_ids, "val": val_ids})
    data.info["patients"] = {entry.name: info for entry, info in zip(entries, infos)}
    progress.log(f"{len(data.train)} training patches ({int(data.train.calcium.sum())} on calcium) of "
                 f"{len(train_ids)} patients and {len(data.val)} validation patches of {len(val_ids)} "
                 f"({', '.join(val_ids)}) from {args.data} in {folder}")
    return data
