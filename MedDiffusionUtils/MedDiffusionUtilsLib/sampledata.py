"""A module's bundled sample, offered in Slicer's Sample Data module.

Sample files ship with the backend package (``meddiffusion/data/``), which the extension
installs beside the module files; in a source checkout they sit one folder up.  They are
registered with a local ``file://`` address, so loading one needs no network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

__all__ = ["CATEGORY", "sample_file", "register_sample"]

CATEGORY = "MedDiffusion"


def sample_file(module_dir: str | Path, file_name: str) -> Path | None:
    """The sample file seen from the module folder (installed, then source layout), or None."""
    module_dir = Path(module_dir).resolve()
    for root in (module_dir, module_dir.parent):
        path = root / "meddiffusion" / "data" / file_name
        if path.is_file():
            return path
    return None


def register_sample(module_dir: str | Path, *, file_name: str, sample_name: str, node_name: str, icon_name: str,
                    register: Callable[..., None] | None = None) -> bool:
    """Add the sample to Sample Data; False when the file or the SampleData module is missing.

    ``icon_name`` is a file in the module's ``Resources/Icons``. ``register`` defaults to
    ``SampleData.SampleDataLogic.registerCustomSampleDataSource``. The SHA256 checksum makes
    Sample Data replace a stale cached copy after an update.
    """
    path = sample_file(module_dir, file_name)
    if path is None:
        return False
    if register is None:
        try:
            import SampleData
        except ImportError:
            return False
        register = SampleData.SampleDataLogic.registerCustomSampleDataSource
    icon = Path(module_dir).resolve() / "Resources" / "Icons" / icon_name
    register(category=CATEGORY, sampleName=sample_name, uris=path.as_uri(), fileNames=path.name,
             nodeNames=node_name, thumbnailFileName=str(icon) if icon.is_file() else None,
             checksums=f"SHA256:{_sha256(path)}")
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
