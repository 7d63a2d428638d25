"""The sample non-gated chest CT, offered in Slicer's Sample Data module.

A motion-corrupted scan of the extension's thorax phantom with coronary calcium.  The file
ships with the backend package (``meddiffusion/data/``), which the extension installs beside
the module files; in a source checkout it sits one folder up.  It is registered with a local
``file://`` address, so loading it needs no network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

__all__ = ["SAMPLE_FILE_NAME", "SAMPLE_NAME", "NODE_NAME", "CATEGORY", "sample_file",
           "register_sample_data"]

SAMPLE_FILE_NAME = "sample_nongated_chest_ct.nrrd"
SAMPLE_NAME = "Non-gated chest CT (MotionCorrect sample)"
NODE_NAME = "Non-gated chest CT"
CATEGORY = "MedDiffusion"


def sample_file(module_dir: str | Path) -> Path | None:
    """The sample file seen from the module folder (installed, then source layout), or None."""
    module_dir = Path(module_dir).resolve()
    for root in (module_dir, module_dir.parent):
        path = root / "meddiffusion" / "data" / SAMPLE_FILE_NAME
        if path.is_file():
            return path
    return None


def register_sample_data(module_dir: str | Path, register: Callable[..., None] | None = None) -> bool:
    """Add the sample to Sample Data; False when the file or the SampleData module is missing.

    ``register`` defaults to ``SampleData.SampleDataLogic.registerCustomSampleDataSource``.
    The SHA256 checksum makes Sample Data replace a stale cached copy after an update.
    """
    path = sample_file(module_dir)
    if path is None:
        return False
    if register is None:
        try:
            import SampleData
        except ImportError:
            return False
        register = SampleData.SampleDataLogic.registerCustomSampleDataSource
    icon = Path(module_dir).resolve() / "Resources" / "Icons" / "MotionCorrect.png"
    register(category=CATEGORY, sampleName=SAMPLE_NAME, uris=path.as_uri(), fileNames=path.name,
             nodeNames=NODE_NAME, thumbnailFileName=str(icon) if icon.is_file() else None,
             checksums=f"SHA256:{_sha256(path)}")
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
