"""The Training panel's runs: the runs list, following one run, its progress, state and gate.

A Qt timer in the panel calls :meth:`RunView.tick`; each poll of the followed run folder
shows its new log lines, the step and ETA, the state in words and, once done, the gate
verdict.  GUI code in the subset of Qt that PythonQt and PySide6 share.
"""

from __future__ import annotations

from pathlib import Path

from MedDiffusionUtilsLib.taskpanel import format_progress

from .monitor import RunStatus
from .runs import gate_verdict
from .volumerows import current_data

__all__ = ["RunView"]


class RunView:
    """Mixin of TrainingPanel for the runs list, ``follow``/``tick`` and the progress widgets.

    The panel has ``ui``, ``logic``, ``parameters``, ``status``, ``timer``, ``update_buttons``
    and the message helpers.
    """

    def refresh_runs(self, *_args) -> list[dict]:
        """List the runs under the runs folder, newest first (the followed one selected)."""
        runs = self._try(self.logic.runs) or []
        combo = self.ui.runsComboBox
        combo.clear()
        for run in runs:
            folder = Path(run["folder"])
            combo.addItem(f"{folder.name} · {run.get('task', '?')} · {run.get('state', '?')}", str(folder))
        if self.logic.monitor is not None:
            combo.setCurrentIndex(max(combo.findData(str(self.logic.monitor.folder)), 0))
        self.update_buttons()
        return runs

    def on_follow(self, *_args) -> None:
        folder = current_data(self.ui.runsComboBox)
        if folder:
            self.follow(folder)

    def follow(self, folder) -> None:
        """Show the run in ``folder``: its curves so far, its preview; poll it while it runs."""
        monitor = self._try(lambda: self.logic.attach(folder))
        if monitor is None:
            return
        self.status = None
        self._show_status(monitor.status)
        self.timer.start()

    def tick(self) -> None:
        """One poll of the followed run (from the timer)."""
        monitor = self.logic.monitor
        if monitor is None:
            self.timer.stop()
            return
        status = monitor.poll()
        self._show_status(status)
        if status.finished:
            self.timer.stop()

    def _show_status(self, status: RunStatus) -> None:
        ui = self.ui
        was = self.status.state if self.status is not None else None
        self.status = status
        for event in status.events:
            if event.get("event") in ("log", "error") and event.get("message"):
                self._log(str(event["message"]))
        progress = status.progress
        if progress and progress.get("total"):
            ui.progressBar.setValue(int(100 * min(1.0, progress.get("done", 0) / progress["total"])))
            eta = self.logic.monitor.eta_s() if self.logic.monitor is not None else None
            ui.progressLabel.setText(format_progress({**progress, "eta_s": eta}))
        name = status.folder.name
        if status.state != was:
            words = {"starting": "starting…", "running": "training", "done": "finished",
                     "cancelled": "cancelled (a checkpoint was written; Resume continues it)",
                     "failed": "failed", "stopped": "stopped without finishing (Resume continues from its last "
                                                 "checkpoint)"}.get(status.state, status.state)
            message = f": {status.message}" if status.message and status.state != "running" else ""
            self._status(f"Run {name} {words}{message}")
            if status.state == "done":
                ui.progressBar.setValue(100)
                self._show_gate(status)
            else:
                ui.gateLabel.setText("")
            if was is not None and status.finished:
                self.refresh_runs()
        self.update_buttons()

    def _show_gate(self, status: RunStatus) -> None:
        words, passed = gate_verdict(status.folder, status.info)
        self.ui.gateLabel.setText(("Gate passed: " if passed else "Gate not passed: ") + words)
        if not self.parameters.registerId.strip():
            self.parameters.registerId = status.folder.name
