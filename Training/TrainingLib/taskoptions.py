"""The Training panel's widgets of the chosen task's own options, made from its recipe.

Each ``TaskOption`` gets a widget by its kind: a combo box of its choices, a combo box of the
task's catalogue models (first "(default)", the recipe's own choice), a spin box for a number,
a check box for a switch.  What names the network (variant, models, switches) sits under the
task, the numbers with the training settings.  An edit goes to the logic at once, which keeps
the values for the command line; an option the run would not read with the others' values
(``--vae`` of a VAE run, say) is disabled.  GUI code in the subset of Qt that PythonQt and
PySide6 share.
"""

from __future__ import annotations

from typing import Any, Sequence

from .choices import CHOICE, FLAG, FLOAT, INT, MODEL, TaskOption
from .volumerows import current_data

__all__ = ["TaskOptions", "DEFAULT_MODEL", "NUMBER_LIMIT"]

DEFAULT_MODEL = "(default)"
#: the largest number a spin box takes (recipes leave their options unbounded)
NUMBER_LIMIT = 2_000_000_000


class TaskOptions:
    """Mixin of TrainingPanel for ``ui.taskOptionsWidget`` (variant, models, switches) and
    ``ui.taskSettingsWidget`` (numbers), each holding a QFormLayout.

    The panel has ``ui``, ``logic``, ``parameters``, ``_filling``, ``_status`` and ``update_buttons``.
    """

    def _show_task_options(self, models: Sequence[Any] = ()) -> None:
        """One row per option of the chosen task, showing the values set; ``models`` are its catalogue models."""
        ui, values = self.ui, self.logic.task_options()
        self.option_widgets: dict[str, Any] = {}
        self._filling = True
        try:
            for container in (ui.taskOptionsWidget, ui.taskSettingsWidget):
                layout = container.layout()
                while layout.rowCount():
                    layout.removeRow(0)
            for option in self.logic.task_choice().options:
                widget = self._option_widget(option, values.get(option.flag, option.default), models)
                widget.setToolTip(option.help)
                container = ui.taskSettingsWidget if option.kind in (INT, FLOAT) else ui.taskOptionsWidget
                container.layout().addRow(option.label, widget)
                self.option_widgets[option.flag] = widget
            for container in (ui.taskOptionsWidget, ui.taskSettingsWidget):
                container.setVisible(container.layout().rowCount() > 0)
        finally:
            self._filling = False
        self._enable_task_options()

    def _option_widget(self, option: TaskOption, value: Any, models: Sequence[Any]):
        import qt

        def edited(*_args) -> None:
            self._on_option_edited(option, widget)

        if option.kind in (CHOICE, MODEL):
            widget = qt.QComboBox()
            items = ([(c, c) for c in option.choices] if option.kind == CHOICE else
                     [(DEFAULT_MODEL, ""), *((entry.id, entry.id) for entry in models)])
            if value not in [data for _, data in items]:  # a model no longer in the catalogue is still shown
                items.append((str(value), value))
            for text, data in items:
                widget.addItem(text, data)
            widget.setCurrentIndex(max(widget.findData(value), 0))
            widget.currentIndexChanged.connect(edited)
        elif option.kind == FLAG:
            widget = qt.QCheckBox()
            widget.setChecked(bool(value))
            widget.toggled.connect(edited)
        else:
            widget = qt.QSpinBox() if option.kind == INT else qt.QDoubleSpinBox()
            if option.kind == FLOAT:
                widget.setDecimals(option.decimals)
                widget.setSingleStep(option.step)
            widget.setRange(min(0, option.default), NUMBER_LIMIT)
            widget.setValue(value)
            widget.valueChanged.connect(edited)
        return widget

    def _on_option_edited(self, option: TaskOption, widget) -> None:
        if self._filling:
            return
        value = (current_data(widget) if option.kind in (CHOICE, MODEL) else widget.isChecked()
                 if option.kind == FLAG else widget.property("value"))
        try:
            self.logic.set_task_option(option.flag, value)
        except ValueError as error:
            self._status(str(error))
        self._enable_task_options()
        self.update_buttons()

    def _enable_task_options(self) -> None:
        """Only the options the run reads with the others' values are enabled."""
        read = {option.flag for option in self.logic.read_options()}
        for flag, widget in getattr(self, "option_widgets", {}).items():
            widget.setEnabled(flag in read)
