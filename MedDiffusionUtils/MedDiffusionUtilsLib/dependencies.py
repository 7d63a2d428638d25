"""Check and install the Python packages the backend needs, asking the user first.

The list lives in ``MedDiffusionUtils/Resources/requirements.txt``.  Installing follows the
Slicer conventions:

* nothing is installed at import time or without consent: :meth:`DependencyInstaller.ensure`
  calls a ``confirm(text) -> bool`` callback the widget supplies (logic stays GUI-free);
* torch comes through the PyTorch extension's ``PyTorchUtils`` when it is installed (it
  picks the CUDA build that matches the driver), with the minimum version from the file;
* other packages go through ``slicer.packaging.pip_ensure`` on Slicer >= 5.12, else
  ``slicer.util.pip_install``;
* packages Slicer ships (SimpleITK, numpy, requests) are never reinstalled: they are left
  out of every install and pinned to their installed versions through a pip constraints
  file, so a dependency cannot pull in a different build.

The backend package ``meddiffusion`` is not installed by pip: the extension ships it next to
the modules (see MedDiffusionUtils/CMakeLists.txt), so it is only checked for.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .runner import TaskCancelled

__all__ = [
    "REQUIREMENTS_FILE", "SLICER_SHIPPED", "PackageStatus", "InstallPlan", "InstallDeclined",
    "load_requirements", "installed_version", "check", "plan", "DependencyInstaller",
    "backend_available",
]

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
#: shipped with Slicer; replacing them breaks Slicer itself
SLICER_SHIPPED = ("SimpleITK", "numpy", "requests")
TORCH = "torch"
REQUESTER = "SlicerMedDiffusion"


class InstallDeclined(TaskCancelled):
    """The user said no to installing; the run that needed the packages is cancelled."""


@dataclass(frozen=True)
class PackageStatus:
    requirement: Requirement
    installed: str | None

    @property
    def name(self) -> str:
        return self.requirement.name

    @property
    def satisfied(self) -> bool:
        return self.installed is not None and self.requirement.specifier.contains(
            self.installed, prereleases=True)

    def describe(self) -> str:
        wanted = str(self.requirement.specifier) or "any version"
        have = self.installed or "not installed"
        return f"{self.name} ({wanted}): {have}"


@dataclass
class InstallPlan:
    """What :meth:`DependencyInstaller.ensure` would install."""

    torch: Requirement | None = None
    pip: list[Requirement] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.pip

    def describe(self) -> str:
        """The text the user confirms."""
        lines = ["SlicerMedDiffusion needs these Python packages:"]
        if self.torch is not None:
            lines.append(f"  • {self.torch} (through the PyTorch extension when installed)")
        lines += [f"  • {requirement}" for requirement in self.pip]
        lines.append("Slicer's own SimpleITK, numpy and requests stay as they are. "
                     "The download can take several minutes. Install now?")
        return "\n".join(lines)


def load_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """Requirements from a requirements.txt (comments, blank lines and pip options skipped)."""
    requirements = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirements.append(Requirement(line))
    return requirements


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check(requirements: Sequence[Requirement] | None = None) -> list[PackageStatus]:
    """Installed version of every requirement whose environment marker applies here."""
    requirements = load_requirements() if requirements is None else requirements
    return [PackageStatus(requirement, installed_version(requirement.name))
            for requirement in requirements
            if requirement.marker is None or requirement.marker.evaluate()]


def plan(requirements: Sequence[Requirement] | None = None) -> InstallPlan:
    """Split what is missing into the torch step and the pip step, dropping Slicer's own."""
    shipped = {canonicalize_name(name) for name in SLICER_SHIPPED}
    result = InstallPlan()
    for status in check(requirements):
        name = canonicalize_name(status.name)
        if status.satisfied or name in shipped:
            continue
        if name == TORCH:
            result.torch = status.requirement
        else:
            result.pip.append(status.requirement)
    return result


def backend_available() -> tuple[bool, str]:
    """Whether ``meddiffusion`` is importable here, and its version or the reason it is not."""
    try:
        module = importlib.import_module("meddiffusion")
    except ImportError as error:
        return False, f"the backend package 'meddiffusion' is missing ({error})"
    return True, getattr(module, "__version__", "unknown version")


