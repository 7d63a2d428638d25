"""Drives a :class:`~MedDiffusionUtilsLib.runner.TaskProcess` from the GUI thread.

Kept apart from the runner so that the runner, and every logic built on it, imports no Qt.
"""

from __future__ import annotations

from typing import Callable

from .runner import TaskProcess

__all__ = ["QtTaskDriver"]


class QtTaskDriver:
    """Calls ``task.poll()`` from a ``qt.QTimer`` so the GUI thread handles every event.

    ``on_finished(task)`` is called once when the run reaches done, cancelled or failed.
    """

    def __init__(self, task: TaskProcess, on_finished: Callable[[TaskProcess], None] | None = None,
                 interval_ms: int = 100):
        import qt

        self.task = task
        self.on_finished = on_finished
        self.timer = qt.QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    @property
    def running(self) -> bool:
        return self.timer.isActive()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        if self.task.poll():
            return
        self.timer.stop()
        if self.on_finished is not None:
            self.on_finished(self.task)
