"""What a task declares to be trained by ``meddiff train <task>``: its :class:`Recipe`.

A task's recipe module (``TaskSpec.recipe``) exposes ``RECIPE``. It says what the command line
offers (network sizes, options, per-task defaults of the common options) and which data
sources the task can learn from, and it supplies the few functions the one training loop
(:func:`meddiffusion.training.loop.train`) calls: build the data, make the network, its loss
and validation, and the model card's task fields. Everything else (run folder, EMA,
checkpoints, resume, ``metrics.jsonl``, export and registration) is the loop's.

The module that declares ``RECIPE`` imports nothing heavy at its top, because ``meddiff
--help`` builds every task's ``train`` parser from it; its functions import torch when called.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meddiffusion.tasks.registry import Option, TaskSpec

__all__ = ["PHANTOM", "PAIRED_FOLDER", "CLEAN_FOLDER", "LOWDOSE_FOLDER", "DATA_SOURCES", "Recipe", "TrainingData",
           "Outcome", "Score", "recipe_of"]

#: the data sources a recipe can accept
PHANTOM, PAIRED_FOLDER, CLEAN_FOLDER, LOWDOSE_FOLDER = "phantom", "paired-folder", "clean-folder", "lowdose-folder"
DATA_SOURCES = {
    PHANTOM: "pairs simulated from the built-in thorax phantom",
    PAIRED_FOLDER: "a folder of the user's paired volumes (input and target)",
    CLEAN_FOLDER: "a folder of the user's clean volumes, made into pairs by the task's physics",
    LOWDOSE_FOLDER: "a folder of the user's low-dose volumes alone, for a self-supervised fine-tune",
}


@dataclass
class TrainingData:
    """What ``build_data`` returns: map-style training and validation datasets, and facts for the card.

    ``info`` holds whatever the recipe's ``card`` reports about the data (counts, score ranges).
    """

    train: Any
    val: Any
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What ``card`` receives after training: the data, the validation metrics before and after, the steps.

    ``val_start`` is empty when the run resumed (the untrained network was scored before).
    """

    data: TrainingData
    val_start: dict[str, float]
    val_end: dict[str, float]
    steps: int
    parent: Any = None  #: the catalogue card a ``--from-model`` fine-tune started from


@dataclass
class Score:
    """What ``score`` returns: a network's validation metrics and which one the registration gate compares.

    ``conclusive`` False: the metric can rank models but not vouch for one (a self-supervised
    proxy), so the gate never registers on it alone.
    """

    values: dict[str, float]
    metric: str
    higher_is_better: bool = True
    conclusive: bool = True

    def at_least(self, other: "Score") -> bool:
        """Whether this score is at least as good as ``other``'s on the gate's metric."""
        mine, theirs = self.values[self.metric], other.values[self.metric]
        return mine >= theirs if self.higher_is_better else mine <= theirs


