"""``meddiff train <task>``: train or fine-tune a task's network on simulated or the user's data, export a model.

Every task trains the same way: ``--config`` picks the network size, ``--steps`` the length,
``--out`` the run folder (cached training data, checkpoints, ``metrics.jsonl``, and at the end
``model.safetensors`` + ``model.json``, a catalogue model card). ``--register ID`` also adds the
model to the user model folder, where every command finds it by id. ``--source`` picks the
data (a task may take the user's own folders, read by ``training.userdata``); ``--from-model ID``
fine-tunes a catalogue model, registered only if it scores at least as well as its parent. ``--resume`` continues from
the last checkpoint in ``--out``; Ctrl-C / Cancel writes a checkpoint first. ``--detach`` runs in the
background and returns at once; the run folder then records its state (``meddiff runs OUT``), and
``--preview-every N`` renders a validation case into it. ``--gpus N`` trains on N GPUs with torchrun.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap

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
    Option(("--time-limit",), {"type": float, "default": None, "metavar": "MINUTES",
                               "help": "stop after this many minutes of training even if steps remain, and export "
                                       "the model as at the end (default: no limit)"}),
    Option(("--resume",), {"action": "store_true", "help": "continue from the latest checkpoint in --out"}),
    Option(("--source",), {"choices": tuple(DATA_SOURCES), "default": None,
                           "help": "where the training pairs come from (default: phantom)"}),
    Option(("--from-model",), {"metavar": "ID", "help": "fine-tune: start from this catalogue model's weights and "
                                                        "architecture; --register then needs it to score at least "
                                                        "as well as this parent on the validation patients"}),
    Option(("--register-anyway",), {"action": "store_true", "help": "with --register: register a fine-tune even "
                                                                    "when it scores worse than its parent"}),
)

#: options of how the run is carried out, not what it learns: left out of the recorded command
RUN_OPTIONS = (
    Option(("--detach",), {"action": "store_true", "help": "run in the background and return at once with "
                                                            "{run, pid}; the run folder records the state, events, "
                                                            "metrics and previews (follow with 'meddiff runs OUT')"}),
    Option(("--preview-every",), {"type": int, "default": 0, "metavar": "N",
                                  "help": "render a fixed validation case with the current EMA model every N steps "
                                          "into OUT/preview (default: 0, never)"}),
    Option(("--gpus",), {"type": int, "default": 1, "metavar": "N",
                         "help": "train on N GPUs of this machine (torchrun, DDP); --batch-size stays the global "
                                 "batch (default: 1)"}),
    Option(("--run-child",), {"action": "store_true", "help": argparse.SUPPRESS}),  # the process --detach starts
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
        sub = tasks.add_parser(recipe.name, help=recipe.description, description=textwrap.fill(recipe.description, 79),
                               epilog="examples:\n" + recipe.example if recipe.example else None,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        for option in COMMON_OPTIONS + recipe.options + RUN_OPTIONS:
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


def _flags(args: argparse.Namespace, options, exact: bool = False) -> list[str]:
    """The flags of ``options`` as set in ``args``; floats as ``%g`` (the card's spelling) or exactly."""
    parts: list[str] = []
    for option in options:
        flag = option.flags[0]
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if option.kwargs.get("action") == "store_true":
            parts += [flag] if value else []
        elif value is not None:
            values = value if isinstance(value, (list, tuple)) else [value]
            spell = repr if exact else (lambda v: f"{v:g}")
            parts += [flag, *(spell(v) if isinstance(v, float) else str(v) for v in values)]
    return parts


def _task_options(args: argparse.Namespace) -> tuple[Option, ...]:
    return COMMON_OPTIONS + recipe_of(registry.get_task(args.task)).options


def command_line(args: argparse.Namespace) -> str:
    """The ``meddiff train`` command that reproduces this run (recorded in the model card)."""
    # the command reproduces the whole run, not its second half: no --resume
    options = [option for option in _task_options(args) if option.flags[0] != "--resume"]
    return " ".join(shlex.quote(p) for p in ["meddiff", "train", args.task, *_flags(args, options)])


def child_command(args: argparse.Namespace) -> list[str]:
    """The argv of the process ``--detach`` or ``--gpus`` starts: this run, exactly, writing its run folder."""
    parts = ["train", args.task, *_flags(args, _task_options(args), exact=True), "--device", args.device,
             "--precision", args.precision]
    parts += ["--threads", str(args.threads)] if args.threads else []
    parts += ["--preview-every", str(args.preview_every)] if args.preview_every else []
    parts += ["--gpus", str(args.gpus)] if args.gpus > 1 else []
    parts += ["--run-child"] if args.detach else []
    parts += ["--events", "jsonl" if args.detach else args.events]
    if args.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.gpus),
                "-m", "meddiffusion", *parts]
    return [sys.executable, "-m", "meddiffusion", *parts]


