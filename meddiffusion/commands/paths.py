"""Checks every command makes on its file paths before any work: nothing the user has is overwritten.

An output may never be an input or another output, whichever way it is spelled: the same path,
through ``..``, a symbolic link or a hard link.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OUTPUT_SUFFIXES", "check_distinct", "check_output", "check_writable", "same_file_key"]

#: the suffixes each kind of output file is written with (volumes: ``io.VOLUME_SUFFIXES`` or a DICOM folder)
OUTPUT_SUFFIXES = {"segmentation": (".seg.nrrd",), "table": (".csv",), "sequence": (".seq.nrrd",),
                   "picture": (".png",), "json": (".json",)}


def same_file_key(path: str | os.PathLike) -> str:
    """One key per file: its device and inode when it exists (hard links), else its resolved path."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return str(resolved)
    return f"inode:{stat.st_dev}:{stat.st_ino}" if resolved.is_file() else str(resolved)


def check_distinct(inputs: dict[str, str | os.PathLike | None], outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output that is an input or another output; keys are the flags users typed (``-o``, ``--seg``)."""
    seen: dict[str, str] = {}
    for label, path in inputs.items():
        if path:
            seen.setdefault(same_file_key(path), f"the input {label}")
    for label, path in outputs.items():
        if not path:
            continue
        key = same_file_key(path)
        if key in seen:
            what = "the input" if seen[key].startswith("the input") else "another output"
            raise ValueError(f"{label} '{path}' is the same file as {seen[key]}; an output must not overwrite "
                             f"{what}: choose another path")
        seen[key] = label


def check_output(label: str, path: str | os.PathLike, kind: str) -> None:
    """Refuse an output path whose suffix does not match its kind (a volume may also be a new DICOM folder)
    or whose folder cannot be written, before any work."""
    check_writable(label, path)
    from meddiffusion.io import VOLUME_SUFFIXES

    lowered = str(path).lower()
    if kind == "volume":
        from meddiffusion.io.images import check_volume_path

        try:
            check_volume_path(path)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from None
        target = Path(path)
        if (not any(lowered.endswith(s) for s in VOLUME_SUFFIXES) and target.exists()
                and (not target.is_dir() or any(target.iterdir()))):
            raise ValueError(f"{label}: DICOM output folder {target} exists and is not empty; choose a new folder")
        return
    if kind == "sequence" and not lowered.endswith(OUTPUT_SUFFIXES[kind]) and not Path(path).suffix:
        target = Path(path)  # a folder: a generated dataset (the task says whether it takes one)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ValueError(f"{label}: output folder {target} exists and is not empty; choose a new folder")
        return
    if not lowered.endswith(OUTPUT_SUFFIXES[kind]):
        raise ValueError(f"{label} must end in {' or '.join(OUTPUT_SUFFIXES[kind])}, got '{path}'")


def check_writable(label: str, path: str | os.PathLike) -> None:
    """The output's folder exists or can be made, and this user may write there."""
    ancestor = Path(path).absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{label} '{path}': {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{label} '{path}': the folder {ancestor} is not writable; choose another path")
