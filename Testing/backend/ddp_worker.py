"""A tiny training run for the DDP test in test_trainer.py.

Under torchrun each rank writes ``rank<r>.json`` (its rank and world size) and
``rank<r>.safetensors`` (its final weights) into the folder given as the only argument.
The test also imports :func:`train` to run the same job in one process as the reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from meddiffusion.training import TrainConfig, Trainer
from meddiffusion.training import distributed

STEPS = 4
GLOBAL_BATCH = 8


class LineData(torch.utils.data.Dataset):
    """y = sum(x) * 0.5 - 1 on 24 fixed points."""

    def __init__(self):
        self.x = torch.linspace(-1, 1, 72).reshape(24, 3)
        self.y = self.x.sum(dim=1, keepdim=True) * 0.5 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


def mse_loss(model, batch, generator):
    loss = F.mse_loss(model(batch["x"]), batch["y"])
    return loss, {}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def train(out_dir: Path) -> dict[str, torch.Tensor]:
    """A few Adam steps; ``grad_clip`` is loose and only makes every step log its gradient norm."""
    model = make_model()
    config = TrainConfig(steps=STEPS, batch_size=GLOBAL_BATCH, lr=1e-2, ema_decay=0.5, ema_every=1,
                         grad_clip=100.0, log_every=1, out_dir=str(out_dir), seed=3, precision="fp32")
    trainer = Trainer(model, mse_loss, config, LineData(), device="cpu")
    trainer.fit()
    return {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


def main() -> None:
    out = Path(sys.argv[1])
    with distributed.distributed_session("gloo"):
        weights = train(out / "run")
        rank = distributed.rank()
        save_file(weights, str(out / f"rank{rank}.safetensors"))
        (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": distributed.world_size()}))


if __name__ == "__main__":
    main()
