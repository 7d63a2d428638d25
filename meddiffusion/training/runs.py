"""Detached training runs (``meddiff train <task> ... --detach``): the run folder the Slicer Training module reads.

Training takes minutes to days, longer than a Slicer session, so ``--detach`` starts the run as a
child process in its own session (stdin closed, stdout and stderr to files) and returns at once
with ``{"run": RUN, "pid": PID}``. Slicer can then close and reconnect to RUN (``--out``) at any
time; everything it needs is in the folder, and nothing is read from the process itself:

- ``RUN/run.json``: ``{"task", "command": [argv], "pid", "started": ISO-8601 UTC, "state":
  "running" | "done" | "failed" | "cancelled", "ended"?, "message"?, "result"?, "memory"?,
  "memory_fallback"?}``. Written atomically (a rename): by the launcher as it starts the child,
  by the child when it starts, when it has the memory estimate, on an out-of-memory fallback, and
  at its end whatever the end (a result, an error, a Cancel). ``pid`` is the launched process
  (the ``torchrun`` agent with ``--gpus N``). Only SIGKILL, a crash of Python itself or a power
  cut leave ``"running"`` with a dead pid, which :func:`read_run` reports as ``"stopped"``
  (stopped unexpectedly; ``--resume`` continues from the last checkpoint).
- ``RUN/events.jsonl``: the child's stdout, the JSON-lines events of :mod:`meddiffusion.progress`
  (``progress``, ``log``, last ``result`` / ``error`` / ``cancelled``), one flushed line each;
  started afresh at each launch. ``RUN/stderr.log``: the child's stderr (tracebacks).
- ``RUN/metrics.jsonl``: the trainer's ``{"split": "train" | "val", "step", "loss", ...}`` lines.
- ``RUN/checkpoint_step<N>.safetensors`` (+ ``.json``), and at the end ``model.safetensors`` with
  its card ``model.json``.
- ``RUN/preview/`` (with ``--preview-every N``): the recipe's fixed validation case,
  ``input.nrrd`` and ``reference.nrrd`` once, ``step_000200.nrrd`` (the EMA model's output at
  step 200) every N steps and at the last, and ``index.json``: ``{"input": "input.nrrd",
  "reference": "reference.nrrd" | null, "steps": [200, 400, ...]}``, written after the volume.
- ``RUN/cancel``: a stop request, written by :func:`cancel_run` and looked for after every step
  (Windows has no SIGTERM); on POSIX :func:`cancel_run` also sends SIGTERM. Either way the
  trainer writes a resumable checkpoint and the state becomes ``"cancelled"``.

This module imports neither torch nor numpy: Slicer reads run folders with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RunStatus", "launch", "supervise", "update_run", "read_run", "cancel_run", "list_runs",
           "cancel_requested", "write_preview", "pid_alive", "RUN_FILE", "EVENTS_FILE"]

RUN_FILE, EVENTS_FILE, STDERR_FILE, CANCEL_FILE, PREVIEW_DIR = "run.json", "events.jsonl", "stderr.log", "cancel", \
    "preview"
STATES = ("running", "done", "failed", "cancelled")
#: bytes read from the end of events.jsonl and metrics.jsonl: the last events are all a reader needs
TAIL_BYTES = 1 << 16


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def update_run(folder: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``RUN/run.json`` (a rename, so a reader never sees half a file); the new record."""
    path = Path(folder) / RUN_FILE
    record = _read_json(path) | fields
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    for attempt in range(20):  # Windows refuses to replace a file a reader (Slicer) has open at that moment
        try:
            os.replace(tmp, path)
            break
        except PermissionError:
            if attempt == 19:
                raise
            time.sleep(0.05)
    return record


def launch(folder: str | Path, task: str, command: list[str]) -> dict[str, Any]:
    """Start ``command`` detached, writing into the run folder; ``{"run", "pid", "summary"}`` at once.

    Refuses a folder whose run is still alive: two runs writing one folder would mix checkpoints.
    """
    folder = Path(folder)
    if (folder / RUN_FILE).is_file() and read_run(folder).state == "running":
        raise ValueError(f"a run is still running in {folder} (pid {read_run(folder).pid}); cancel it first "
                         "('meddiff runs --cancel') or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CANCEL_FILE).unlink(missing_ok=True)
    update_run(folder, task=task, command=command, pid=None, started=_now(), state="running", ended=None,
               message=None, result=None)
    if os.name == "nt":  # no sessions: a new process group without a console survives Slicer's exit
        options: dict[str, Any] = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
    else:
        options = {"start_new_session": True}
    try:
        with open(folder / EVENTS_FILE, "wb") as events, open(folder / STDERR_FILE, "wb") as errors:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=events, stderr=errors, cwd=folder,
                                     **options)
    except OSError as exc:
        update_run(folder, state="failed", ended=_now(), message=f"could not start {command[0]}: {exc}")
        raise
    update_run(folder, pid=child.pid)
    return {"run": str(folder), "pid": child.pid,
            "summary": f"training {task} in the background (pid {child.pid}); follow it with 'meddiff runs {folder}'"}


def _own_pid() -> int:
    """The pid a reader watches: this process, or under torchrun its agent (our parent), which Cancel signals."""
    return os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid()


