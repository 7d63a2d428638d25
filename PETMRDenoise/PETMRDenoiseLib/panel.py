"""The PET/MR Denoise panel: the shared compare panel plus the MR, the fusion opacity and the lesion readout.

:class:`~MedDiffusionUtilsLib.comparepanel.ComparePanel` runs the .ui (binding, Apply/Cancel,
progress and log), keeps the model selector filled from the catalogue with a steps range
that follows the model, and shows a run's input and result in linked side-by-side views with
a fade slider.  This panel adds what is specific to PET/MR: the model follows the MR input (an
MR needs an MR-guided model, none a PET-only one), the PET's opacity over the MR in the fused
views, and the lesion SUV readout of the last run (SUVmax and SUVmean before and after).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import vtk

from MedDiffusionUtilsLib.comparepanel import ComparePanel
from MedDiffusionUtilsLib.messages import PanelMessages
from MedDiffusionUtilsLib.models import ModelChoice, card_field
from MedDiffusionUtilsLib.taskpanel import in_scene

from . import logic as petmr
from .logic import PETMRDenoiseLogic, PETMRDenoiseParameters

__all__ = ["PETMRDenoisePanel", "lesion_text"]


def _change(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.0f} %"


def lesion_text(rows: Sequence[dict]) -> str:
    """One line per lesion, e.g. "L1: SUVmax 11.7 → 10.9 (−7 %), SUVmean 8.02 → 8.10 (+1 %)"."""
    if not rows:
        return "—"
    return "\n".join(
        f"{row['lesion']}: SUVmax {row['SUVmax before']:.2f} → {row['SUVmax after']:.2f} "
        f"({_change(row['SUVmax change %'])}), SUVmean {row['SUVmean before']:.2f} → {row['SUVmean after']:.2f} "
        f"({_change(row['SUVmean change %'])})" for row in rows)


def table_rows(table_node) -> list[dict]:
    """A table node's rows as dicts (numbers for numeric columns)."""
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    return [{column.GetName(): column.GetValue(r) for column in columns} for r in range(table.GetNumberOfRows())]


