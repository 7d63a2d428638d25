"""The Motion Correct panel: the shared compare panel plus the calcium scores.

:class:`~MedDiffusionUtilsLib.comparepanel.ComparePanel` runs the .ui (binding, Apply/Cancel,
progress and log), keeps the model selector filled from the catalogue with a steps range
that follows the model, and shows a run's input and result in linked side-by-side views
with a fade slider.  This panel adds what is specific to motion correction: each model
listed with its description (a regression model runs in one pass, its steps box disabled),
the before/after Agatston totals and risk categories once a run is done, and views centred
on the largest lesion.
"""

from __future__ import annotations

from MedDiffusionUtilsLib.comparepanel import ComparePanel

from . import logic as motion
from .logic import MotionCorrectLogic, MotionCorrectParameters

__all__ = ["MotionCorrectPanel", "score_text"]


def score_text(scores: dict | None) -> str:
    """One line per scan, e.g. "Agatston 312.4 (moderate) · 3 lesions · 210.0 mm³"."""
    if not scores:
        return "—"
    lesions = int(scores.get("lesions", 0))
    return (f"Agatston {float(scores['agatston']):.1f} ({scores['category']}) · "
            f"{lesions} lesion{'' if lesions == 1 else 's'} · {float(scores['volume_mm3']):.1f} mm³")


class MotionCorrectPanel(ComparePanel):
    """Runs MotionCorrect.ui (see :class:`ComparePanel` for the arguments)."""

    UI_NAME = "MotionCorrect.ui"
    WIDGETS = ("inputSelector", "roiSelector", "outputSelector", "modelComboBox", "modelInfoLabel",
               "stepsSpinBox", "deviceComboBox", "beforeScoreLabel", "afterScoreLabel",
               "fadeSlider", "centreButton", "logText")
    MAX_STEPS, MODEL_KIND = motion.MAX_STEPS, "motion-correction"
    OUTPUT_NAME = "corrected volume"
    model_choices = staticmethod(motion.model_choices)

    def __init__(self, root, parameters: MotionCorrectParameters, logic: MotionCorrectLogic, **options):
        super().__init__(root, parameters, logic, **options)
        self.ui.centreButton.clicked.connect(self._on_centre)

    # -- results and views -----------------------------------------------------------------
    def show_result(self) -> None:
        """The before/after totals of the last run, and the compare controls' state."""
        calcium = self.logic.calcium_of(self.result[1]) if self.result is not None else None
        self.ui.beforeScoreLabel.setText(score_text((calcium or {}).get("before")))
        self.ui.afterScoreLabel.setText(score_text((calcium or {}).get("after")))
        super().show_result()
        has_lesion = bool(calcium and calcium.get("largest_lesion_lps") is not None)
        self.ui.centreButton.setEnabled(has_lesion)

    def _on_centre(self, *_args) -> None:
        if self.result_alive():
            corrected = self.result[1]
            self.show_views(lambda: self.logic.centre_on_largest_lesion(corrected))
