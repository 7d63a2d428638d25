"""The model selector every task module shows: catalogue cards in, combo box entries out.

:func:`model_choices` turns catalogue entries (``ModelEntry`` objects, or dicts as
``meddiff info`` hands them over) into :class:`ModelChoice` rows: what the list, its
tooltips and the info line under it show, and the step range and default step counts the
steps box follows.  :class:`ModelSelector` keeps a model combo box, a steps spin box and an
info label in step with a parameter set's ``model``, ``steps`` and ``device``.

No Qt import: the widgets are used through the methods PythonQt and PySide6 share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import vtk

from . import environment

__all__ = ["HEADLINES", "TOOLTIP_ROLE", "ModelChoice", "card_field", "card_rank", "clamp_steps", "dose_text",
           "speed_text", "model_choices", "ModelSelector"]

#: what leads a choice's summary: the dose it was trained for, or its description's first line
HEADLINES = ("dose", "description")
#: Qt.ToolTipRole, spelled as a number so this module needs no Qt import
TOOLTIP_ROLE = 3


@dataclass(frozen=True)
class ModelChoice:
    """What the model selector shows for one catalogue entry."""

    id: str
    version: str
    description: str
    training_data: str
    #: e.g. "about 120 ms per slice on CPU" ("" if the card has no timing)
    speed: str
    max_steps: int
    default_steps: int
    #: the card's step count on a CPU (equal to ``default_steps`` unless the card says otherwise)
    cpu_steps: int
    #: e.g. "25 %" ("" for cards without a dose)
    dose: str = ""
    #: the card's ``architecture["objective"]``; "regression" runs in one pass, steps unused
    objective: str = ""
    #: the summary's first part (see :data:`HEADLINES`)
    headline: str = ""

    @property
    def single_pass(self) -> bool:
        return self.objective == "regression"

    def default_steps_for(self, device: str) -> int:
        """The card's step count for ``device`` (models may take fewer steps on a CPU)."""
        return self.cpu_steps if device == "cpu" else self.default_steps

    @property
    def steps_text(self) -> str:
        """ "10 steps", "4 steps (2 on CPU)" or "one pass (steps unused)"."""
        if self.single_pass:
            return "one pass (steps unused)"
        text = f"{self.default_steps} steps"
        if self.cpu_steps != self.default_steps:
            text += f" ({self.cpu_steps} on CPU)"
        return text

    @property
    def summary(self) -> str:
        """One line: headline, speed and steps, e.g. "trained for 25 % dose · 10 steps"."""
        return " · ".join(part for part in (self.headline, self.speed, self.steps_text) if part)

    @property
    def traits(self) -> str:
        """What tells models apart in the list, e.g. "25 % dose, about 500 ms per slice on CPU" ("" if unknown)."""
        return ", ".join(part for part in (f"{self.dose} dose" if self.dose else "", self.speed) if part)

    @property
    def tooltip(self) -> str:
        """Shown when hovering a model in the selector: id, version, traits, description, data."""
        lines = [f"{self.id} (version {self.version})", self.traits, self.description]
        if self.training_data:
            lines.append(f"Training data: {self.training_data}")
        return "\n".join(line for line in lines if line)


def card_field(entry: Any, name: str, default: Any = None) -> Any:
    """A card field from a ``ModelEntry`` or a plain dict (``meddiff info``)."""
    value = entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)
    return default if value is None else value


def card_rank(entry: Any) -> int:
    """A card's best ``default_for`` rank over the devices (1 first); cards that rank nowhere come last."""
    default_for = card_field(entry, "default_for", {}) or {}
    return min((int(v) for v in default_for.values()), default=1_000_000)


