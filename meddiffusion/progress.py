"""Progress reporting and cancellation shared by every long operation.

One event stream serves two audiences: a person in a terminal (a progress bar on stderr) and
the Slicer module that runs ``meddiff`` as a child process (``--events jsonl``: one JSON
object per line on stdout).  Events are::

    {"event": "progress", "stage": "denoise", "done": 3, "total": 40, "eta_s": 12.5, "message": ""}
    {"event": "log", "message": "..."}
    {"event": "result", ...payload}                 # last line on success
    {"event": "error", "message": "...", "kind": "..."}   # last line on failure
    {"event": "cancelled", "message": "..."}       # last line after SIGINT/SIGTERM

SIGINT/SIGTERM only set a flag; the next ``advance()`` raises :class:`Cancelled`, so the
operation unwinds through its ``finally`` blocks and never leaves a partial output file.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO

__all__ = ["Cancelled", "Progress", "JsonlSink", "BarSink", "NullSink", "cancellation_signals"]

#: exit status of a cancelled command, as a shell reports SIGINT
EXIT_CANCELLED = 130


class Cancelled(Exception):
    """Raised inside a long operation once the user asked to stop."""


class NullSink:
    """Discards events (library use, tests)."""

    def emit(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink:
    """Writes one JSON object per line, flushed at once so a parent process sees it live."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=_json_default)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class BarSink:
    """A terminal progress bar (tqdm) per stage on stderr; logs and errors as plain lines.

    When stderr is not a terminal (a log file, CI), each stage prints one line when it ends
    instead of a bar that would fill the log with redraws.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._stage = None

    def emit(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "progress":
            self._update_bar(event)
        elif kind in ("log", "cancelled"):
            self._close_bar()
            print(event.get("message", ""), file=self.stream)
        elif kind == "error":
            self._close_bar()
            print(f"error: {event['message']}", file=self.stream)
        elif kind == "result":
            self._close_bar()

    def _update_bar(self, event: dict[str, Any]) -> None:
        if not self.interactive:
            if event["done"] == event["total"] and event["total"]:
                print(f"{event['stage']}: {event['done']}/{event['total']} done", file=self.stream)
            return
        from tqdm import tqdm

        if self._bar is None or self._stage != event["stage"]:
            self._close_bar()
            self._stage = event["stage"]
            self._bar = tqdm(total=event["total"], desc=event["stage"], file=self.stream,
                             dynamic_ncols=True, leave=True)
        self._bar.n = event["done"]
        if event.get("message"):
            self._bar.set_postfix_str(event["message"], refresh=False)
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None

    def close(self) -> None:
        self._close_bar()


class Progress:
    """The handle a long operation reports through.

    ``with progress.stage("denoise", total=n) as step: ... step()`` counts work, estimates the
    remaining time and checks for cancellation at every step.
    """

    def __init__(self, sink: Any = None, min_interval_s: float = 0.1):
        self.sink = sink or NullSink()
        self.min_interval_s = min_interval_s
        self._cancel = threading.Event()

    # -- cancellation -------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the running operation to stop at its next step (thread- and signal-safe)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if a stop was requested."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    # -- events -------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.sink.emit({"event": "log", "message": message})

    def result(self, **payload: Any) -> None:
        self.sink.emit({"event": "result", **payload})

    def error(self, message: str, kind: str = "error") -> None:
        self.sink.emit({"event": "error", "message": message, "kind": kind})

    def cancelled_event(self, message: str = "cancelled; no output was written") -> None:
        self.sink.emit({"event": "cancelled", "message": message})

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[..., None]]:
        """Report ``total`` units of work under ``name``; yields ``step(n=1, message="")``."""
        start = time.monotonic()
        state = {"done": 0, "last": 0.0}

        def emit(message: str = "", force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - state["last"] < self.min_interval_s:
                return
            state["last"] = now
            done = state["done"]
            elapsed = now - start
            eta = elapsed / done * (total - done) if done else None
            self.sink.emit({"event": "progress", "stage": name, "done": done, "total": total,
                            "eta_s": None if eta is None else round(eta, 2), "message": message})

        def step(n: int = 1, message: str = "") -> None:
            self.check()
            state["done"] = min(total, state["done"] + n)
            emit(message, force=state["done"] == total)

        self.check()
        emit(force=True)
        yield step

    def callback(self, name: str, total: int) -> Callable[[int, int], None]:
        """A ``callback(done, total)`` for library loops, reporting as stage ``name``.

        Unlike :meth:`stage` it is a plain function, so samplers and trainers that know
        nothing about this module can drive progress and cancellation.
        """
        start = time.monotonic()
        last = [0.0]

        def callback(done: int, total_: int = total) -> None:
            self.check()
            now = time.monotonic()
            if done < total_ and now - last[0] < self.min_interval_s:
                return
            last[0] = now
            eta = (now - start) / done * (total_ - done) if done else None
            self.sink.emit({"event": "progress", "stage": name, "done": done, "total": total_,
                            "eta_s": None if eta is None else round(eta, 2), "message": ""})

        return callback


@contextmanager
def cancellation_signals(progress: Progress) -> Iterator[Progress]:
    """Turn SIGINT/SIGTERM into ``progress.cancel()`` for the duration of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield progress
        return
    previous = {}

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        progress.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield progress
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _json_default(value: Any) -> Any:
    """Make numpy scalars and paths JSON-serialisable."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
