"""The backend child process from the outside: its command line, environment, start and stop.

Slicer runs ``PythonSlicer -m meddiffusion <command> ... --events jsonl``.  The child gets a
process group of its own, so Cancel can stop it together with anything it started: first
politely (SIGTERM, CTRL_BREAK on Windows, which the backend turns into a clean exit), then,
after a timeout, by force.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

__all__ = ["EXIT_BAD_INPUT", "EXIT_CANCELLED", "python_executable", "backend_command",
           "backend_environment", "group_options", "terminate_tree", "kill_tree"]

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


def python_executable() -> str:
    """The interpreter for the child: PythonSlicer inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def backend_command(command: str, *arguments: str | os.PathLike, python: str | None = None) -> list[str]:
    """``[python, -m, meddiffusion, command, *arguments, --events, jsonl]``.

    A task passes ``input, "-o", output, *options`` as ``arguments``.
    """
    return [python or python_executable(), "-m", "meddiffusion", command,
            *[str(argument) for argument in arguments], "--events", "jsonl"]


def backend_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours, with the folder holding ``meddiffusion`` on PYTHONPATH.

    In Slicer the backend ships inside the extension's scripted-modules folder, which the
    application puts on its own ``sys.path`` but PythonSlicer does not know about.
    """
    environment = dict(os.environ)
    spec = importlib_util.find_spec("meddiffusion")
    if spec is not None and spec.origin:
        package_parent = str(Path(spec.origin).resolve().parent.parent)
        paths = [package_parent] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(extra or {})
    return environment


def group_options() -> dict[str, Any]:
    """``subprocess.Popen`` options that give the child a process group of its own."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def terminate_tree(process: subprocess.Popen) -> None:
    """Polite stop of the child's process group: the backend exits cleanly."""
    try:
        if os.name == "nt":
            process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def kill_tree(process: subprocess.Popen) -> None:
    """Forced stop of the child and everything it started, even what left its group."""
    for child in _descendants(process.pid):
        try:
            child.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
    try:
        if os.name == "nt":
            if process.poll() is None:
                process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _descendants(pid: int) -> list:
    """The child's own children (psutil, when installed), which may have left its group."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
