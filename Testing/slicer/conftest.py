"""Fixtures for module logic tests on a real MRML scene (slicer-core, no Slicer application).

Fixtures:
  mrml          MRMLTestScene (scene + application logic + module logics), with
                slicer.mrmlScene and a slicer.modules stand-in set for the test
  scene         its vtkMRMLScene
  add_volume    add_volume(array, ijk_to_ras=None, name="CT") -> volume node (oblique grid)
  ct_volume     a small int16 CT-like volume on an oblique grid, under a patient/study
  slice_views   {"Red": (sliceNode, compositeNode), "Yellow": ..., "Green": ...}
  fake_task     path of fake_task.py, a stand-in backend speaking the JSON-lines protocol
  run_folder    runs keep their temporary folders here, so a test can see what is left behind
  real_backend  {task: model id}: every task's tiny model registered in a user model folder
                the ``python -m meddiffusion`` child sees (built once per session)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mrml_fixtures  # noqa: E402

mrml_fixtures.add_module_paths()


from mrml_fixtures import mrml, scene  # noqa: E402,F401 - shared fixtures


@pytest.fixture
def add_volume(scene):
    def add(array, ijk_to_ras=None, name="CT", node_class="vtkMRMLScalarVolumeNode"):
        return mrml_fixtures.add_volume(scene, array, ijk_to_ras=ijk_to_ras, name=name,
                                        node_class=node_class)
    return add


@pytest.fixture
def ct_volume(scene):
    rng = np.random.default_rng(7)
    array = rng.normal(40.0, 20.0, size=(6, 7, 8)).round().astype(np.int16)
    node = mrml_fixtures.add_volume(scene, array, name="CT")
    mrml_fixtures.put_in_study(scene, node)
    return node


@pytest.fixture
def slice_views(mrml):
    return mrml_fixtures.add_slice_views(mrml)


@pytest.fixture
def fake_task():
    return mrml_fixtures.FAKE_TASK


@pytest.fixture
def run_folder(tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A user model folder holding tiny_models.MODELS, one per task."""
    import tiny_models
    from meddiffusion import catalog

    folder = tmp_path_factory.mktemp("tiny-models")
    saved = os.environ.get(catalog.ENV_MODEL_DIR)
    os.environ[catalog.ENV_MODEL_DIR] = str(folder)
    try:
        ids = {}
        for task, build in tiny_models.MODELS.items():
            cards = build()  # one (entry, weights), or several of a cascade, the one to run last
            for entry, weights in cards if isinstance(cards, list) else [cards]:
                ids[task] = catalog.register_user_model(entry, weights).id
    finally:
        if saved is None:
            os.environ.pop(catalog.ENV_MODEL_DIR)
        else:
            os.environ[catalog.ENV_MODEL_DIR] = saved
    return folder, ids


@pytest.fixture
def real_backend(tiny_model_dir, monkeypatch):
    folder, ids = tiny_model_dir
    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(folder))
    return ids
