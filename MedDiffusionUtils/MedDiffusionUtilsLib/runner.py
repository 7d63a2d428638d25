"""Run a backend command in a child process and follow its JSON events.

Slicer starts ``PythonSlicer -m meddiffusion <command> ... --events jsonl`` as a child so the
GUI stays live, Cancel frees GPU memory and a crash or out-of-memory error never takes
Slicer down.  :class:`TaskProcess` is the Qt-free state machine around that child::

    idle -> installing -> idle -> running -> importing -> done
                 \\                   \\-> cancelled | failed
                  \\-> failed | cancelled

Two reader threads turn the child's stdout (JSON events) and stderr (plain text) into a
queue; :meth:`TaskProcess.poll` drains it on the caller's thread, so every callback runs
where MRML may be touched.  In the GUI :class:`~MedDiffusionUtilsLib.qtdriver.QtTaskDriver`
calls ``poll()`` from a ``qt.QTimer``; scripts and tests call :meth:`TaskProcess.wait`.
How the child is started and stopped is in :mod:`~MedDiffusionUtilsLib.processes`.

Each run owns a temporary folder (inputs and outputs) that is removed when the run ends;
the importer that turns result files into nodes runs only after a clean success, so a
cancelled or failed run leaves no output node and no output file behind.
"""

from __future__ import annotations

import enum
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from . import processes

__all__ = ["RunState", "TaskProcess", "BoundedLog", "TaskFailed", "TaskCancelled"]

LOG_LIMIT_BYTES = 256 * 1024
#: how long to keep reading output after the child exited (grandchildren may hold the pipes)
READER_GRACE_S = 2.0


class RunState(str, enum.Enum):
    IDLE = "idle"
    INSTALLING = "installing"
    RUNNING = "running"
    IMPORTING = "importing"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RunState.DONE, RunState.CANCELLED, RunState.FAILED)


class TaskFailed(RuntimeError):
    """A run ended in the failed state; the message is the one the user should see."""


class TaskCancelled(RuntimeError):
    """A run was cancelled before it produced a result."""


