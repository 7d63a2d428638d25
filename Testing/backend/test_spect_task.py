"""The SPECT task around its network: normalisation, inputs, model choice, whole-study inference with an oracle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiffusion.checks import ATTENUATION
from meddiffusion.diffusion.bridge import BrownianBridge
from meddiffusion.io import Volume, overlap_fraction, resample_inplane, resample_onto
from meddiffusion.nets.padm import physics_image
from meddiffusion.tasks.spect import infer
from meddiffusion.tasks.spect.model import (ACF_SCALE, SpectModel, denormalize_ac, normalize_ac, normalize_mu,
                                            normalize_nac, study_scale)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
import spect_phantom  # noqa: E402
import tiny_models  # noqa: E402


def _study(shape=(12, 16, 16), seed=0):
    """A NAC of random counts and its AC through a random ACF."""
    rng = np.random.default_rng(seed)
    nac = rng.gamma(2.0, 10.0, shape).astype(np.float32)
    acf = rng.uniform(1.2, 5.0, shape).astype(np.float32)
    return nac, nac * acf


def test_normalisation_round_trip_and_the_physics_contract():
    nac, ac = _study()
    scale = study_scale(nac)
    assert np.allclose(denormalize_ac(normalize_ac(ac, scale), scale), ac, rtol=1e-5, atol=1e-4)
    # with the true ACF the physics head's image is the normalised AC itself
    y = torch.from_numpy(normalize_nac(nac, scale))
    acf = torch.from_numpy(ac / nac)
    assert torch.allclose(physics_image(y, acf, ACF_SCALE), torch.from_numpy(normalize_ac(ac, scale)), atol=1e-5)
    assert normalize_mu(np.array([0.0, 0.15, 0.3])).tolist() == pytest.approx([-1.0, 0.0, 1.0])


def test_a_study_without_counts_is_refused():
    with pytest.raises(ValueError, match="no counts"):
        study_scale(np.zeros((4, 8, 8)))


def test_attenuation_map_rule_diagnoses_units():
    mu = np.full((4, 8, 8), 0.15)
    mu[:, :2] = 0.0
    ATTENUATION.check(mu, name="mu")
    with pytest.raises(ValueError, match="1/mm"):
        ATTENUATION.check(mu / 10, name="mu")
    with pytest.raises(ValueError, match="CT in HU"):
        ATTENUATION.check(mu * 1e4 - 1000, name="mu")
    with pytest.raises(ValueError, match="too large"):
        ATTENUATION.check(mu * 1e4, name="mu")


def test_resampling_keeps_world_positions():
    array = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    volume = Volume(array, spacing=(3.2, 3.2, 6.4), origin=(10.0, -5.0, 2.0))
    coarse = resample_inplane(volume, 6.4, multiple=4)
    assert coarse.shape == (4, 4, 4) and coarse.spacing == (6.4, 6.4, 6.4)
    back = resample_onto(coarse, volume)
    assert back.shape == volume.shape and back.origin == volume.origin
    assert overlap_fraction(volume, volume) == 1.0
    shifted = Volume(array, spacing=volume.spacing, origin=(10.0 + 8 * 3.2, -5.0, 2.0))
    assert overlap_fraction(shifted, volume) == 0.0


@pytest.fixture
def tiny_pair(tmp_path, monkeypatch):
    """A tiny student (the default) and a tiny teacher in a private model folder."""
    from meddiffusion.catalog import register_user_model

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path / "models"))
    for build in (tiny_models.spect_model, tiny_models.spect_teacher_model):
        register_user_model(*build())
    return "tiny-spect", "tiny-spect-teacher"


def _args(**values):
    base = {"ct": None, "mumap": None, "model": None}
    return argparse.Namespace(**{**base, **values})


def test_the_teacher_runs_exactly_when_an_attenuation_map_is_given(tiny_pair):
    student, teacher = tiny_pair
    from meddiffusion.tasks.spect.model import is_teacher

    args = _args(ct="ct.nrrd")
    infer.check_arguments(args, frozenset())
    assert is_teacher(args.model)  # the teacher the cards rank first (a shipped one or the tiny one)
    args = _args()
    infer.check_arguments(args, frozenset())
    assert args.model is None  # the cards' default, the student
    with pytest.raises(ValueError, match="either --ct or --mumap"):
        infer.check_arguments(_args(ct="a", mumap="b"), frozenset())
    with pytest.raises(ValueError, match="is a teacher"):
        infer.check_arguments(_args(model=teacher), frozenset())
    with pytest.raises(ValueError, match="CT-free"):
        infer.check_arguments(_args(model=student, mumap="mu.nrrd"), frozenset())


class _Oracle(torch.nn.Module):
    """A network whose x̂0 is the NAC's middle slice times a known ACF (the physics image with the true ACF)."""

    multiple = 1

    def __init__(self, acf: np.ndarray):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.acf = torch.from_numpy(acf)

    def forward_features(self, x_t, t, nac, mu=None):
        x0 = physics_image(nac[:, 1:2], self.acf, ACF_SCALE)
        return x0, [], {"mu": torch.full_like(x0, 0.15)}