def supervise(folder: str | Path, task: str, command: list[str], work: Callable[[], dict]) -> dict:
    """Run ``work()`` as a detached run's child: run.json says ``running``, then how it ended, whatever the end."""
    from meddiffusion.progress import Cancelled

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = _read_json(folder / RUN_FILE)
    update_run(folder, task=task, command=record.get("command", command), pid=record.get("pid") or _own_pid(),
               started=record.get("started") or _now(), state="running")
    try:
        result = work()
    except Cancelled as exc:
        update_run(folder, state="cancelled", ended=_now(), message=str(exc))
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded, then raised on
        message = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        update_run(folder, state="failed", ended=_now(), message=message)
        raise
    update_run(folder, state="done", ended=_now(), message=result.get("summary"), result=result)
    return result


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped by its parent, does not)."""
    if not pid:
        return False
    if os.name == "nt":
        import ctypes

        kernel = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel.OpenProcess(0x1000, False, int(pid))  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _tail(path: Path, lines: int | None = None) -> list[dict[str, Any]]:
    """The JSON objects of the last ``TAIL_BYTES`` of a JSON-lines file (a partial first or last line is skipped)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found[-lines:] if lines else found


@dataclass
class RunStatus:
    """What :func:`read_run` found in a run folder.

    ``state`` is run.json's, except ``"stopped"`` for a run recorded as running whose process is
    gone (stopped unexpectedly). ``progress`` is the last progress event, ``eta_s`` its estimate
    less the time since it was written; ``metrics`` the last lines of metrics.jsonl.
    """

    folder: Path
    state: str
    task: str = ""
    pid: int | None = None
    alive: bool = False
    started: str | None = None
    ended: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    command: list[str] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    eta_s: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {name: str(value) if isinstance(value, Path) else value for name, value in self.__dict__.items()}

    def describe(self) -> str:
        """One line for a person: state, step and ETA, or how it ended."""
        words = f"{self.folder}: {self.task} {self.state}"
        if self.progress:
            words += f", {self.progress.get('stage')} {self.progress.get('done')}/{self.progress.get('total')}"
        if self.state == "running" and self.eta_s is not None:
            words += f", about {self.eta_s:.0f} s left"
        return words + (f"; {self.message}" if self.message else "")


def read_run(folder: str | Path, metrics: int = 50) -> RunStatus:
    """The state of the run in ``folder``; a ValueError when it holds no run.json."""
    folder = Path(folder)
    if not (folder / RUN_FILE).is_file():
        raise ValueError(f"{folder} is not a training run folder (no {RUN_FILE}); runs started with "
                         "'meddiff train <task> --detach' have one")
    record = _read_json(folder / RUN_FILE)
    state = record.get("state") if record.get("state") in STATES else "failed"
    alive = pid_alive(record.get("pid"))
    message = record.get("message")
    if state == "running" and record.get("pid") and not alive:
        state = "stopped"
        message = (f"stopped unexpectedly: process {record['pid']} ended without recording how; "
                   f"see {folder / STDERR_FILE}, and continue with --resume")
    events = folder / EVENTS_FILE
    progress = next((e for e in reversed(_tail(events)) if e.get("event") == "progress"), None)
    eta = None
    if progress is not None and progress.get("eta_s") is not None and state == "running":
        eta = max(0.0, float(progress["eta_s"]) - (time.time() - events.stat().st_mtime))
    return RunStatus(folder, state, record.get("task", ""), record.get("pid"), alive, record.get("started"),
                     record.get("ended"), message, record.get("result"), record.get("command", []),
                     record.get("memory"), progress, eta, _tail(folder / "metrics.jsonl", metrics))


def cancel_run(folder: str | Path) -> bool:
    """Ask a running run to stop (it writes a resumable checkpoint first); False when nothing runs there."""
    status = read_run(folder)
    if status.state != "running":
        return False
    (Path(folder) / CANCEL_FILE).write_text(_now(), encoding="utf-8")
    if os.name != "nt" and status.pid:
        try:
            os.kill(int(status.pid), signal.SIGTERM)
        except ProcessLookupError:
            return False
    return True


def cancel_requested(folder: str | Path) -> bool:
    """Whether :func:`cancel_run` asked the run in ``folder`` to stop (the child looks after every step)."""
    return (Path(folder) / CANCEL_FILE).exists()


def list_runs(parent: str | Path) -> list[RunStatus]:
    """The runs in the folders directly under ``parent``, oldest first."""
    parent = Path(parent)
    found = [read_run(path) for path in sorted(parent.iterdir()) if (path / RUN_FILE).is_file()] \
        if parent.is_dir() else []
    return sorted(found, key=lambda status: status.started or "")


def write_preview(folder: str | Path, step: int, input_volume, output_volume, reference_volume) -> Path:
    """Write one preview render into ``RUN/preview`` (input and reference the first time) and list it in index.json."""
    from meddiffusion.files import atomic_write
    from meddiffusion.io import write_volume

    preview = Path(folder) / PREVIEW_DIR
    index = _read_json(preview / "index.json") or {"input": "input.nrrd", "reference": None, "steps": []}
    for name, volume in (("input", input_volume), ("reference", reference_volume)):
        if volume is not None and not (preview / f"{name}.nrrd").exists():
            atomic_write(preview / f"{name}.nrrd", lambda tmp, v=volume: write_volume(v, tmp))
            index[name] = f"{name}.nrrd"
    path = atomic_write(preview / f"step_{step:06d}.nrrd", lambda tmp: write_volume(output_volume, tmp))
    index["steps"] = sorted(set(index["steps"]) | {int(step)})
    atomic_write(preview / "index.json", lambda tmp: tmp.write_text(json.dumps(index), encoding="utf-8"))
    return path