def clamp_steps(value: Any, default: int, upper: int) -> int:
    """``value`` as a step count in [1, upper]; ``default`` (clamped too) when it is no number."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = default
    return min(max(number, 1), upper)


def dose_text(value: Any) -> str:
    """0.25 or 25 -> "25 %"; a range [0.07, 0.4] -> "7-40 %"; text is shown as it is."""
    if isinstance(value, bool) or value is None or value == "":
        return ""
    if isinstance(value, (int, float)):
        percent = value * 100 if value <= 1 else value
        return f"{percent:g} %"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(dose_text(v) for v in value):
        low, high = (dose_text(v)[:-2] for v in value)
        return f"{low}-{high} %"
    return str(value)


def _duration_text(milliseconds: Any, where: str) -> str:
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, (int, float)) or milliseconds <= 0:
        return ""
    if milliseconds >= 1000:
        return f"about {milliseconds / 1000:.1f} s per slice on {where}"
    return f"about {milliseconds:.0f} ms per slice on {where}"


def speed_text(metrics: dict) -> str:
    """From ``metrics["ms_per_slice_cpu"]`` / ``["ms_per_slice_gpu"]``, e.g.
    "about 2.5 s per slice on CPU, about 12 ms per slice on GPU" ("" without timings)."""
    speeds = [_duration_text(metrics.get("ms_per_slice_cpu"), "CPU"),
              _duration_text(metrics.get("ms_per_slice_gpu"), "GPU")]
    return ", ".join(speed for speed in speeds if speed)


def model_choices(entries: Sequence[Any], *, max_steps: int, default_steps: int,
                  headline: str = "description") -> list[ModelChoice]:
    """Selector entries for catalogue entries (``ModelEntry`` objects or dicts), in order.

    Read from each card: ``metrics["dose"]`` (fraction or percent of full dose) and the
    timings (:func:`speed_text`); from its architecture the diffusion's T,
    ``diffusion.num_timesteps`` (the largest step count, at most the module's ``max_steps``,
    which is also the fallback), the default step counts ``sampler.steps`` (fallback
    ``default_steps``) and ``sampler.cpu_steps`` (fallback ``sampler.steps``), and the
    ``objective``.  ``headline`` picks what leads each summary, one of :data:`HEADLINES`.
    """
    if headline not in HEADLINES:
        raise ValueError(f"headline must be one of {HEADLINES}, got {headline!r}")
    choices = []
    for entry in entries:
        metrics = card_field(entry, "metrics", {}) or {}
        architecture = card_field(entry, "architecture", {}) or {}
        sampler = architecture.get("sampler", {}) or {}
        diffusion = architecture.get("diffusion", {}) or {}
        upper = clamp_steps(diffusion.get("num_timesteps"), max_steps, max_steps)
        steps = clamp_steps(sampler.get("steps"), default_steps, upper)
        description = str(card_field(entry, "description", ""))
        dose = dose_text(metrics.get("dose"))
        if headline == "dose":
            lead = f"trained for {dose} dose" if dose else ""
        else:
            lead = description.splitlines()[0] if description else ""
        choices.append(ModelChoice(
            id=str(card_field(entry, "id", "")), version=str(card_field(entry, "version", "")),
            description=description, training_data=str(card_field(entry, "training_data", "")),
            speed=speed_text(metrics), max_steps=upper, default_steps=steps,
            cpu_steps=clamp_steps(sampler.get("cpu_steps"), steps, upper), dose=dose,
            objective=str(architecture.get("objective", "") or ""), headline=lead))
    return choices


class ModelSelector:
    """Keeps a model combo box, a steps spin box and an info label in step with a parameter
    set's ``model``, ``steps`` and ``device``.

    ``choices`` makes :class:`ModelChoice` rows from catalogue entries (the module's own
    :func:`model_choices` settings); ``max_steps`` bounds the steps box when no model is
    known; ``kind`` names the models in the "none found" line ("low-dose CT").  The combo box
    is bound to the ``model`` parameter by the task panel's binding, so :meth:`fill` runs
    before the binding connects.
    """

    def __init__(self, combo, steps_box, info_label, *, task: str,
                 choices: Callable[[Sequence[Any]], list[ModelChoice]], max_steps: int, kind: str):
        self.combo, self.steps_box, self.info_label = combo, steps_box, info_label
        self.task = task
        self.make_choices = choices
        self.max_steps = max_steps
        self.kind = kind
        self.choices: dict[str, ModelChoice] = {}
        self.catalogue_problem = ""
        self.parameters = None
        self._model_shown: str | None = None
        self._observer: int | None = None
        self._syncing = False

    def fill(self, models: Sequence[Any] | None = None) -> None:
        """List ``models`` (catalogue entries); None reads the catalogue for the task."""
        problem = ""
        if models is None:
            models, problem = environment.model_catalogue(self.task)
        self.choices = {choice.id: choice for choice in self.make_choices(models)}
        self.catalogue_problem = problem
        blocked = self.combo.blockSignals(True)
        try:
            self.combo.clear()
            for index, choice in enumerate(self.choices.values()):
                self.combo.addItem(choice.id)
                self.combo.setItemData(index, choice.tooltip, TOOLTIP_ROLE)
        finally:
            self.combo.blockSignals(blocked)
        self.combo.setEnabled(bool(self.choices))

    def refresh(self, models: Sequence[Any] | None = None, binding=None) -> None:
        """List the models again (e.g. after the Python packages were installed); ``binding``,
        the task panel's, then selects the stored model in the refilled combo box."""
        self.fill(models)
        if binding is not None:
            binding.update_widgets()
        self.reset()

    def watch(self, parameters) -> None:
        """Follow ``parameters`` (a new parameter node, e.g. after the scene was closed)."""
        self.unwatch()
        self.parameters = parameters
        self._observer = parameters.node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                     lambda caller, event: self.sync())
        self.reset()

    def unwatch(self) -> None:
        if self._observer is not None and self.parameters is not None:
            self.parameters.node.RemoveObserver(self._observer)
        self._observer = None

    def reset(self) -> None:
        """Sync as on first sight: a model and step count stored on the node are kept."""
        self._model_shown = None
        self.sync()

    def sync(self) -> None:
        """Keep a known model selected, and the steps range and info line in step.

        When the model changes its default step count (for the chosen device) is applied; a
        model and step count restored from a saved scene are kept.  A single-pass model
        takes no steps, so its steps box is disabled.
        """
        if self._syncing or self.parameters is None:
            return
        self._syncing = True
        try:
            parameters = self.parameters
            first_look = self._model_shown is None
            if self.choices and parameters.model not in self.choices:
                parameters.model = next(iter(self.choices))
                first_look = False  # not a stored choice: take the model's defaults
            choice = self.choices.get(parameters.model)
            maximum = choice.max_steps if choice is not None else self.max_steps
            self.steps_box.setMaximum(maximum)
            self.steps_box.setEnabled(choice is None or not choice.single_pass)
            if parameters.model != self._model_shown:
                self._model_shown = parameters.model
                if choice is not None and not first_look:
                    parameters.steps = choice.default_steps_for(parameters.device)
            if parameters.steps > maximum:
                parameters.steps = maximum
            self._show_info(choice)
        finally:
            self._syncing = False

    def _show_info(self, choice: ModelChoice | None) -> None:
        if choice is not None:
            self.info_label.setText(choice.summary)
            self.info_label.setToolTip(choice.tooltip)
            return
        problem = f" ({self.catalogue_problem})" if self.catalogue_problem else ""
        self.info_label.setText(f"No {self.kind} model found{problem}; the backend uses its default model.")
        self.info_label.setToolTip("")
