"""Which samples each optimizer step trains on, and the seeds of every random stream of a run.

Every random choice of a run is a function of (seed, step): the batch of a step, the noise of
its loss, the validation noise. A checkpoint therefore needs no iterator state, and a resumed
run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

__all__ = ["StepBatchSampler", "derive_seed", "fixed_noise_val", "STREAM_DATA", "STREAM_STEP", "STREAM_VAL", "STREAM_WORKERS",
           "STREAM_INIT"]

#: independent random streams derived from the one seed: batches, loss noise, validation noise, DataLoader
#: workers, the network's initial weights
STREAM_DATA, STREAM_STEP, STREAM_VAL, STREAM_WORKERS, STREAM_INIT = 1, 2, 3, 4, 5


def derive_seed(*values: int) -> int:
    """A 63-bit seed mixing ``values`` (numpy SeedSequence), so nearby inputs give unrelated seeds."""
    low, high = np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint32)
    return (int(high) << 32 | int(low)) & (2**63 - 1)


class StepBatchSampler:
    """Index lists for optimizer steps ``start`` to ``stop - 1``, each a pure function of (seed, step).

    Sample positions ``step * batch_size + j`` walk through successive epochs, each a fresh
    permutation of the dataset seeded by (seed, epoch): every sample is seen once per epoch and
    any step's batch can be recomputed without replaying earlier ones. Rank ``r`` of ``world_size``
    takes the ``r``-th contiguous slice of each global batch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        if num_samples < 1:
            raise ValueError("the training dataset is empty")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self._cache: dict[int, torch.Tensor] = {}

    def indices(self, step: int) -> list[int]:
        per_rank = self.batch_size // self.world_size
        first = step * self.batch_size + self.rank * per_rank
        out = []
        for position in range(first, first + per_rank):
            epoch, offset = divmod(position, self.num_samples)
            out.append(int(self._permutation(epoch)[offset]))
        return out

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 1:
                self._cache.pop(min(self._cache))
            generator = torch.Generator().manual_seed(derive_seed(self.seed, STREAM_DATA, epoch))
            self._cache[epoch] = torch.randperm(self.num_samples, generator=generator)
        return self._cache[epoch]

    def __iter__(self) -> Iterator[list[int]]:
        return (self.indices(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def fixed_noise_val(loss_fn, seed: int = 0):
    """``val_fn(model, batch)`` from a training ``loss_fn``: its loss and logs, with the same draw every time.

    Every batch takes its timesteps and noise from a generator seeded with ``seed`` alone, so two
    validations differ only through the model.
    """
    def val_fn(model: torch.nn.Module, batch: dict) -> dict:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, 1))
        loss, logs = loss_fn(model, batch, generator)
        return {"loss": loss, **logs}

    return val_fn
