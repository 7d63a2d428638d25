"""The 4D cardiac synthesis backend: cine acquisition, training datasets, the cascade's sampling.

Networks are untrained and tiny (``tiny_models.cardiac4d_models``): what these tests guarantee
is the plumbing a trained cascade relies on — stacks that cover the LV, volumes conditioned as
measured, Δz = 0 at end-diastole, one initial noise for every frame, conditions that reach the
networks — not the quality of the hearts (the bench measures that).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from meddiffusion.phantoms import Phantom
from meddiffusion.tasks.cardiac4d.cine import CineProtocol, acquire, normalize_cine, phase_of_frames
from meddiffusion.tasks.cardiac4d.clinical import make_request
from meddiffusion.tasks.cardiac4d.measure import clinical_values

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
import tiny_models  # noqa: E402 - untrained tiny networks as catalogue cards

SMALL = CineProtocol(matrix=64, pixel_mm=2.5, frames=8)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from meddiffusion.catalog import register_user_model
    from meddiffusion.tasks.cardiac4d.model import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path_factory.mktemp("models")))
        for entry, state in tiny_models.cardiac4d_models():
            register_user_model(entry, state)
        yield load_model("tiny-c4d-motion")


@pytest.fixture(scope="module")
def studies():
    torch.set_num_threads(1)
    return {preset: acquire(Phantom.sample(preset, seed), SMALL, seed) for preset, seed in (("NOR", 3), ("DCM", 5))}


def test_phase_is_0_at_ed_100_at_es_and_rises_to_200():
    tau = phase_of_frames(20, 0.35)
    assert tau[0] == 0 and np.all(np.diff(tau) > 0) and tau[-1] < 200
    assert tau[7] == pytest.approx(100 * 0.35 / 0.35)  # frame 7 of 20 is t = 0.35: end-systole
    assert phase_of_frames(4, 0.5).tolist() == [0.0, 50.0, 100.0, 150.0]
    with pytest.raises(ValueError, match="systolic fraction"):
        phase_of_frames(10, 1.2)


def test_normalisation_maps_the_percentiles_to_minus_one_and_one():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, (4, 3, 16, 16))
    y = normalize_cine(x)
    assert y.min() == -1 and y.max() == 1 and np.mean(y == 1) == pytest.approx(0.005, abs=0.003)
    with pytest.raises(ValueError, match="no contrast"):
        normalize_cine(np.ones((2, 2, 4, 4)))


def test_the_stack_covers_the_lv_and_the_labels_give_its_volumes(studies):
    for preset, study in studies.items():
        truth = study.info["truth"]["lv"]
        assert SMALL.min_slices <= study.labels.shape[1] <= SMALL.depth
        assert not (study.labels[0, 0] == 3).any()  # the first slice lies below the apex
        measured = clinical_values(study.labels, study.grid.spacing)
        # 10 mm slices sample the cavity's partial volume: within 15 % of the phantom's EDV, EF within 8 points
        assert measured["lv_edv_ml"] == pytest.approx(truth["edv_ml"], rel=0.15), preset
        assert measured["lv_ef_percent"] == pytest.approx(truth["ef_percent"], abs=8), preset
        assert study.images.min() >= -1 and study.images.max() <= 1 and study.tau[0] == 0
        assert set(np.unique(study.labels)) <= {0, 1, 2, 3}


def test_a_dilated_heart_needs_more_slices_than_a_normal_one(studies):
    assert studies["DCM"].info["truth"]["lv"]["edv_ml"] > studies["NOR"].info["truth"]["lv"]["edv_ml"]
    assert studies["DCM"].labels.shape[1] >= studies["NOR"].labels.shape[1] - 2  # extra slices are drawn 0-2


def test_the_cache_is_deterministic_and_balanced(tmp_path):
    from meddiffusion.tasks.cardiac4d.data import build_cache, load_studies

    protocol = CineProtocol(matrix=32, pixel_mm=5.0, frames=4)
    paths = build_cache(tmp_path / "a", range(5), 7, protocol)
    again = build_cache(tmp_path / "b", [1], 7, protocol)
    studies = load_studies(paths)
    assert [s.preset for s in studies] == ["NOR", "MINF", "DCM", "HCM", "RV"]
    assert np.array_equal(studies[1].images, load_studies(again)[0].images)
    assert studies[2].values["lv_edv_ml"] > studies[0].values["lv_edv_ml"]  # DCM dilated against NOR


def test_ldm_datasets_condition_on_measured_values_and_have_no_motion_at_ed(tmp_path):
    from meddiffusion.tasks.cardiac4d.clinical import DIAGNOSIS_IDS
    from meddiffusion.tasks.cardiac4d.data import (AnatomyLatents, CineFrames, MotionLatents, build_cache,
                                                   load_studies, motion_std)

    protocol = CineProtocol(matrix=32, pixel_mm=5.0, frames=4)
    studies = load_studies(build_cache(tmp_path, range(2), 3, protocol))
    frames = CineFrames(studies, protocol.depth)
    item = frames[0]
    assert item["image"].shape == (1, 16, 32, 32) and item["labels"].shape == (16, 32, 32)
    assert len(frames) == 8 and item["image"][0, 0].eq(-1).all()  # padded slices are air
    rng = np.random.default_rng(0)
    latents = [rng.normal(size=(4, 2, 16, 8, 8)).astype(np.float32) for _ in studies]
    anatomy = AnatomyLatents(studies, latents, 2.0)
    assert torch.allclose(anatomy[1]["z"], torch.from_numpy(latents[1][0] * 2.0))
    assert int(anatomy[0]["diagnosis"]) == DIAGNOSIS_IDS["NOR"]
    v = studies[0].values
    expected = [v["lv_ef_percent"] / 100, v["lv_edv_ml"] / 600, v["lv_esv_ml"] / 600, studies[0].slices / 20]
    assert anatomy[0]["scalars"].tolist() == pytest.approx(expected, rel=1e-5)
    assert anatomy[0]["mask"].sum() == studies[0].slices * 8 * 8
    scale = 1 / motion_std(latents, 2.0)
    motion = MotionLatents(studies, latents, 2.0, scale)
    assert len(motion) == 8 and motion[0]["dz"].abs().max() == 0  # ED: Δz = 0
    assert np.allclose(motion[2]["dz"].numpy(), (latents[0][2] - latents[0][0]) * 2.0 * scale, atol=1e-5)
    assert float(motion[2]["tau"]) == pytest.approx(float(studies[0].tau[2]))


def test_resized_copies_scale_the_heart_and_its_volumes_and_join_the_anatomy_set(tmp_path):
    from meddiffusion.nets.cardiac4d import DualDecoderVAE
    from meddiffusion.tasks.cardiac4d.data import (AFFINE_SCALE, AnatomyLatents, affine_copies, build_cache,
                                                   load_studies, resize_in_plane)

    protocol = CineProtocol(matrix=32, pixel_mm=5.0, frames=4)
    studies = load_studies(build_cache(tmp_path, range(2), 3, protocol))
    images, labels = studies[0].images[0].astype(np.float32), studies[0].labels[0]
    same_image, same_labels = resize_in_plane(images, labels, (1.0, 1.0))
    assert np.allclose(same_image, images, atol=1e-5) and np.array_equal(same_labels, labels)
    _, bigger = resize_in_plane(images, labels, (1.09, 1.09))
    assert set(np.unique(bigger)) <= {0, 1, 2, 3}
    assert (bigger == 3).sum() / (labels == 3).sum() == pytest.approx(1.09 ** 2, rel=0.15)

    vae = DualDecoderVAE(channels=(8, 8), latent_channels=4).eval()
    copies = affine_copies(studies, vae, protocol.depth, 3, seed=1, device="cpu")
    assert len(copies) == 6 and copies[0][0].shape == (4, 16, 16, 16)
    for k, (_, values) in enumerate(copies):
        v = studies[k // 3].values
        ratio = values["lv_edv_ml"] / v["lv_edv_ml"]
        assert (1 - AFFINE_SCALE) ** 2 * 0.85 < ratio < (1 + AFFINE_SCALE) ** 2 * 1.15
        assert values["lv_esv_ml"] / v["lv_esv_ml"] == pytest.approx(ratio)
        assert values["lv_ef_percent"] == v["lv_ef_percent"]
    assert affine_copies(studies, vae, protocol.depth, 3, seed=1, device="cpu")[4][1] == copies[4][1]  # seeded
    latents = [np.zeros((4, 4, 16, 16, 16), np.float32) for _ in studies]
    anatomy = AnatomyLatents(studies, latents, 2.0, copies)
    assert len(anatomy) == 8
    assert torch.allclose(anatomy[2 + 4]["z"], torch.from_numpy(copies[4][0] * 2.0))
    assert anatomy[2 + 4]["scalars"][1] == pytest.approx(copies[4][1]["lv_edv_ml"] / 600, rel=1e-5)
    assert int(anatomy[2 + 4]["diagnosis"]) == int(anatomy[1]["diagnosis"])  # the copy keeps its study's group


def test_every_frame_starts_from_one_noise_and_ed_has_no_motion(cascade):
    cond = cascade.condition(make_request("NOR", 140, ef_percent=60, slices=8, frames=10), "cpu")
    z_ed = torch.randn(1, 2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    tau = np.array([0.0, 50.0, 50.0, 120.0])
    dz = cascade.draw_motion(z_ed, cond, tau, 2, 3.0, torch.Generator().manual_seed(5), "cpu", batch=3)
    assert dz[0].abs().max() == 0
    assert torch.equal(dz[1], dz[2])  # same phase, same noise: the same frame, across chunks of the batch
    assert not torch.equal(dz[1], dz[3])


def test_the_condition_reaches_the_cine_and_the_seed_repeats_it(cascade):
    def draw(diagnosis, edv, seed):
        return cascade.generate(make_request(diagnosis, edv, ef_percent=40 if diagnosis != "NOR" else 60, slices=8,
                                             frames=10), seed=seed, steps=2)

    a, b = draw("NOR", 140, 0), draw("NOR", 140, 0)
    assert a.images.shape == (10, 8, 32, 32) and a.labels.dtype == np.uint8
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, draw("DCM", 250, 0).images)
    assert not np.array_equal(a.images, draw("NOR", 140, 1).images)


def test_loading_a_stage_that_is_not_a_motion_model_says_what_to_run(cascade):
    from meddiffusion.tasks.cardiac4d.model import load_model

    with pytest.raises(ValueError, match="is the VAE of a cascade; synth-cardiac runs a motion model"):
        load_model("tiny-c4d-vae")
    with pytest.raises(ValueError, match="is the anatomy LDM"):
        load_model("tiny-c4d-anatomy")


def test_redraws_then_refuses_and_keep_reports_the_reasons(cascade):
    from meddiffusion.tasks.cardiac4d.infer import ImplausibleSample, draw_valid

    request = make_request("HCM", 110, ef_percent=70, slices=8, frames=10)
    with pytest.raises(ImplausibleSample, match="no plausible cine in 2 draws"):
        draw_valid(cascade, request, 0, 1, 3.0, "cpu", 2)
    kept = draw_valid(cascade, request, 0, 1, 3.0, "cpu", 2, keep=True)
    assert kept.info["attempts"] == 2 and kept.info["implausible"]


def test_an_implausible_anatomy_is_redrawn_before_any_motion(cascade, monkeypatch):
    from meddiffusion.tasks.cardiac4d import measure

    request = make_request("NOR", 130, ef_percent=60, slices=8, frames=10)
    calls = {"anatomy": 0, "motion": 0, "checks": 0}
    verdicts = []  # the checks' answers in turn; then every check passes
    draw_anatomy, draw_motion, check = cascade.draw_anatomy, cascade.draw_motion, measure.check_sample

    def counting(name, function):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapped

    def scripted(labels, spacing, **kwargs):
        calls["checks"] += 1
        figures = check(labels, spacing, **kwargs).figures
        return measure.Validity(True, [], figures) if not verdicts or verdicts.pop(0) else \
            measure.Validity(False, ["no septum"], figures)

    monkeypatch.setattr(cascade, "draw_anatomy", counting("anatomy", draw_anatomy))
    monkeypatch.setattr(cascade, "draw_motion", counting("motion", draw_motion))
    monkeypatch.setattr(measure, "check_sample", scripted)

    plain = cascade.generate(request, seed=4, steps=2)  # the first anatomy passes: one draw, as unchecked
    assert calls == {"anatomy": 1, "motion": 1, "checks": 1}
    assert {key: plain.info[key] for key in ("anatomy_draws", "anatomy_rejected", "anatomy_kept")} == \
        {"anatomy_draws": 1, "anatomy_rejected": [], "anatomy_kept": 1}

    verdicts[:] = [False]
    redrawn = cascade.generate(request, seed=4, steps=2)
    assert calls == {"anatomy": 3, "motion": 2, "checks": 3}  # two anatomies, one motion
    assert redrawn.info["anatomy_draws"] == 2 and redrawn.info["anatomy_rejected"] == ["no septum"]
    assert redrawn.info["anatomy_kept"] == 2 and not np.array_equal(redrawn.images, plain.images)

    verdicts[:] = [False] * 4
    none_pass = cascade.generate(request, seed=4, steps=2, anatomy_attempts=4)
    assert none_pass.info["anatomy_draws"] == 4 and none_pass.info["anatomy_kept"] == 1
    np.testing.assert_array_equal(none_pass.images, plain.images)  # the first draw, with its own motion noise

    verdicts[:] = [False]
    unchecked = cascade.generate(request, seed=4, steps=2, anatomy_attempts=1)  # the anatomy LDM's first draw
    assert unchecked.info["anatomy_rejected"] == ["no septum"]
    np.testing.assert_array_equal(unchecked.images, plain.images)
    with pytest.raises(ValueError, match="anatomy attempts must be >= 1"):
        cascade.generate(request, seed=4, steps=2, anatomy_attempts=0)


def test_the_request_checks_run_before_any_model_loads():
    from meddiffusion.tasks.cardiac4d.infer import check_arguments

    def args(**changes):
        base = dict(output="c.seq.nrrd", count=1, max_attempts=5, guidance=3.0, heart_rate=70.0, steps=None,
                    anatomy=None, edv=230.0, esv=170.0, ef=None, diagnosis="DCM", slices=10, frames=25)
        return SimpleNamespace(**{**base, **changes})

    check_arguments(args(), frozenset())
    for changes, message in (({"esv": 250.0}, "smaller than end-diastolic"), ({"edv": None}, "--edv"),
                             ({"ef": 30.0}, "exactly one of --esv"), ({"count": 3}, "must be a new folder"),
                             ({"output": "folder"}, "give --count"), ({"guidance": -1.0}, "--guidance"),
                             ({"diagnosis": "XYZ"}, "unknown diagnosis")):
        with pytest.raises(ValueError, match=message):
            check_arguments(args(**changes), frozenset())
    with pytest.raises(ValueError, match="belong to one cine"):
        check_arguments(args(output="folder", count=3), frozenset({"labels"}))
