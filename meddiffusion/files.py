"""Atomic file writes: readers see the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Run ``write(tmp)`` on a hidden sibling of ``path``, then rename it into place.

    The temporary name keeps the suffix (``.nii.gz``, ``.nrrd``, ``.csv``), because writers
    such as SimpleITK choose the format from it.  A failed or cancelled write leaves nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
