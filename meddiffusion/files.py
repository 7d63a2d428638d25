"""Atomic file writes: readers see the old file or the new one, never a partial one.

:func:`atomic_write` writes one file; :class:`StagedOutputs` writes several (a command's volume,
segmentation and table) so that either all of them appear or none does.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable

#: suffixes of more than one dot that writers choose the format from
_LONG_SUFFIXES = (".seg.nrrd", ".seq.nrrd", ".nii.gz")


def hidden_sibling(path: str | os.PathLike) -> Path:
    """A unique hidden name beside ``path`` with the same suffix (``.x.1a2b3c4d.tmp.nii.gz``), or none."""
    path = Path(path)
    name = path.name
    suffix = next((s for s in _LONG_SUFFIXES if name.lower().endswith(s)), path.suffix)
    if not suffix:  # a DICOM series folder: the hidden name must have no suffix either
        return path.with_name(f".{name}-{uuid.uuid4().hex[:8]}-tmp")
    stem = name[: len(name) - len(suffix)]
    return path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Run ``write(tmp)`` on a hidden sibling of ``path``, then rename it into place.

    The temporary name keeps the suffix (``.nii.gz``, ``.nrrd``, ``.csv``), because writers
    such as SimpleITK choose the format from it.  A failed or cancelled write leaves nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class StagedOutputs:
    """Several outputs written under hidden names and renamed together when the block ends.

    ::

        with StagedOutputs() as staged:
            write_volume(volume, staged.path("out.nrrd"))
            write_table(rows, staged.path("table.csv"))

    An exception or Cancel inside the block removes everything staged; a DICOM output folder
    that exists (checked empty beforehand) is replaced by the staged folder.
    """

    def __init__(self) -> None:
        self.staged: dict[Path, Path] = {}
        self.made: list[Path] = []  # folders this block created, removed again on discard

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        missing = [folder for folder in (final.parent, *final.parent.parents) if not folder.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        self.made += missing
        tmp = hidden_sibling(final)
        self.staged[final] = tmp
        return tmp

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def discard(self) -> None:
        import shutil

        for tmp in self.staged.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
        for folder in self.made:  # deepest first: the list runs from the file's parent upwards
            try:
                folder.rmdir()
            except OSError:
                pass

    def commit(self) -> None:
        for final, tmp in self.staged.items():
            if tmp.is_dir() and final.is_dir():
                final.rmdir()  # an empty folder the user named as the DICOM output
            os.replace(tmp, final)