@dataclass(frozen=True)
class Recipe:
    """One task's training: the command line it offers and the functions the loop calls.

    ``configs`` maps network sizes (``--config``) to where each is meant to run; ``options`` are
    the task's own flags and ``defaults`` its values of the common ones (``steps``, ``lr``, ...);
    ``sources`` the data it accepts (keys of :data:`DATA_SOURCES`); ``ema_cap`` the largest EMA
    decay (``training.loop.ema_decay``). Two declarations are read by a GUI (the Slicer Training
    module) to offer what the command line takes: ``extras``, the further volumes a
    ``paired-folder`` pair may bring, by manifest column with words for each (the columns the
    task's reader takes, ``training.userdata``), with ``check_extras(pairs, args) -> [problem]``
    (optional, pure Python): what the reader refuses of which extras the pairs bring, given as
    ``[(pair name, {column, ...})]``, so a GUI can refuse at Start what the run would refuse; and
    ``read_with``, the options read only with some values of another
    (``{"--anatomy": ("--variant", ("motion",))}``), offered only then.
    The functions:

    - ``build_data(args, progress) -> TrainingData``: check the options, fill the cache;
    - ``make_model(args) -> nn.Module``;
    - ``make_loss(args, step) -> loss_fn(model, batch, generator)``, ``step()`` the trainer's step;
    - ``make_val(args) -> val_fn(model, batch)`` (optional): the task's validation metrics (the live
      curves' "task metric"); without a ``loss`` among them the training loss is scored as well;
    - ``model_id(args) -> str``: the id when ``--register`` gives none;
    - ``card(args, outcome) -> dict``: the card's ``architecture``, ``normalization``,
      ``training_data``, ``description`` and task ``metrics``;
    - ``from_card(args, entry) -> nn.Module`` (optional): the network of a catalogue card with
      its weights, for ``--from-model``; a ValueError for a card this recipe cannot train;
    - ``score(args, net, data, device) -> Score`` (optional): the task's metric of a network on
      the validation data, compared by the registration gate of a fine-tune;
    - ``preview(args, net, data, device) -> (input, output, reference)`` (optional): one fixed
      validation case as :class:`~meddiffusion.io.Volume` s, the output made by ``net`` as the
      task's inference command would (``reference`` may be None); rendered every
      ``--preview-every`` steps into the run folder (``training.runs``), so keep it to seconds.
    """

    name: str
    description: str
    configs: dict[str, str]
    build_data: Callable[[argparse.Namespace, Any], TrainingData]
    make_model: Callable[[argparse.Namespace], Any]
    make_loss: Callable[[argparse.Namespace, Callable[[], int]], Callable]
    model_id: Callable[[argparse.Namespace], str]
    card: Callable[[argparse.Namespace, Outcome], dict[str, Any]]
    make_val: Callable[[argparse.Namespace], Callable] | None = None
    from_card: Callable[[argparse.Namespace, Any], Any] | None = None
    score: Callable[[argparse.Namespace, Any, TrainingData, Any], Score] | None = None
    preview: Callable[[argparse.Namespace, Any, TrainingData, Any], tuple[Any, Any, Any]] | None = None
    options: tuple[Option, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = (PHANTOM,)
    example: str = ""
    ema_cap: float = 0.995
    extras: dict[str, str] = field(default_factory=dict)
    check_extras: Callable[[list[tuple[str, set[str]]], argparse.Namespace], list[str]] | None = None
    read_with: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [source for source in self.sources if source not in DATA_SOURCES]
        if unknown or not self.sources:
            raise ValueError(f"recipe '{self.name}': sources must be some of {', '.join(DATA_SOURCES)}, "
                             f"got {self.sources}")
        if self.extras and PAIRED_FOLDER not in self.sources:
            raise ValueError(f"recipe '{self.name}': extras are manifest columns of {PAIRED_FOLDER} pairs, a source "
                             "it does not take")
        options = {option.flags[0]: option for option in self.options}
        for flag, (other, values) in self.read_with.items():
            choices = options[other].kwargs.get("choices", ()) if other in options else ()
            if flag not in options or not values or not set(values) <= set(choices):
                raise ValueError(f"recipe '{self.name}': read_with['{flag}'] must name an option read with some "
                                 f"choices of another option, got {other} {values}")

    def check_source(self, source: str) -> None:
        """A ValueError that says which sources the task accepts, unless it accepts ``source``."""
        if source not in self.sources:
            accepted = "; ".join(f"{s} ({DATA_SOURCES[s]})" for s in self.sources)
            what = f"'{source}'" if source in DATA_SOURCES else f"unknown data source '{source}'"
            raise ValueError(f"{self.name} training does not take {what}; it accepts: {accepted}")

    def check_config(self, config: str) -> None:
        if config not in self.configs:
            raise ValueError(f"unknown --config '{config}' for {self.name}; expected one of {', '.join(self.configs)}")


def recipe_of(spec: TaskSpec) -> Recipe:
    """The ``RECIPE`` of a task's recipe module (``spec.recipe``), checked to be that task's."""
    recipe = importlib.import_module(spec.recipe).RECIPE
    if recipe.name != spec.name:
        raise ValueError(f"{spec.recipe}.RECIPE is for task '{recipe.name}', not '{spec.name}'")
    return recipe
