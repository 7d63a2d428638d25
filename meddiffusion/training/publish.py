"""The end of every ``meddiff train`` run: the model card beside the weights, optional registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meddiffusion.catalog import SCHEMA_VERSION, ModelEntry, atomic_write, register_user_model

__all__ = ["publish_model"]


def publish_model(entry: ModelEntry, weights: Path, out: Path, *, register: bool, overwrite: bool, steps: int,
                  train_seconds: float, val_start: float | None, val_end: float,
                  metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``<out>/model.json`` (catalogue format), register the model if asked; the command's result.

    ``entry.id`` is the id it is registered under. The result holds the paths, the id, whether
    it was registered, ``metrics`` and a one-line ``summary``.
    """
    card = out / "model.json"
    text = json.dumps({"schema_version": SCHEMA_VERSION, **entry.to_dict()}, indent=2)
    atomic_write(card, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    registered = bool(register_user_model(entry, weights, overwrite=overwrite)) if register else False
    start = "None" if val_start is None else f"{val_start:.3g}"
    return {"weights": str(weights), "card": str(card), "model_id": entry.id, "registered": registered,
            **metrics, "summary": (f"trained {steps} steps in {train_seconds:.0f} s; validation loss {start} -> "
                                   f"{val_end:.3g}; weights {weights}"
                                   + (f"; registered as '{entry.id}'" if registered else ""))}
