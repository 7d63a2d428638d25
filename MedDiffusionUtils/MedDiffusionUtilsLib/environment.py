"""What the MedDiffusion utility module shows: package versions, compute device, models.

Package versions are read here (package metadata, no imports).  The device and the model
catalogue come from ``meddiff info`` run as a child process (:func:`info_command`), so
torch and CUDA are initialised in the child, never in Slicer's own process, and a broken
torch install shows up as a readable error rather than a crash.  :func:`model_catalogue`
reads the catalogue in-process for modules that fill a model selector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from packaging.requirements import Requirement

from . import dependencies, processes

__all__ = ["PackageRow", "package_rows", "info_command", "ModelRow", "model_rows",
           "model_catalogue", "device_text"]

#: always listed, though Slicer ships them, so version clashes are easy to spot
SHIPPED_ROWS = ("SimpleITK", "numpy")


@dataclass(frozen=True)
class PackageRow:
    name: str
    required: str
    installed: str
    ok: bool


def package_rows(requirements: Sequence[Requirement] | None = None) -> list[PackageRow]:
    """One row per required package plus the backend and Slicer's own numpy/SimpleITK."""
    rows = []
    available, version = dependencies.backend_available()
    rows.append(PackageRow("meddiffusion (backend)", "ships with the extension",
                           version if available else "missing", available))
    for status in dependencies.check(requirements):
        rows.append(PackageRow(status.name, str(status.requirement.specifier) or "any",
                               status.installed or "not installed", status.satisfied))
    for name in SHIPPED_ROWS:
        version = dependencies.installed_version(name)
        rows.append(PackageRow(name, "ships with Slicer", version or "not installed",
                               version is not None))
    return rows


def info_command(python: str | None = None) -> list[str]:
    """``meddiff info`` as a child command (JSON events on stdout)."""
    return processes.backend_command("info", python=python)


@dataclass(frozen=True)
class ModelRow:
    id: str
    task: str
    version: str
    description: str
    metrics: str


def model_rows(models: Sequence[Any]) -> list[ModelRow]:
    """Rows for catalogue entries given as dicts (``meddiff info``) or ``ModelEntry`` objects."""
    rows = []
    for model in models:
        get = model.get if isinstance(model, dict) else (lambda key, m=model: getattr(m, key, ""))
        metrics = get("metrics") or {}
        metrics_text = ", ".join(f"{key} {_number(value)}" for key, value in list(metrics.items())[:4])
        rows.append(ModelRow(str(get("id")), str(get("task")), str(get("version")),
                             str(get("description") or ""), metrics_text))
    return rows


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_catalogue(task: str | None = None) -> tuple[list[Any], str]:
    """``(entries, problem)``: the catalogue for ``task`` read in-process, or why it cannot be.

    Importing the catalogue imports torch, so before dependencies are installed this
    returns no entries and a message instead of raising.
    """
    try:
        from meddiffusion import catalog
    except ImportError as error:
        return [], f"model catalogue unavailable: {error}; install the dependencies first"
    try:
        return list(catalog.list_models(task)), ""
    except (OSError, ValueError) as error:
        return [], f"model catalogue could not be read: {error}"


def device_text(info: dict) -> str:
    """One line for the device label from ``meddiff info``'s result."""
    device = info.get("device", "unknown")
    description = info.get("device_description", "")
    return f"{device}: {description}" if description else str(device)
