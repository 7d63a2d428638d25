"""The MedDiffusionUtils module's panel: packages, device and models, Check and Install.

GUI code in the subset of Qt that PythonQt and PySide6 share (``qt`` is imported where it
is used), so the same panel runs in Slicer and in the PySide6 widget tests.
"""

from __future__ import annotations

from typing import Callable, Sequence

from . import environment
from .binding import required_widgets
from .dependencies import DependencyInstaller, InstallDeclined
from .messages import PanelMessages
from .processes import backend_environment
from .qtdriver import QtTaskDriver
from .runner import RunState, TaskProcess

__all__ = ["UtilsPanel"]


class UtilsPanel(PanelMessages):
    """Fills the utility module's .ui and runs its two actions.

    ``confirm(text) -> bool`` asks the user before installing; ``info_command`` is the
    child that reports device and models (default ``meddiff info``).
    """

    #: object names this panel needs in MedDiffusionUtils.ui
    WIDGETS = ("packagesTable", "checkButton", "installButton", "deviceLabel", "modelsTable",
               "statusLabel", "logText")

    def __init__(self, root, *, confirm: Callable[[str], bool],
                 installer: DependencyInstaller | None = None,
                 info_command: Sequence[str] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.ui = required_widgets(root, self.WIDGETS, "MedDiffusionUtils.ui")
        self.confirm = confirm
        self.installer = installer or DependencyInstaller()
        self.info_command = list(info_command) if info_command else environment.info_command()
        self.on_error = on_error
        self.task: TaskProcess | None = None
        self.driver: QtTaskDriver | None = None
        self.ui.checkButton.clicked.connect(self.on_check)
        self.ui.installButton.clicked.connect(self.on_install)
        self.refresh_packages()

    # -- packages --------------------------------------------------------------------------
    def refresh_packages(self) -> None:
        rows = environment.package_rows(self.installer.requirements)
        _fill_table(self.ui.packagesTable,
                    [(row.name, row.required, row.installed, "yes" if row.ok else "no")
                     for row in rows])
        todo = self.installer.plan()
        self.ui.installButton.setEnabled(not todo.empty)
        self.ui.installButton.setToolTip("Everything needed is installed" if todo.empty
                                         else todo.describe())

    def on_install(self, *_args) -> None:
        self.ui.installButton.setEnabled(False)
        self._status("Installing Python packages…")
        try:
            installed = self.installer.ensure(self.confirm, log=self._log)
        except InstallDeclined:
            self._status("Nothing was installed")
        except Exception as error:  # noqa: BLE001 - pip/PyTorchUtils failures are shown
            self._fail(f"Installing failed: {error}")
        else:
            self._status("Packages installed; restart Slicer if one was already in use"
                         if installed else "All packages were already installed")
        self.refresh_packages()

    # -- device and models (from `meddiff info` in a child process) ----------------------
    @property
    def checking(self) -> bool:
        return self.task is not None and self.task.active

    def on_check(self, *_args) -> None:
        self.refresh_packages()
        if self.checking:
            return
        self.ui.deviceLabel.setText("detecting…")
        self.ui.checkButton.setEnabled(False)
        self._status("Asking the backend for device and models…")
        self.task = TaskProcess(on_event=self._on_event)
        self.task.start(self.info_command, env=backend_environment())
        self.driver = QtTaskDriver(self.task, on_finished=self._on_info_finished)

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "log":
            self._log(event.get("message", ""))

    def _on_info_finished(self, task: TaskProcess) -> None:
        self.ui.checkButton.setEnabled(True)
        if task.state != RunState.DONE:
            self.ui.deviceLabel.setText("unknown (the backend could not start)")
            self._fail(f"The backend could not report its device: {task.error}")
            return
        info = task.result or {}
        self.ui.deviceLabel.setText(environment.device_text(info))
        self.show_models(info.get("models", []))
        self._status(f"Backend ready on {info.get('device', 'an unknown device')}")

    def show_models(self, models) -> None:
        rows = environment.model_rows(models)
        _fill_table(self.ui.modelsTable,
                    [(m.id, m.task, m.version, m.description, m.metrics) for m in rows])

    def cleanup(self) -> None:
        if self.checking:
            self.task.cancel()
            self.task.wait(timeout=self.task.cancel_timeout_s + 5)
        if self.driver is not None:
            self.driver.stop()


def _fill_table(table, rows: Sequence[Sequence[str]]) -> None:
    import qt

    table.setRowCount(len(rows))
    for row_number, row in enumerate(rows):
        for column, text in enumerate(row):
            table.setItem(row_number, column, qt.QTableWidgetItem(str(text)))
    table.resizeColumnsToContents()
