"""The SPECT Attenuation panel: the shared compare panel plus the attenuation input and the polar map.

:class:`~MedDiffusionUtilsLib.comparepanel.ComparePanel` runs the .ui (binding, Apply/Cancel,
progress and log), keeps the model selector filled from the catalogue with a steps range
that follows the model, and shows a run's NAC and AC in linked side-by-side views with a fade
slider.  This panel adds what is specific to SPECT: the model follows the attenuation input
(a CT or μ-map needs the teacher, none a CT-free model), the polar map's category changes
once a run is done, and buttons that show the bull's-eyes or go back to NAC | AC.
"""

from __future__ import annotations

from typing import Any, Sequence

import vtk

from MedDiffusionUtilsLib.comparepanel import ComparePanel
from MedDiffusionUtilsLib.models import ModelChoice, card_field
from MedDiffusionUtilsLib.taskpanel import in_scene

from . import logic as spect
from .logic import SPECTAttenuationLogic, SPECTAttenuationParameters

__all__ = ["SPECTAttenuationPanel", "polar_text"]


def polar_text(report: dict | None) -> str:
    """One line on the polar maps, e.g. "3 of 17 segments change category: 1, 7, 13"."""
    changed = (report or {}).get("changed_segments")
    if changed is None:
        return "—"
    if not changed:
        return "No segment changes category after correction"
    noun = "segment changes" if len(changed) == 1 else "segments change"
    return f"{len(changed)} of 17 {noun} category after correction: {', '.join(map(str, changed))}"


class SPECTAttenuationPanel(ComparePanel):
    """Runs SPECTAttenuation.ui (see :class:`ComparePanel` for the arguments)."""

    UI_NAME = "SPECTAttenuation.ui"
    WIDGETS = ("inputSelector", "attenuationSelector", "outputSelector", "modelComboBox", "modelInfoLabel",
               "stepsSpinBox", "deviceComboBox", "polarMapCheckBox", "shortAxisCheckBox", "muEstimateCheckBox",
               "polarSummaryLabel", "showPictureButton", "fadeSlider", "showComparisonButton", "logText")
    MAX_STEPS, MODEL_KIND = spect.MAX_STEPS, "SPECT attenuation-correction"
    OUTPUT_NAME = "attenuation-corrected volume"

    def __init__(self, root, parameters: SPECTAttenuationParameters, logic: SPECTAttenuationLogic, **options):
        #: ids of the listed models that need a CT or μ-map (PADM teachers)
        self.teachers: set[str] = set()
        #: the bull's-eye picture of the last run, once made
        self.picture = None
        self._attenuation_shown = None
        self._attenuation_observer = None
        super().__init__(root, parameters, logic, **options)
        self.ui.showPictureButton.clicked.connect(self._on_show_picture)
        self.ui.showComparisonButton.clicked.connect(self._on_show_comparison)
        self._follow_attenuation(parameters)

    def model_choices(self, entries: Sequence[Any]) -> list[ModelChoice]:
        self.teachers = {str(card_field(entry, "id")) for entry in entries if spect.is_teacher(entry)}
        return spect.model_choices(entries)

    # -- the model follows the attenuation input -------------------------------------------
    def set_parameters(self, parameters: SPECTAttenuationParameters) -> None:
        super().set_parameters(parameters)
        self._follow_attenuation(parameters)

    def cleanup(self) -> None:
        self._unfollow()
        super().cleanup()

    def _follow_attenuation(self, parameters) -> None:
        self._unfollow()
        self._attenuation_shown = parameters.attenuationVolume
        self._attenuation_observer = (parameters, parameters.node.AddObserver(
            vtk.vtkCommand.ModifiedEvent, lambda caller, event: self._on_parameters_modified()))

    def _unfollow(self) -> None:
        if self._attenuation_observer is not None:
            parameters, tag = self._attenuation_observer
            parameters.node.RemoveObserver(tag)
        self._attenuation_observer = None

    def _on_parameters_modified(self) -> None:
        """A CT or μ-map chosen: select a teacher; cleared: a CT-free model (when the list has one)."""
        parameters = self.parameters
        attenuation = parameters.attenuationVolume
        if attenuation is self._attenuation_shown:
            return
        self._attenuation_shown = attenuation
        guided = attenuation is not None
        if not self.model_selector.choices or (parameters.model in self.teachers) == guided:
            return
        fitting = [model for model in self.model_selector.choices if (model in self.teachers) == guided]
        if fitting:
            parameters.model = fitting[0]
        else:
            self.ui.logText.appendPlainText(
                "No installed model attends to a CT or attenuation map; the run will fail unless the CT is "
                "cleared" if guided else "Every installed model needs a CT or attenuation map")

    # -- results and views -----------------------------------------------------------------
    def show_result(self) -> None:
        """The polar map's category changes of the last run, and the result buttons' state."""
        report = self.logic.report_of(self.result[1]) if self.result is not None else None
        self.ui.polarSummaryLabel.setText(polar_text(report))
        super().show_result()
        self.ui.showPictureButton.setEnabled(self.result is not None and in_scene(self.picture))
        self.ui.showComparisonButton.setEnabled(self.result is not None)

    def forget_result(self) -> None:
        super().forget_result()
        self.picture = None

    def _on_done(self, created: dict) -> None:
        self.picture = created.get("png")
        super()._on_done(created)

    def _on_show_picture(self, *_args) -> None:
        if self.result_alive() and in_scene(self.picture):
            picture = self.picture
            self.show_views(lambda: self.logic.show_picture(picture))

    def _on_show_comparison(self, *_args) -> None:
        if self.result_alive():
            before, after = self.result
            self.show_views(lambda: self.logic.show_comparison(before, after,
                                                               fade=float(self.ui.fadeSlider.property("value") or 0.0)))
