"""``meddiff pet-denoise``, ``simulate-pet`` and ``train petmr`` end to end in child processes.

No trained PET model ships yet, so untrained tiny CSRD networks (PET only, and MR-guided) are
registered in a temporary user model folder and named with ``--model``. An untrained network's
residual is noise; what the command guarantees whatever the network is under test: the PET's
grid and scale (total activity), the MR's registration, and the refusals.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.tasks.petmr.recipe import RECIPE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
from tiny_models import petmr_model, petmr_mr_model  # noqa: E402 - untrained tiny CSRD networks as catalogue cards
from cli_runner import jsonl, meddiff  # noqa: E402 - Testing/cli's one child-process runner

PET_ONLY, GUIDED = "tiny-petmr", "tiny-petmr-mr"
#: how far the MR's anatomy lies from the PET's (x, y, z mm, LPS): the registration must measure it
SHIFT = np.array([3.0, -2.0, 4.0])
#: Bq/ml per SUV unit (370 MBq into 70 kg): the PET is given in Bq/ml, far from the network's 0-1 scale
BQML_PER_SUV = 5300.0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from meddiffusion.catalog import register_user_model

    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDIFF_MODEL_DIR", str(folder))
        register_user_model(*petmr_model(PET_ONLY))
        register_user_model(*petmr_mr_model(GUIDED))
    # one thread: on a shared 2-core machine two OpenMP threads stall each other on a tiny network
    return {**os.environ, "MEDDIFF_MODEL_DIR": str(folder), "MEDDIFF_THREADS": "1"}


def test_help_names_the_mr_the_pet_only_model_and_examples():
    top = meddiff("--help", env=None)
    assert top.returncode == 0 and "pet-denoise" in top.stdout and "simulate-pet" in top.stdout
    for command, words in ((("pet-denoise",), ("--mr MR", "Without --mr the PET-only model runs", "total activity",
                                               "meddiff pet-denoise low.nrrd --mr t1.nrrd")),
                           (("simulate-pet",), ("--kind {brain,thorax}", "--drf N [N ...]", "the held-out 10",
                                                "meddiff simulate-pet -o brain_001/")),
                           (("train", "petmr"), ("--no-mr", "--patch PATCH", "tiny (tests)",
                                                 "meddiff train petmr --config small --no-mr"))):
        result = meddiff(*command, "--help", env=None)
        assert result.returncode == 0 and "examples:" in result.stdout, result.stderr
        for word in words:
            assert word in result.stdout, (command, word)


def head(points: np.ndarray, pet: bool) -> np.ndarray:
    """An analytic head at world points (..., x/y/z mm): FDG activity in SUV, or T1 MR intensity."""
    x, y, z = np.moveaxis(points, -1, 0)

    def ellipsoid(centre, axes):
        return sum(((c - m) / a) ** 2 for c, m, a in zip((x, y, z), centre, axes)) < 1

    scalp, brain = ellipsoid((0, 0, 0), (70, 85, 60)), ellipsoid((0, 0, 2), (62, 77, 52))
    white = ellipsoid((0, 0, 4), (45, 58, 38))
    ventricles = ellipsoid((-8, 5, 6), (6, 20, 10)) | ellipsoid((8, 5, 6), (6, 20, 10))
    lesion = ellipsoid((25, -30, 10), (8, 8, 8))
    if pet:
        return 0.3 * scalp + 4.0 * brain - 2.5 * white - 1.2 * ventricles + 6.0 * lesion
    return 60.0 * scalp + 60.0 * brain + 80.0 * white - 170.0 * ventricles - 30.0 * lesion


def sampled(shape, spacing, origin, pet: bool, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``head`` on an axis-aligned grid (z, y, x), its anatomy moved by ``shift`` mm."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    points = np.stack([o + n * s for o, n, s in zip(origin, (i, j, k), spacing)], axis=-1) - np.asarray(shift)
    return head(points, pet)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A low-count PET (Bq/ml, 4 × 4 × 3 mm), its MR on a 2 mm grid moved by SHIFT, an MR far away, a CT."""
    from scipy.ndimage import gaussian_filter

    folder = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    suv = gaussian_filter(sampled((32, 48, 48), (4.0, 4.0, 3.0), (-94.0, -94.0, -46.5), True), 1.0)
    counts = rng.poisson(np.clip(suv, 0, None) * 20) / 20
    pet = Volume((counts * BQML_PER_SUV).astype(np.float32), (4.0, 4.0, 3.0), (-94.0, -94.0, -46.5), modality="PT")
    mr_origin = (-89.0, -101.0, -58.0)
    mr = gaussian_filter(sampled((60, 100, 90), (2.0, 2.0, 2.0), mr_origin, False, SHIFT), 0.7)
    mr = Volume(np.abs(mr + rng.normal(0, 5, mr.shape)).astype(np.float32), (2.0, 2.0, 2.0), mr_origin,
                modality="MR")
    far = Volume(mr.array, mr.spacing, (mr_origin[0] + 400.0, *mr_origin[1:]), modality="MR")
    ct = np.where(suv > 0.2, 40.0, -1000.0) + rng.normal(0, 10, suv.shape)
    paths = {"pet": folder / "pet.nrrd", "mr": folder / "mr.nrrd", "far": folder / "far_mr.nrrd",
             "ct": folder / "ct.nrrd"}
    for key, volume in (("pet", pet), ("mr", mr), ("far", far),
                        ("ct", Volume(ct.astype(np.float32), pet.spacing, pet.origin, modality="CT"))):
        write_volume(volume, paths[key])
    return paths


