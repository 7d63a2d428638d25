"""Slicer volume sequences (4D NRRD, ``.seq.nrrd``): cine series as one browsable 4D volume."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from meddiffusion.files import atomic_write
from meddiffusion.io.volume import Volume, VolumeError, validate_array

__all__ = ["write_sequence", "read_sequence", "read_nrrd"]


def write_sequence(frames: list[Volume], path: str | os.PathLike, *, index_name: str = "time",
                   index_unit: str = "ms", index_values: list[float] | None = None) -> Path:
    """Write frames on one grid as a Slicer volume sequence (4D NRRD, first axis a list).

    Slicer's Sequences module reads this as a sequence node with its index values, so a
    cine series loads as one browsable 4D volume.
    """
    import nrrd

    if not frames:
        raise VolumeError("a sequence needs at least one frame")
    ref = frames[0]
    for i, f in enumerate(frames):
        validate_array(f.array, source=f"frame {i}")
        if f.shape != ref.shape or f.spacing != ref.spacing or f.origin != ref.origin or f.direction != ref.direction:
            raise VolumeError(f"frame {i} is on a different grid than frame 0; all frames must share one grid")
    values = list(index_values) if index_values is not None else list(range(len(frames)))
    if len(values) != len(frames):
        raise VolumeError(f"{len(values)} index values for {len(frames)} frames")
    data = np.stack([f.array for f in frames])            # (t, z, y, x)
    data = np.ascontiguousarray(np.transpose(data, (0, 3, 2, 1)))   # nrrd order: (t, x, y, z)
    d = np.asarray(ref.direction).reshape(3, 3)
    directions = np.full((4, 3), np.nan)
    directions[1:] = (d * np.asarray(ref.spacing)).T       # one row per axis x, y, z
    header = {
        "encoding": "gzip",
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": directions, "space origin": np.asarray(ref.origin),
        "axis 0 index type": "numeric", "axis 0 index values": " ".join(f"{v:g}" for v in values),
        # Slicer's sequence reader takes the index name and unit from the list axis' label and unit
        "labels": [index_name, "", "", ""], "units": [index_unit, "", "", ""],
    }
    if ref.modality:
        header["modality"] = ref.modality
    custom = {k: "string" for k in ("axis 0 index type", "axis 0 index values", "modality") if k in header}
    path = Path(path)
    return atomic_write(path, lambda tmp: nrrd.write(str(tmp), data, header, custom_field_map=custom,
                                                      index_order="F"))


def read_sequence(path: str | os.PathLike) -> tuple[list[Volume], list[float]]:
    """Read a 4D NRRD sequence written by Slicer or :func:`write_sequence`."""
    path = Path(path)
    data, header = read_nrrd(path, "sequence", missing="input")
    if data.ndim != 4:
        raise VolumeError(f"{path} is {data.ndim}D; a 4D sequence (frames of 3D volumes) is needed")
    directions = np.asarray(header["space directions"], dtype=float)
    list_axis = int(np.where(np.isnan(directions).all(axis=1))[0][0]) if np.isnan(directions).any() else 0
    data = np.moveaxis(data, list_axis, 0)
    axes = [a for a in range(4) if a != list_axis]
    spatial = directions[axes]
    spacing = np.linalg.norm(spatial, axis=1)
    direction = (spatial / spacing[:, None]).T.reshape(-1)
    origin = tuple(np.asarray(header.get("space origin", (0, 0, 0)), dtype=float))
    values_text = header.get(f"axis {list_axis} index values")
    values = [float(v) for v in values_text.split()] if values_text else list(range(data.shape[0]))
    modality = header.get("modality", "")
    frames = []
    for t in range(data.shape[0]):
        arr = np.ascontiguousarray(np.transpose(data[t], (2, 1, 0))).astype(np.float32)
        validate_array(arr, source=f"{path} frame {t}")
        frames.append(Volume(arr, tuple(spacing), origin, tuple(direction), modality=modality))
    return frames, values



def read_nrrd(path: Path, what: str, *, missing: str) -> tuple[np.ndarray, dict]:
    """pynrrd's (data in x, y, z[, ...] order, header), with clear errors for a missing or malformed file."""
    import nrrd

    if not path.exists():
        raise VolumeError(f"{missing} not found: {path}")
    try:
        return nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises several types for malformed files
        raise VolumeError(f"cannot read {path} as a NRRD {what} ({exc})") from None

