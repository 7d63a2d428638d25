"""The logic/panel pair every task module builds on, so each module's ``X.py`` stays thin.

A task module subclasses :class:`TaskLogic` and writes two methods::

    class DenoiseLogic(TaskLogic):
        command = "ldct-denoise"

        def write_inputs(self, params, workdir):           # MRML -> files -> arguments
            nodes.write_volume(params.inputVolume, workdir / "input.nrrd")
            return [workdir / "input.nrrd", "-o", workdir / "output.nrrd", "--steps", params.steps]

        def import_results(self, params, result, workdir):  # files -> new MRML nodes
            return [outputs.volume_from_file(workdir / "output.nrrd", params.inputVolume, "denoised")]

and its widget hands the loaded .ui to :class:`TaskPanel`, which binds the widgets to the
parameter node, enables Apply only when the required inputs are set, turns Apply into
Cancel while the backend runs, drives the progress bar and a bounded log, and reports the
new nodes (or the error) when the run ends.  :meth:`TaskLogic.run` is the blocking form for
scripts and tests.

A module whose panel runs a catalogue model and compares the input with the result
subclasses :class:`ComparePanel`: the TaskPanel, a model selector kept in step with the
parameters, and the last run's before/after pair with its fade slider.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import vtk

from . import outputs
from .models import ModelChoice, ModelSelector
from .parameters import GuiBinding, ParameterSet, named_widgets, required_widgets
from .runner import (QtTaskDriver, RunState, TaskCancelled, TaskFailed, TaskProcess,
                     backend_command, backend_environment)

__all__ = ["TaskLogic", "TaskPanel", "ComparePanel", "format_progress", "in_scene"]


class TaskLogic:
    """Parameters in, backend child process, new nodes out.  No Qt.

    ``backend`` replaces ``[python, -m, meddiffusion, <command>]`` (tests run a fake child);
    ``environment`` adds variables for the child (e.g. ``CUDA_VISIBLE_DEVICES=-1``).
    """

    command: str = ""

    def __init__(self, scene=None, *, backend: Sequence[str] | None = None,
                 environment: dict[str, str] | None = None):
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene
        self.backend = list(backend) if backend else None
        self.environment = dict(environment or {})

    # -- what each task module provides ----------------------------------------------------
    def write_inputs(self, parameters: ParameterSet, workdir: Path) -> list:
        """Write the input files into ``workdir``; return the command's arguments."""
        raise NotImplementedError

    def import_results(self, parameters: ParameterSet, result: dict, workdir: Path) -> list:
        """Turn the result files in ``workdir`` into new nodes and return them."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def command_line(self, arguments: Sequence) -> list[str]:
        if self.backend:
            return [*self.backend, *[str(a) for a in arguments], "--events", "jsonl"]
        if not self.command:
            raise ValueError(f"{type(self).__name__} sets no backend command")
        return backend_command(self.command, *arguments)

    def start(self, parameters: ParameterSet, *, on_event: Callable[[dict], None] | None = None,
              on_state: Callable[[RunState], None] | None = None,
              install: Callable[[], Any] | None = None, cancel_timeout_s: float = 10.0) -> TaskProcess:
        """Start a run in the background and return it (poll it, or drive it with Qt).

        ``install`` is the dependency step (e.g. ``DependencyInstaller().ensure`` bound to a
        confirmation dialog); it runs first, in the run's "installing" state.
        """
        missing = parameters.missing()
        if missing:
            raise ValueError(f"set {', '.join(missing)} before running")
        task = TaskProcess(on_event=on_event, on_state=on_state,
                           cancel_timeout_s=cancel_timeout_s)
        task.importer = lambda result: self._import(parameters, result, task.workdir)
        if install is not None and not task.install(install):
            return task
        if task.state.finished:
            return task
        try:
            arguments = self.write_inputs(parameters, task.workdir)
        except Exception as error:
            task.discard(f"preparing the inputs failed: {error}")
            raise
        task.start(self.command_line(arguments), env=backend_environment(self.environment))
        return task

    def run(self, parameters: ParameterSet, *, timeout: float | None = None, **options) -> list:
        """Run to the end and return the new nodes; raises TaskFailed / TaskCancelled."""
        task = self.start(parameters, **options)
        state = task.wait(timeout)
        if state == RunState.FAILED:
            raise TaskFailed(task.error or "the run failed")
        if state == RunState.CANCELLED:
            raise TaskCancelled("the run was cancelled")
        return task.outputs

    def _import(self, parameters: ParameterSet, result: dict, workdir: Path) -> list:
        with outputs.rollback_on_error(self.scene):
            return self.import_results(parameters, result, workdir)


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
    :meth:`TaskLogic.start`; ``on_done(nodes)`` and ``on_error(message)`` report the end.
    """

    APPLY_TEXT, CANCEL_TEXT, CANCELLING_TEXT = "Apply", "Cancel", "Cancelling…"

    def __init__(self, root, parameters: ParameterSet, logic: TaskLogic, *,
                 install: Callable[[], Any] | None = None,
                 on_done: Callable[[list], None] | None = None,
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
        if self.binding is not None:
            self.binding.disconnect()
            self.binding = None
        if self._observer is not None and self.parameters is not None:
            self.parameters.node.RemoveObserver(self._observer)
            self._observer = None

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


class ComparePanel:
    """A task module's panel that runs a catalogue model and shows the input beside the result.

    The .ui must hold ``WIDGETS``; it is run by a :class:`TaskPanel`, its ``modelComboBox``,
    ``stepsSpinBox`` and ``modelInfoLabel`` are kept in step with the parameters by a
    :class:`~MedDiffusionUtilsLib.models.ModelSelector`, and ``result`` holds the (input,
    output) pair of the last run while both are in the scene, ``fadeSlider`` blending the
    output over the input.  ``models`` are catalogue entries (``ModelEntry`` objects or dicts;
    by default the catalogue is read for ``TASK``); ``install``, ``on_done(nodes)`` and
    ``on_error(message)`` are passed on as in :class:`TaskPanel`.

    A subclass names its .ui (``UI_NAME``, ``WIDGETS``), its models (``TASK``, ``MAX_STEPS``,
    ``MODEL_KIND``, :meth:`model_choices`) and the output (``OUTPUT_NAME``), connects its own
    widgets after ``super().__init__``, and extends :meth:`show_result` / :meth:`forget_result`
    for what else it shows of a result.
    """

    #: the .ui file's name, for messages
    UI_NAME = ""
    #: object names the panel needs in the .ui (besides those TaskPanel needs)
    WIDGETS = ("modelComboBox", "modelInfoLabel", "stepsSpinBox", "fadeSlider", "logText")
    #: the catalogue's task name, the steps box's bound without a model, and what the models
    #: are called in the "none found" line ("low-dose CT")
    TASK, MAX_STEPS, MODEL_KIND = "", 1, ""
    #: the output in the fade slider's tooltip ("denoised volume")
    OUTPUT_NAME = "result"

    def __init__(self, root, parameters: ParameterSet, logic: TaskLogic, *,
                 models: Sequence[Any] | None = None, install: Callable[[], Any] | None = None,
                 on_done: Callable[[list], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.ui = required_widgets(root, self.WIDGETS, self.UI_NAME)
        self.logic = logic
        self.on_done = on_done
        #: (input, output) of the last run
        self.result: tuple[Any, Any] | None = None
        self.model_selector = ModelSelector(self.ui.modelComboBox, self.ui.stepsSpinBox,
                                            self.ui.modelInfoLabel, task=self.TASK,
                                            choices=self.model_choices, max_steps=self.MAX_STEPS,
                                            kind=self.MODEL_KIND)
        self.model_selector.fill(models)  # before the binding connects: the combo box must list the models
        self.task_panel = TaskPanel(root, parameters, logic, install=install,
                                    on_done=self._on_done, on_error=on_error)
        self.ui.fadeSlider.valueChanged.connect(self._on_fade)
        self.model_selector.watch(parameters)
        self.show_result()

    def model_choices(self, entries: Sequence[Any]) -> list[ModelChoice]:
        """The selector's rows for catalogue entries (the module's own settings)."""
        raise NotImplementedError

    @property
    def parameters(self) -> ParameterSet:
        return self.task_panel.parameters

    # -- parameter node / scene ------------------------------------------------------------
    def set_parameters(self, parameters: ParameterSet) -> None:
        """Bind to a (new) parameter node, e.g. after the scene was closed."""
        self.task_panel.set_parameters(parameters)
        self.forget_result()
        self.model_selector.watch(parameters)
        self.show_result()

    def set_scene(self, scene) -> None:
        self.task_panel.set_scene(scene)
        self.model_selector.sync()  # reconnecting the binding reset the steps range to the parameter's

    def cleanup(self) -> None:
        self.model_selector.unwatch()
        self.task_panel.cleanup()

    def refresh_models(self, models: Sequence[Any] | None = None) -> None:
        """Read the catalogue again (e.g. after the Python packages were installed)."""
        self.model_selector.refresh(models, self.task_panel.binding)

    # -- before / after --------------------------------------------------------------------
    def show_result(self) -> None:
        """Show the last run's result (or its absence) in the compare controls."""
        has_result = self.result is not None
        self.ui.fadeSlider.setEnabled(has_result)
        self.ui.fadeSlider.setToolTip(f"Blend the {self.OUTPUT_NAME} over the input in the left view"
                                      if has_result else "Available after a run")

    def forget_result(self) -> None:
        self.result = None

    def show_comparison(self, before, after) -> None:
        """The views after a run (the logic's side-by-side comparison)."""
        self.logic.show_comparison(before, after)

    def _on_done(self, created: list) -> None:
        after = created[0]
        before = self.logic.input_of(after)
        self.result = (before, after) if before is not None else None
        blocked = self.ui.fadeSlider.blockSignals(True)
        self.ui.fadeSlider.setValue(0.0)
        self.ui.fadeSlider.blockSignals(blocked)
        self.show_result()
        if self.result is not None:
            self.show_views(lambda: self.show_comparison(before, after))
        if self.on_done is not None:
            self.on_done(created)

    def _on_fade(self, value: float) -> None:
        if self.result_alive():
            before, after = self.result
            self.show_views(lambda: self.logic.set_fade(before, after, float(value)))

    def result_alive(self) -> bool:
        """Whether the last run's nodes are still in the scene (if not, the result is forgotten)."""
        alive = self.result is not None and all(in_scene(node) for node in self.result)
        if not alive and self.result is not None:
            self.forget_result()
            self.show_result()
        return alive

    def show_views(self, action: Callable[[], None]) -> None:
        """Change the views; without slice views (no layout yet) say so instead of failing."""
        try:
            action()
        except ValueError as error:
            self.ui.logText.appendPlainText(f"comparison views not shown: {error}")


def in_scene(node) -> bool:
    """Whether ``node`` exists and was not removed from its scene."""
    return node is not None and node.GetScene() is not None
