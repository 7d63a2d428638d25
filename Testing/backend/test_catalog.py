"""Model catalogue: registration, listing, checksums and the no-pickle rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import safetensors
import torch
from torch import nn

from meddiffusion import catalog
from meddiffusion.catalog import ModelEntry, WeightsError


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(folder))
    return folder


@pytest.fixture
def shipped_dir(tmp_path, monkeypatch):
    """A stand-in shipped catalogue with one model, so tests never depend on the real one."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    card = _entry("shipped-ct").to_dict()
    (folder / "catalog.json").write_text(json.dumps({"schema_version": 1, "models": [card]}))
    monkeypatch.setattr(catalog, "SHIPPED_DIR", folder)
    return folder


def _entry(model_id: str = "tiny-denoiser", task: str = "ldct") -> ModelEntry:
    return ModelEntry(id=model_id, task=task, version="1.0.0",
                      architecture={"network": "Linear", "kwargs": {"in_features": 3, "out_features": 2}},
                      normalization={"kind": "hu_window", "low": -1000, "high": 1000},
                      training_data="procedural phantoms", training_command="meddiff train ldct",
                      metrics={"psnr_db": 40.0}, license="MIT", description="a two-by-three linear map")


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in nn.Linear(3, 2).state_dict().items()}


def test_register_list_load_round_trip(user_dir, shipped_dir):
    state = _tiny_state()
    card = catalog.register_user_model(_entry(), state)

    weights = user_dir / "tiny-denoiser.safetensors"
    assert card.weights_path == weights
    assert card.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    on_disk = json.loads((user_dir / "tiny-denoiser.json").read_text())
    assert on_disk["sha256"] == card.sha256 and on_disk["schema_version"] == catalog.SCHEMA_VERSION
    assert not [p for p in user_dir.iterdir() if p.name.startswith(".")]  # no temp files left

    listed = {m.id: m for m in catalog.list_models()}
    assert set(listed) == {"shipped-ct", "tiny-denoiser"}
    assert listed["tiny-denoiser"].user and not listed["shipped-ct"].user
    assert [m.id for m in catalog.list_models(task="ldct")] == ["shipped-ct", "tiny-denoiser"]
    assert catalog.list_models(task="petmr") == []

    entry = catalog.get_model("tiny-denoiser")
    assert entry == card  # every card field survived the JSON round trip
    loaded = catalog.load_state_dict(entry)
    assert loaded.keys() == state.keys()
    for name in state:
        assert torch.equal(loaded[name], state[name])
    model = nn.Linear(**entry.architecture["kwargs"])
    model.load_state_dict(loaded)  # the card describes a network the weights fit


def test_register_from_a_safetensors_file(user_dir, shipped_dir, tmp_path):
    state = _tiny_state()
    source = catalog.save_model(state, tmp_path / "exported.safetensors", {"step": 12})
    card = catalog.register_user_model(_entry("from-file"), source)
    assert card.weights_path.read_bytes() == source.read_bytes()
    assert torch.equal(catalog.load_state_dict(card)["weight"], state["weight"])


def test_model_dir_follows_the_environment(tmp_path, monkeypatch, shipped_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(first))
    assert catalog.user_model_dir() == first
    catalog.register_user_model(_entry(), _tiny_state())
    assert (first / "tiny-denoiser.json").is_file()
    assert "tiny-denoiser" in [m.id for m in catalog.list_models()]

    monkeypatch.setenv(catalog.ENV_MODEL_DIR, str(second))
    assert [m.id for m in catalog.list_models()] == ["shipped-ct"]
    monkeypatch.delenv(catalog.ENV_MODEL_DIR)
    assert catalog.user_model_dir() == Path.home() / ".meddiffusion" / "models"


