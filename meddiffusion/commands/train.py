"""``meddiff train <task>``: train or fine-tune a task's network on simulated or the user's data, export a model.

Every task trains the same way: ``--config`` picks the network size, ``--steps`` the length,
``--out`` the run folder (cached training data, checkpoints, ``metrics.jsonl``, and at the end
``model.safetensors`` + ``model.json``, a catalogue model card). ``--register ID`` also adds the
model to the user model folder, where every command finds it by id. ``--source`` picks the
data (a task may take the user's own folders, read by ``training.userdata``); ``--from-model ID``
fine-tunes a catalogue model, registered only if it scores at least as well as its parent. ``--resume`` continues from
the last checkpoint in ``--out``; Ctrl-C / Cancel writes a checkpoint first.
"""

from __future__ import annotations

import argparse
import shlex

from meddiffusion.tasks import registry
from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import DATA_SOURCES, PHANTOM, Recipe, recipe_of

#: options every task takes; a recipe's ``defaults`` change their defaults for its task
COMMON_OPTIONS = (
    Option(("--config",), {"default": "small", "help": "network size"}),
    Option(("--steps",), {"type": int, "default": 3000, "help": "optimizer steps (default: %(default)s)"}),
    Option(("--out",), {"required": True, "help": "run folder: data cache, checkpoints, metrics, final model"}),
    Option(("--register",), {"metavar": "ID", "help": "also register the model under this id in the user model "
                                                      "folder"}),
    Option(("--overwrite",), {"action": "store_true", "help": "with --register: replace a user model with the same "
                                                              "id"}),
    Option(("--batch-size",), {"type": int, "default": 4, "help": "global batch size (default: %(default)s)"}),
    Option(("--lr",), {"type": float, "default": 1e-3, "help": "peak learning rate, cosine decay "
                                                               "(default: %(default)g)"}),
    Option(("--seed",), {"type": int, "default": 0, "help": "data and training seed (default: 0)"}),
    Option(("--val-every",), {"type": int, "default": 500, "help": "validate every N steps (0: only at the end)"}),
    Option(("--ckpt-every",), {"type": int, "default": 500, "help": "checkpoint every N steps (0: only at the end)"}),
    Option(("--resume",), {"action": "store_true", "help": "continue from the latest checkpoint in --out"}),
    Option(("--source",), {"choices": tuple(DATA_SOURCES), "default": None,
                           "help": "where the training pairs come from (default: phantom)"}),
    Option(("--from-model",), {"metavar": "ID", "help": "fine-tune: start from this catalogue model's weights and "
                                                        "architecture; --register then needs it to score at least "
                                                        "as well as this parent on the validation patients"}),
    Option(("--register-anyway",), {"action": "store_true", "help": "with --register: register a fine-tune even "
                                                                    "when it scores worse than its parent"}),
)


def recipes() -> list[Recipe]:
    """The recipe of every registered task that has one, in registry order."""
    return [recipe_of(spec) for spec in registry.all_tasks() if spec.recipe]


def add_parser(subparsers) -> None:
    from meddiffusion.commands.options import add_device_options

    found = recipes()
    example = "examples:\n" + "\n".join(recipe.example for recipe in found if recipe.example)
    p = subparsers.add_parser("train", help="train or fine-tune a task's network (exports a model)",
                              description=__doc__, epilog=example, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="<task>", required=True)
    for recipe in found:
        sub = tasks.add_parser(recipe.name, help=recipe.description, description=recipe.description)
        for option in COMMON_OPTIONS + recipe.options:
            sub.add_argument(*option.flags, **{**option.kwargs, **_task_help(recipe, option)})
        sub.set_defaults(**recipe.defaults)
        add_device_options(sub)
        sub.add_argument("--events", choices=("bar", "jsonl", "none"), default="bar",
                         help="progress as a terminal bar (default), JSON lines on stdout, or nothing")


def _task_help(recipe: Recipe, option: Option) -> dict:
    """The help of ``--config`` and ``--source`` spelled out for one task."""
    if option.flags == ("--config",):
        sizes = ", ".join(f"{name} ({where})" for name, where in recipe.configs.items())
        return {"help": f"network size: {sizes}; default: %(default)s"}
    if option.flags == ("--source",):
        return {"help": f"{option.kwargs['help']}; {recipe.name} accepts {', '.join(recipe.sources)}"}
    return {}


def command_line(args: argparse.Namespace) -> str:
    """The ``meddiff train`` command that reproduces this run (recorded in the model card)."""
    parts = ["meddiff", "train", args.task]
    for option in COMMON_OPTIONS + recipe_of(registry.get_task(args.task)).options:
        flag = option.flags[0]
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if flag == "--resume":  # the command reproduces the whole run, not its second half
            continue
        if option.kwargs.get("action") == "store_true":
            parts += [flag] if value else []
        elif value is not None:
            values = value if isinstance(value, (list, tuple)) else [value]
            parts += [flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace, progress) -> dict:
    from meddiffusion.commands.options import setup_device
    from meddiffusion.training.loop import train

    recipe = recipe_of(registry.get_task(args.task))
    if args.steps < 1 or args.batch_size < 1:
        raise ValueError(f"--steps and --batch-size must be >= 1, got {args.steps} and {args.batch_size}")
    if not 0 < args.lr < float("inf"):
        raise ValueError(f"--lr must be a positive learning rate, got {args.lr:g} (the recipes use about 1e-4 to 1e-3)")
    for flag in ("val_every", "ckpt_every"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0 (0: only at the end), got {getattr(args, flag)}")
    recipe.check_config(args.config)
    recipe.check_source(args.source or PHANTOM)
    if args.register_anyway and not args.register:
        raise ValueError("--register-anyway applies only with --register ID")
    if args.from_model:
        from meddiffusion.training.finetune import parent_network

        parent_network(recipe, args)  # another task's card or an unusable architecture: refused before any data
    device = setup_device(args)
    args.command_line = command_line(args)
    return train(recipe, args, progress, device)