def test_whole_study_inference_with_an_oracle_returns_the_reference_in_counts():
    rng = np.random.default_rng(3)
    nac = rng.gamma(2.0, 10.0, (10, 16, 16)).astype(np.float32)
    acf = rng.uniform(1.2, 4.0, (16, 16)).astype(np.float32)
    model = SpectModel(_Oracle(acf), BrownianBridge(500), steps=5)
    volume = Volume(nac, spacing=(6.4, 6.4, 6.4), modality="NM", units="counts")
    out, mu = infer.correct_study(model, volume, batch_size=4)
    assert out.units == "counts" and out.spacing == volume.spacing
    expected = np.minimum(nac * acf, ACF_SCALE * study_scale(nac))  # x̂0 is clipped to [-1, 1]
    assert np.allclose(out.array, expected, rtol=1e-4, atol=1e-3)
    assert np.allclose(mu.array, 0.15)


def test_context_stacks_repeat_the_edge_slices():
    array = np.arange(3)[:, None, None] * np.ones((3, 2, 2))
    assert infer.context_stack(array, 0)[:, 0, 0].tolist() == [0, 0, 1]
    assert infer.context_stack(array, 2)[:, 0, 0].tolist() == [1, 2, 2]


def test_the_command_path_runs_the_tiny_student_and_reads_the_polar_map(tiny_pair, tmp_path):
    from meddiffusion.commands.task_command import run as run_command
    from meddiffusion.io import read_volume, write_volume
    from meddiffusion.progress import Progress
    from meddiffusion.tasks.registry import get_task

    spec = get_task("spect")
    nac = Volume(spect_phantom.heart_array((24, 32, 32)), spacing=(6.4, 6.4, 6.4), modality="NM")
    write_volume(nac, tmp_path / "nac.nrrd")
    args = argparse.Namespace(_task=spec, nac=str(tmp_path / "nac.nrrd"), ct=None, mumap=None,
                              output=str(tmp_path / "ac.nrrd"), table=str(tmp_path / "polar.csv"), png=None,
                              short_axis=str(tmp_path / "sa.nrrd"), mu_estimate=None, model="tiny-spect", steps=2,
                              batch_size=8, seed=0, device="cpu", threads=1, precision="auto",
                              no_value_check=False, no_hu_check=False)
    result = run_command(args, Progress())
    ac = read_volume(tmp_path / "ac.nrrd")
    assert ac.shape == nac.shape and ac.spacing == nac.spacing and ac.array.max() > nac.array.max()
    rows = (tmp_path / "polar.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 18 and rows[0].startswith("segment,name,territory,nac_percent")
    assert read_volume(tmp_path / "sa.nrrd").array.max() > 0
    assert result["model"] == "tiny-spect" and len(result["polar_map"]["AC"]) == 17
