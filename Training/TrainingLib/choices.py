"""What can be trained: the module's parameters, the trainable tasks, their defaults and own options.

Every registered task with a training recipe is offered; choosing one takes its recipe's
network size, steps, batch size and learning rate, and a data source it accepts.  The recipe's
own options (``--variant``, ``--vae ID`` ...) are offered as :class:`TaskOption` s, their values
kept on the parameter node as JSON (``taskOptions``) for the command line; the further volumes
a pair may bring (a SPECT study's CT or μ-map) are the recipe's ``extras``.  No Qt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from meddiffusion.tasks import registry
from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import DATA_SOURCES, LOWDOSE_FOLDER, PAIRED_FOLDER, PHANTOM, recipe_of

from MedDiffusionUtilsLib.parameters import Choice, Float, Int, ParameterSet, Text

__all__ = ["MODULE", "DEFAULT_RUNS_FOLDER", "SCENE_FOLDER", "DATA_FROM", "SOURCE_LABELS", "OWN_FLAGS", "CHOICE",
           "MODEL", "INT", "FLOAT", "FLAG", "TrainingParameters", "TaskOption", "TaskChoice", "task_option",
           "training_tasks", "find_task", "task_values", "option_values", "options_read", "option_problems"]

MODULE = "Training"
#: where runs are created unless the user picks another folder (the module's setting)
DEFAULT_RUNS_FOLDER = Path.home() / ".meddiffusion" / "runs"
#: the run's sub-folder holding volumes taken from the scene (``data/`` is the backend's cache)
SCENE_FOLDER = "volumes"
#: where the user's volumes come from, besides the built-in phantom
DATA_FROM = ("scene", "folder", "manifest")
#: what the source combo box shows for each backend data source
SOURCE_LABELS = {
    PHANTOM: "Built-in phantom (simulated pairs)",
    PAIRED_FOLDER: "Pairs (input + target)",
    "clean-folder": "Clean volumes (pairs made by the task's physics)",
    LOWDOSE_FOLDER: "Low-dose volumes only (self-supervised)",
}
#: recipe options the module's data widgets set (folder or manifest, validation patients), not offered twice
OWN_FLAGS = ("--data", "--val-patients")
#: how a task option is edited: a combo box of its choices, one of the task's catalogue models (an option
#: whose metavar is ``ID``), a whole or real number, a check box (``store_true``)
CHOICE, MODEL, INT, FLOAT, FLAG = "choice", "model", "int", "float", "flag"


class TrainingParameters(ParameterSet):
    """What the module remembers with the scene; scene volumes are node references (see ``scene_volumes``)."""

    task = Text("")
    baseModel = Text("")  #: a catalogue model to fine-tune, "" to train from scratch
    source = Choice(PHANTOM, choices=tuple(DATA_SOURCES))
    dataFrom = Choice("scene", choices=DATA_FROM)
    dataPath = Text("")  #: a folder, or a CSV manifest
    valPatients = Float(0.2, minimum=0.0)
    config = Text("")
    steps = Int(200, minimum=1, maximum=10_000_000)
    batchSize = Int(4, minimum=1, maximum=4096)
    learningRate = Float(1e-3, minimum=1e-9, maximum=1.0)
    device = Choice("auto", choices=("auto", "cpu", "cuda", "mps"))
    precision = Choice("auto", choices=("auto", "fp32", "bf16", "fp16"))
    gpus = Int(1, minimum=1, maximum=64)
    sceneRows = Int(0, minimum=0)  #: rows of scene volumes (see TrainingLogic.set_scene_volumes)
    previewEvery = Int(20, minimum=0, maximum=1_000_000)
    taskOptions = Text("")  #: the task's own options set away from their defaults, JSON ``{flag: value}``
    extraOptions = Text("")  #: further flags of ``meddiff train <task>`` (e.g. ``--dose 0.1``)
    runsFolder = Text("")
    registerId = Text("")


# -- a task's own options ------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskOption:
    """One option of a recipe as the panel edits it; ``read_with`` (flag, values): read only while
    that option has one of these values (the recipe's ``read_with``)."""

    flag: str
    kind: str
    help: str = ""
    default: Any = None
    choices: tuple[str, ...] = ()
    read_with: tuple[str, tuple[str, ...]] | None = None

    @property
    def label(self) -> str:
        words = self.flag.lstrip("-").replace("-", " ").capitalize()
        return f"{words} model:" if self.kind == MODEL else f"{words}:"

    @property
    def decimals(self) -> int:
        """Decimals that show the default of a real number (1e-7 needs 9)."""
        return max(2, 2 - math.floor(math.log10(abs(self.default)))) if self.default else 2

    @property
    def step(self) -> float:
        """A spin box's step for a real number: the default's order of magnitude."""
        return 10.0 ** math.floor(math.log10(abs(self.default))) if self.default else 1.0

    def check(self, value: Any) -> Any:
        """``value`` in the option's type; a ValueError names the option and what it takes."""
        if self.kind == FLAG:
            return bool(value)
        if self.kind in (INT, FLOAT):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if math.isnan(number) or (self.kind == INT and number != int(number)):
                raise ValueError(f"{self.flag} takes a {'whole ' if self.kind == INT else ''}number, got {value!r}")
            return int(number) if self.kind == INT else number
        value = "" if value is None else str(value).strip()
        if self.kind == CHOICE and value not in self.choices:
            raise ValueError(f"{self.flag} takes one of {', '.join(self.choices)}, got {value!r}")
        return value

    def words(self, value: Any) -> list[str]:
        """The command-line words of ``value`` (a real number exactly, as Python writes it)."""
        value = self.check(value)
        if self.kind == FLAG:
            return [self.flag] if value else []
        return [self.flag, repr(value) if self.kind == FLOAT else str(value)]


def task_option(option: Option, read_with: tuple[str, tuple[str, ...]] | None = None) -> TaskOption | None:
    """The recipe option ``option`` as the panel offers it, or None for one it leaves to the further options
    (several values, a free text such as a folder) or sets itself (``OWN_FLAGS``)."""
    flag, kwargs = option.flags[0], option.kwargs
    if flag in OWN_FLAGS or kwargs.get("nargs") is not None:
        return None
    kind = (FLAG if kwargs.get("action") == "store_true" else CHOICE if kwargs.get("choices") else
            MODEL if kwargs.get("metavar") == "ID" else
            {int: INT, float: FLOAT}.get(kwargs.get("type")) if kwargs.get("default") is not None else None)
    if kind is None:
        return None
    default = False if kind == FLAG else "" if kind == MODEL else kwargs.get("default")
    return TaskOption(flag, kind, kwargs.get("help", "").replace("%%", "%"), default,
                      tuple(str(choice) for choice in kwargs.get("choices", ())), read_with)


def option_values(parameters) -> dict[str, Any]:
    """The task options set away from their defaults (``taskOptions``), by flag."""
    text = parameters.taskOptions.strip()
    return json.loads(text) if text else {}


def options_read(options: Iterable[TaskOption], values: dict[str, Any]) -> list[TaskOption]:
    """The options the run reads with ``values``: those without ``read_with`` and those whose other
    option has one of the values it names."""
    options = list(options)
    defaults = {option.flag: option.default for option in options}
    return [option for option in options if option.read_with is None
            or values.get(option.read_with[0], defaults.get(option.read_with[0])) in option.read_with[1]]


def option_problems(options: Iterable[TaskOption], values: dict[str, Any], task: str) -> list[str]:
    """What is wrong with the stored option values (an option the task lacks, a value it refuses), in words."""
    known, problems = {option.flag: option for option in options}, []
    for flag, value in values.items():
        if flag not in known:
            problems.append(f"{task} has no option {flag}")
            continue
        try:
            known[flag].check(value)
        except ValueError as error:
            problems.append(str(error))
    return problems


# -- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskChoice:
    """A registry task that has a training recipe, as the task selector shows it.

    ``options``: its own options the panel offers; ``extras``: the further volumes of a pair, by
    manifest column, with their words.
    """

    name: str
    title: str
    description: str
    configs: dict[str, str]
    sources: tuple[str, ...]
    defaults: dict[str, Any]
    options: tuple[TaskOption, ...] = ()
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def default_config(self) -> str:
        return "small" if "small" in self.configs else next(iter(self.configs))

    def config_label(self, config: str) -> str:
        return f"{config} ({self.configs[config]})"


def training_tasks() -> list[TaskChoice]:
    """Every registered task with a recipe, in registry order (a new task appears by registering)."""
    found = []
    for spec in registry.all_tasks():
        if not spec.recipe:
            continue
        recipe = recipe_of(spec)
        options = (task_option(option, recipe.read_with.get(option.flags[0])) for option in recipe.options)
        found.append(TaskChoice(spec.name, spec.title, recipe.description, dict(recipe.configs),
                                tuple(recipe.sources), dict(recipe.defaults), tuple(o for o in options if o),
                                dict(recipe.extras)))
    return found


def find_task(name: str) -> TaskChoice:
    """The trainable task ``name``; a ValueError names the ones there are."""
    for choice in training_tasks():
        if choice.name == name:
            return choice
    raise ValueError(f"no trainable task '{name}'; choose one of {', '.join(t.name for t in training_tasks())}")


def task_values(choice: TaskChoice, parameters: TrainingParameters, model_ids: Iterable[str]) -> dict[str, Any]:
    """The parameter values that make ``choice`` the task: its recipe's defaults (network size, steps,
    batch, learning rate), a data source it accepts, no base model of another task (``model_ids``
    are the task's catalogue models); its own options at their defaults."""
    values = {"task": choice.name, "config": choice.default_config, "taskOptions": ""}
    for key, parameter in (("steps", "steps"), ("batch_size", "batchSize"), ("lr", "learningRate")):
        if key in choice.defaults:
            values[parameter] = choice.defaults[key]
    if parameters.source not in choice.sources:
        values["source"] = choice.sources[0]
    if parameters.baseModel and parameters.baseModel not in set(model_ids):
        values["baseModel"] = ""
    return values
