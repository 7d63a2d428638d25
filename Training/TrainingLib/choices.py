"""What can be trained: the module's parameters, the trainable tasks and their defaults.

Every registered task with a training recipe is offered; choosing one takes its recipe's
network size, steps, batch size and learning rate, and a data source it accepts.  No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from meddiffusion.tasks import registry
from meddiffusion.training.recipe import DATA_SOURCES, LOWDOSE_FOLDER, PAIRED_FOLDER, PHANTOM, recipe_of

from MedDiffusionUtilsLib.parameters import Choice, Float, Int, ParameterSet, Text

__all__ = ["MODULE", "DEFAULT_RUNS_FOLDER", "SCENE_FOLDER", "DATA_FROM", "SOURCE_LABELS", "TrainingParameters",
           "TaskChoice", "training_tasks", "find_task", "task_values"]

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
    extraOptions = Text("")  #: further flags of ``meddiff train <task>`` (e.g. ``--dose 0.1``)
    runsFolder = Text("")
    registerId = Text("")


# -- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskChoice:
    """A registry task that has a training recipe, as the task selector shows it."""

    name: str
    title: str
    description: str
    configs: dict[str, str]
    sources: tuple[str, ...]
    defaults: dict[str, Any]

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
        found.append(TaskChoice(spec.name, spec.title, recipe.description, dict(recipe.configs),
                                tuple(recipe.sources), dict(recipe.defaults)))
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
    are the task's catalogue models)."""
    values = {"task": choice.name, "config": choice.default_config}
    for key, parameter in (("steps", "steps"), ("batch_size", "batchSize"), ("lr", "learningRate")):
        if key in choice.defaults:
            values[parameter] = choice.defaults[key]
    if parameters.source not in choice.sources:
        values["source"] = choice.sources[0]
    if parameters.baseModel and parameters.baseModel not in set(model_ids):
        values["baseModel"] = ""
    return values
