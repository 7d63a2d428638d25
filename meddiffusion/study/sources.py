"""The cases of a new study, found in folders of images: an original and each method's output, paired by name.

Names pair without their suffix (``a.nrrd`` with ``a.nii.gz``), because methods often write
another format than they read; a subfolder is a DICOM series named by the folder.  A
``patients.csv`` (columns ``file`` - a name or stem - ``patient`` and optionally ``truth`` 0/1)
groups several files of one patient, which the schedule then keeps apart; without it each
file is its own patient.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from meddiffusion.study.blinding import ORIGINAL, SourceCase

__all__ = ["find_cases", "images_by_stem"]


def images_by_stem(folder: str | Path) -> dict[str, Path]:
    """Volume files (and DICOM folders) of a folder by name without suffix; hidden files are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        stem = path.name if path.is_dir() else _stem(path.name)
        if stem is None:
            continue
        if stem in found:
            raise ValueError(f"{folder} holds {found[stem].name} and {path.name}: two images of one name; keep one")
        found[stem] = path
    return found


def find_cases(original: str | Path, methods: dict[str, str | Path], patients_csv: str | Path | None = None,
               training: int = 0, seed: int = 0, diagnostic: bool = False) -> list[SourceCase]:
    """One case per original, with every method's image of the same name; ``training`` cases drawn from ``seed``."""
    originals = images_by_stem(original)
    if not originals:
        raise ValueError(f"{original} holds no images (.nrrd, .nii(.gz), .mha or DICOM folders)")
    outputs = {name: images_by_stem(folder) for name, folder in methods.items()}
    for name, found in outputs.items():
        missing = sorted(set(originals) - set(found))
        if missing:
            raise ValueError(f"method '{name}' ({methods[name]}) has no image for {len(missing)} original(s): "
                             f"{', '.join(missing[:5])}; every original needs one output of the same name")
    table = _patients(Path(original), patients_csv)
    cases = []
    for stem, path in originals.items():
        row = table.get(stem, {})
        truth = row.get("truth")
        cases.append(SourceCase(name=stem, patient=row.get("patient") or stem,
                                images={ORIGINAL: path, **{n: found[stem] for n, found in outputs.items()}},
                                truth=truth))
    if not 0 <= training < len(cases):
        raise ValueError(f"--training {training}: must leave at least one of the {len(cases)} cases for analysis")
    for position in np.random.default_rng(seed).choice(len(cases), size=training, replace=False):
        cases[position].training = True
    if diagnostic:
        unknown = [c.name for c in cases if c.truth is None and not c.training]
        if unknown:
            raise ValueError(f"a diagnostic question needs each case's truth (patients.csv column 'truth', 0 or 1); "
                             f"missing for {', '.join(unknown[:5])}")
    return cases


def _patients(original: Path, patients_csv) -> dict[str, dict]:
    path = Path(patients_csv) if patients_csv else original / "patients.csv"
    if not path.exists():
        if patients_csv:
            raise ValueError(f"--patients {path} not found")
        return {}
    rows: dict[str, dict] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "file" not in reader.fieldnames or "patient" not in reader.fieldnames:
            raise ValueError(f"{path} needs the columns file and patient (and optionally truth)")
        for number, row in enumerate(reader, 2):
            stem = _stem(row["file"].strip()) or row["file"].strip()
            truth = (row.get("truth") or "").strip()
            if truth not in ("", "0", "1"):
                raise ValueError(f"{path} line {number}: truth must be 0 or 1, got '{truth}'")
            rows[stem] = {"patient": row["patient"].strip(), "truth": int(truth) if truth else None}
    return rows


def _stem(name: str) -> str | None:
    """A volume file's name without its suffix (``a.nii.gz`` -> ``a``); None for other files."""
    from meddiffusion.io import VOLUME_SUFFIXES

    suffix = next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if name.lower().endswith(s)), None)
    return name[: len(name) - len(suffix)] if suffix else None
