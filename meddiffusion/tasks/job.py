"""What a task's ``infer`` receives and returns: the one contract between the command path and a task.

``commands.task_command`` reads and checks the inputs, loads the model, then calls the task's
``run(job)``; the task returns ``(outputs, info)``: ``outputs`` maps the names of the declared
outputs to their values, ``info`` holds the figures of the result event (with a one-line
``summary``). The command path writes every output, staged and atomic. Values by kind:

- volume: a :class:`~meddiffusion.io.Volume`, or a :class:`VolumeOutput` to choose the stored type;
- segmentation: a :class:`Segmentation` (layers on the reference grid, segment descriptions);
- table: a :class:`Table` (field names and rows), written as CSV;
- sequence: a :class:`Sequence` (frames on one grid, their index values), written as a 4D NRRD, or
  a :class:`FolderOutput` where the port also takes a folder (a generated dataset);
- picture: an RGB ``uint8`` array (H, W, 3), written as PNG.
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Job", "VolumeOutput", "Segmentation", "Table", "Sequence", "FolderOutput"]


@dataclass
class Job:
    """One run of a task: its read inputs, its model and the command's arguments.

    ``wanted`` holds the names of the outputs the user asked for (required ones always), so a
    task computes an optional output (a picture, a table) only when it is written.
    """

    inputs: dict[str, Any]
    model: Any
    steps: int
    device: Any
    args: argparse.Namespace
    progress: Any
    wanted: frozenset[str] = frozenset()


@dataclass
class VolumeOutput:
    """A volume with the type to store it as (e.g. "int16" for CT that came in as integers)."""

    volume: Any
    dtype: str | None = None


@dataclass
class Segmentation:
    """Layers (uint8 label arrays on ``reference``'s grid) and one dict per segment (see ``io.write_segmentation``)."""

    layers: list
    segments: list[dict]
    reference: Any


@dataclass
class Table:
    """CSV rows under ``fields`` (missing keys are written empty)."""

    fields: tuple[str, ...]
    rows: list[dict[str, Any]]

    def write(self, path: str | os.PathLike) -> Path:
        """Write the table as UTF-8 CSV, atomically."""
        from meddiffusion.files import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)

        return atomic_write(path, write)


@dataclass
class Sequence:
    """Frames (``Volume`` s on one grid) and their index values (e.g. the time of each frame in ms)."""

    frames: list
    index_values: list
    index_name: str = "time"
    index_unit: str = "ms"
    dtype: str | None = None


@dataclass
class FolderOutput:
    """A folder of files made by ``write(folder)`` into a new, empty folder (staged like every output)."""

    write: Any