# -- a log that cannot grow without bound ----------------------------------------------------
class BoundedLog:
    """The most recent lines of a run, at most ``limit_bytes`` of text.

    When full, the oldest quarter is dropped at once (not line by line), so a view that
    mirrors the log only has to be rebuilt now and then; ``trimmed`` counts those drops.
    """

    def __init__(self, limit_bytes: int = LOG_LIMIT_BYTES):
        self.limit_bytes = limit_bytes
        self._lines: deque[str] = deque()
        self._size = 0
        self.trimmed = 0

    def append(self, line: str) -> None:
        line = line[: self.limit_bytes // 4]
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size > self.limit_bytes:
            while self._lines and self._size > self.limit_bytes * 3 // 4:
                self._size -= len(self._lines.popleft()) + 1
            self.trimmed += 1

    def tail(self, count: int = 20) -> list[str]:
        return list(self._lines)[-count:]

    def text(self) -> str:
        return "\n".join(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


# -- the state machine -----------------------------------------------------------------------
class TaskProcess:
    """One run of a backend command: install step, child process, import step, cleanup.

    ``on_event(event)`` receives every event dict from the child (progress, log, result,
    error, cancelled; stderr lines arrive as ``{"event": "log", "stream": "stderr"}``).
    ``on_state(state)`` receives each state change.  ``importer(result)`` turns the result
    event's payload into nodes while the run folder still exists; what it returns is kept in
    :attr:`outputs`.
    """

    def __init__(self, *, on_event: Callable[[dict], None] | None = None,
                 on_state: Callable[[RunState], None] | None = None,
                 importer: Callable[[dict], Any] | None = None,
                 cancel_timeout_s: float = 10.0, keep_workdir: bool = False,
                 log_limit_bytes: int = LOG_LIMIT_BYTES):
        self.on_event = on_event
        self.on_state = on_state
        self.importer = importer
        self.cancel_timeout_s = cancel_timeout_s
        self.keep_workdir = keep_workdir
        self.workdir = Path(tempfile.mkdtemp(prefix="meddiffusion-run-"))
        self.log = BoundedLog(log_limit_bytes)
        self.state = RunState.IDLE
        self.result: dict | None = None
        self.outputs: Any = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.returncode: int | None = None
        self.progress: dict | None = None
        self.process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._cancel_requested = False
        self._kill_deadline: float | None = None
        #: the child's last result/error/cancelled event
        self.terminal_event: dict | None = None
        self._exited_at: float | None = None

    # -- public API ------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while the run has not reached done, cancelled or failed."""
        return not self.state.finished

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def fraction(self) -> float | None:
        """Progress of the current stage in [0, 1], or None before the first progress event."""
        if not self.progress or not self.progress.get("total"):
            return None
        return min(1.0, max(0.0, self.progress["done"] / self.progress["total"]))

    def install(self, ensure: Callable[[], Any]) -> bool:
        """Run the dependency step (``ensure`` may ask the user, then pip-install).

        Returns False, with the run failed (or cancelled when ``ensure`` raises
        :class:`TaskCancelled`, e.g. the user declined), if it raises.
        """
        self._require_state(RunState.IDLE, "install")
        self._set_state(RunState.INSTALLING)
        try:
            ensure()
        except TaskCancelled as exc:
            self._finish(RunState.CANCELLED, message=str(exc) or None)
            return False
        except Exception as exc:  # noqa: BLE001 - any installer failure ends the run
            self._finish(RunState.FAILED, message=f"installing dependencies failed: {exc}")
            return False
        self._set_state(RunState.IDLE)
        return True

    def start(self, args: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> None:
        """Start the child; its stdout must be JSON lines (``--events jsonl``)."""
        self._require_state(RunState.IDLE, "start")
        if self._cancel_requested:
            self._finish(RunState.CANCELLED)
            return
        try:
            self.process = subprocess.Popen(
                [str(arg) for arg in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                bufsize=1, env=env, cwd=cwd or self.workdir, **processes.group_options())
        except OSError as exc:
            self._finish(RunState.FAILED, message=f"could not start '{args[0]}': {exc}")
            return
        self._readers = [
            threading.Thread(target=self._read_events, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self.process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._set_state(RunState.RUNNING)

    def poll(self) -> bool:
        """Handle pending events and a finished child; returns :attr:`active`."""
        if self.state != RunState.RUNNING:
            return self.active
        self._drain()
        if self._kill_deadline is not None and time.monotonic() > self._kill_deadline:
            self.log.append(f"the backend did not stop within {self.cancel_timeout_s:g} s; killing it")
            processes.kill_tree(self.process)
            self._kill_deadline = None
        if self.process.poll() is not None:
            # readers end at EOF; a stray grandchild holding the pipes open must not keep
            # the run alive forever once the child itself has exited
            self._exited_at = self._exited_at or time.monotonic()
            readers_done = not any(reader.is_alive() for reader in self._readers)
            if readers_done or time.monotonic() - self._exited_at > READER_GRACE_S:
                self._drain()
                self._conclude()
        return self.active

    def cancel(self) -> None:
        """Ask the run to stop: SIGTERM to the child's process group, kill after a timeout.

        Safe to call in any state; a finished run is left as it is.
        """
        if self.state.finished:
            return
        self._cancel_requested = True
        if self.state != RunState.RUNNING:
            if self.state == RunState.IDLE:
                self._finish(RunState.CANCELLED)
            return  # installing: ends as cancelled once the install step returns
        if self._kill_deadline is None and self.process.poll() is None:
            processes.terminate_tree(self.process)
            self._kill_deadline = time.monotonic() + self.cancel_timeout_s

    def wait(self, timeout: float | None = None, interval_s: float = 0.02) -> RunState:
        """Poll until the run finishes (scripts and tests); cancels it if ``timeout`` passes."""
        if self.state == RunState.IDLE:
            raise RuntimeError("start the run before waiting for it")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline and not self._cancel_requested:
                self.log.append(f"timed out after {timeout} s; cancelling")
                self.cancel()
            time.sleep(interval_s)
        return self.state

    def discard(self, reason: str | None = None) -> None:
        """Give up a run that was never started: failed with ``reason`` (e.g. writing its
        inputs failed), else cancelled.  Its folder is removed."""
        if not self.state.finished:
            self._finish(RunState.FAILED if reason else RunState.CANCELLED, message=reason)

    # -- reading the child -----------------------------------------------------------------
    def _read_events(self, stream) -> None:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "event" not in event:
                    raise ValueError("not an event")
            except ValueError:
                event = {"event": "log", "message": line, "stream": "stdout"}
            self._events.put(event)
        stream.close()

    def _read_stderr(self, stream) -> None:
        for line in stream:
            line = line.rstrip()
            if line:
                self._events.put({"event": "log", "message": line, "stream": "stderr"})
        stream.close()

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.progress = event
        elif kind == "log":
            self.log.append(str(event.get("message", "")))
        elif kind == "result":
            self.result = {k: v for k, v in event.items() if k != "event"}
            self.terminal_event = event
        elif kind in ("error", "cancelled"):
            self.terminal_event = event
            if event.get("message"):
                self.log.append(f"{kind}: {event['message']}")
        if self.on_event is not None:
            self.on_event(event)

    # -- ending ----------------------------------------------------------------------------
    def _conclude(self) -> None:
        self.returncode = self.process.returncode
        terminal = (self.terminal_event or {}).get("event")
        if self._cancel_requested or terminal == "cancelled" or self.returncode == processes.EXIT_CANCELLED:
            self._finish(RunState.CANCELLED)
        elif self.returncode == 0 and terminal == "result":
            self._import()
        elif terminal == "error":
            self._finish(RunState.FAILED, message=self.terminal_event.get("message") or "failed",
                         kind=self.terminal_event.get("kind"))
        elif self.returncode == 0:
            self._finish(RunState.FAILED, message="the backend finished without reporting a result")
        else:
            tail = "\n".join(self.log.tail(5))
            self._finish(RunState.FAILED, message=f"the backend stopped with exit code "
                         f"{self.returncode}" + (f":\n{tail}" if tail else ""))

    def _import(self) -> None:
        self._set_state(RunState.IMPORTING)
        try:
            if self.importer is not None:
                self.outputs = self.importer(self.result or {})
        except Exception as exc:  # noqa: BLE001 - shown to the user as a failed run
            self._finish(RunState.FAILED, message=f"importing the results failed: {exc}")
            return
        self._finish(RunState.DONE)

    def _finish(self, state: RunState, message: str | None = None, kind: str | None = None) -> None:
        if state == RunState.FAILED:
            self.error = message
            self.error_kind = kind
        elif message:
            self.log.append(message)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._set_state(state)

    def _set_state(self, state: RunState) -> None:
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    def _require_state(self, state: RunState, action: str) -> None:
        if self.state != state:
            raise RuntimeError(f"cannot {action} a run that is {self.state.value}")
