"""Shared fixtures of the backend tests.

  toy_task   the toy task of ``toy_task/`` registered for one test (and removed after), with a
             toy model installed in a temporary user model folder as the task's CPU default
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def toy_task(tmp_path, monkeypatch):
    import torch

    import toy_task as package
    from meddiffusion.catalog import ModelEntry, register_user_model
    from meddiffusion.tasks import registry

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path / "models"))
    entry = ModelEntry(id="toy-constant", task="toy", version="1", architecture={"network": "none"},
                       default_for={"cpu": 1}, description="toy model: blends towards 100 HU")
    register_user_model(entry, {"constant": torch.tensor([100.0])})
    registry.register(package.SPEC)
    yield package.SPEC
    registry.unregister(package.SPEC.name)
