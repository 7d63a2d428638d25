"""The sample non-gated chest CT, offered in Slicer's Sample Data module.

A motion-corrupted scan of the extension's thorax phantom with coronary calcium. Registration is shared (``MedDiffusionUtilsLib.sampledata``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from MedDiffusionUtilsLib import sampledata as shared

__all__ = ["SAMPLE_FILE_NAME", "SAMPLE_NAME", "NODE_NAME", "CATEGORY", "sample_file", "register_sample_data"]

SAMPLE_FILE_NAME = "sample_nongated_chest_ct.nrrd"
SAMPLE_NAME = "Non-gated chest CT (MotionCorrect sample)"
NODE_NAME = "Non-gated chest CT"
CATEGORY = shared.CATEGORY


def sample_file(module_dir: str | Path) -> Path | None:
    """The sample file seen from the module folder (installed, then source layout), or None."""
    return shared.sample_file(module_dir, SAMPLE_FILE_NAME)


def register_sample_data(module_dir: str | Path, register: Callable[..., None] | None = None) -> bool:
    """Add the sample to Sample Data; False when the file or the SampleData module is missing."""
    return shared.register_sample(module_dir, file_name=SAMPLE_FILE_NAME, sample_name=SAMPLE_NAME,
                                  node_name=NODE_NAME, icon_name="MotionCorrect.png", register=register)
