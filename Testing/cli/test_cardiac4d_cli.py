"""``meddiff synth-cardiac`` and ``meddiff train cardiac4d`` end to end in child processes.

The cascade under test is untrained and tiny (``tiny_models.cardiac4d_models``, or the three
stages trained here for a few steps): its hearts fail the plausibility checks, so runs pass
``--keep-implausible``, and the command must then say so. What the command guarantees whatever
the networks: the request's checks, the sequences' frames, grid and label values, the table's
volumes measured on the written labels, the nnU-Net layout, and all-or-nothing outputs.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.io.sequences import read_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
import tiny_models  # noqa: E402 - untrained tiny networks as catalogue cards
from cli_runner import jsonl, meddiff  # noqa: E402

REQUEST = ("--diagnosis", "DCM", "--edv", 230, "--esv", 170, "--slices", 9, "--frames", 10, "--steps", 2)
#: the untrained cascade, named (the shipped one ranks first), its implausible hearts kept
LOOSE = ("--model", "tiny-c4d-motion", "--keep-implausible", "--max-attempts", 1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from meddiffusion.catalog import register_user_model

    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDIFF_MODEL_DIR", str(folder))
        for entry, state in tiny_models.cardiac4d_models():
            register_user_model(entry, state)
    return {**os.environ, "MEDDIFF_MODEL_DIR": str(folder), "MEDDIFF_THREADS": "1"}


def test_one_cine_with_labels_and_volumes(env, tmp_path):
    out = tmp_path / "cine.seq.nrrd"
    run = meddiff("synth-cardiac", *REQUEST, *LOOSE, "--seed", 3, "-o", out, "--labels", tmp_path / "labels.seq.nrrd",
                  "--table", tmp_path / "v.csv", "--heart-rate", 60, "--events", "jsonl", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    result = jsonl(run.stdout)[-1]
    assert result["event"] == "result" and result["requested"]["edv_ml"] == 230 and not result["plausible"]
    assert any("implausible labels kept" in w for w in result["warnings_request"])
    frames, times = read_sequence(out)
    labels, _ = read_sequence(tmp_path / "labels.seq.nrrd")
    assert len(frames) == len(labels) == 10 and frames[0].shape == (9, 32, 32)
    assert times == pytest.approx([100.0 * k for k in range(10)])  # 60 bpm: 1000 ms / 10 frames
    assert frames[0].spacing == pytest.approx((3.0, 3.0, 10.0)) and frames[0].modality == "MR"
    assert set(np.unique(np.stack([f.array for f in labels]))) <= {0, 1, 2, 3}
    with open(tmp_path / "v.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    voxel_ml = 3.0 * 3.0 * 10.0 / 1000
    for row, frame in zip(rows, labels):
        assert float(row["lv_ml"]) == pytest.approx((frame.array == 3).sum() * voxel_ml, abs=0.01)
        assert float(row["myo_ml"]) == pytest.approx((frame.array == 2).sum() * voxel_ml, abs=0.01)
    assert result["measured"]["lv_edv_ml"] == pytest.approx(max(float(r["lv_ml"]) for r in rows), abs=0.01)


def test_the_same_seed_gives_the_same_cine_and_another_a_different_one(env, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run = meddiff("synth-cardiac", *REQUEST, *LOOSE, "--seed", seed, "-o", tmp_path / f"{name}.seq.nrrd", env=env)
        assert run.returncode == 0, run.stderr[-2000:]
    a, b, c = (np.stack([f.array for f in read_sequence(tmp_path / f"{n}.seq.nrrd")[0]]) for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_impossible_requests_are_refused_before_any_work(env, tmp_path):
    out = tmp_path / "x.seq.nrrd"
    cases = (
        (("--diagnosis", "DCM", "--edv", 150, "--esv", 170), "end-systolic volume must be smaller"),
        (("--diagnosis", "NOR", "--edv", 140, "--ef", 95), "ejection fraction 95 % is outside"),
        (("--diagnosis", "NOR", "--edv", 140, "--ef", 20), "contradicts"),
        (("--diagnosis", "HCM", "--edv", 110), "exactly one of --esv"),
        (("--diagnosis", "DCM", "--esv", 100), "--edv"),
        (("--diagnosis", "ABC", "--edv", 140, "--ef", 60), "diagnosis"),
        (("--diagnosis", "NOR", "--edv", 140, "--ef", 60, "--slices", 30), "slices"),
    )
    for arguments, message in cases:
        run = meddiff("synth-cardiac", *arguments, "-o", out, "--events", "jsonl", env=env)
        assert run.returncode == 2, (arguments, run.stderr[-500:])
        event = jsonl(run.stdout)[-1]
        assert event["event"] == "error" and message in event["message"], (arguments, event)
    assert list(tmp_path.iterdir()) == []


def test_dataset_mode_writes_nnunet_raw_layout(env, tmp_path):
    folder = tmp_path / "Dataset501_Synth"
    run = meddiff("synth-cardiac", "--diagnosis", "HCM", "--edv", 110, "--ef", 70, "--count", 2, "--frames", 10,
                  "--slices", 8, "--steps", 1, *LOOSE, "-o", folder, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3} and meta["numTraining"] == 20
    images, labels = sorted((folder / "imagesTr").iterdir()), sorted((folder / "labelsTr").iterdir())
    assert len(images) == len(labels) == 20 and images[0].name.endswith("_0000.nii.gz")
    first = read_volume(labels[0])
    assert first.shape == (8, 32, 32) and set(np.unique(first.array)) <= {0, 1, 2, 3}
    with open(folder / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {"requested_edv_ml", "measured_lv_edv_ml", "plausible"} <= set(rows[0])
    # requests are spread around the given one (EDV within 7 %), unless --exact
    assert all(abs(float(r["requested_edv_ml"]) - 110) <= 0.07 * 110 + 1e-6 for r in rows)
    assert len({r["requested_edv_ml"] for r in rows}) == 2
    refused = meddiff("synth-cardiac", "--diagnosis", "HCM", "--edv", 110, "--ef", 70, "--count", 2, "-o", folder,
                      env=env)
    assert refused.returncode == 2 and "not empty" in refused.stderr + refused.stdout


def test_the_anatomy_of_a_given_stack_is_kept(env, tmp_path):
    from meddiffusion.phantoms import Phantom
    from meddiffusion.tasks.cardiac4d.cine import CineProtocol, acquire
    from meddiffusion.tasks.cardiac4d.measure import clinical_values

    study = acquire(Phantom.sample("MINF", 4), CineProtocol(matrix=48, pixel_mm=3.5, frames=4), 4)
    g = study.grid
    ed = Volume((study.images[0] + 1) * 500, spacing=g.spacing, origin=g.origin, direction=g.direction,
                modality="MR")
    write_volume(ed, tmp_path / "ed.nrrd")
    out = tmp_path / "motion.seq.nrrd"
    # the shipped cascade: an untrained VAE reads no heart in the stack, and its EDV is the request's
    run = meddiff("synth-cardiac", "--anatomy", tmp_path / "ed.nrrd", "--diagnosis", "MINF", "--ef", 35, "--frames",
                  10, "--steps", 1, "--model", "cardiac4d-motion-small", "--keep-implausible", "--max-attempts", 1,
                  "-o", out, "--events", "jsonl", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    result = jsonl(run.stdout)[-1]
    assert result["anatomy_given"] and result["requested"]["slices"] == ed.shape[0]
    truth = clinical_values(study.labels, g.spacing)["lv_edv_ml"]
    assert result["requested"]["edv_ml"] == pytest.approx(truth, rel=0.25)
    frames, _ = read_sequence(out)
    assert frames[0].shape[0] == ed.shape[0]
    assert np.allclose(frames[0].direction, ed.direction, atol=1e-6)  # the stack's own axes
    assert frames[0].spacing[2] == pytest.approx(ed.spacing[2])
    centre = lambda v: v.index_to_physical([(s - 1) / 2 for s in v.shape])  # noqa: E731
    assert np.allclose(centre(frames[0]), centre(ed), atol=1e-3)


def test_three_stages_train_and_their_cascade_runs(env, tmp_path):
    data = tmp_path / "data"
    common = ("--config", "tiny", "--studies", 2, "--val-studies", 1, "--data", data, "--steps", 2, "--batch-size", 2,
              "--frames", 4, "--events", "jsonl")
    for variant in ("vae", "anatomy", "motion"):
        extra = () if variant == "vae" else ("--vae", "t-vae", "--anatomy", "t-anatomy")
        run = meddiff("train", "cardiac4d", "--variant", variant, *common, *extra, "--out", tmp_path / variant,
                      "--register", f"t-{variant}", env=env, timeout=600)
        assert run.returncode == 0, (variant, run.stderr[-3000:])
    cards = {v: json.loads((tmp_path / v / "model.json").read_text()) for v in ("vae", "anatomy", "motion")}
    assert cards["vae"]["architecture"]["latent_scale"] > 0
    assert cards["vae"]["architecture"]["grid"] == {"matrix": 96, "pixel_mm": 1.75, "slice_mm": 10.0, "depth": 16}
    assert cards["motion"]["architecture"]["anatomy"] == "t-anatomy" and cards["motion"]["architecture"]["vae"] == "t-vae"
    assert cards["motion"]["architecture"]["motion_scale"] > 0
    assert "5 copies resized" in cards["anatomy"]["training_data"]
    command = cards["motion"]["training_command"]
    assert command.startswith("meddiff train cardiac4d") and "--variant motion" in command and "--vae t-vae" in command
    assert list(data.glob("latents-*.npz"))  # the LDM stages share one encoding of the studies
    assert list(data.glob("anatomy-copies-*-n5.npz"))  # the anatomy stage's resized copies, the paper's five
    run = meddiff("synth-cardiac", *REQUEST, *LOOSE, "--model", "t-motion", "-o", tmp_path / "c.seq.nrrd", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert read_sequence(tmp_path / "c.seq.nrrd")[0][0].shape == (9, 96, 96)


def test_each_stage_fine_tunes_from_its_card_and_lowers_the_validation_loss(env, tmp_path):
    common = ("--config", "tiny", "--studies", 2, "--val-studies", 1, "--data", tmp_path / "data", "--batch-size", 2,
              "--frames", 4, "--val-every", 0, "--ckpt-every", 0, "--events", "jsonl")
    parents = {"vae": ("--register", "ft-vae"), "anatomy": ("--vae", "ft-vae", "--register", "ft-anatomy")}
    for variant, flags in parents.items():
        run = meddiff("train", "cardiac4d", "--variant", variant, *common, "--steps", 2, *flags, "--out",
                      tmp_path / f"{variant}-parent", env=env, timeout=600)
        assert run.returncode == 0, (variant, run.stderr[-3000:])
        run = meddiff("train", "cardiac4d", "--variant", variant, *common, "--steps", 8, "--lr", "1e-3",
                      "--from-model", f"ft-{variant}", "--out", tmp_path / variant, env=env, timeout=600)
        assert run.returncode == 0, (variant, run.stderr[-3000:])
        result = jsonl(run.stdout)[-1]
        assert result["val_loss_end"] < result["val_loss_start"], (variant, result)
        assert result["provenance"]["parent"]["id"] == f"ft-{variant}" and result["gate"]["metric"] == \
            ("psnr" if variant == "vae" else "mse")
    card = json.loads((tmp_path / "anatomy" / "model.json").read_text())
    assert card["architecture"]["vae"] == "ft-vae"                      # the parent's latent space, kept


def test_a_decoder_only_fine_tune_keeps_the_latents_and_the_label_decoder(env, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from meddiffusion.catalog import get_model

    common = ("train", "cardiac4d", "--variant", "vae", "--config", "tiny", "--studies", 2, "--val-studies", 1,
              "--data", tmp_path / "data", "--batch-size", 2, "--frames", 4, "--val-every", 0, "--ckpt-every", 0,
              "--events", "jsonl")
    run = meddiff(*common, "--steps", 2, "--register", "dec-vae", "--out", tmp_path / "parent", env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    run = meddiff(*common, "--steps", 3, "--lr", "1e-3", "--from-model", "dec-vae", "--decoder-only", "--out",
                  tmp_path / "run", env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    monkeypatch.setenv("MEDDIFF_MODEL_DIR", env["MEDDIFF_MODEL_DIR"])
    parent = get_model("dec-vae")
    before, after = parent.state_dict(), load_file(tmp_path / "run" / "model.safetensors")
    changed = {name for name in before if not (before[name] == after[name]).all()}
    assert changed and all(name.startswith("image_decoder.") for name in changed), sorted(changed)[:5]
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["architecture"]["latent_scale"] == parent.architecture["latent_scale"]
    assert "label decoder frozen" in card["description"]


def test_decoder_only_needs_a_vae_card_to_fine_tune(env, tmp_path):
    run = meddiff("train", "cardiac4d", "--variant", "vae", "--config", "tiny", "--decoder-only", "--studies", 2,
                  "--val-studies", 1, "--out", tmp_path / "run", "--events", "jsonl", env=env)
    assert run.returncode == 2 and "name the card with --from-model" in jsonl(run.stdout)[-1]["message"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (("--variant", "motion"), "holds the network AnatomyLDM; --variant motion fine-tunes MotionLDM cards"),
    (("--variant", "anatomy", "--vae", "tiny-c4d-vae", "--from-model", "tiny-c4d-anatomy", "--timesteps", 50),
     "was trained with T=1000 and epsilon-prediction; pass --timesteps 1000 --prediction epsilon"),
])
def test_a_fine_tune_refuses_another_stage_or_schedule_before_any_work(env, tmp_path, flags, message):
    run = meddiff("train", "cardiac4d", "--config", "tiny", "--from-model", "tiny-c4d-anatomy", *flags, "--studies", 2,
                  "--val-studies", 1, "--out", tmp_path / "run", "--events", "jsonl", env=env)
    assert run.returncode == 2 and message in jsonl(run.stdout)[-1]["message"], run.stdout[-800:]
    assert not (tmp_path / "run").exists()


def test_a_dataset_from_a_given_anatomy_keeps_its_slices(env, tmp_path):
    from meddiffusion.phantoms import Phantom
    from meddiffusion.tasks.cardiac4d.cine import CineProtocol, acquire

    study = acquire(Phantom.sample("NOR", 6), CineProtocol(matrix=48, pixel_mm=3.5, frames=4), 6)
    g = study.grid
    write_volume(Volume((study.images[0] + 1) * 500, spacing=g.spacing, origin=g.origin, direction=g.direction,
                        modality="MR"), tmp_path / "ed.nrrd")
    folder = tmp_path / "motion_dataset"
    run = meddiff("synth-cardiac", "--anatomy", tmp_path / "ed.nrrd", "--diagnosis", "NOR", "--ef", 60, "--count", 2,
                  "--frames", 10, "--steps", 1, *LOOSE, "-o", folder, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    first = read_volume(sorted((folder / "labelsTr").iterdir())[0])
    assert first.shape[0] == study.images.shape[1] and first.spacing[2] == pytest.approx(g.spacing[2])
