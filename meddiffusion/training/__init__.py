"""Training and fine-tuning: one loop for every task (EMA, AMP, checkpoints, resume, DDP)."""

from meddiffusion.training.checkpoint import latest_checkpoint, read_checkpoint
from meddiffusion.training.ema import EMA
from meddiffusion.training.trainer import StepBatchSampler, TrainConfig, Trainer, lr_factor

__all__ = ["TrainConfig", "Trainer", "EMA", "StepBatchSampler", "lr_factor", "latest_checkpoint",
           "read_checkpoint"]