class PETMRDenoisePanel(PanelMessages, ComparePanel):
    """Runs PETMRDenoise.ui (see :class:`ComparePanel` for the arguments)."""

    UI_NAME = "PETMRDenoise.ui"
    WIDGETS = ("inputSelector", "mrSelector", "outputSelector", "modelComboBox", "modelInfoLabel", "stepsSpinBox",
               "deviceComboBox", "opacitySlider", "fadeSlider", "showComparisonButton", "lesionsSelector",
               "radiusSpinBox", "measureButton", "lesionSummaryLabel", "statusLabel", "logText")
    MAX_STEPS, MODEL_KIND = petmr.MAX_STEPS, "PET/MR denoising"
    OUTPUT_NAME = "denoised PET"

    def __init__(self, root, parameters: PETMRDenoiseParameters, logic: PETMRDenoiseLogic, **options):
        #: ids of the listed models that read the MR
        self.guided: set[str] = set()
        #: the lesion table of the last readout
        self.lesion_table = None
        self.on_error = options.get("on_error")
        self._mr_shown = None
        self._mr_observer = None
        super().__init__(root, parameters, logic, **options)
        logic.opacity = float(parameters.opacity)
        self.ui.opacitySlider.valueChanged.connect(self._on_opacity)
        self.ui.showComparisonButton.clicked.connect(self._on_show_comparison)
        self.ui.measureButton.clicked.connect(self._on_measure)
        self._follow_mr(parameters)
        self._fit_model_to_mr()

    def model_choices(self, entries: Sequence[Any]) -> list[ModelChoice]:
        self.guided = {str(card_field(entry, "id")) for entry in entries if petmr.reads_mr(entry)}
        return petmr.model_choices(entries)

    # -- the model follows the MR -------------------------------------------------------------
    def set_parameters(self, parameters: PETMRDenoiseParameters) -> None:
        super().set_parameters(parameters)
        self._follow_mr(parameters)
        self._fit_model_to_mr()

    def refresh_models(self, models: Sequence[Any] | None = None) -> None:
        super().refresh_models(models)
        self._fit_model_to_mr()

    def cleanup(self) -> None:
        self._unfollow()
        super().cleanup()

    def _follow_mr(self, parameters) -> None:
        self._unfollow()
        self._mr_shown = parameters.mrVolume
        self._mr_observer = (parameters, parameters.node.AddObserver(
            vtk.vtkCommand.ModifiedEvent, lambda caller, event: self._on_parameters_modified()))

    def _unfollow(self) -> None:
        if self._mr_observer is not None:
            parameters, tag = self._mr_observer
            parameters.node.RemoveObserver(tag)
        self._mr_observer = None

    def _on_parameters_modified(self) -> None:
        parameters = self.parameters
        self.update_measure()
        if parameters.mrVolume is self._mr_shown:
            return
        self._mr_shown = parameters.mrVolume
        self._fit_model_to_mr(report=True)

    def _fit_model_to_mr(self, report: bool = False) -> None:
        """An MR chosen: select an MR-guided model; none: a PET-only one (the first the cards rank),
        unless the selected model already fits."""
        parameters = self.parameters
        guided = parameters.mrVolume is not None
        choices = self.model_selector.choices
        if not choices or (parameters.model in self.guided) == guided:
            return
        fitting = [model for model in choices if (model in self.guided) == guided]
        if fitting:
            parameters.model = fitting[0]
        elif report:
            self.ui.logText.appendPlainText(
                "No installed model reads an MR; clear the MR to denoise the PET alone" if guided else
                "Every installed model is MR-guided; choose the patient's MR")

    # -- results and views -----------------------------------------------------------------
    def show_result(self) -> None:
        """The result buttons' state, and the last readout (or its absence)."""
        super().show_result()
        self.ui.showComparisonButton.setEnabled(self.result is not None)
        self.ui.opacitySlider.setEnabled(self.result is not None and self.logic.mr_of(self.result[1]) is not None)
        if self.result is None or not in_scene(self.lesion_table):
            self.ui.lesionSummaryLabel.setText("—")
        self.update_measure()

    def update_measure(self) -> None:
        button = self.ui.measureButton
        ready = self.result is not None and self.parameters.lesions is not None
        button.setEnabled(ready)
        button.setToolTip("Read SUVmax and SUVmean of each lesion before and after" if ready else
                          "Available after a run, with lesion points or an ROI selected")

    def forget_result(self) -> None:
        super().forget_result()
        self.lesion_table = None

    def show_comparison(self, before, after) -> None:
        self.logic.opacity = float(self.parameters.opacity)
        super().show_comparison(before, after)

    def _on_opacity(self, value: float) -> None:
        self.logic.opacity = float(value)
        if self.result_alive():
            before, after = self.result
            self.show_views(lambda: self.logic.set_opacity(before, after, float(value)))

    def _on_show_comparison(self, *_args) -> None:
        if self.result_alive():
            before, after = self.result
            self.ui.fadeSlider.setValue(0.0)
            self.show_views(lambda: self.show_comparison(before, after))

    # -- lesion readout --------------------------------------------------------------------
    def _on_measure(self, *_args) -> None:
        if not self.result_alive():
            return
        before, after = self.result
        parameters = self.parameters
        table = self._try(lambda: self.logic.measure_lesions(before, after, parameters.lesions,
                                                             radius_mm=float(parameters.radiusMm)))
        if table is None:
            return
        self.lesion_table = table
        rows = table_rows(table)
        self.ui.lesionSummaryLabel.setText(lesion_text(rows))
        self._status(f"{len(rows)} lesion{'s' if len(rows) != 1 else ''} measured into '{table.GetName()}'")