def assert_on_the_pet_grid_and_scale(out: Volume, pet: Volume) -> None:
    assert out.shape == pet.shape and out.spacing == pet.spacing and out.origin == pet.origin
    assert np.allclose(out.direction, pet.direction)
    assert out.array.min() >= 0
    assert out.array.sum() / np.clip(pet.array, 0, None).sum() == pytest.approx(1.0, abs=0.01)
    assert 0.2 < out.array.max() / pet.array.max() < 5  # Bq/ml, not the network's 0-1 scale


def test_pet_only_keeps_the_grid_units_and_total_activity(env, study, tmp_path):
    out = tmp_path / "denoised.nrrd"
    result = meddiff("pet-denoise", study["pet"], "-o", out, "--model", PET_ONLY, "--steps", 2, "--events", "jsonl",
                     env=env)
    assert result.returncode == 0, result.stderr
    events = jsonl(result.stdout)
    final = events[-1]
    assert final["event"] == "result" and final["model"] == PET_ONLY and final["steps"] == 2
    assert final["mr_guided"] is False and "registration" not in final
    assert [e["stage"] for e in events if e["event"] == "progress"][-1] == "write"
    assert "register MR" not in {e.get("stage") for e in events}
    ratio = final["total_activity_ratio"]
    assert final["total_rescaled"] == (abs(ratio - 1) > 0.01)
    assert "PET only" in final["summary"] and f"total activity × {ratio:.3f}" in final["summary"]
    assert_on_the_pet_grid_and_scale(read_volume(out), read_volume(study["pet"]))


def test_mr_guided_measures_and_registers_a_shifted_mr_on_another_grid(env, study, tmp_path):
    out = tmp_path / "denoised.nrrd"
    result = meddiff("pet-denoise", study["pet"], "--mr", study["mr"], "-o", out, "--model", GUIDED, "--steps", 1,
                     "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    events = jsonl(result.stdout)
    final = events[-1]
    assert final["mr_guided"] is True and "register MR" in {e.get("stage") for e in events}
    registration = final["registration"]
    assert registration["registered"] is True and registration["rotation_deg"] < 1.0
    assert np.allclose(registration["translation_mm"], SHIFT, atol=1.0)
    assert registration["shift_mm"] == pytest.approx(np.linalg.norm(SHIFT), abs=1.0)
    assert f"MR registered (measured {registration['shift_mm']:.1f} mm" in final["summary"]
    assert "total activity ×" in final["summary"]
    assert_on_the_pet_grid_and_scale(read_volume(out), read_volume(study["pet"]))


@pytest.mark.parametrize("case, message", [
    ("mr with a PET-only model", f"model '{PET_ONLY}' reads PET only and cannot use --mr"),
    ("guided model without mr", f"model '{GUIDED}' is MR-guided: give the patient's MR with --mr"),
    ("mr elsewhere", "the MR covers only 0% of the PET's field of view"),
    ("ct as pet", "looks like CT in HU"),
])
def test_refusals_say_why_and_write_nothing(env, study, tmp_path, case, message):
    out = tmp_path / "denoised.nrrd"
    arguments = {"mr with a PET-only model": (study["pet"], "--mr", study["mr"], "--model", PET_ONLY),
                 "guided model without mr": (study["pet"], "--model", GUIDED),
                 "mr elsewhere": (study["pet"], "--mr", study["far"], "--model", GUIDED),
                 "ct as pet": (study["ct"], "--model", PET_ONLY)}[case]
    result = meddiff("pet-denoise", *arguments, "-o", out, "--steps", 1, "--events", "jsonl", env=env)
    assert result.returncode == 2, result.stderr
    error = jsonl(result.stdout)[-1]
    assert error["event"] == "error" and error["kind"] == "input" and message in error["message"], error
    assert list(tmp_path.iterdir()) == []


def test_simulate_pet_writes_a_thorax_subject_on_one_grid(env, tmp_path):
    folder = tmp_path / "thorax"
    result = meddiff("simulate-pet", "-o", folder, "--kind", "thorax", "--seed", 3, "--drf", 4, 10, "--events",
                     "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["full.nrrd", "low_drf4.nrrd", "low_drf10.nrrd", "mr.nrrd", "mumap.nrrd", "activity.nrrd", "lesions.nrrd",
         "subject.json"])
    assert final["summary"].startswith("thorax subject, seed 3") and "DRF 4 10" in final["summary"]
    info = json.loads((folder / "subject.json").read_text(encoding="utf-8"))
    assert info["kind"] == "thorax" and info["seed"] == 3 and info["units"]["pet"].startswith("SUV")
    volumes = {name: read_volume(folder / f"{name}.nrrd") for name in ("full", "low_drf4", "low_drf10", "mr",
                                                                         "activity")}
    full, truth = volumes["full"], volumes["activity"]
    for volume in volumes.values():
        assert volume.shape == full.shape and volume.spacing == full.spacing and volume.origin == full.origin
    assert full.spacing == (4.0, 4.0, 4.0)
    body = truth.array > 0.5
    # every dose is reconstructed in SUV: the same mean uptake, more noise at the lower dose
    for low in (volumes["low_drf4"], volumes["low_drf10"]):
        assert low.array[body].mean() == pytest.approx(full.array[body].mean(), rel=0.1)
    error4, error10 = (np.std((volumes[name].array - full.array)[body]) for name in ("low_drf4", "low_drf10"))
    assert error10 > 1.2 * error4

    again = meddiff("simulate-pet", "-o", folder, "--events", "jsonl", env=env)
    assert again.returncode == 2 and "must be new or empty" in jsonl(again.stdout)[-1]["message"]
    bad = meddiff("simulate-pet", "-o", tmp_path / "other", "--drf", 1, 4, "--events", "jsonl", env=env)
    assert bad.returncode == 2 and "integers > 1" in jsonl(bad.stdout)[-1]["message"]
    assert not (tmp_path / "other").exists()


