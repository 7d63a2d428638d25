"""The toy task's training recipe: learn the blend constant from generated pairs, in a few steps.

A pair is a row of CT values and the same row blended half-way towards ``--target`` HU; the
model is the constant alone, so a few dozen steps recover the target. The pairs go through
the training cache and the model through the one loop, export and registration like any task's.
"""

from __future__ import annotations

from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import PHANTOM, Outcome, Recipe, TrainingData


def build_data(args, progress) -> TrainingData:
    from pathlib import Path

    import numpy as np

    from meddiffusion.training import cache

    def make(index: int):
        ct = np.random.default_rng([args.seed, index]).uniform(-100, 300, (args.pairs, 8)).astype(np.float32)
        return {"ct": ct, "blended": (ct + args.target) / 2}, {}

    paths = cache.build_cache(Path(args.out) / "data", "pairs", range(2),
                              lambda index: {"seed": args.seed, "index": index, "target": args.target,
                                             "pairs": args.pairs}, make, progress.callback("simulate", 2))
    train, val = ([{"ct": c, "blended": b} for c, b in zip(*cache.read_item(path, "ct", "blended"))]
                  for path in paths)
    return TrainingData(train, val)


def make_model(args):  # noqa: ARG001 - one size
    import torch

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.constant = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ct):
            return (ct + self.constant) / 2

    return Constant()


def make_loss(args, step):  # noqa: ARG001 - a plain L1
    def loss_fn(model, batch, generator):  # noqa: ARG001 - nothing random
        return (model(batch["ct"]) - batch["blended"]).abs().mean(), {}

    return loss_fn


def card(args, outcome: Outcome) -> dict:
    return {"architecture": {"network": "none"}, "training_data": f"{len(outcome.data.train)} toy pairs",
            "description": f"toy constant learned towards {args.target:g} HU", "metrics": {"target": args.target}}


RECIPE = Recipe(
    name="toy",
    description="toy smoothing: learn the blend constant from generated pairs",
    configs={"small": "any device"},
    options=(Option(("--target",), {"type": float, "default": 100.0, "help": "the constant the pairs blend towards"}),
             Option(("--pairs",), {"type": int, "default": 32, "help": "pairs per split (default: 32)"})),
    defaults={"steps": 40, "batch_size": 8, "lr": 10.0, "val_every": 0, "ckpt_every": 0},
    sources=(PHANTOM,),
    build_data=build_data,
    make_model=make_model,
    make_loss=make_loss,
    model_id=lambda args: "toy-trained",
    card=card,
    example="  meddiff train toy --out runs/toy --register my-toy",
)
