"""The Training panel: Training.ui for a detached ``meddiff train`` run and its run folder.

The user picks a task (every registered task with a recipe), a base model or a new network,
the data (the phantom, or their own volumes from the scene, a folder or a CSV manifest) and
the settings, then starts; the run trains in a child that outlives Slicer.  A Qt timer
(every second) polls the followed run folder through the logic: the curve table, charts
and preview volumes grow in the scene, the progress line shows the step and the ETA.  Cancel
checkpoints, Resume continues, and a finished run shows its gate verdict and can be
registered, after which ``on_registered`` lets the other modules list the model.  The table of
scene volumes is ``volumerows``'s, the task's own options ``taskoptions``', the runs list and
followed run ``runview``'s, the status line and log ``MedDiffusionUtilsLib.messages``'.  GUI
code in the subset of Qt that PythonQt and PySide6 share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import vtk

from meddiffusion.training.recipe import PAIRED_FOLDER, PHANTOM

from MedDiffusionUtilsLib.binding import GuiBinding, named_widgets, release, required_widgets
from MedDiffusionUtilsLib.messages import PanelMessages
from MedDiffusionUtilsLib.qtdriver import QtTaskDriver
from MedDiffusionUtilsLib.runner import RunState, TaskProcess

from .choices import DATA_FROM, DEFAULT_RUNS_FOLDER, SOURCE_LABELS, TrainingParameters
from .logic import TrainingLogic
from .monitor import RunStatus
from .runs import gate_verdict
from .runview import RunView
from .taskoptions import TaskOptions
from .volumerows import VolumeRows

__all__ = ["TrainingPanel", "POLL_MS", "FROM_SCRATCH"]

#: how often the followed run folder is read (the issue asks for curves at least every 10 s)
POLL_MS = 1000
FROM_SCRATCH = "New network (from scratch)"
#: Qt.ToolTipRole and Qt.UserRole, spelled as numbers so the panel needs no Qt import at the top
TOOLTIP_ROLE, USER_ROLE = 3, 256


class TrainingPanel(VolumeRows, TaskOptions, RunView, PanelMessages):
    """Runs Training.ui (``root``) for ``logic``, bound to ``parameters``.

    ``install`` is the dependency step run before starting; ``on_error(message)`` shows a
    refused action; ``confirm(question) -> bool`` asks before registering a model that failed
    its gate; ``on_registered(model_id)`` is told of each registered model.
    """

    WIDGETS = ("taskComboBox", "taskInfoLabel", "baseModelComboBox", "configComboBox", "taskOptionsWidget",
               "sourceComboBox", "dataFromComboBox", "volumesTable", "addRowButton", "removeRowButton",
               "dataPathLineEdit", "valPatientsSpinBox", "stepsSpinBox", "batchSizeSpinBox", "learningRateSpinBox",
               "deviceComboBox", "precisionComboBox", "gpusSpinBox", "previewEverySpinBox", "taskSettingsWidget",
               "extraOptionsLineEdit", "startButton", "cancelButton", "resumeButton", "progressBar", "progressLabel",
               "runsFolderLineEdit", "runsComboBox", "refreshRunsButton", "followButton", "gateLabel",
               "registerIdLineEdit", "registerButton", "statusLabel", "logText")

    def __init__(self, root, parameters: TrainingParameters, logic: TrainingLogic, *,
                 install: Callable[[], Any] | None = None, on_error: Callable[[str], None] | None = None,
                 confirm: Callable[[str], bool] | None = None,
                 on_registered: Callable[[str], None] | None = None):
        import qt

        self.root = root
        self.ui = required_widgets(root, self.WIDGETS, "Training.ui")
        self.logic = logic
        self.install, self.on_error, self.confirm, self.on_registered = install, on_error, confirm, on_registered
        self.binding: GuiBinding | None = None
        self.parameters: TrainingParameters | None = None
        self._observer: int | None = None
        self._filling = False
        self.task: TaskProcess | None = None  # the launcher or the registration child
        self.driver: QtTaskDriver | None = None
        self.status: RunStatus | None = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.tick)
        ui = self.ui
        for path_edit in (ui.dataPathLineEdit, ui.runsFolderLineEdit):
            path_edit.currentPathChanged.connect(self._on_path_edited)
        folders = getattr(type(ui.runsFolderLineEdit), "Dirs", None)
        if folders is not None:
            ui.runsFolderLineEdit.filters = folders
        ui.taskComboBox.currentIndexChanged.connect(self._on_task_chosen)
        ui.baseModelComboBox.currentIndexChanged.connect(self._on_base_model_chosen)
        ui.sourceComboBox.currentIndexChanged.connect(self._on_source_chosen)
        ui.dataFromComboBox.currentIndexChanged.connect(self._on_data_from_chosen)
        ui.addRowButton.clicked.connect(self.add_row)
        ui.removeRowButton.clicked.connect(self.remove_row)
        ui.startButton.clicked.connect(self.on_start)
        ui.cancelButton.clicked.connect(self.on_cancel)
        ui.resumeButton.clicked.connect(self.on_resume)
        ui.refreshRunsButton.clicked.connect(self.refresh_runs)
        ui.followButton.clicked.connect(self.on_follow)
        ui.registerButton.clicked.connect(self.on_register)
        ui.progressBar.setRange(0, 100)
        ui.progressBar.setValue(0)
        self._fill_tasks()
        self.set_parameters(parameters)

    # -- parameter node ----------------------------------------------------------------------
    def set_parameters(self, parameters: TrainingParameters) -> None:
        """Bind to a (new) parameter node; show its task, data and runs, and reconnect to the
        newest run still training (e.g. after Slicer was closed and reopened)."""
        self._unbind()
        self.parameters = parameters
        if not parameters.task or parameters.task not in self._task_names():
            names = self._task_names()
            if names:
                self.logic.select_task(names[0])
        self._show_task()
        self.binding = GuiBinding(parameters, named_widgets(self.root).values(),
                                  on_error=lambda error: self._status(str(error)))
        self.binding.connect()
        self._observer = parameters.node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                     lambda caller, event: self.update_buttons())
        self.ui.runsFolderLineEdit.setProperty("currentPath", parameters.runsFolder or str(DEFAULT_RUNS_FOLDER))
        self.ui.dataPathLineEdit.setProperty("currentPath", parameters.dataPath)
        self._show_volume_rows()
        running = [run for run in self.refresh_runs() if run.get("state") == "running"]
        if running and self.logic.monitor is None:
            self.follow(running[0]["folder"])
        self.update_buttons()

    def _unbind(self) -> None:
        release(self.binding, self.parameters, self._observer)
        self.binding = self._observer = None

    def refresh_models(self, models=None) -> None:
        """Read the catalogue again (after an install, or a model registered elsewhere)."""
        self._show_task_options(self._show_base_models(models))

    def cleanup(self) -> None:
        """Module closed or reloaded: polling stops; a training run goes on by itself."""
        self.timer.stop()
        if self.driver is not None:
            self.driver.stop()
        for tag in getattr(self, "_scene_observers", []):
            self._scene.RemoveObserver(tag)
        self._scene_observers = []
        self._unbind()

    # -- task, model, data -------------------------------------------------------------------
    def _task_names(self) -> list[str]:
        combo = self.ui.taskComboBox
        return [combo.itemData(i, USER_ROLE) for i in range(combo.property("count"))]

    def _fill_tasks(self) -> None:
        combo = self.ui.taskComboBox
        self._filling = True
        try:
            combo.clear()
            for index, task in enumerate(self.logic.tasks()):
                combo.addItem(f"{task.title} ({task.name})", task.name)
                combo.setItemData(index, task.description, TOOLTIP_ROLE)
        finally:
            self._filling = False

    def _on_task_chosen(self, index: int) -> None:
        if self._filling or index < 0:
            return
        name = self.ui.taskComboBox.itemData(index, USER_ROLE)
        if name != self.parameters.task:
            self.logic.select_task(name)
        self._show_task()

    def _show_task(self) -> None:
        """The chosen task's description, network sizes, base models and data sources."""
        ui, parameters = self.ui, self.parameters
        choice = self.logic.task_choice(parameters.task)
        self._filling = True
        try:
            ui.taskComboBox.setCurrentIndex(max(ui.taskComboBox.findData(choice.name), 0))
            ui.taskInfoLabel.setText(choice.description)
            blocked = ui.configComboBox.blockSignals(True)  # bound: refilling must not pick the first size
            ui.configComboBox.clear()
            for index, config in enumerate(choice.configs):
                ui.configComboBox.addItem(config)
                ui.configComboBox.setItemData(index, f"meant for {choice.configs[config]}", TOOLTIP_ROLE)
            ui.configComboBox.setCurrentIndex(max(ui.configComboBox.findText(parameters.config), 0))
            ui.configComboBox.blockSignals(blocked)
            ui.sourceComboBox.clear()
            for source in choice.sources:
                ui.sourceComboBox.addItem(SOURCE_LABELS[source], source)
            ui.sourceComboBox.setCurrentIndex(max(ui.sourceComboBox.findData(parameters.source), 0))
        finally:
            self._filling = False
        self._show_task_options(self._show_base_models())
        self._show_data()

    def _show_base_models(self, models=None) -> list:
        """The task's catalogue models to fine-tune (returned, for the options naming a model)."""
        ui, parameters = self.ui, self.parameters
        if models is None:
            models, problem = self.logic.base_models(parameters.task)
        else:
            problem = ""
        self._filling = True
        try:
            ui.baseModelComboBox.clear()
            ui.baseModelComboBox.addItem(FROM_SCRATCH, "")
            for entry in models:
                ui.baseModelComboBox.addItem(f"Fine-tune {entry.id}", entry.id)
                ui.baseModelComboBox.setItemData(ui.baseModelComboBox.property("count") - 1,
                                                 entry.description or entry.id, TOOLTIP_ROLE)
            index = ui.baseModelComboBox.findData(parameters.baseModel)
            ui.baseModelComboBox.setCurrentIndex(max(index, 0))
            ui.baseModelComboBox.setToolTip(problem or ui.baseModelComboBox.property("toolTip") or "")
        finally:
            self._filling = False
        if parameters.baseModel and ui.baseModelComboBox.findData(parameters.baseModel) < 0:
            parameters.baseModel = ""
        return list(models)

    def _on_base_model_chosen(self, index: int) -> None:
        if not self._filling and index >= 0:
            self.parameters.baseModel = self.ui.baseModelComboBox.itemData(index, USER_ROLE) or ""
            self.update_buttons()

    def _on_source_chosen(self, index: int) -> None:
        if not self._filling and index >= 0:
            self.parameters.source = self.ui.sourceComboBox.itemData(index, USER_ROLE)
            self._show_data()

    def _on_data_from_chosen(self, index: int) -> None:
        if not self._filling and index >= 0:
            self.parameters.dataFrom = DATA_FROM[index]
            self._show_data()

    def _show_data(self) -> None:
        """Only the data widgets that matter for the source and place chosen are enabled."""
        ui, parameters = self.ui, self.parameters
        own = parameters.source != PHANTOM
        scene = own and parameters.dataFrom == "scene"
        self._filling = True
        try:
            ui.dataFromComboBox.setCurrentIndex(DATA_FROM.index(parameters.dataFrom))
        finally:
            self._filling = False
        ui.dataFromComboBox.setEnabled(own)
        ui.valPatientsSpinBox.setEnabled(own)
        for widget in (ui.volumesTable, ui.addRowButton, ui.removeRowButton):
            widget.setEnabled(scene)
        ui.dataPathLineEdit.setEnabled(own and not scene)
        ui.volumesTable.setColumnHidden(1, parameters.source != PAIRED_FOLDER)
        self._show_volume_rows()  # the task's further volumes have columns with pairs only

    def _on_path_edited(self, *_args) -> None:
        self.parameters.update(dataPath=_path(self.ui.dataPathLineEdit), runsFolder=_path(self.ui.runsFolderLineEdit))

    # -- state of the buttons ----------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A launcher or registration child is running."""
        return self.task is not None and self.task.active

    def update_buttons(self) -> None:
        if self.parameters is None:
            return
        ui, status = self.ui, self.status
        missing = self.logic.missing()
        running = status is not None and status.state in ("starting", "running")
        ui.startButton.setEnabled(not missing and not self.busy and not running)
        ui.startButton.setToolTip("; ".join(missing).capitalize() if missing else
                                  "Start a detached training run; it goes on if Slicer is closed")
        ui.cancelButton.setEnabled(status is not None and status.state == "running")
        stopped = status is not None and status.state in ("cancelled", "failed", "stopped")
        ui.resumeButton.setEnabled(stopped and not self.busy and any(status.folder.glob("checkpoint_*")))
        model = status is not None and status.state == "done" and (status.folder / "model.json").is_file()
        ui.registerButton.setEnabled(model and bool(self.parameters.registerId.strip()) and not self.busy)
        ui.followButton.setEnabled(ui.runsComboBox.property("currentIndex") >= 0)

    # -- actions -------------------------------------------------------------------------------
    def on_start(self, *_args) -> None:
        if not self.ui.startButton.isEnabled():
            return
        launch = self._try(lambda: self.logic.start(install=self.install, on_event=self._on_launcher_event))
        if launch is not None:
            self._watch_launcher(launch.task, launch.folder, "Starting training in")

    def on_resume(self, *_args) -> None:
        folder = self.status.folder if self.status is not None else None
        launch = folder and self._try(lambda: self.logic.resume(folder, install=self.install,
                                                                 on_event=self._on_launcher_event))
        if launch:
            self._watch_launcher(launch.task, launch.folder, "Resuming")

    def _watch_launcher(self, task: TaskProcess, folder: Path, words: str) -> None:
        self.task = task
        self.ui.logText.clear()
        self._status(f"{words} {folder}…")

        def finished(task: TaskProcess) -> None:
            if task.state == RunState.DONE:
                self.refresh_runs()
                self.follow(folder)
            else:
                self._fail(task.error or "the run was not started")
            self.update_buttons()

        self.driver = QtTaskDriver(task, on_finished=finished)
        if not task.active:  # the install step was declined or failed
            self.driver.stop()
            finished(task)
        self.update_buttons()

    def _on_launcher_event(self, event: dict) -> None:
        if event.get("event") in ("log", "error") and event.get("message"):
            self._log(str(event["message"]))

    def on_cancel(self, *_args) -> None:
        if self.status is not None and self._try(lambda: self.logic.cancel(self.status.folder) or True):
            self._status(f"Cancelling {self.status.folder.name}: a checkpoint is written first…")

    def on_register(self, *_args) -> None:
        if self.status is None or self.busy:
            return
        folder, model_id = self.status.folder, self.parameters.registerId.strip()
        words, passed = gate_verdict(folder, self.status.info)
        anyway = not passed and self.confirm is not None and self.confirm(
            f"The new model did not pass the gate: {words}.\n\nRegister it anyway?")
        if not passed and not anyway:
            self._status(f"Not registered: {words}")
            return
        task = self._try(lambda: self.logic.register(folder, model_id, anyway=anyway))
        if task is None:
            return
        self.task = task
        self._status(f"Registering {model_id}…")

        def finished(task: TaskProcess) -> None:
            if task.state == RunState.DONE:
                self._status(f"Registered as '{model_id}'; every module's model list shows it")
                self.refresh_models()
                if self.on_registered is not None:
                    self.on_registered(model_id)
            else:
                self._fail(task.error or "registering failed")
            self.update_buttons()

        self.driver = QtTaskDriver(task, on_finished=finished)
        self.update_buttons()


def _path(path_edit) -> str:
    return (path_edit.property("currentPath") or "").strip()