def check_gpus(args: argparse.Namespace) -> None:
    """A ValueError unless this machine can run ``--gpus N``: N CUDA GPUs, Linux (NCCL), a batch they share."""
    if args.gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {args.gpus}")
    if args.gpus == 1:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < args.gpus:
        raise ValueError(f"--gpus {args.gpus} needs {args.gpus} CUDA GPUs; this machine has {found} (train on one "
                         "with --gpus 1, or ask for fewer)")
    if os.name == "nt":
        raise ValueError("--gpus N > 1 needs Linux: torchrun's GPU backend (NCCL) is not available on Windows")
    if args.device not in ("auto", "cuda"):
        raise ValueError(f"--gpus {args.gpus} trains on cuda:0..{args.gpus - 1}; use --device auto or cuda, "
                         f"not {args.device}")
    if args.batch_size % args.gpus:
        raise ValueError(f"--batch-size {args.batch_size} is split evenly over --gpus {args.gpus}; use a multiple "
                         f"of {args.gpus}")


def _rank_of_torchrun(args: argparse.Namespace) -> bool:
    """Whether this process is one of the ``--gpus N`` ranks torchrun started (not the command that starts them)."""
    return args.gpus > 1 and os.environ.get("WORLD_SIZE") == str(args.gpus)


def run(args: argparse.Namespace, progress) -> dict:
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
    if args.preview_every < 0:
        raise ValueError(f"--preview-every must be >= 0 (0: never), got {args.preview_every}")
    if not _rank_of_torchrun(args):
        check_gpus(args)
        if args.detach:
            from pathlib import Path

            from meddiffusion.training.runs import launch

            # the child runs in its run folder (the launcher's folder may be temporary): paths become absolute
            args.out = str(Path(args.out).absolute())
            if getattr(args, "data", None):
                args.data = str(Path(args.data).absolute())
            return launch(args.out, args.task, child_command(args))
        if args.gpus > 1:  # this process becomes torchrun: Ctrl-C and Cancel reach it, and it stops the ranks
            _become(child_command(args))
    args.command_line = command_line(args)
    if not args.run_child or os.environ.get("RANK", "0") != "0":  # rank 0 alone writes run.json
        return _train(recipe, args, progress)
    from meddiffusion.training.runs import supervise

    return supervise(args.out, args.task, [sys.executable, "-m", "meddiffusion", *sys.argv[1:]],
                     lambda: _train(recipe, args, progress))


def _train(recipe: Recipe, args: argparse.Namespace, progress) -> dict:
    """The run itself; under torchrun inside the process group, with rank 0 alone reporting."""
    from meddiffusion.commands.options import setup_device
    from meddiffusion.progress import Cancelled, NullSink
    from meddiffusion.training import distributed
    from meddiffusion.training.loop import train

    try:
        if not _rank_of_torchrun(args):
            return train(recipe, args, progress, setup_device(args))
        with distributed.distributed_session():
            if not distributed.is_main():
                progress.sink = NullSink()
            return train(recipe, args, progress, setup_device(args))
    except Cancelled as exc:  # the trainer's message says where the resumable checkpoint is
        progress.log(str(exc))
        raise


def _become(command: list[str]) -> None:
    """Replace this process by ``command`` (POSIX ``exec``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
