"""A run folder on disk: its ``run.json`` read, the runs listed, a run cancelled, its gate verdict.

The backend's ``meddiffusion.training.runs`` is used where it exists; without it the folder is
read directly.  Files only, no MRML and no Qt.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

__all__ = ["FINISHED", "read_run", "list_runs", "cancel_run", "gate_verdict"]

#: run states in which nothing changes any more
FINISHED = ("done", "failed", "cancelled", "stopped")


# -- the run folder, read without the backend's help where it has none yet -----------------------
def _runs_module():
    """``meddiffusion.training.runs`` where the backend has it (None before it landed)."""
    try:
        from meddiffusion.training import runs
    except ImportError:
        return None
    return runs


def _as_dict(value: Any) -> dict:
    """A backend ``RunStatus`` (or a plain record) as a dict with ``folder`` as text."""
    if isinstance(value, dict):
        return value
    return value.to_dict() if hasattr(value, "to_dict") else {k: str(v) if isinstance(v, Path) else v
                                                             for k, v in vars(value).items()}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_run(folder: str | os.PathLike) -> dict:
    """``run.json`` of a run folder as a dict (``{}`` before the child wrote it).

    A run recorded as running whose process is gone (the machine restarted, the child was
    killed) reads as ``stopped``: it can be resumed from its last checkpoint.
    """
    folder = Path(folder)
    runs = _runs_module()
    if runs is not None and hasattr(runs, "read_run"):
        try:
            return _as_dict(runs.read_run(folder))
        except (OSError, ValueError):
            return {}
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if info.get("state") == "running" and not _alive(info.get("pid")):
        info["state"] = "stopped"
    return info


def list_runs(parent: str | os.PathLike) -> list[dict]:
    """The runs under ``parent``, newest first: each ``run.json`` with ``folder`` added."""
    parent = Path(parent)
    runs = _runs_module()
    if runs is not None and hasattr(runs, "list_runs"):
        found = [_as_dict(run) for run in runs.list_runs(parent)]
        for run in found:
            run.setdefault("folder", str(parent / run.get("name", "")))
    else:
        found = [{**read_run(run_json.parent), "folder": str(run_json.parent)}
                 for run_json in parent.glob("*/run.json")] if parent.is_dir() else []
    return sorted(found, key=lambda run: str(run.get("started", "")), reverse=True)


def cancel_run(folder: str | os.PathLike) -> None:
    """Ask a running run to stop; it writes a resumable checkpoint first (the backend's SIGTERM)."""
    runs = _runs_module()
    if runs is not None and hasattr(runs, "cancel_run"):
        if not runs.cancel_run(Path(folder)):
            raise ValueError(f"the run in {folder} is not running")
        return
    info = read_run(folder)
    if info.get("state") != "running":
        raise ValueError(f"the run in {folder} is not running ({info.get('state', 'no run.json')})")
    os.kill(int(info["pid"]), signal.SIGTERM)



def gate_verdict(folder: str | os.PathLike, info: dict | None = None) -> tuple[str, bool]:
    """(one sentence on the registration gate, whether the new model passed it) of a finished run.

    The gate compares the new model with its parent on the validation patients by the task's
    metric; a run from scratch on the phantom has no gate and passes.
    """
    from meddiffusion.training.finetune import gate_words

    info = info if info is not None else read_run(folder)
    gate = (info.get("result") or {}).get("gate")
    if gate is None:
        try:
            card = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "the run has not written its model yet", False
        gate = (card.get("provenance") or {}).get("gate")
    if not gate:
        return "no parent to compare with (trained from scratch)", True
    return gate_words(gate, registering=False, anyway=False), bool(gate.get("passed", True))
