"""Low-dose CT commands end to end as child processes: train, simulate-ldct, ldct-denoise, ldct-adapt.

A tiny CLEAR-Net is trained once by ``meddiff train ldct`` into a temporary user model folder;
the other commands run with it (and ``ldct-denoise`` also with the shipped default model) on
pydicom's bundled CT slice and on small synthetic volumes.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.tasks.ldct.model import DEFAULT_DOSE

from cli_runner import jsonl, meddiff  # Testing/cli's one child-process runner

pydicom_data = pytest.importorskip("pydicom.data")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {**os.environ, "MEDDIFF_MODEL_DIR": str(folder), "MEDDIFF_THREADS": "2"}


@pytest.fixture(scope="module")
def tiny_model(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = meddiff("train", "ldct", "--config", "tiny", "--steps", "40", "--lr", "3e-3", "--out", out, "--register", "tiny-ldct",
                     "--size", "48", "--slices", "3", "--slabs", "1", "--val-slabs", "1", "--crop", "32",
                     "--pixel-range", "4", "5", "--noise-range", "10", "20", "--val-every", "0", "--ckpt-every", "0",
                     "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert final["event"] == "result" and final["registered"] and final["steps"] == 40
    assert 0 < final["val_loss_start"] < 1 and 0 < final["val_loss_end"] < 1
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "ldct" and card["training_command"].startswith("meddiff train ldct --config tiny")
    assert card["metrics"]["dose"] == DEFAULT_DOSE  # shown by the module's model selector
    assert (out / "model.safetensors").is_file() and (out / "data" / "slab_0001.npz").is_file()
    return "tiny-ldct"


@pytest.fixture(scope="module")
def ct_small():
    return pydicom_data.get_testdata_file("CT_small.dcm")


def water_volume(slices=3, size=64):
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (0.4 * size) ** 2
    array = np.where(disk, 40.0, -1000.0).astype(np.float32)
    return Volume(np.repeat(array[None], slices, axis=0), (1.5, 1.5, 2.5), (3.0, -4.0, 5.0), modality="CT")


def same_grid(a, b):
    return (a.shape == b.shape and np.allclose(a.spacing, b.spacing) and np.allclose(a.origin, b.origin)
            and np.allclose(a.direction, b.direction))


def test_ldct_denoise_bundled_sample_keeps_grid_and_hu(tmp_path, env, tiny_model, ct_small):
    out = tmp_path / "denoised.nrrd"
    result = meddiff("ldct-denoise", ct_small, "-o", out, "--model", tiny_model, "--steps", "2", "--events", "jsonl",
                     env=env)
    assert result.returncode == 0, result.stderr
    events = jsonl(result.stdout)
    assert events[-1]["event"] == "result" and events[-1]["model"] == tiny_model and events[-1]["steps"] == 2
    denoise = [e for e in events if e["event"] == "progress" and e["stage"] == "denoise"]
    assert denoise[-1]["done"] == denoise[-1]["total"] == 2
    source, denoised = read_volume(ct_small), read_volume(out)
    assert same_grid(source, denoised)
    assert np.isfinite(denoised.array).all()
    assert -1024 <= denoised.array.min() and denoised.array.max() <= 3072   # HU, not the network's [0, 1] scale
    body = source.array > -200
    assert float(np.abs(denoised.array - source.array)[body].mean()) < 150


def read_png(path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_ldct_denoise_bundled_sample_writes_volume_and_before_after_png(tmp_path, env, tiny_model):
    """The README's command on the bundled sample, with the tiny model at 1 step to stay fast."""
    from meddiffusion.figures import SEPARATOR_PX

    sample = Path(__file__).resolve().parents[2] / "meddiffusion" / "data" / "sample_ldct_chest.nrrd"
    out, png = tmp_path / "denoised.nrrd", tmp_path / "before_after.png"
    result = meddiff("ldct-denoise", sample, "-o", out, "--png", png, "--png-slice", "3", "--model", tiny_model,
                     "--steps", "1", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert final["event"] == "result" and final["png"] == str(png) and str(png) in final["summary"]
    source, denoised = read_volume(sample), read_volume(out)
    assert same_grid(source, denoised)
    rgb = read_png(png)
    size = source.shape[2]
    assert rgb.shape == (source.shape[1], 2 * size + SEPARATOR_PX, 3)
    # left: low-dose slice 3 in the soft-tissue window (-160, 240); right: the denoised one
    for array, panel in ((source.array, rgb[:, :size, 0]), (denoised.array, rgb[:, size + SEPARATOR_PX:, 0])):
        expected = np.clip((array[3] + 160) / 400, 0, 1) * 255
        assert np.abs(panel[40:].astype(float) - expected[40:]).max() <= 1.0   # below the label


def test_ldct_denoise_failures_leave_neither_volume_nor_png(tmp_path, env, tiny_model):
    source = write_volume(water_volume(slices=3), tmp_path / "ct.nrrd")
    png = tmp_path / "ba.png"
    result = meddiff("ldct-denoise", source, "-o", tmp_path / "out.nrrd", "--png", png, "--png-slice", "3",
                     "--model", tiny_model, env=env)
    assert result.returncode == 2 and "--png-slice 3 is outside the input's axial slices 0..2" in result.stderr
    # the volume cannot be written (its folder is a file): refused before any work, the picture not made
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = meddiff("ldct-denoise", source, "-o", blocker / "out.nrrd", "--png", png, "--model", tiny_model,
                     "--steps", "1", env=env)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "ct.nrrd"]


