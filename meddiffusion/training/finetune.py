"""Fine-tuning from a catalogue model (``--from-model``), its registration gate and the card's provenance.

A fine-tune starts from a parent's weights and keeps its architecture, so the new model runs
wherever the parent ran. Before it is registered it must be at least as good as its parent on
the validation patients, by the task's own metric (``Recipe.score``), because a fine-tune on a
few local scans can as easily overfit them as adapt to them; ``--register-anyway`` overrides.
A metric that only ranks models (a self-supervised proxy, ``Score.conclusive`` False) never
registers on its own. The card records where the model came from: parent id and sha256, the data manifest hash and
patient split, seed, configuration and package versions, and both scores.
"""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from typing import Any

from meddiffusion.training.recipe import Recipe, Score, TrainingData

__all__ = ["parent_card", "parent_network", "check_parent_schedule", "gate", "gate_words", "provenance", "versions"]


def parent_card(recipe: Recipe, args: argparse.Namespace):
    """The card of ``--from-model``; a ValueError for another task's model or a recipe that cannot fine-tune."""
    from meddiffusion.catalog import get_model

    if recipe.from_card is None or recipe.score is None:
        raise ValueError(f"{recipe.name} training cannot start from a catalogue model (--from-model)")
    entry = get_model(args.from_model)
    if entry.task != recipe.name:
        raise ValueError(f"--from-model '{entry.id}' is a '{entry.task}' model; meddiff train {recipe.name} "
                         f"fine-tunes only {recipe.name} models (see 'meddiff info')")
    return entry


def parent_network(recipe: Recipe, args: argparse.Namespace):
    """(card, network with its weights) of ``--from-model``; the recipe refuses an architecture it cannot train."""
    entry = parent_card(recipe, args)
    return entry, recipe.from_card(args, entry)


def check_parent_schedule(entry, timesteps: int, default: int, words: str = "timesteps") -> None:
    """A fine-tune keeps its parent's diffusion schedule: ValueError when ``--timesteps`` differs from the card's.

    ``default`` is the T of cards that do not state one; ``words`` names T in the message ("bridge timesteps").
    """
    trained = int(entry.architecture.get("diffusion", {}).get("num_timesteps", default))
    if trained != timesteps:
        raise ValueError(f"--from-model '{entry.id}' was trained with T={trained} {words}, not --timesteps "
                         f"{timesteps}; a fine-tune keeps its parent's schedule")


def gate(recipe: Recipe, args: argparse.Namespace, data: TrainingData, net, parent, device) -> dict[str, Any]:
    """The new network's and (with a parent card) the parent's validation scores, and whether the new one passes."""
    mine: Score = recipe.score(args, net, data, device)
    result = {"metric": mine.metric, "higher_is_better": mine.higher_is_better, "conclusive": mine.conclusive,
              "model": mine.values}
    if parent is not None:
        theirs: Score = recipe.score(args, recipe.from_card(args, parent), data, device)
        result |= {"parent": theirs.values, "passed": mine.conclusive and mine.at_least(theirs)}
    return result


def gate_words(result: dict[str, Any], registering: bool, anyway: bool) -> str:
    """One sentence on the gate for the command's summary."""
    metric = result["metric"]
    mine = result["model"][metric]
    if "parent" not in result:
        return f"validation {metric} {mine:.4g}"
    theirs = result["parent"][metric]
    words = f"validation {metric} {mine:.4g} against the parent's {theirs:.4g}"
    if result["passed"]:
        return words + " (at least as good)"
    if not result.get("conclusive", True):
        words += " (a self-supervised proxy that cannot vouch for the model"
        return words + ("; not registered: pass --register-anyway after checking it yourself)" if registering else ")")
    if registering and anyway:
        return words + " (worse; registered anyway, as --register-anyway asked)"
    return words + (" (worse: not registered; pass --register-anyway to register it all the same)"
                    if registering else " (worse)")


def provenance(args: argparse.Namespace, parent, data: TrainingData, config: dict[str, Any]) -> dict[str, Any]:
    """What the card records of a run: parent, data (manifest hash, split), seed, configuration, versions."""
    return {"parent": None if parent is None else {"id": parent.id, "sha256": parent.sha256},
            "data": data.info.get("provenance", {"source": args.source or "phantom"}),
            "seed": args.seed, "config": config, "versions": versions()}


def versions() -> dict[str, str]:
    """The versions of Python and of the packages that decide a run's numbers."""
    found = {"python": platform.python_version()}
    for package in ("meddiffusion", "torch", "numpy", "scipy", "SimpleITK"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            if package == "meddiffusion":
                from meddiffusion import __version__

                found[package] = __version__
    return found