# -- installing ------------------------------------------------------------------------------
class DependencyInstaller:
    """Ask, then install what :func:`plan` lists.

    ``pip_install(requirements, constraints_file, log)`` and ``torch_install(requirement,
    log)`` default to Slicer's mechanisms; tests and scripts may pass their own.
    """

    def __init__(self, requirements: Sequence[Requirement] | None = None, *,
                 pip_install: Callable[[list[Requirement], Path, Callable], None] | None = None,
                 torch_install: Callable[[Requirement, Callable], None] | None = None):
        self.requirements = load_requirements() if requirements is None else list(requirements)
        self.pip_install = pip_install or slicer_pip_install
        self.torch_install = torch_install or slicer_torch_install

    def plan(self) -> InstallPlan:
        return plan(self.requirements)

    def ensure(self, confirm: Callable[[str], bool], log: Callable[[str], None] = print) -> bool:
        """Install what is missing once ``confirm`` agrees; True if anything was installed.

        Raises :class:`InstallDeclined` when the user says no, and ``RuntimeError`` when
        packages are still missing afterwards (e.g. Slicer must restart first).
        """
        todo = self.plan()
        if todo.empty:
            return False
        if not confirm(todo.describe()):
            raise InstallDeclined("the required Python packages were not installed")
        if todo.torch is not None:
            log(f"installing {todo.torch}")
            self.torch_install(todo.torch, log)
        if todo.pip:
            log("installing " + ", ".join(str(r) for r in todo.pip))
            with tempfile.TemporaryDirectory(prefix="meddiffusion-pip-") as folder:
                constraints = write_constraints(Path(folder) / "constraints.txt")
                self.pip_install(todo.pip, constraints, log)
        importlib.invalidate_caches()
        still_missing = self.plan()
        if not still_missing.empty:
            names = [str(r) for r in ([still_missing.torch] if still_missing.torch else []) + still_missing.pip]
            raise RuntimeError("still missing after installing: " + ", ".join(names)
                               + "; restart Slicer and try again")
        return True


def write_constraints(path: Path) -> Path:
    """A pip constraints file pinning the installed versions of Slicer's own packages."""
    pins = [f"{name}=={version}" for name in SLICER_SHIPPED
            if (version := installed_version(name)) is not None]
    path.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return path


def slicer_pip_install(requirements: list[Requirement], constraints: Path,
                       log: Callable[[str], None]) -> None:
    """``pip_ensure`` on Slicer >= 5.12 (skip list + constraints), else ``pip_install``."""
    import slicer

    packaging_module = _slicer_packaging()
    if packaging_module is not None and hasattr(packaging_module, "pip_ensure"):
        packaging_module.pip_ensure([str(r) for r in requirements], constraints=str(constraints),
                                    skip_packages=list(SLICER_SHIPPED), prompt_install=False,
                                    requester=REQUESTER)
        return
    arguments = " ".join(shlex.quote(str(r)) for r in requirements)
    slicer.util.pip_install(f"{arguments} -c {shlex.quote(str(constraints))}")


def _slicer_packaging():
    for name in ("slicer.packaging", "slicer.pydeps"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def slicer_torch_install(requirement: Requirement, log: Callable[[str], None]) -> None:
    """torch via PyTorchUtils (driver-matched CUDA build); plain pip if that is missing."""
    try:
        import PyTorchUtils
    except ImportError:
        log("the PyTorch extension is not installed; installing torch from PyPI "
            "(install 'PyTorch' from the Extensions Manager for a GPU build that fits your driver)")
        with tempfile.TemporaryDirectory(prefix="meddiffusion-pip-") as folder:
            slicer_pip_install([requirement], write_constraints(Path(folder) / "constraints.txt"), log)
        return
    logic = PyTorchUtils.PyTorchUtilsLogic()
    version_requirement = str(requirement.specifier)
    if logic.torchInstalled():
        log(f"torch {installed_version(TORCH)} does not satisfy {requirement}; updating it")
    logic.installTorch(askConfirmation=False, torchVersionRequirement=version_requirement)
