"""The panel of a task module's .ui: parameter binding, Apply/Cancel, progress bar and log.

The widget hands its loaded .ui to :class:`TaskPanel`, which binds the widgets to the
parameter node, enables Apply only when the required inputs are set, turns Apply into Cancel
while the backend runs, drives the progress bar and a bounded log, and reports the new nodes
(or the error) when the run ends.  GUI code in the subset of Qt that PythonQt and PySide6
share, so the same panel runs in Slicer and in the PySide6 widget tests.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import vtk

from .binding import GuiBinding, named_widgets, release
from .parameters import ParameterSet
from .qtdriver import QtTaskDriver
from .runner import RunState, TaskProcess
from .tasklogic import TaskLogic

__all__ = ["TaskPanel", "format_progress", "in_scene"]


def format_progress(event: dict) -> str:
    """Progress text such as "denoise 3/40 · about 12 s left"."""
    text = f"{event.get('stage', '')} {event.get('done', 0)}/{event.get('total', 0)}".strip()
    eta = event.get("eta_s")
    if eta is not None:
        text += f" · about {eta:.0f} s left" if eta < 120 else f" · about {eta / 60:.0f} min left"
    if event.get("message"):
        text += f" · {event['message']}"
    return text


class TaskPanel:
    """Runs a task module's .ui: binding, Apply/Cancel, progress bar, log.

    ``root`` is the loaded .ui widget; it must contain ``applyButton`` and ``progressBar``
    and may contain ``statusLabel`` (QLabel) and ``logText`` (QPlainTextEdit).  Widgets that
    carry ``SlicerParameterName`` are bound to ``parameters``.  ``install`` is passed to
    :meth:`TaskLogic.start`; ``on_done(nodes by name)`` and ``on_error(message)`` report the end.
    """

    APPLY_TEXT, CANCEL_TEXT, CANCELLING_TEXT = "Apply", "Cancel", "Cancelling…"

    def __init__(self, root, parameters: ParameterSet, logic: TaskLogic, *,
                 install: Callable[[], Any] | None = None,
                 on_done: Callable[[dict], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.root = root
        self.ui = SimpleNamespace(**named_widgets(root))
        for required in ("applyButton", "progressBar"):
            if not hasattr(self.ui, required):
                raise ValueError(f"the module's .ui has no widget named '{required}'")
        self.logic = logic
        self.install = install
        self.on_done = on_done
        self.on_error = on_error
        self.task: TaskProcess | None = None
        self.driver: QtTaskDriver | None = None
        self.parameters: ParameterSet | None = None
        self.binding: GuiBinding | None = None
        self._observer: int | None = None
        self._shown_trims = 0
        self.ui.applyButton.clicked.connect(self.on_apply)
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.setValue(0)
        self.set_parameters(parameters)

    # -- parameters ------------------------------------------------------------------------
    def set_parameters(self, parameters: ParameterSet) -> None:
        """Bind to a (new) parameter node, e.g. after the scene was closed."""
        self._unbind()
        self.parameters = parameters
        self.binding = GuiBinding(parameters, vars(self.ui).values(), on_error=self._report_rejected)
        self.binding.connect()
        self._observer = parameters.node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                     lambda caller, event: self.update_apply())
        self.update_apply()

    def set_scene(self, scene) -> None:
        """Give every MRML-aware widget the scene (connected in code, not in the .ui).

        The binding is paused meanwhile, so a selector picking its first node while it
        fills up cannot overwrite a node already stored in the parameter node.
        """
        if self.binding is not None:
            self.binding.disconnect()
        for widget in [self.root, *vars(self.ui).values()]:
            if hasattr(widget, "setMRMLScene"):
                widget.setMRMLScene(scene)
        if self.binding is not None:
            self.binding.connect()
        self.update_apply()

    def cleanup(self) -> None:
        """Stop a run and let go of the parameter node (module closed or reloaded)."""
        if self.task is not None and self.task.active:
            self.task.cancel()
            self.task.wait(timeout=self.task.cancel_timeout_s + 5)
        if self.driver is not None:
            self.driver.stop()
        self._unbind()

    def _unbind(self) -> None:
        release(self.binding, self.parameters, self._observer)
        self.binding = self._observer = None

    # -- Apply / Cancel --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.task is not None and self.task.active

    def update_apply(self) -> None:
        button = self.ui.applyButton
        if self.running:
            cancelling = self.task.state == RunState.IMPORTING or self._cancel_requested()
            button.setText(self.CANCELLING_TEXT if self._cancel_requested() else self.CANCEL_TEXT)
            button.setEnabled(not cancelling)
            button.setToolTip("Stop the running computation; nothing is added to the scene")
            return
        missing = self.parameters.missing() if self.parameters is not None else ["parameters"]
        button.setText(self.APPLY_TEXT)
        button.setEnabled(not missing)
        button.setToolTip(f"Select {', '.join(missing)} first" if missing else "Run the computation")

    def _cancel_requested(self) -> bool:
        return bool(self.task is not None and self.task.cancel_requested)

    def on_apply(self, *_args) -> None:
        if self.running:
            self.task.cancel()
            self._set_status("Cancelling…")
            self.update_apply()
            return
        self.ui.progressBar.setValue(0)
        self._shown_trims = 0
        if hasattr(self.ui, "logText"):
            self.ui.logText.clear()
        try:
            self.task = self.logic.start(self.parameters, on_event=self._on_event,
                                         on_state=self._on_state, install=self.install)
        except Exception as error:  # noqa: BLE001 - shown to the user, not as a traceback
            self._fail(str(error))
            self.update_apply()
            return
        if self.task.state.finished:
            self._on_finished(self.task)
            return
        self.driver = QtTaskDriver(self.task, on_finished=self._on_finished)
        self.update_apply()

    # -- run events ------------------------------------------------------------------------
    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            total = event.get("total") or 0
            if total:
                self.ui.progressBar.setValue(int(round(100 * event.get("done", 0) / total)))
            self._set_status(format_progress(event))
        elif kind in ("log", "error", "cancelled"):
            self._show_log_line(event.get("message", ""), kind)

    def _on_state(self, state: RunState) -> None:
        labels = {RunState.INSTALLING: "Installing Python packages…",
                  RunState.RUNNING: "Running…", RunState.IMPORTING: "Loading results…",
                  RunState.DONE: "Done", RunState.CANCELLED: "Cancelled; nothing was added"}
        if state in labels:
            self._set_status(labels[state])
        self.update_apply()

    def _on_finished(self, task: TaskProcess) -> None:
        # self.driver is kept (stopped): this runs inside its timer's signal
        if task.state == RunState.DONE:
            self.ui.progressBar.setValue(100)
            if self.on_done is not None:
                self.on_done(task.outputs)
        elif task.state == RunState.FAILED:
            # an error event was already shown in the log as it arrived
            reported = (task.terminal_event or {}).get("event") == "error"
            self._fail(task.error or "the run failed", log=not reported)
        elif task.state == RunState.CANCELLED:
            self.ui.progressBar.setValue(0)
        self.update_apply()

    def _fail(self, message: str, log: bool = True) -> None:
        self._set_status(f"Failed: {message.splitlines()[0] if message else ''}")
        if log:
            self._show_log_line(message, "error")
        if self.on_error is not None:
            self.on_error(message)

    def _report_rejected(self, error: ValueError) -> None:
        self._set_status(str(error))

    def _set_status(self, text: str) -> None:
        if hasattr(self.ui, "statusLabel"):
            self.ui.statusLabel.setText(text)

    def _show_log_line(self, message: str, kind: str) -> None:
        """Mirror the run's bounded log; rebuild the view only when the log dropped lines."""
        if not hasattr(self.ui, "logText") or not message:
            return
        log = self.task.log if self.task is not None else None
        if log is not None and log.trimmed != self._shown_trims:
            self._shown_trims = log.trimmed
            self.ui.logText.setPlainText(log.text())
        else:
            self.ui.logText.appendPlainText(message if kind == "log" else f"{kind}: {message}")


def in_scene(node) -> bool:
    """Whether ``node`` exists and was not removed from its scene."""
    return node is not None and node.GetScene() is not None