def test_shipped_default_model_reduces_noise(tmp_path, env, ct_small):
    from meddiffusion.catalog import shipped_models
    from meddiffusion.tasks.ldct.physics import estimate_noise_hu

    if not [m for m in shipped_models() if m.task == "ldct"]:
        pytest.skip("no shipped LDCT model in this checkout")
    out = tmp_path / "denoised.nrrd"
    result = meddiff("ldct-denoise", ct_small, "-o", out, "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    before = estimate_noise_hu(read_volume(ct_small).array[0])[0]
    after = estimate_noise_hu(read_volume(out).array[0])[0]
    assert after < 0.8 * before


def test_ldct_denoise_cancel_leaves_no_output(tmp_path, env, tiny_model):
    source = write_volume(water_volume(slices=60, size=96), tmp_path / "ct.nrrd")
    out = tmp_path / "out.nrrd"
    process = subprocess.Popen([sys.executable, "-m", "meddiffusion", "ldct-denoise", str(source), "-o", str(out),
                                "--png", str(tmp_path / "ba.png"), "--model", tiny_model, "--steps", "10", "--batch-size", "1", "--events", "jsonl"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env)
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1].get("stage") == "denoise" and events[-1]["done"] > 0:
            process.send_signal(signal.SIGTERM)
            break
    events += [json.loads(line) for line in process.stdout if line.strip()]
    assert process.wait(timeout=120) == 130
    assert events[-1]["event"] == "cancelled"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]


def test_ldct_denoise_rejects_bad_input(tmp_path, env, tiny_model):
    mr = write_volume(Volume(np.ones((2, 16, 16), np.float32) * 300, modality="MR"), tmp_path / "mr.nrrd")
    result = meddiff("ldct-denoise", mr, "-o", tmp_path / "o.nrrd", "--model", tiny_model, env=env)
    assert result.returncode == 2 and "Hounsfield" in result.stderr + result.stdout
    ct = write_volume(water_volume(), tmp_path / "ct.nrrd")
    result = meddiff("ldct-denoise", ct, "-o", tmp_path / "o.nrrd", "--model", tiny_model, "--steps", "11", env=env)
    assert result.returncode == 2 and "num_steps" in result.stderr + result.stdout
    result = meddiff("ldct-denoise", ct, "-o", tmp_path / "o.nrrd", "--model", "agatston-nothing", env=env)
    assert result.returncode == 2 and "unknown model" in result.stderr + result.stdout


def test_simulate_ldct_is_seeded_and_keeps_grid(tmp_path, env):
    source = write_volume(water_volume(), tmp_path / "ct.nrrd")
    outputs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        path = tmp_path / f"{name}.nrrd"
        result = meddiff("simulate-ldct", source, "-o", path, "--dose", "0.25", "--seed", seed, "--i0", "1e4",
                         "--noise-free", "--events", "jsonl", env=env)
        assert result.returncode == 0, result.stderr
        outputs.append(read_volume(path))
    assert same_grid(outputs[0], read_volume(source))
    np.testing.assert_array_equal(outputs[0].array, outputs[1].array)
    assert not np.array_equal(outputs[0].array, outputs[2].array)
    noise = (outputs[0].array - read_volume(source).array)[:, 24:40, 24:40]
    assert noise.std() > 1.0 and abs(noise.mean()) < noise.std()
    bad = meddiff("simulate-ldct", source, "-o", tmp_path / "x.nrrd", "--dose", "1.5", env=env)
    assert bad.returncode == 2 and "dose" in bad.stderr + bad.stdout


def test_ldct_adapt_registers_a_usable_model(tmp_path, env, tiny_model):
    clean = write_volume(water_volume(slices=3), tmp_path / "clean.nrrd")
    normal, low = tmp_path / "nd.nrrd", tmp_path / "ld.nrrd"
    assert meddiff("simulate-ldct", clean, "-o", normal, "--dose", "1", "--i0", "3e4", "--noise-free",
                   env=env).returncode == 0
    assert meddiff("simulate-ldct", normal, "-o", low, "--dose", "0.1", "--i0", "3e4", env=env).returncode == 0
    result = meddiff("ldct-adapt", low, "--target", normal, "--id", "tiny-10pct", "--base", tiny_model, "--dose", "0.1",
                     "--steps", "4", "--iterations", "40", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    final = jsonl(result.stdout)[-1]
    assert final["model_id"] == "tiny-10pct" and final["paired"] and final["slice"] == 1
    assert len(final["trajectory_weights"]) == 4 and abs(sum(final["trajectory_weights"]) - 1) < 1e-3
    assert final["loss_end"] <= final["loss_start"]
    with open(os.path.join(env["MEDDIFF_MODEL_DIR"], "tiny-10pct.json")) as handle:
        card = json.load(handle)
    assert card["architecture"]["adapted_from"] == tiny_model and card["metrics"]["dose"] == 0.1
    out = tmp_path / "out.nrrd"
    result = meddiff("ldct-denoise", low, "-o", out, "--model", "tiny-10pct", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    assert jsonl(result.stdout)[-1]["steps"] == 4 and same_grid(read_volume(out), read_volume(low))
    wrong = meddiff("ldct-denoise", low, "-o", out, "--model", "tiny-10pct", "--steps", "2", env=env)
    assert wrong.returncode == 2 and "adapted with 4" in wrong.stderr + wrong.stdout
