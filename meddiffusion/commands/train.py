"""``meddiff train <task>``: train a task's network on data this project simulates, export it as a model.

Every task trains the same way: ``--config`` picks the network size, ``--steps`` the length,
``--out`` the run folder (cached training data, checkpoints, ``metrics.jsonl``, and at the end
``model.safetensors`` + ``model.json``, a catalogue model card). ``--register ID`` also adds the
model to the user model folder, where every command finds it by id. ``--resume`` continues from
the last checkpoint in ``--out``; Ctrl-C / Cancel writes a checkpoint first.
"""

from __future__ import annotations

import argparse
import importlib
import shlex

#: task -> (module with ``train(args, progress, device) -> dict``, one-line description)
TASKS = {
    "ldct": ("meddiffusion.tasks.ldct.recipe", "low-dose CT denoising: CoreDiff CLEAR-Net on thorax-phantom pairs"),
    "motion": ("meddiffusion.tasks.motion.recipe",
               "coronary calcium motion correction: ProDM's 2.5D UNet on motion-corrupted phantom CTs"),
}

#: options every task takes: (flag, argparse keyword arguments)
COMMON_OPTIONS = (
    ("--config", {"default": "small", "help": "network size; ldct: paper (GPU), small (CPU) or tiny (tests); "
                                                "motion: large (GPU), small (CPU) or tiny. Default: small"}),
    ("--steps", {"type": int, "default": 3000, "help": "optimizer steps (default: %(default)s)"}),
    ("--out", {"required": True, "help": "run folder: data cache, checkpoints, metrics, final model"}),
    ("--register", {"metavar": "ID", "help": "also register the model under this id in the user model folder"}),
    ("--overwrite", {"action": "store_true", "help": "with --register: replace a user model with the same id"}),
    ("--batch-size", {"type": int, "default": 4, "help": "global batch size (default: %(default)s)"}),
    ("--lr", {"type": float, "default": 1e-3, "help": "peak learning rate, cosine decay (default: %(default)g)"}),
    ("--seed", {"type": int, "default": 0, "help": "data and training seed (default: 0)"}),
    ("--val-every", {"type": int, "default": 500, "help": "validate every N steps (0: only at the end)"}),
    ("--ckpt-every", {"type": int, "default": 500, "help": "checkpoint every N steps (0: only at the end)"}),
    ("--resume", {"action": "store_true", "help": "continue from the latest checkpoint in --out"}),
)

#: task-specific options: task -> ((flag, argparse keyword arguments), ...)
TASK_OPTIONS = {
    "ldct": (
        ("--dose", {"type": float, "default": 0.25, "help": "low-dose fraction of the full dose (default: 0.25)"}),
        ("--slabs", {"type": int, "default": 24, "help": "training slabs of adjacent phantom slices (default: 24)"}),
        ("--val-slabs", {"type": int, "default": 2, "help": "validation slabs, other patients (default: 2)"}),
        ("--slices", {"type": int, "default": 4, "help": "adjacent slices per slab (default: 4)"}),
        ("--size", {"type": int, "default": 512, "help": "slab image size in pixels (default: 512)"}),
        ("--pixel-range", {"type": float, "nargs": 2, "default": (0.45, 0.9), "metavar": ("MIN", "MAX"),
                           "help": "pixel size range in mm (default: 0.45 0.9)"}),
        ("--noise-range", {"type": float, "nargs": 2, "default": (2.5, 30.0), "metavar": ("MIN", "MAX"),
                           "help": "full-dose noise in HU, drawn log-uniform per slab (default: 2.5 30)"}),
        ("--crop", {"type": int, "default": 96, "help": "training crop size in pixels (default: 96)"}),
        ("--timesteps", {"type": int, "default": 10, "help": "diffusion steps T (default: 10, as CoreDiff)"}),
        ("--cpu-steps", {"type": int, "default": None,
                         "help": "sampling steps the model card sets as the CPU default (default: T)"}),
    ),
    "motion": (
        ("--objective", {"choices": ("bridge", "regression"), "default": "bridge",
                         "help": "bridge: ProDM's Brownian bridge (default); regression: the same network as a "
                                 "plain L1 regressor, one call at t=T-1"}),
        ("--calcium-weight", {"type": float, "default": None, "metavar": "LAMBDA",
                              "help": "weight of the calcium consistency loss (default: 20 for bridge, "
                                      "0 for regression)"}),
        ("--calcium-warmup", {"type": int, "default": None, "metavar": "STEPS",
                              "help": "hold the calcium weight at 0 for STEPS steps, then ramp it up over as many "
                                      "(default: min(300, steps/10))"}),
        ("--focus", {"type": float, "default": 0.0, "metavar": "WEIGHT",
                     "help": "pixels the motion changed (and calcium) count 1+WEIGHT times in the L1 term "
                             "(default: 0, a plain mean)"}),
        ("--cases", {"type": int, "default": 160, "help": "training cases (phantom patients; default: 160)"}),
        ("--val-cases", {"type": int, "default": 12, "help": "validation cases, the next ones (default: 12)"}),
        ("--data", {"metavar": "DIR", "help": "case cache to use and fill, shareable between runs with the same "
                                              "--seed and data options (default: <out>/data)"}),
        ("--size", {"type": int, "default": 192, "help": "case image size in pixels (default: 192)"}),
        ("--slices", {"type": int, "default": 40, "help": "3 mm slices per case (default: 40)"}),
        ("--timesteps", {"type": int, "default": 1000, "help": "bridge timesteps T (default: 1000)"}),
        ("--crop", {"type": int, "default": 64, "help": "training crop size in pixels (default: 64)"}),
    ),
}