def test_train_petmr_tiny_writes_a_loadable_card(env, tmp_path, monkeypatch):
    from meddiffusion.catalog import get_model
    from meddiffusion.tasks.petmr.model import build_model

    out, data = tmp_path / "run", tmp_path / "data"
    common = ("--config", "tiny", "--kind", "thorax", "--subjects", 1, "--val-subjects", 1, "--patch", 16,
              "--data", data, "--events", "jsonl", "--threads", 1)
    result = meddiff("train", "petmr", *common, "--steps", 2, "--batch-size", 2, "--val-every", 0, "--ckpt-every", 0,
                     "--out", out, "--register", "tiny-trained", env=env)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert final["event"] == "result" and final["steps"] == 2 and final["registered"]
    assert final["model_id"] == "tiny-trained" and final["val_loss_start"] > 0 and final["val_loss_end"] > 0
    assert sorted(p.name for p in data.glob("subject_*.npz")) == ["subject_0000.npz", "subject_0001.npz"]
    assert {"model.json", "model.safetensors"} <= {p.name for p in out.iterdir()}

    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert card["task"] == "petmr" and card["weights"] == "model.safetensors"
    assert card["training_command"].startswith("meddiff train petmr --config tiny --steps 2 --out")
    assert "--patch 16" in card["training_command"] and "--kind thorax" in card["training_command"]
    arch = card["architecture"]
    assert arch["network"] == "CSRDUNet3D" and arch["kwargs"]["use_mr"] is True and arch["patch"] == 16
    assert arch["diffusion"]["kind"] == "edm_residual" and arch["sampler"]["kind"] == "heun"
    assert "T1 MR" in card["description"] and "1 simulated FDG PET/MR subjects" in card["training_data"]
    assert card["normalization"]["kind"] == "csrd" and card["metrics"]["subjects"] == 1

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", env["MEDDIFF_MODEL_DIR"])
    entry = get_model("tiny-trained")
    model = build_model(entry.architecture, entry.state_dict(), entry)  # strict: every weight, none left over
    assert model.use_mr and model.id == "tiny-trained"


def test_a_fine_tune_lowers_the_validation_loss_and_goes_through_the_gate(env, tmp_path):
    result = meddiff("train", "petmr", "--config", "tiny", "--kind", "thorax", "--subjects", 1, "--val-subjects", 1,
                     "--patch", 16, "--data", tmp_path / "data", "--no-mr", "--from-model", PET_ONLY, "--steps", 20,
                     "--batch-size", 2, "--val-every", 0, "--ckpt-every", 0, "--out", tmp_path / "run", "--events",
                     "jsonl", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    final = jsonl(result.stdout)[-1]
    assert final["val_loss_end"] < final["val_loss_start"]
    assert final["gate"]["metric"] == "psnr" and final["provenance"]["parent"]["id"] == PET_ONLY


@pytest.mark.xfail(RECIPE.score is None, strict=True,
                   reason="meddiff train petmr cannot fine-tune yet: its recipe has no score for the registration gate")
@pytest.mark.parametrize("parent, flags, message", [
    (GUIDED, ("--no-mr",), f"--from-model '{GUIDED}' reads the MR; drop --no-mr to match"),
    (PET_ONLY, (), f"--from-model '{PET_ONLY}' does not read the MR; pass --no-mr to match"),
])
def test_train_petmr_refuses_a_parent_that_reads_the_mr_otherwise(env, tmp_path, parent, flags, message):
    result = meddiff("train", "petmr", "--config", "tiny", "--patch", 16, "--from-model", parent, *flags, "--out",
                     tmp_path / "run", "--events", "jsonl", env=env)
    assert result.returncode == 2 and message in jsonl(result.stdout)[-1]["message"], result.stdout[-500:]
    assert list(tmp_path.iterdir()) == []  # refused before any subject is simulated
