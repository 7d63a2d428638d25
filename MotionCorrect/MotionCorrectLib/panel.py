"""The Motion Correct panel: the shared task panel plus the model selector, the calcium scores
and the before/after views.

:class:`~MedDiffusionUtilsLib.modulebase.TaskPanel` binds the .ui to the parameter node and
runs Apply/Cancel, progress and log.  This panel adds what is specific to motion correction:
the model selector filled from the catalogue (each model's description, and a steps range
that follows the model), the before/after Agatston totals and risk categories once a run is
done, and linked side-by-side views centred on the largest lesion, with a fade slider.

GUI code in the subset of Qt that PythonQt and PySide6 share, so the same panel runs in
Slicer and in the PySide6 widget tests.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Sequence

import vtk

from MedDiffusionUtilsLib import environment
from MedDiffusionUtilsLib.modulebase import TaskPanel
from MedDiffusionUtilsLib.parameters import named_widgets

from .logic import (MAX_STEPS, TASK, ModelChoice, MotionCorrectLogic, MotionCorrectParameters,
                    model_choices)

__all__ = ["MotionCorrectPanel", "score_text"]

#: Qt.ToolTipRole, spelled as a number so this module needs no Qt import
TOOLTIP_ROLE = 3


def score_text(scores: dict | None) -> str:
    """One line per scan, e.g. "Agatston 312.4 (moderate) · 3 lesions · 210.0 mm³"."""
    if not scores:
        return "—"
    lesions = int(scores.get("lesions", 0))
    return (f"Agatston {float(scores['agatston']):.1f} ({scores['category']}) · "
            f"{lesions} lesion{'' if lesions == 1 else 's'} · {float(scores['volume_mm3']):.1f} mm³")


class MotionCorrectPanel:
    """Runs MotionCorrect.ui.

    ``models`` are catalogue entries (``ModelEntry`` objects or dicts); by default the
    catalogue is read for task "motion".  ``install``, ``on_done(nodes)`` and
    ``on_error(message)`` are passed on as in :class:`TaskPanel`.
    """

    #: object names this panel needs in MotionCorrect.ui (besides those TaskPanel needs)
    WIDGETS = ("inputSelector", "roiSelector", "outputSelector", "modelComboBox", "modelInfoLabel",
               "stepsSpinBox", "deviceComboBox", "beforeScoreLabel", "afterScoreLabel",
               "fadeSlider", "centreButton", "logText")

    def __init__(self, root, parameters: MotionCorrectParameters, logic: MotionCorrectLogic, *,
                 models: Sequence[Any] | None = None, install: Callable[[], Any] | None = None,
                 on_done: Callable[[list], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        widgets = named_widgets(root)
        missing = [name for name in self.WIDGETS if name not in widgets]
        if missing:
            raise ValueError(f"MotionCorrect.ui lacks widgets {missing}")
        self.ui = SimpleNamespace(**widgets)
        self.logic = logic
        self.on_done = on_done
        self.choices: dict[str, ModelChoice] = {}
        self.catalogue_problem = ""
        #: (input, corrected volume) of the last run
        self.result: tuple[Any, Any] | None = None
        self._model_shown: str | None = None
        self._observer: int | None = None
        self._syncing = False
        self._fill_models(models)
        self.task_panel = TaskPanel(root, parameters, logic, install=install,
                                    on_done=self._on_done, on_error=on_error)
        self.ui.fadeSlider.valueChanged.connect(self._on_fade)
        self.ui.centreButton.clicked.connect(self._on_centre)
        self._watch(parameters)
        self._show_result()

    @property
    def parameters(self) -> MotionCorrectParameters:
        return self.task_panel.parameters

    # -- parameter node / scene ------------------------------------------------------------
    def set_parameters(self, parameters: MotionCorrectParameters) -> None:
        """Bind to a (new) parameter node, e.g. after the scene was closed."""
        self.task_panel.set_parameters(parameters)
        self.result = None
        self._watch(parameters)
        self._show_result()

    def set_scene(self, scene) -> None:
        self.task_panel.set_scene(scene)
        self._sync_model()  # reconnecting the binding reset the steps range to the parameter's

    def cleanup(self) -> None:
        self._unwatch()
        self.task_panel.cleanup()

    def _watch(self, parameters: MotionCorrectParameters) -> None:
        self._unwatch()
        self._model_shown = None
        self._observer = parameters.node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                     lambda caller, event: self._sync_model())
        self._sync_model()

    def _unwatch(self) -> None:
        if self._observer is not None and self.task_panel.parameters is not None:
            self.task_panel.parameters.node.RemoveObserver(self._observer)
        self._observer = None

    # -- models ----------------------------------------------------------------------------
    def refresh_models(self, models: Sequence[Any] | None = None) -> None:
        """Read the catalogue again (e.g. after the Python packages were installed)."""
        self._fill_models(models)
        if self.task_panel.binding is not None:
            self.task_panel.binding.update_widgets()
        self._model_shown = None
        self._sync_model()

    def _fill_models(self, models: Sequence[Any] | None) -> None:
        problem = ""
        if models is None:
            models, problem = environment.model_catalogue(TASK)
        self.choices = {choice.id: choice for choice in model_choices(models)}
        self.catalogue_problem = problem
        combo = self.ui.modelComboBox
        blocked = combo.blockSignals(True)
        try:
            combo.clear()
            for index, choice in enumerate(self.choices.values()):
                combo.addItem(choice.id)
                combo.setItemData(index, choice.tooltip, TOOLTIP_ROLE)
        finally:
            combo.blockSignals(blocked)
        combo.setEnabled(bool(self.choices))

    def _sync_model(self) -> None:
        """Keep a known model selected, and the steps range and model description in step.

        When the model changes its default step count is applied; a model and step count
        restored from a saved scene are kept.  A regression model runs in one pass, so its
        steps box is disabled.
        """
        if self._syncing:
            return
        self._syncing = True
        try:
            parameters = self.parameters
            first_look = self._model_shown is None
            if self.choices and parameters.model not in self.choices:
                parameters.model = next(iter(self.choices))
                first_look = False  # not a stored choice: take the model's defaults
            choice = self.choices.get(parameters.model)
            maximum = choice.max_steps if choice is not None else MAX_STEPS
            self.ui.stepsSpinBox.setMaximum(maximum)
            self.ui.stepsSpinBox.setEnabled(choice is None or not choice.single_pass)
            if parameters.model != self._model_shown:
                self._model_shown = parameters.model
                if choice is not None and not first_look:
                    parameters.steps = choice.default_steps
            if parameters.steps > maximum:
                parameters.steps = maximum
            self._show_model_info(choice)
        finally:
            self._syncing = False

    def _show_model_info(self, choice: ModelChoice | None) -> None:
        label = self.ui.modelInfoLabel
        if choice is not None:
            label.setText(choice.summary)
            label.setToolTip(choice.tooltip)
            return
        problem = f" ({self.catalogue_problem})" if self.catalogue_problem else ""
        label.setText(f"No motion-correction model found{problem}; the backend uses its default model.")
        label.setToolTip("")

    # -- results and views -----------------------------------------------------------------
    def _on_done(self, created: list) -> None:
        corrected = created[0]
        before = self.logic.input_of(corrected)
        self.result = (before, corrected) if before is not None else None
        blocked = self.ui.fadeSlider.blockSignals(True)
        self.ui.fadeSlider.setValue(0.0)
        self.ui.fadeSlider.blockSignals(blocked)
        self._show_result()
        if self.result is not None:
            self._show(lambda: self.logic.show_comparison(before, corrected))
        if self.on_done is not None:
            self.on_done(created)

    def _show_result(self) -> None:
        """The before/after totals of the last run, and the compare controls' state."""
        calcium = self.logic.calcium_of(self.result[1]) if self.result is not None else None
        self.ui.beforeScoreLabel.setText(score_text((calcium or {}).get("before")))
        self.ui.afterScoreLabel.setText(score_text((calcium or {}).get("after")))
        has_result = self.result is not None
        self.ui.fadeSlider.setEnabled(has_result)
        self.ui.fadeSlider.setToolTip("Blend the corrected volume over the input in the left view"
                                      if has_result else "Available after a run")
        has_lesion = bool(calcium and calcium.get("largest_lesion_lps") is not None)
        self.ui.centreButton.setEnabled(has_lesion)

    def _on_fade(self, value: float) -> None:
        if self._result_alive():
            before, after = self.result
            self._show(lambda: self.logic.set_fade(before, after, float(value)))

    def _on_centre(self, *_args) -> None:
        if self._result_alive():
            corrected = self.result[1]
            self._show(lambda: self.logic.centre_on_largest_lesion(corrected))

    def _result_alive(self) -> bool:
        alive = self.result is not None and all(_alive(node) for node in self.result)
        if not alive and self.result is not None:
            self.result = None
            self._show_result()
        return alive

    def _show(self, action: Callable[[], None]) -> None:
        """Change the views; without slice views (no layout yet) say so instead of failing."""
        try:
            action()
        except ValueError as error:
            self.ui.logText.appendPlainText(f"comparison views not shown: {error}")


def _alive(node) -> bool:
    return node is not None and node.GetScene() is not None