#: per-task defaults of the common options
TASK_DEFAULTS = {
    "motion": {"steps": 6000, "batch_size": 8, "lr": 5e-4},
}

EXAMPLE = """examples:
  meddiff train ldct --config small --steps 3000 --out runs/ldct-small --register my-ldct
  meddiff train ldct --config paper --steps 150000 --batch-size 8 --device cuda --out runs/ldct-paper
  meddiff train ldct --config small --out runs/ldct-small --resume
  meddiff train motion --config small --data runs/motion-data --out runs/motion-prodm-small
  meddiff train motion --config small --calcium-weight 0 --data runs/motion-data --out runs/motion-prodm-nocal-small
  meddiff train motion --config small --objective regression --data runs/motion-data --out runs/motion-unet-l1-small
  meddiff train motion --config small --steps 5000 --focus 20 --calcium-weight 0 --data runs/motion-data --out runs/motion-nocal-f"""


def add_parser(subparsers) -> None:
    from meddiffusion.commands.options import add_device_options

    p = subparsers.add_parser("train", help="train a task's network on simulated data (exports a model)",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="<task>", required=True)
    for task, (_, description) in TASKS.items():
        sub = tasks.add_parser(task, help=description, description=description)
        for flag, kwargs in COMMON_OPTIONS + TASK_OPTIONS.get(task, ()):
            sub.add_argument(flag, **kwargs)
        sub.set_defaults(**TASK_DEFAULTS.get(task, {}))
        add_device_options(sub)
        sub.add_argument("--events", choices=("bar", "jsonl", "none"), default="bar",
                         help="progress as a terminal bar (default), JSON lines on stdout, or nothing")


def command_line(args: argparse.Namespace) -> str:
    """The ``meddiff train`` command that reproduces this run (recorded in the model card)."""
    parts = ["meddiff", "train", args.task]
    for flag, kwargs in COMMON_OPTIONS + TASK_OPTIONS.get(args.task, ()):
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if kwargs.get("action") == "store_true":
            parts += [flag] if value else []
        elif value is not None and flag not in ("--resume",):
            values = value if isinstance(value, (list, tuple)) else [value]
            parts += [flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace, progress) -> dict:
    from meddiffusion.commands.options import setup_device

    if args.task not in TASKS:
        raise ValueError(f"unknown training task '{args.task}'; expected one of {', '.join(TASKS)}")
    if args.steps < 1 or args.batch_size < 1:
        raise ValueError(f"--steps and --batch-size must be >= 1, got {args.steps} and {args.batch_size}")
    module = importlib.import_module(TASKS[args.task][0])
    if args.config not in module.NETWORK_CONFIGS:
        raise ValueError(f"unknown --config '{args.config}' for {args.task}; expected one of "
                         f"{', '.join(module.NETWORK_CONFIGS)}")
    device = setup_device(args)
    args.command_line = command_line(args)
    return module.train(args, progress, device)
