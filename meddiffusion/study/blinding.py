"""Blinding: the study folder readers see holds opaque codes only; the key that names them lives apart.

:func:`create_study` writes ``<study>/images/<image code>.nrrd`` from a fresh volume of voxels and
geometry alone (no series description, DICOM tag, file name or method name survives; the images
of a case share the original's geometry, so not even rounding in a method's header tells them
apart), ``study.json`` and ``schedule.json`` (codes only), and the key, by default beside the
study as ``<study name>.key.json`` and never inside it::

    {"format": "meddiff-study-key/1", "study_id": ..., "salt": ...,
     "methods": {method code: method name}, "method_order": [method codes, "original" first],
     "images": {image code: {"method": method code, "case": case code, "source": source path}},
     "cases": {case code: {"patient": patient id, "name": source file stem, "truth": 0 | 1 | null}}}

Codes are drawn from the seed and a secret ``salt`` kept in the key: the seed in ``study.json``
reproduces the schedule, but does not let a reader recompute which code is which method.
Reading the key for results is :func:`unblind`, which appends who, when and why to the study's
hash-chained ``audit.jsonl`` and is refused without a reason.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddiffusion.study import log
from meddiffusion.study.design import Case, Design, save_design, write_json
from meddiffusion.study.schedule import build_schedule, save_schedule

__all__ = ["KEY_FORMAT", "ORIGINAL", "SourceCase", "create_study", "default_key_path", "load_key", "unblind"]

KEY_FORMAT = "meddiff-study-key/1"
ORIGINAL = "original"
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are read aloud and typed


@dataclass
class SourceCase:
    """One case before blinding: its images by method name (``original`` first), patient and truth."""

    name: str
    patient: str
    images: dict[str, Path]
    truth: int | None = None
    training: bool = False


def default_key_path(folder: str | Path) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f"{folder.name}.key.json"


def create_study(sources: list[SourceCase], design: Design, folder: str | Path, key_path: str | Path | None = None,
                 salt: str | None = None, step=None, compress: bool = False) -> tuple[Design, Path]:
    """Write the blinded study folder and its key; ``design`` gives everything but the cases.

    The folder appears whole or not at all (built under a hidden name, then renamed); ``step``
    is called once per image copied.  Returns the design with its cases and the key's path.
    Images are stored uncompressed unless ``compress``: a denoised image compresses better than
    its original, so compressed file sizes would tell methods apart.  All files get one
    modification time, so the writing order does not show either.
    """
    from meddiffusion.commands.options import check_same_grid
    from meddiffusion.io import Volume, read_volume, write_volume

    folder = Path(folder).absolute()
    key_path = Path(key_path).absolute() if key_path else default_key_path(folder)
    _check_places(folder, key_path)
    salt = salt or secrets.token_hex(16)
    rng = np.random.default_rng([design.seed, int(salt, 16)])
    methods = list(dict.fromkeys(name for source in sources for name in source.images))
    method_codes = dict(zip(methods, _codes(rng, "M", 4, len(methods))))
    case_codes = _codes(rng, "C", 5, len(sources))
    image_codes = iter(_codes(rng, "I", 7, sum(len(s.images) for s in sources)))
    key = {"format": KEY_FORMAT, "study_id": "".join(_codes(rng, "", 12, 1)), "salt": salt,
           "methods": {code: name for name, code in method_codes.items()},
           "method_order": list(method_codes.values()), "images": {}, "cases": {}}
    cases = []
    staging = folder.with_name(f".{folder.name}-{secrets.token_hex(4)}-tmp")
    try:
        for source, code in zip(sources, case_codes):
            reference = None
            images = []
            for method, path in source.images.items():
                volume = read_volume(path)
                if reference is None:
                    reference = volume
                else:
                    check_same_grid(reference, volume, f"{method} image {Path(path).name}")
                image = next(image_codes)
                bare = Volume(volume.array, reference.spacing, reference.origin, reference.direction)
                write_volume(bare, staging / "images" / f"{image}.nrrd", compress=compress)
                key["images"][image] = {"method": method_codes[method], "case": code, "source": str(Path(path).absolute())}
                images.append(image)
                if step:
                    step()
            key["cases"][code] = {"patient": source.patient, "name": source.name, "truth": source.truth}
            cases.append(Case(code, sorted(images), training=source.training))
        design.cases, design.study_id = cases, key["study_id"]
        schedule = build_schedule(design, *schedule_inputs(key))
        save_design(design, staging / "study.json")
        save_schedule(schedule, staging / "schedule.json")
        (staging / "logs").mkdir()
        stamp = time.time()
        for path in (staging / "images").iterdir():
            os.utime(path, (stamp, stamp))
        write_json(key_path, key)
        if folder.exists():
            folder.rmdir()  # checked empty above
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if key_path.exists() and not folder.exists():
            key_path.unlink()
        raise
    return design, key_path


def schedule_inputs(key: dict) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Patient per case and each case's images in the key's method order, as ``build_schedule`` needs them."""
    rank = {code: position for position, code in enumerate(key["method_order"])}
    patients = {case: entry["patient"] for case, entry in key["cases"].items()}
    order: dict[str, list[str]] = {case: [] for case in key["cases"]}
    for image, entry in sorted(key["images"].items(), key=lambda item: rank[item[1]["method"]]):
        order[entry["case"]].append(image)
    return patients, order


def load_key(path: str | Path, design: Design) -> dict:
    """The key, checked to belong to this study."""
    path = Path(path)
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"key {path} not found (meddiff study create wrote it beside the study folder, or "
                         "where --key said)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"key {path} is not valid JSON: {exc}") from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise ValueError(f"{path} is not a study key ({KEY_FORMAT})")
    if key.get("study_id") != design.study_id:
        raise ValueError(f"key {path} belongs to another study (id {key.get('study_id')}, this study "
                         f"{design.study_id})")
    return key


def unblind(folder: str | Path, key_path: str | Path, reason: str, who: str | None = None) -> dict:
    """Open the key for results, logging who, when and why in ``<study>/audit.jsonl`` first."""
    import getpass

    from meddiffusion.study.design import load_design

    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("unblinding needs a reason (--reason), which is kept in the study's audit log")
    folder = Path(folder)
    key = load_key(key_path, load_design(folder))
    log.append(folder / "audit.jsonl", {"action": "unblind", "who": who or getpass.getuser(),
                                         "why": reason.strip(), "key": str(Path(key_path).absolute())})
    return key


def _check_places(folder: Path, key_path: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"study folder {folder} exists and is not empty; choose a new folder")
    if key_path.exists():
        raise ValueError(f"key {key_path} exists already (another study's key?); choose another --key path")
    if key_path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"the key {key_path} must not be inside the study folder {folder}, which readers see")
    if not key_path.name.lower().endswith(".json"):
        raise ValueError(f"the key must be a .json file, got {key_path}")


def _codes(rng: np.random.Generator, prefix: str, length: int, count: int) -> list[str]:
    codes: list[str] = []
    while len(codes) < count:
        code = prefix + "".join(_ALPHABET[i] for i in rng.integers(len(_ALPHABET), size=length))
        if code not in codes:
            codes.append(code)
    return codes
