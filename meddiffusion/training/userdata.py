"""The user's own training data, for any task: a folder or CSV manifest of volumes, pair checks, a by-patient split.

A task's recipe reads ``--data`` here and turns the checked volumes into its cached training
items (``training.cache``). Three layouts, by data source (``training.recipe``):

- ``paired-folder``: ``DIR/input/`` and ``DIR/target/`` holding volumes matched by name (a file
  without its suffix, or a DICOM series folder), or a CSV manifest with columns
  ``input,target[,patient]``. A task whose pairs may come with further volumes of the same
  patient (a CT beside a SPECT pair) names these ``extras``: a folder ``DIR/<extra>/`` matched
  by name, or a manifest column, either covering any of the pairs. A task that names its roles'
  files (``names``) also reads one folder per patient, ``DIR/<patient>/<name>.nrrd`` (or a
  DICOM series folder of that name), which is how such studies are usually exported;
- ``clean-folder`` / ``lowdose-folder``: the volumes directly in ``DIR``, or a CSV with columns
  ``volume[,patient]`` (clean volumes become targets, low-dose ones inputs).

Relative manifest paths are read from the manifest's folder. Each volume is one patient unless
the manifest's ``patient`` column groups several, and the validation split is drawn over
patients (:func:`split_patients`), so no patient has slices on both sides: slices of one scan
share anatomy and noise texture, and a split inside a patient would score memory, not
generalisation.

With a single patient (a fine-tune on one scan) no such split exists; :func:`split_slices` then
holds out a contiguous block of slices at the end of each volume, two slices away from the
training block so that no training slice's neighbours touch it. It scores adaptation to that
scan rather than generalisation, and the card says so.

Every check raises a ``ValueError`` that names the pair and what to do, before training starts:
a pair must share its grid (:func:`check_grid`), both volumes must pass the modality's value
rule (``meddiffusion.checks``) and the pair must be aligned (:func:`check_alignment`).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddiffusion.checks import check_values, rule_for
from meddiffusion.io.volume import VOLUME_SUFFIXES, Volume
from meddiffusion.training.recipe import CLEAN_FOLDER, LOWDOSE_FOLDER, PAIRED_FOLDER

__all__ = ["Entry", "list_entries", "volumes_in", "split_patients", "split_slices", "SLICE_GAP", "check_grid",
           "check_alignment", "check_pair", "read_checked", "file_sha256", "manifest_hash", "MIN_CORRELATION",
           "SHIFT_MARGIN"]

#: an aligned pair correlates at least this much in the [-1000, 1000] HU window (noise at a quarter dose
#: costs about 0.01 on a body; a few pixels of shift cost more than 0.1 at a body's edge)
MIN_CORRELATION = 0.9
#: a pair is shifted when a shift of up to ``MAX_SHIFT`` voxels correlates better than none by this much
SHIFT_MARGIN = 0.01
MAX_SHIFT = 3
ALIGN_WINDOW = (-1000.0, 1000.0)
USER_SOURCES = (PAIRED_FOLDER, CLEAN_FOLDER, LOWDOSE_FOLDER)


@dataclass(frozen=True)
class Entry:
    """One volume or pair of the user's data: its patient and files (``input`` or ``target`` may be None).

    ``extras``: (role, file) of the further volumes a task asked for, where the user gave them.
    """

    name: str
    patient: str
    input: Path | None
    target: Path | None
    extras: tuple[tuple[str, Path], ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(path for path in (self.input, self.target) if path is not None) + tuple(p for _, p in self.extras)

    def extra(self, role: str) -> Path | None:
        """The file of the further volume ``role``, or None where the user gave none."""
        return dict(self.extras).get(role)


def volume_name(path: Path) -> str:
    """A volume's name without its suffix (``a.nii.gz`` -> ``a``; a DICOM folder keeps its name)."""
    for suffix in sorted(VOLUME_SUFFIXES + (".dcm",), key=len, reverse=True):
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def volumes_in(folder: Path) -> dict[str, Path]:
    """The volumes of a folder by name: files with a volume suffix and subfolders (DICOM series)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        is_volume = path.is_dir() or path.name.lower().endswith(VOLUME_SUFFIXES + (".dcm",))
        if path.name.startswith(".") or not is_volume or (path.is_dir() and path.name in ("input", "target")):
            continue
        name = volume_name(path)
        if name in found:
            raise ValueError(f"{folder} holds two volumes named '{name}' ({found[name].name}, {path.name}); "
                             "rename one")
        found[name] = path
    return found


def list_entries(data: str | Path, source: str, extras: tuple[str, ...] = (),
                 names: dict[str, str] | None = None) -> list[Entry]:
    """The volumes or pairs of ``--data`` for ``source`` (see the module docstring), sorted by name.

    ``extras``: the further roles a pair may bring; ``names``: the file name of each role
    (``input``, ``target`` and the extras) in a per-patient folder, which is read only when given.
    """
    if source not in USER_SOURCES:
        raise ValueError(f"--data is read for the sources {', '.join(USER_SOURCES)}, not '{source}'")
    path = Path(data)
    if not path.exists():
        raise ValueError(f"--data {path} does not exist; expected a folder or a CSV manifest")
    if path.is_file():
        entries = _read_manifest(path, source, extras if source == PAIRED_FOLDER else ())
    elif source == PAIRED_FOLDER and names and not (path / "input").is_dir() and not (path / "target").is_dir():
        entries = _patient_folders(path, names, extras)
    elif source == PAIRED_FOLDER:
        entries = _paired_folder(path, extras)
    else:
        volumes = volumes_in(path)
        entries = [Entry(name, name, *((None, file) if source == CLEAN_FOLDER else (file, None)))
                   for name, file in volumes.items()]
    if not entries:
        raise ValueError(f"--data {path} holds no volumes for {source}")
    return sorted(entries, key=lambda entry: entry.name)


def _paired_folder(folder: Path, extras: tuple[str, ...] = ()) -> list[Entry]:
    if not (folder / "input").is_dir() or not (folder / "target").is_dir():
        raise ValueError(f"a paired folder holds input/ and target/ volumes matched by name; {folder} lacks "
                         f"{' and '.join(n + '/' for n in ('input', 'target') if not (folder / n).is_dir())} "
                         "(or pass a CSV manifest with columns input,target[,patient])")
    inputs, targets = volumes_in(folder / "input"), volumes_in(folder / "target")
    unmatched = sorted(set(inputs) ^ set(targets))
    if unmatched:
        raise ValueError(f"volumes without a partner in {folder}: {', '.join(unmatched[:5])}; every input/ volume "
                         "needs a target/ volume of the same name")
    found = {}
    for role in extras:
        found[role] = volumes_in(folder / role) if (folder / role).is_dir() else {}
        stray = sorted(set(found[role]) - set(inputs))
        if stray:
            raise ValueError(f"volumes in {folder / role} without a pair of the same name: {', '.join(stray[:5])}")
    return [Entry(name, name, inputs[name], targets[name],
                  tuple((role, found[role][name]) for role in extras if name in found[role])) for name in inputs]


def _patient_folders(folder: Path, names: dict[str, str], extras: tuple[str, ...]) -> list[Entry]:
    """One entry per subfolder of ``folder``: its volumes named by ``names`` (``{"input": "nac", ...}``)."""
    roles = {names[role].lower(): role for role in ("input", "target", *extras)}
    wanted = (f"{names['input']} and {names['target']}"
              + (f" (and optionally {' or '.join(names[role] for role in extras)})" if extras else ""))
    patients = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and not sub.name.startswith(".")]
    if not patients:
        raise ValueError(f"a paired folder holds input/ and target/ volumes matched by name, or one folder per "
                         f"patient with its {wanted} volumes; {folder} has neither (or pass a CSV manifest with "
                         f"columns input,target[,patient])")
    entries = []
    for sub in patients:
        files: dict[str, Path] = {}
        for name, path in volumes_in(sub).items():
            if name.lower() not in roles:
                raise ValueError(f"patient folder {sub} holds '{path.name}'; a patient folder holds the volumes "
                                 f"{wanted}, named so (a file with a volume suffix or a DICOM series folder)")
            files[roles[name.lower()]] = path
        missing = [names[role] for role in ("input", "target") if role not in files]
        if missing:
            raise ValueError(f"patient folder {sub} lacks its {' and '.join(missing)} volume; a patient folder "
                             f"holds {wanted}")
        entries.append(Entry(sub.name, sub.name, files["input"], files["target"],
                             tuple((role, files[role]) for role in extras if role in files)))
    return entries


def _read_manifest(path: Path, source: str, extras: tuple[str, ...] = ()) -> list[Entry]:
    columns = ("input", "target") if source == PAIRED_FOLDER else ("volume",)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    header = set(rows[0]) if rows else set()
    missing = [column for column in columns if column not in header]
    if missing:
        raise ValueError(f"manifest {path} lacks the column(s) {', '.join(missing)}; {source} needs "
                         f"{','.join(columns)}[,patient]")
    entries, names = [], set()
    for line, row in enumerate(rows, 2):
        files, more = [], []
        for column in columns + tuple(extra for extra in extras if (row.get(extra) or "").strip()):
            file = Path(row[column].strip())
            file = file if file.is_absolute() else path.parent / file
            if not row[column].strip() or not file.exists():
                raise ValueError(f"manifest {path}, line {line}: {column} '{row[column]}' does not exist")
            (files if column in columns else more).append((column, file))
        files = [file for _, file in files]
        name = volume_name(files[0])
        while name in names:
            name += "+"
        names.add(name)
        patient = (row.get("patient") or "").strip() or name
        pair = files if source == PAIRED_FOLDER else ([None, files[0]] if source == CLEAN_FOLDER else [files[0], None])
        entries.append(Entry(name, patient, *pair, tuple(more)))
    return entries


def split_patients(patients: list[str], val: float | None, seed: int) -> tuple[list[str], list[str]]:
    """(training, validation) patient ids: ``val`` patients (>= 1) or that fraction of them (< 1), seeded.

    Default (None): a fifth, at least one. Both sides keep at least one patient.
    """
    unique = sorted(set(patients))
    if len(unique) < 2:
        raise ValueError(f"a validation split by patient needs at least 2 patients, got {len(unique)} "
                         f"({', '.join(unique)}); add a patient's volumes (slices of one patient are never "
                         "split between training and validation)")
    val = 0.2 if val is None else float(val)
    if val <= 0 or (val >= 1 and val != int(val)):
        raise ValueError(f"--val-patients must be a count >= 1 or a fraction in (0, 1), got {val:g}")
    count = int(val) if val >= 1 else max(1, round(val * len(unique)))
    if count >= len(unique):
        raise ValueError(f"--val-patients {val:g} leaves no training patient among {len(unique)}")
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(len(unique))
    chosen = {unique[i] for i in order[:count]}
    return [p for p in unique if p not in chosen], sorted(chosen)


#: slices left out between the training and validation blocks of one patient (a training slice's context
#: is its two neighbours, so a gap of 2 keeps every validation slice out of every training input)
SLICE_GAP = 2
MIN_VAL_SLICES = 3


def split_slices(slices: int, val: float | None, name: str) -> tuple[range, range]:
    """(training, validation) slice ranges of one patient's volume: the last ``val`` share (default a fifth,
    at least 3 slices) validates, :data:`SLICE_GAP` slices before it are left out, the rest trains."""
    val = 0.2 if val is None else float(val)
    if not 0 < val < 1:
        raise ValueError(f"with one patient the validation is a block of its slices; --val-patients then takes a "
                         f"fraction in (0, 1), got {val:g} (or add a patient's volumes)")
    count = max(MIN_VAL_SLICES, round(val * slices))
    train = slices - count - SLICE_GAP
    if train < MIN_VAL_SLICES:
        raise ValueError(f"'{name}' has {slices} slices, too few to hold out {count} validation slices {SLICE_GAP} "
                         f"away from at least {MIN_VAL_SLICES} training slices; add a patient's volumes")
    return range(0, train), range(train + SLICE_GAP, slices)


def check_grid(a: Volume, b: Volume, name: str, roles: tuple[str, str] = ("input", "target")) -> None:
    """A ValueError unless ``a`` and ``b`` (named ``roles`` in the message) share shape, spacing, origin and
    direction."""
    differs = []
    if a.shape != b.shape:
        differs.append(f"shape {a.shape} vs {b.shape} (z, y, x)")
    for field, atol in (("spacing", 1e-3), ("origin", 1e-2), ("direction", 1e-4)):
        if not np.allclose(getattr(a, field), getattr(b, field), atol=atol):
            values = [tuple(round(v, 4) for v in getattr(v_, field)) for v_ in (a, b)]
            differs.append(f"{field} {values[0]} vs {values[1]}")
    if differs:
        raise ValueError(f"pair '{name}': {roles[0]} and {roles[1]} are on different grids: {'; '.join(differs)}; "
                         f"resample the {roles[1]} onto the {roles[0]}'s grid first")


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def check_alignment(a: np.ndarray, b: np.ndarray, name: str, minimum: float = MIN_CORRELATION, *,
                    window: tuple[float, float] = ALIGN_WINDOW, units: str = "HU",
                    roles: tuple[str, str] = ("input", "target")) -> float:
    """The correlation of two (z, y, x) arrays clipped to ``window`` (by default HU in [-1000, 1000]); a ValueError
    naming ``roles`` when they are not aligned.

    Aligned means: at least ``minimum`` at zero shift, and no in-plane shift of up to
    ``MAX_SHIFT`` voxels correlating better by more than ``SHIFT_MARGIN`` (measured on at most
    8 slices, the border left out so every shift compares the same voxels).
    """
    picks = np.unique(np.linspace(0, a.shape[0] - 1, min(8, a.shape[0])).round().astype(int))
    a, b = (np.clip(x[picks], *window).astype(np.float64) for x in (a, b))
    m = MAX_SHIFT
    if min(a.shape[1:]) <= 4 * m:
        raise ValueError(f"pair '{name}': slices of {a.shape[1:]} pixels are too small to check alignment")
    core = a[:, m:-m, m:-m]
    scores = {(dy, dx): _correlation(core, b[:, m + dy : b.shape[1] - m + dy, m + dx : b.shape[2] - m + dx])
              for dy in range(-m, m + 1) for dx in range(-m, m + 1)}
    zero = scores[(0, 0)]
    shift, best = max(scores.items(), key=lambda item: item[1])
    if zero < minimum or best > zero + SHIFT_MARGIN:
        raise ValueError(f"pair '{name}': {roles[0]} and {roles[1]} are not aligned: correlation {zero:.3f} in "
                         f"[{window[0]:g}, {window[1]:g}] {units} (at least {minimum:g} expected), {best:.3f} with the "
                         f"{roles[1]} shifted by {shift} voxels (y, x); register the {roles[1]} to the {roles[0]} "
                         "first")
    return zero


def check_pair(input_volume: Volume, target_volume: Volume, name: str, rule: str,
               minimum: float = MIN_CORRELATION) -> float:
    """Grid, values of both volumes by ``rule`` ("ct", ...), then alignment; returns the correlation."""
    check_grid(input_volume, target_volume, name)
    for role, volume in (("input", input_volume), ("target", target_volume)):
        check_values(volume.array, rule_for(rule), name=f"{name} ({role})", modality=volume.modality)
    return check_alignment(input_volume.array, target_volume.array, name, minimum)


def read_checked(entry: Entry, rule: str) -> tuple[Volume | None, Volume | None, dict]:
    """An entry's (input, target) volumes, checked; and what the checks measured (for the cache's info)."""
    from meddiffusion.io import read_volume

    volumes = [None if path is None else read_volume(path) for path in (entry.input, entry.target)]
    if volumes[0] is not None and volumes[1] is not None:
        return volumes[0], volumes[1], {"correlation": check_pair(*volumes, entry.name, rule)}
    for volume in volumes:
        if volume is not None:
            check_values(volume.array, rule_for(rule), name=entry.name, modality=volume.modality)
    return volumes[0], volumes[1], {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a DICOM folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def manifest_hash(entries: list[Entry], hashes: dict[Path, str]) -> str:
    """One sha256 over the data: each entry's name, patient and its files' sha256 (``hashes``), sorted."""
    lines = sorted(f"{e.name}\t{e.patient}\t" + "\t".join(hashes[p] if p else "-" for p in (e.input, e.target))
                   + "".join(f"\t{role}={hashes[p]}" for role, p in e.extras) for e in entries)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def by_patient(paths: list[Path], entries: list[Entry], ids: list[str]) -> list[Path]:
    """The cached items (``paths``, in the order of ``entries``) of the patients ``ids``: one side of a split."""
    return [path for path, entry in zip(paths, entries) if entry.patient in ids]


def provenance(args, entries: list[Entry], hashes: dict[Path, str], split: dict) -> dict:
    """What a fine-tune's card records of its data: source, folder, volume count, manifest hash and split."""
    return {"source": args.source, "data": str(args.data), "volumes": len(entries),
            "manifest_sha256": manifest_hash(entries, hashes), "split": split}