def test_tampered_weights_fail_the_checksum(user_dir, shipped_dir):
    card = catalog.register_user_model(_entry(), _tiny_state())
    data = bytearray(card.weights_path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor value
    card.weights_path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()

    with pytest.raises(WeightsError, match="checksum") as info:
        catalog.load_state_dict(catalog.get_model("tiny-denoiser"))
    message = str(info.value)
    assert str(card.weights_path) in message and card.sha256 in message and actual in message


@pytest.mark.parametrize("name, zipfile", [("model.pt", True), ("looks-fine.safetensors", True),
                                           ("legacy.safetensors", False)])
def test_pickled_weights_are_refused(user_dir, shipped_dir, tmp_path, name, zipfile):
    path = tmp_path / name
    torch.save(_tiny_state(), path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(WeightsError, match="Only safetensors") as info:
        catalog.register_user_model(_entry(), path)
    assert "safetensors.torch.save_file" in str(info.value) and "pickle" in str(info.value)
    with pytest.raises(WeightsError, match="safetensors"):
        catalog.load_weights(path)
    assert not user_dir.exists() or not list(user_dir.iterdir())
    assert [m.id for m in catalog.list_models()] == ["shipped-ct"]


def test_garbage_file_is_not_safetensors(user_dir, shipped_dir, tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        catalog.register_user_model(_entry(), path)


def test_duplicate_ids_are_refused(user_dir, shipped_dir):
    catalog.register_user_model(_entry(), _tiny_state())
    with pytest.raises(ValueError, match="already taken by a user model"):
        catalog.register_user_model(_entry(), _tiny_state())

    replacement = {k: v + 1 for k, v in _tiny_state().items()}
    catalog.register_user_model(_entry(), replacement, overwrite=True)
    assert torch.equal(catalog.load_state_dict(catalog.get_model("tiny-denoiser"))["bias"], replacement["bias"])

    with pytest.raises(ValueError, match="shipped model"):
        catalog.register_user_model(_entry("shipped-ct"), _tiny_state(), overwrite=True)

    # a card copied into the folder by hand must not shadow the shipped model either
    (user_dir / "shipped-ct.json").write_text(json.dumps({"schema_version": 1, **_entry("shipped-ct").to_dict()}))
    assert not catalog.get_model("shipped-ct").user
    [broken] = catalog.broken_models()
    assert "reuses the id 'shipped-ct'" in broken["reason"]


def test_a_broken_user_card_is_reported_and_every_other_model_stays_usable(user_dir, shipped_dir):
    catalog.register_user_model(_entry(), _tiny_state())
    (user_dir / "garbage.json").write_text("{not json")
    (user_dir / "pickled.json").write_text(json.dumps({"schema_version": 1, **{**_entry("pickled").to_dict(),
                                                                             "weights": "pickled.pt"}}))
    assert {m.id for m in catalog.list_models()} == {"shipped-ct", "tiny-denoiser"}
    reasons = {Path(b["card"]).name: b["reason"] for b in catalog.broken_models()}
    assert set(reasons) == {"garbage.json", "pickled.json"} and "pickled weights" in reasons["pickled.json"]


def test_unknown_model_lists_the_known_ones(user_dir, shipped_dir):
    with pytest.raises(ValueError, match="unknown model 'nope'.*shipped-ct"):
        catalog.get_model("nope")


def test_save_model_metadata_and_shared_tensors(tmp_path):
    base = torch.arange(6, dtype=torch.float32)
    tensors = {"a": base, "b": base[:3], "empty": torch.zeros(0)}  # "b" aliases "a"
    path = catalog.save_model(tensors, tmp_path / "m.safetensors", {"name": "x", "step": 7, "cfg": {"lr": 0.1}})
    with safetensors.safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"name": "x", "step": "7", "cfg": '{"lr": 0.1}'}
    loaded = catalog.load_weights(path)
    assert torch.equal(loaded["a"], base) and torch.equal(loaded["b"], base[:3])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    with pytest.raises(ValueError, match=r"\.safetensors"):
        catalog.save_model(tensors, tmp_path / "m.pt")


def test_model_card_validation():
    entry = _entry()
    assert ModelEntry.from_dict(entry.to_dict()) == entry
    with pytest.raises(ValueError, match="not valid"):
        ModelEntry(id="../evil", task="ldct", version="1", architecture={"network": "X"})
    with pytest.raises(ValueError, match="unknown field"):
        ModelEntry.from_dict({**entry.to_dict(), "url": "http://example"})
    with pytest.raises(ValueError, match="architecture"):
        ModelEntry(id="m", task="ldct", version="1", architecture={"kwargs": {}})


def test_shipped_catalogue_is_valid_and_verified():
    """Every model shipped with the package parses and its weights match the recorded sha256."""
    data = json.loads((catalog.SHIPPED_DIR / "catalog.json").read_text())
    assert data["schema_version"] == catalog.SCHEMA_VERSION and isinstance(data["models"], list)
    entries = catalog.shipped_models()
    assert len({m.id for m in entries}) == len(entries)
    for entry in entries:
        assert entry.weights and entry.sha256, entry.id
        assert catalog.load_state_dict(entry)


def test_safetensors_whose_header_length_starts_with_0x80_is_accepted(tmp_path):
    """The first byte of a safetensors file is its header length's low byte, which can be 0x80,
    the same byte a pickle starts with: such a file must still be accepted."""
    import struct

    from meddiffusion.catalog import check_safetensors, save_model

    for n in range(300):
        path = save_model({"w": torch.zeros(2)}, tmp_path / "m.safetensors", metadata={"pad": "x" * n})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80 and struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    check_safetensors(path)
