"""The LDCT Denoise panel: the shared compare panel plus the difference volume.

:class:`~MedDiffusionUtilsLib.comparepanel.ComparePanel` runs the .ui (binding, Apply/Cancel,
progress and log), keeps the model selector filled from the catalogue with a steps range
that follows the model, and shows a run's input and result in linked side-by-side views
with a fade slider.  This panel adds what is specific to denoising: each model listed with
the dose it was trained for and its speed, and a difference volume on request.
"""

from __future__ import annotations

from MedDiffusionUtilsLib.comparepanel import ComparePanel
from MedDiffusionUtilsLib.taskpanel import in_scene

from . import logic as ldct
from .logic import LDCTDenoiseLogic, LDCTDenoiseParameters

__all__ = ["LDCTDenoisePanel"]


class LDCTDenoisePanel(ComparePanel):
    """Runs LDCTDenoise.ui (see :class:`ComparePanel` for the arguments)."""

    UI_NAME = "LDCTDenoise.ui"
    WIDGETS = ("inputSelector", "outputSelector", "modelComboBox", "modelInfoLabel",
               "stepsSpinBox", "deviceComboBox", "fadeSlider", "differenceCheckBox", "logText")
    MAX_STEPS, MODEL_KIND = ldct.MAX_STEPS, "low-dose CT"
    OUTPUT_NAME = "denoised volume"
    model_choices = staticmethod(ldct.model_choices)

    def __init__(self, root, parameters: LDCTDenoiseParameters, logic: LDCTDenoiseLogic, **options):
        #: the difference volume of the last run, once made
        self.difference = None
        super().__init__(root, parameters, logic, **options)
        self.ui.differenceCheckBox.toggled.connect(self._on_difference_toggled)

    # -- before / after --------------------------------------------------------------------
    def forget_result(self) -> None:
        super().forget_result()
        self.difference = None

    def show_comparison(self, before, after) -> None:
        self.logic.show_comparison(before, after, difference=self._shown_difference())

    def _on_done(self, created: dict) -> None:
        self.difference = created.get("difference")
        super()._on_done(created)

    def _on_difference_toggled(self, checked: bool) -> None:
        if not self.result_alive():
            return  # the parameter is stored; the next run makes the difference volume
        before, after = self.result
        if checked and not in_scene(self.difference):
            self.difference = self.logic.difference(before, after)
        self.show_views(lambda: self.logic.show_after(self._shown_difference() or after))

    def _shown_difference(self):
        return self.difference if self.ui.differenceCheckBox.isChecked() and in_scene(self.difference) else None
