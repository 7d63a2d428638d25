"""The panel of a task module that runs a catalogue model and compares input and result.

:class:`ComparePanel` is a :class:`~MedDiffusionUtilsLib.taskpanel.TaskPanel` plus a model
selector kept in step with the parameters and the last run's before/after pair with its fade
slider, shown through the module's :class:`~MedDiffusionUtilsLib.compare.CompareTaskLogic`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .binding import required_widgets
from .compare import CompareTaskLogic
from .models import ModelChoice, ModelSelector
from .parameters import ParameterSet
from .taskpanel import TaskPanel, in_scene

__all__ = ["ComparePanel"]


class ComparePanel:
    """A task module's panel that runs a catalogue model and shows the input beside the result.

    The .ui must hold ``WIDGETS``; it is run by a :class:`TaskPanel`, its ``modelComboBox``,
    ``stepsSpinBox`` and ``modelInfoLabel`` are kept in step with the parameters by a
    :class:`~MedDiffusionUtilsLib.models.ModelSelector`, and ``result`` holds the (input,
    output) pair of the last run while both are in the scene, ``fadeSlider`` blending the
    output over the input.  ``models`` are catalogue entries (``ModelEntry`` objects or dicts;
    by default the catalogue is read for the logic's task); ``install``, ``on_done(nodes by
    name)`` and ``on_error(message)`` are passed on as in :class:`TaskPanel`.

    A subclass names its .ui (``UI_NAME``, ``WIDGETS``), its models (``MAX_STEPS``,
    ``MODEL_KIND``, :meth:`model_choices`) and the output (``OUTPUT_NAME``), connects its own
    widgets after ``super().__init__``, and extends :meth:`show_result` / :meth:`forget_result`
    for what else it shows of a result.
    """

    #: the .ui file's name, for messages
    UI_NAME = ""
    #: object names the panel needs in the .ui (besides those TaskPanel needs)
    WIDGETS = ("modelComboBox", "modelInfoLabel", "stepsSpinBox", "fadeSlider", "logText")
    #: the steps box's bound without a model, and what the models are called in the "none
    #: found" line ("low-dose CT")
    MAX_STEPS, MODEL_KIND = 1, ""
    #: the output in the fade slider's tooltip ("denoised volume")
    OUTPUT_NAME = "result"

    def __init__(self, root, parameters: ParameterSet, logic: CompareTaskLogic, *,
                 models: Sequence[Any] | None = None, install: Callable[[], Any] | None = None,
                 on_done: Callable[[dict], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.ui = required_widgets(root, self.WIDGETS, self.UI_NAME)
        self.logic = logic
        self.on_done = on_done
        #: (input, output) of the last run
        self.result: tuple[Any, Any] | None = None
        self.model_selector = ModelSelector(self.ui.modelComboBox, self.ui.stepsSpinBox,
                                            self.ui.modelInfoLabel, task=logic.task,
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

    def _on_done(self, created: dict) -> None:
        after = created["output"]
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
