"""The toy task's model and inference (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meddiffusion.catalog import ModelEntry, load_task_model
from meddiffusion.tasks.job import Job, Table


@dataclass
class ToyModel:
    constant: float
    entry: ModelEntry | None = None

    @property
    def id(self) -> str:
        return self.entry.id if self.entry is not None else "(unregistered)"

    def default_steps(self, device=None) -> int:  # noqa: ARG002
        return 1


def load_model(model_id: str | None = None, device="cpu") -> ToyModel:
    entry = load_task_model("toy", model_id, device)
    return ToyModel(float(entry.state_dict()["constant"].item()), entry)


def run(job: Job):
    if not 0.0 <= job.args.strength <= 1.0:
        raise ValueError(f"--strength must be within 0..1, got {job.args.strength}")
    ct = job.inputs["ct"]
    with job.progress.stage("blend", total=1) as step:
        blended = (1 - job.args.strength) * ct.array + job.args.strength * job.model.constant
        step()
    outputs = {"output": ct.with_array(blended.astype(np.float32))}
    if "table" in job.wanted:
        outputs["table"] = Table(("image", "mean"), [{"image": "before", "mean": float(ct.array.mean())},
                                                     {"image": "after", "mean": float(blended.mean())}])
    return outputs, {"model": job.model.id, "summary": f"blended with {job.model.id}"}
