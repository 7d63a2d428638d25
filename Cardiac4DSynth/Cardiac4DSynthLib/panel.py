"""The Cardiac 4D Synth panel: the request, the optional anatomy, the model and the last result.

A :class:`~MedDiffusionUtilsLib.taskpanel.TaskPanel` runs the .ui (binding, Apply/Cancel, progress
and log; Apply needs no input, this task generating from the request) and a
:class:`~MedDiffusionUtilsLib.models.ModelSelector` keeps the model list, the steps and the info
line in step.  This panel adds what is specific to the synthesis: ESV and EF linked through the
EDV (editing one updates the other, and the one edited last is what the request gives), the EDV
and slice count greyed out while an anatomy gives them, and the last result: the volumes
measured on its labels against the request, the cine with its labels in the views and the volume
curves in the plot view.  GUI code in the subset of Qt that PythonQt and PySide6 share.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import vtk

from MedDiffusionUtilsLib.binding import required_widgets
from MedDiffusionUtilsLib.messages import PanelMessages
from MedDiffusionUtilsLib.models import ModelSelector
from MedDiffusionUtilsLib.taskpanel import TaskPanel, in_scene

from . import logic as synth
from .logic import Cardiac4DSynthLogic, Cardiac4DSynthParameters

__all__ = ["Cardiac4DSynthPanel"]


class Cardiac4DSynthPanel(PanelMessages):
    """Runs Cardiac4DSynth.ui: ``root`` the loaded .ui, ``parameters`` the module's, ``logic`` a
    :class:`Cardiac4DSynthLogic`; ``models`` catalogue entries (by default the catalogue is read);
    ``install``, ``on_done(nodes by name)`` and ``on_error(message)`` as in :class:`TaskPanel`."""

    UI_NAME = "Cardiac4DSynth.ui"
    WIDGETS = ("diagnosisComboBox", "edvSpinBox", "esvSpinBox", "efSpinBox", "systoleLabel", "slicesSpinBox",
               "framesSpinBox", "seedSpinBox", "useAnatomyCheckBox", "anatomySelector", "modelComboBox",
               "modelInfoLabel", "stepsSpinBox", "guidanceSpinBox", "deviceComboBox", "heartRateSpinBox",
               "maxAttemptsSpinBox", "keepImplausibleCheckBox", "resultLabel", "showResultButton", "statusLabel",
               "logText")
    MODEL_KIND = "4D cardiac synthesis"

    def __init__(self, root, parameters: Cardiac4DSynthParameters, logic: Cardiac4DSynthLogic, *,
                 models: Sequence[Any] | None = None, install: Callable[[], Any] | None = None,
                 on_done: Callable[[dict], None] | None = None, on_error: Callable[[str], None] | None = None):
        self.ui = required_widgets(root, self.WIDGETS, self.UI_NAME)
        self.logic = logic
        self.on_done = on_done
        self.on_error = on_error
        #: the nodes of the last run, by name
        self.result: dict | None = None
        self._observer = None
        self.model_selector = ModelSelector(self.ui.modelComboBox, self.ui.stepsSpinBox, self.ui.modelInfoLabel,
                                            task=logic.task, choices=synth.model_choices, max_steps=synth.MAX_STEPS,
                                            kind=self.MODEL_KIND)
        self.model_selector.fill(models)  # before the binding connects: the combo box must list the models
        self.task_panel = TaskPanel(root, parameters, logic, install=install, on_done=self._on_done,
                                    on_error=on_error)
        for name, box in (("edv", self.ui.edvSpinBox), ("esv", self.ui.esvSpinBox), ("ef", self.ui.efSpinBox)):
            # the box's value, not the signal's argument (PythonQt may pick the text overload)
            box.valueChanged.connect(
                lambda *_args, name=name, box=box: self._on_volume_edited(name, box.property("value")))
        self.ui.showResultButton.clicked.connect(self._on_show_result)
        self._watch(parameters)
        self.model_selector.watch(parameters)
        self.show_result()

    @property
    def parameters(self) -> Cardiac4DSynthParameters:
        return self.task_panel.parameters

    # -- parameter node / scene ------------------------------------------------------------
    def set_parameters(self, parameters: Cardiac4DSynthParameters) -> None:
        """Bind to a (new) parameter node, e.g. after the scene was closed."""
        self.task_panel.set_parameters(parameters)
        self.result = None
        self._watch(parameters)
        self.model_selector.watch(parameters)
        self.show_result()

    def set_scene(self, scene) -> None:
        self.task_panel.set_scene(scene)
        self.model_selector.sync()  # reconnecting the binding reset the steps range to the parameter's

    def cleanup(self) -> None:
        self._unwatch()
        self.model_selector.unwatch()
        self.task_panel.cleanup()

    def refresh_models(self, models: Sequence[Any] | None = None) -> None:
        """Read the catalogue again (e.g. after the Python packages were installed)."""
        self.model_selector.refresh(models, self.task_panel.binding)

    def _watch(self, parameters) -> None:
        self._unwatch()
        self._observer = (parameters, parameters.node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                                  lambda caller, event: self.update_form()))
        self.update_form()

    def _unwatch(self) -> None:
        if self._observer is not None:
            parameters, tag = self._observer
            parameters.node.RemoveObserver(tag)
        self._observer = None

    # -- the request -----------------------------------------------------------------------
    def _on_volume_edited(self, name: str, value: float) -> None:
        """ESV and EF follow each other through the EDV (see :func:`~Cardiac4DSynthLib.logic.link_systole`)."""
        try:
            synth.link_systole(self.parameters, name, value)
        except ValueError as error:
            self._status(str(error))

    def update_form(self) -> None:
        """Which of ESV and EF the request gives; EDV and slices greyed out while an anatomy gives them."""
        parameters = self.parameters
        if parameters is None:
            return
        given, follows = ("ESV", "EF") if parameters.systole == "ESV" else ("EF", "ESV")
        anatomy = parameters.useAnatomy
        self.ui.systoleLabel.setText(f"The request gives the {given}; the {follows} follows from the EDV"
                                     + (" (the anatomy's)" if anatomy else ""))
        for box in (self.ui.edvSpinBox, self.ui.slicesSpinBox):
            box.setEnabled(not anatomy)
        self.ui.anatomySelector.setEnabled(anatomy)

    # -- results ---------------------------------------------------------------------------
    def show_result(self) -> None:
        """The last run's measured volumes against the request (or their absence)."""
        alive = self.result_alive()
        cine = self.result["output"] if alive else None
        self.ui.resultLabel.setText(synth.measured_text(self.logic.report_of(cine)) if alive else "—")
        self.ui.showResultButton.setEnabled(alive)
        self.ui.showResultButton.setToolTip("Show the last cine with its labels in the slice views and its volume "
                                            "curves in the plot view" if alive else "Available after a run")

    def result_alive(self) -> bool:
        """Whether the last run's cine and browser are still in the scene (if not, the result is forgotten)."""
        result = self.result
        alive = result is not None and all(in_scene(result.get(name)) for name in ("output", "browser"))
        if not alive:
            self.result = None
        return alive

    def _on_done(self, created: dict) -> None:
        self.result = created
        self.show_result()
        report = self.logic.report_of(created.get("output")) or {}
        for warning in report.get("warnings_request", []):
            self._log(f"warning: {warning}")
        self.show_views()
        if self.on_done is not None:
            self.on_done(created)

    def _on_show_result(self, *_args) -> None:
        if self.result_alive():
            self.show_views()
        else:
            self.show_result()

    def show_views(self) -> None:
        """The last result in the views; without views (no layout yet) say so instead of failing."""
        if not self.result_alive():
            return
        try:
            self.logic.show(self.result)
        except ValueError as error:
            self._log(f"result not shown: {error}")
