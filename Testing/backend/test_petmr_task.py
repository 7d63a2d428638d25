"""The PET/MR task around its network: CSRD normalisation, MR registration, data, command path and training."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from meddiffusion.io import Volume
from meddiffusion.physics.pet import PetProtocol
from meddiffusion.tasks.petmr import SPEC, infer
from meddiffusion.tasks.petmr.model import (DEFAULT_SAMPLES, RESIDUAL_SCALE, architecture_of, denormalize_pet, normalize_mr,
                                            normalize_pet, pet_range)

#: subjects small enough for tests: 8 mm voxels, 32 views, OSEM 2 × 8
TINY = {"brain": PetProtocol.for_kind("brain", voxel_mm=8.0, matrix=32, slices=24, views=32, subsets=8,
                                      iterations=2),
        "thorax": PetProtocol.for_kind("thorax", voxel_mm=8.0, matrix=64, slices=16, views=32, subsets=8,
                                       iterations=2)}


def test_csrd_normalisation():
    rng = np.random.default_rng(0)
    mr = rng.gamma(2.0, 50.0, (8, 10, 12)).astype(np.float32)
    n = normalize_mr(mr)
    p99 = np.percentile(mr, 99)
    assert n.min() == 0 and n.max() == 1 and np.mean(n == 1) == pytest.approx(0.01, abs=0.005)
    inside = mr < p99
    assert np.allclose(n[inside], (mr[inside] - mr.min()) / (p99 - mr.min()), atol=1e-6)
    low = rng.gamma(2.0, 1.0, (8, 10, 12)).astype(np.float32)
    full = low * 1.3
    scale = pet_range(low)
    assert normalize_pet(low, scale).min() == 0 and normalize_pet(low, scale).max() == pytest.approx(1)
    assert normalize_pet(full, scale).max() == pytest.approx(1.3 * low.max() / (low.max() - low.min()) -
                                                             low.min() / (low.max() - low.min()), rel=1e-5)
    assert np.allclose(denormalize_pet(normalize_pet(full, scale), scale), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="flat"):
        pet_range(np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="no contrast"):
        normalize_mr(np.zeros((4, 4, 4)))


def _rotated(volume: Volume, centre: np.ndarray, rotation: np.ndarray, shift: np.ndarray) -> Volume:
    """``volume`` moved rigidly in world space: p → centre + rotation (p − centre) + shift."""
    direction = rotation @ np.asarray(volume.direction).reshape(3, 3)
    origin = centre + rotation @ (np.asarray(volume.origin) - centre) + shift
    return Volume(volume.array, volume.spacing, tuple(origin), tuple(direction.ravel()), modality="MR")


def test_registration_recovers_a_known_rigid_move_of_a_brain_mr():
    from scipy.ndimage import gaussian_filter

    from meddiffusion.physics.brain import brain_subject

    anatomy = brain_subject(3, PetProtocol(voxel_mm=2.0, matrix=96, slices=80))
    pet = anatomy.activity.with_array(gaussian_filter(anatomy.activity.array, 1.5).astype(np.float32))
    centre = pet.index_to_physical((np.asarray(pet.shape) - 1) / 2)
    angle = math.radians(4.0)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    shift = np.array([3.0, -2.0, 4.0])
    moved = _rotated(anatomy.mr, centre, rotation, shift)
    transform = infer.estimate_rigid(pet, moved)
    found = np.asarray(transform.GetMatrix()).reshape(3, 3)
    assert np.linalg.norm(np.asarray(transform.GetTranslation()) - shift) < 1.0
    assert math.degrees(math.acos(np.clip((np.trace(found @ rotation.T) - 1) / 2, -1, 1))) < 1.0
    on_pet, info = infer.register_mr(pet, moved)
    assert info["registered"] and info["rotation_deg"] == pytest.approx(4.0, abs=1.0)
    assert info["shift_mm"] == pytest.approx(float(np.linalg.norm(shift)), abs=1.0)
    assert on_pet.shape == pet.shape and on_pet.spacing == pet.spacing
    # registered back, the MR matches the unmoved one on the PET grid
    inside = anatomy.mr.array > 0.3
    assert np.abs(on_pet.array - anatomy.mr.array)[inside].mean() < 0.05
    with pytest.raises(ValueError, match="covers only"):
        infer.register_mr(pet, _rotated(anatomy.mr, centre, np.eye(3), np.array([400.0, 0, 0])))


def test_the_cache_holds_training_doses_only_and_patches_carry_their_place(tmp_path):
    from meddiffusion.nets.csrd import global_coordinates
    from meddiffusion.tasks.petmr.data import PetmrPatches, build_cache
    from meddiffusion.training.cache import read_item

    paths = build_cache(tmp_path, range(2), 5, ("brain", "thorax"), TINY)
    full, low, drfs = read_item(paths[1], "full", "low", "drfs")
    assert drfs.tolist() == [4, 6, 8] and low.shape == (3, *full.shape) == (3, 16, 64, 64)
    data = PetmrPatches(paths, patch=16, per_volume=3, seed=0)
    assert len(data) == 2 * 3 * 3
    index = 3 * 3 + 4  # the thorax (second subject), DRF 6, its second patch
    volume, start = data.place(index)
    item = data[index]
    assert volume == 4 and data.volumes[volume][2] == 6
    scale = pet_range(low[1])
    cut = tuple(slice(s, s + 16) for s in start)
    residual = normalize_pet(full[cut], scale) - normalize_pet(low[1][cut], scale)
    assert torch.allclose(item["r"][0], torch.from_numpy(residual * RESIDUAL_SCALE))   # EDM's σ_data-sized r
    assert torch.equal(item["coords"], global_coordinates((16, 16, 16), full.shape, start))
    assert item["mr"].min() >= 0 and item["mr"].max() <= 1


def _tiny_model(model_id: str, use_mr: bool, rank: int):
    from meddiffusion.catalog import ModelEntry
    from meddiffusion.nets.csrd import CSRDUNet3D
    from meddiffusion.tasks.petmr.recipe import network_kwargs

    torch.manual_seed(0)
    net = CSRDUNet3D(use_mr, **network_kwargs("tiny"))
    architecture = architecture_of(use_mr, network_kwargs("tiny"), 16)
    architecture["sampler"]["window"] = 16  # slide over the test volume
    entry = ModelEntry(id=model_id, task="petmr", version="0.1", description="untrained tiny CSRD for tests",
                       architecture=architecture, default_for={"cpu": rank})
    return entry, net.state_dict()


@pytest.fixture
def tiny_models(tmp_path, monkeypatch):
    from meddiffusion.catalog import register_user_model

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path / "models"))
    register_user_model(*_tiny_model("tiny-petmr", True, 1))
    register_user_model(*_tiny_model("tiny-petmr-nomr", False, 2))
    return "tiny-petmr", "tiny-petmr-nomr"


def test_the_model_follows_whether_an_mr_is_given(tiny_models):
    from meddiffusion.catalog import get_model
    from meddiffusion.tasks.petmr.model import uses_mr

    guided, pet_only = tiny_models
    for mr in ("mr.nrrd", None):        # the cards' first model of the right kind (shipped ones rank with them)
        args = argparse.Namespace(model=None, mr=mr, overlap=0.25, device="cpu")
        infer.check_arguments(args, frozenset())
        assert uses_mr(get_model(args.model)) == (mr is not None)
    with pytest.raises(ValueError, match="MR-guided"):
        infer.check_arguments(argparse.Namespace(model=guided, mr=None, overlap=0.25), frozenset())
    with pytest.raises(ValueError, match="PET only"):
        infer.check_arguments(argparse.Namespace(model=pet_only, mr="mr.nrrd", overlap=0.25), frozenset())
    with pytest.raises(ValueError, match="overlap"):
        infer.check_arguments(argparse.Namespace(model=None, mr=None, overlap=1.0), frozenset())
    with pytest.raises(ValueError, match="--samples must be 1-64"):
        infer.check_arguments(argparse.Namespace(model=None, mr=None, overlap=0.25, samples=0), frozenset())


@pytest.mark.parametrize("with_mr", [True, False])
def test_the_command_path_denoises_a_tiny_pet_on_its_grid_in_its_units(tiny_models, tmp_path, with_mr):
    from meddiffusion.commands.task_command import run as run_command
    from meddiffusion.io import read_volume, write_volume
    from meddiffusion.physics.pet import simulate_pet_subject
    from meddiffusion.progress import Progress

    subject = simulate_pet_subject("brain", 2, TINY["brain"], drfs=(10,))
    pet = subject.low[10]
    pet = Volume(pet.array[:, 2:30, 1:31], (8.0, 8.0, 6.0), (-90.0, 20.5, -33.0), modality="PT", units="SUV")
    mr = subject.mr.with_array(subject.mr.array)
    write_volume(pet, tmp_path / "pet.nrrd")
    write_volume(mr, tmp_path / "mr.nrrd")
    args = argparse.Namespace(_task=SPEC, pet=str(tmp_path / "pet.nrrd"), mr=str(tmp_path / "mr.nrrd") if with_mr
                              else None, output=str(tmp_path / "out.nrrd"), model=tiny_models[0 if with_mr else 1],
                              steps=2, batch_size=2, samples=2 if with_mr else None,
                              overlap=0.25, seed=0, device="cpu", threads=1, precision="auto",
                              no_value_check=False)
    result = run_command(args, Progress())
    out = read_volume(tmp_path / "out.nrrd")
    assert out.shape == pet.shape and out.spacing == pet.spacing and out.origin == pet.origin
    assert out.array.min() >= 0 and 0.5 < out.array.max() / pet.array.max() < 2  # SUV, not the network's scale
    assert abs(out.array.sum() / pet.array.sum() - 1) <= infer.TOTAL_TOLERANCE + 1e-4
    assert result["model"] == ("tiny-petmr" if with_mr else "tiny-petmr-nomr") and result["steps"] == 2
    assert result["samples"] == (2 if with_mr else DEFAULT_SAMPLES["cpu"])  # asked, or the card's
    assert ("registration" in result) == with_mr and "total activity" in result["summary"]


def test_a_tiny_training_run_lowers_the_validation_loss(tmp_path, monkeypatch):
    from meddiffusion.progress import Progress
    from meddiffusion.tasks.petmr import recipe

    monkeypatch.setattr(recipe, "_protocols", lambda args: dict(TINY))
    args = argparse.Namespace(config="tiny", no_mr=False, subjects=2, val_subjects=1, kind="both", patch=16,
                              data=str(tmp_path / "data"), out=str(tmp_path / "run"), seed=0, variant="csrd",
                              start_share=0.0)
    data = recipe.build_data(args, Progress())
    torch.manual_seed(0)
    net = recipe.make_model(args)
    loss_fn, val_fn = recipe.make_loss(args, lambda: 0), recipe.make_val(args)
    val_batch = {key: torch.stack([data.val[i][key] for i in range(len(data.val))]) for key in data.val[0]}

    def val_loss() -> float:
        net.eval()
        with torch.no_grad():
            return float(val_fn(net, val_batch)["loss"])

    before = val_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1)).tolist()
    net.train()
    for step in range(60):
        batch = [data.train[order[(4 * step + k) % len(order)]] for k in range(4)]
        loss, _ = loss_fn(net, {key: torch.stack([b[key] for b in batch]) for key in batch[0]}, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = val_loss()
    assert after < 0.8 * before
    # the gate's metric and the preview sample the validation patches as pet-denoise does
    score = recipe.score(args, net, data, "cpu")
    assert score.metric == "psnr" and math.isfinite(score.values["psnr"])
    assert recipe.score(args, net, data, "cpu").values == score.values          # seeded: a model vs its parent
    low, output, full = recipe.preview(args, net, data, "cpu")
    assert low.shape == output.shape == full.shape == (1, 16, 16)
    assert recipe.model_id(args) == "petmr-csrd-tiny"
    args.no_mr = True
    assert recipe.model_id(args) == "petmr-csrd-nomr-tiny" and recipe.make_model(args).in_channels == 5


def test_the_plain_unet_baseline_trains_by_regression_and_runs_in_one_pass(tmp_path, monkeypatch):
    from meddiffusion.progress import Progress
    from meddiffusion.tasks.petmr import recipe
    from meddiffusion.tasks.petmr.model import build_model

    monkeypatch.setattr(recipe, "_protocols", lambda args: dict(TINY))
    args = argparse.Namespace(config="tiny", no_mr=False, subjects=2, val_subjects=1, kind="both", patch=32,
                              data=str(tmp_path / "data"), out=str(tmp_path / "run"), seed=0, variant="unet",
                              start_share=0.0)
    data = recipe.build_data(args, Progress())
    torch.manual_seed(0)
    net = recipe.make_model(args)
    loss_fn, val_fn = recipe.make_loss(args, lambda: 0), recipe.make_val(args)
    batch = {key: torch.stack([data.train[i][key] for i in range(4)]) for key in data.train[0]}
    with torch.no_grad():
        before = float(val_fn(net, batch)["loss"])
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        loss, _ = loss_fn(net, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(val_fn(net, batch)["loss"]) < 0.8 * before
    assert recipe.model_id(args) == "petmr-unet-tiny"
    args.start_share = 0.5                                            # a diffusion option: refused, not ignored
    with pytest.raises(ValueError, match="--start-share"):
        recipe.build_data(args, Progress())
    args.start_share = 0.0
    model = build_model(recipe.architecture(args), net.state_dict())
    assert model.objective == "regression" and model.use_mr
    pet = Volume(np.abs(np.random.default_rng(0).normal(2, 0.5, (10, 20, 20))).astype(np.float32), (3.0, 3.0, 3.0))
    mr = pet.with_array(np.random.default_rng(1).random((10, 20, 20)).astype(np.float32))
    calls = []
    out, figures = infer.denoise(model, pet, mr, steps=8, callback=lambda done, total: calls.append(done))
    assert out.shape == pet.shape and calls == [1]                    # one network pass, whatever the steps
    assert abs(out.array.sum() / pet.array.sum() - 1) <= infer.TOTAL_TOLERANCE + 1e-4
