"""Training: one loop for every task (EMA, AMP, checkpoints, resume, DDP), the data cache, the recipe contract.

The names below load on first use, so that :mod:`meddiffusion.training.recipe` (read by
``meddiff --help``) comes without torch.
"""

import importlib

_NAMES = {"TrainConfig": "trainer", "Trainer": "trainer", "StepBatchSampler": "sampler", "lr_factor": "trainer",
          "EMA": "ema", "latest_checkpoint": "checkpoint", "read_checkpoint": "checkpoint"}

__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'meddiffusion.training' has no attribute '{name}'")
    return getattr(importlib.import_module(f"meddiffusion.training.{_NAMES[name]}"), name)
