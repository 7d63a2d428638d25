"""A module's bundled sample, offered in Slicer's Sample Data module.

Sample files ship with the backend package (``meddiffusion/data/``), which the extension
installs beside the module files; in a source checkout they sit one folder up.  They are
registered with a local ``file://`` address, so loading one needs no network.  A module
declares its sample in one line::

    SAMPLE = Sample("sample_ldct_chest.nrrd", "LDCTChest", "LDCT chest", icon="LDCTDenoise.png")

A study of several volumes (a PET with its MR) names the others as ``companions``; Sample
Data loads them together, the first file first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["CATEGORY", "Sample"]

CATEGORY = "MedDiffusion"


@dataclass(frozen=True)
class Sample:
    """A file of ``meddiffusion/data``, its name in Sample Data, its node's name, its
    thumbnail (a file in the module's ``Resources/Icons``) and the (file, node name) pairs
    loaded with it."""

    file_name: str
    sample_name: str
    node_name: str
    icon: str = ""
    companions: tuple[tuple[str, str], ...] = ()

    def _find(self, module_dir: str | Path, file_name: str) -> Path | None:
        module_dir = Path(module_dir).resolve()
        for root in (module_dir, module_dir.parent):
            path = root / "meddiffusion" / "data" / file_name
            if path.is_file():
                return path
        return None

    def file(self, module_dir: str | Path) -> Path | None:
        """The sample file seen from the module folder (installed, then source layout), or None."""
        return self._find(module_dir, self.file_name)

    def register(self, module_dir: str | Path, register: Callable[..., None] | None = None) -> bool:
        """Add the sample to Sample Data; False when a file or the SampleData module is missing.

        ``register`` defaults to ``SampleData.SampleDataLogic.registerCustomSampleDataSource``.
        The SHA256 checksum makes Sample Data replace a stale cached copy after an update.
        With companions every field is a list, one entry per file.
        """
        names = [(self.file_name, self.node_name), *self.companions]
        paths = [self._find(module_dir, file_name) for file_name, _ in names]
        if any(path is None for path in paths):
            return False
        if register is None:
            try:
                import SampleData
            except ImportError:
                return False
            register = SampleData.SampleDataLogic.registerCustomSampleDataSource
        icon = Path(module_dir).resolve() / "Resources" / "Icons" / self.icon
        fields = {"uris": [path.as_uri() for path in paths], "fileNames": [path.name for path in paths],
                  "nodeNames": [node_name for _, node_name in names],
                  "checksums": [f"SHA256:{_sha256(path)}" for path in paths]}
        if not self.companions:
            fields = {key: values[0] for key, values in fields.items()}
        register(category=CATEGORY, sampleName=self.sample_name,
                 thumbnailFileName=str(icon) if self.icon and icon.is_file() else None, **fields)
        return True

    def register_at_startup(self, module_file: str | Path) -> None:
        """Register once Slicer has started (SampleData is loaded by then)."""
        import slicer

        module_dir = Path(module_file).resolve().parent
        slicer.app.connect("startupCompleted()", lambda: self.register(module_dir))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
