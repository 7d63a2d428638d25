"""Low-dose CT task: scaling, slice context, air skipping, volume inference, physics pairs,
training data and loss, one-shot adaptation.  Small sizes; the expected values are worked out
by hand or from closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
from meddiffusion.io import Volume
from meddiffusion.nets.clearnet import CLEARNet
from meddiffusion.tasks.ldct import model as ldct
from meddiffusion.tasks.ldct.infer import body_box, context_indices, denoise_volume
from meddiffusion.tasks.ldct.model import HU_MIN, HU_RANGE, LDCTModel, denormalize, normalize
from meddiffusion.tasks.ldct.physics import estimate_noise_hu, simulate_pair, simulate_volume
from meddiffusion.tasks.ldct.adapt import band_energy_loss, fit_weights
from meddiffusion.training import TrainConfig, Trainer
from meddiffusion.tasks.ldct.data import DataOptions, LDCTPairs, build_cache, make_loss_fn, random_crops, slab_spec

TINY = {"channels": (8, 8, 16), "convs_per_level": (1, 1, 1), "decoder_convs": (1, 1), "time_dim": 8,
        "emm_channels": (4, 4, 4)}


class ContextMean(torch.nn.Module):
    """Stand-in network: x0_hat = mean of [above, x_t, below]; a 1-step sampler returns f(x_T) exactly."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, emm_input=None):
        return x.mean(dim=1, keepdim=True)


def stub_model(steps: int = 1) -> LDCTModel:
    return LDCTModel(ContextMean(), MeanPreservingDiffusion(10), steps, steps)


# -- scaling and context ---------------------------------------------------------------------------
def test_normalize_is_corediff_scale_and_inverts():
    hu = torch.tensor([-3024.0, -1024.0, 0.0, 1024.0, 3072.0, 4000.0])
    x = normalize(hu)
    assert torch.allclose(x, torch.tensor([0.0, 0.0, 0.25, 0.5, 1.0, 1.0]))
    assert torch.allclose(denormalize(x[1:5]), hu[1:5])


def test_context_indices_replicate_edges():
    assert context_indices(5, 0) == (0, 0, 1)
    assert context_indices(5, 2) == (1, 2, 3)
    assert context_indices(5, 4) == (3, 4, 4)
    assert context_indices(1, 0) == (0, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        context_indices(5, 5)


def test_body_box_covers_body_ignores_specks_and_rounds():
    image = np.full((1, 96, 96), -1000.0, np.float32)
    image[0, 30:50, 41:61] = 40.0          # body: rows 30..49, cols 41..60
    image[0, 5, 90] = 200.0                # one noisy air pixel: removed by the opening
    y0, y1, x0, x1 = body_box(image, margin=8, multiple=4)
    assert y0 == 22 and x0 == 33            # 30 - 8, 41 - 8
    assert y1 - y0 == 36 and x1 - x0 == 36  # 20 + 16 = 36, already a multiple of 4
    assert body_box(np.full((2, 32, 32), -1000.0)) is None


def test_estimate_noise_recovers_white_noise_on_a_ramp():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    image = 40.0 + 0.2 * yy - 0.1 * xx + rng.normal(0, 12.0, (256, 256))
    sigma, roi = estimate_noise_hu(image)
    assert 0.9 * 12.0 < sigma < 1.05 * 12.0    # the flattest 30 % of 256 blocks: a few % low at most
    assert roi.sum() == int(np.ceil(0.3 * 256)) * 16 * 16


# -- inference on volumes --------------------------------------------------------------------------
def make_volume() -> Volume:
    rng = np.random.default_rng(1)
    array = np.full((5, 64, 64), -1000.0, np.float32)
    for k in range(5):
        array[k, 24:40, 24:40] = 10.0 * k + rng.normal(0, 5, (16, 16))
    array[2, 30, 30] = -3024.0     # padding-like value inside the body: must come back unchanged
    array[0, 0, 0] = -990.0        # noisy air far outside the body box: copied, not averaged
    return Volume(array, (0.7, 0.7, 2.0), (1.0, 2.0, 3.0), (1, 0, 0, 0, -1, 0, 0, 0, 1), modality="CT")


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_denoise_volume_uses_replicated_context_and_skips_air(batch_size):
    volume = make_volume()
    calls = []
    out = denoise_volume(volume, stub_model(), steps=1, batch_size=batch_size, callback=lambda d, t: calls.append((d, t)))
    a = np.clip(volume.array, -1024, 3072)
    padded = np.concatenate([a[:1], a, a[-1:]])
    expected = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    body = (slice(None), slice(16, 48), slice(16, 48))
    inside = np.ones((5, 64, 64), bool)
    inside[2, 30, 30] = False
    np.testing.assert_allclose(out.array[body][inside[body]], expected[body][inside[body]], atol=1e-3)
    assert out.array[2, 30, 30] == -3024.0
    assert out.array[0, 0, 0] == -990.0
    assert out.shape == volume.shape and out.spacing == volume.spacing
    assert out.origin == volume.origin and out.direction == volume.direction
    assert calls[-1] == (5, 5)
    assert np.array_equal(volume.array, make_volume().array)  # input untouched


def test_denoise_volume_identity_network_returns_input():
    class Identity(ContextMean):
        def forward(self, x, t, emm_input=None):
            return x[:, 1:2]

    volume = make_volume()
    model = LDCTModel(Identity(), MeanPreservingDiffusion(10), 10, 10)
    out = denoise_volume(volume, model, steps=10)
    np.testing.assert_allclose(out.array, volume.array, atol=2e-3)


def test_denoise_volume_counts_slice_steps_and_cancels():
    volume = make_volume()
    seen = []

    def cancel_after_first(done, total):
        seen.append((done, total))
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        denoise_volume(volume, stub_model(3), steps=3, batch_size=2, callback=cancel_after_first)
    assert seen == [(2, 15)]


def test_clearnet_model_shapes_and_step_range():
    torch.manual_seed(0)
    model = LDCTModel(CLEARNet(**TINY).eval(), MeanPreservingDiffusion(10), 10, 4)
    x = torch.rand(2, 3, 37, 45)
    with torch.inference_mode():
        for steps in (1, 4, 10):
            out = model.denoise(x, steps)
            assert out.shape == (2, 1, 37, 45) and 0 <= float(out.min()) and float(out.max()) <= 1
        with pytest.raises(ValueError, match="num_steps"):
            model.denoise(x, 11)
    assert model.default_steps(torch.device("cpu")) == 4
    with pytest.raises(ValueError, match="above, centre, below"):
        model.denoise(torch.rand(2, 1, 16, 16))


def test_adapted_model_blends_its_trajectory():
    model = stub_model(3)
    model.trajectory_weights = torch.tensor([0.0, 0.0, 1.0])
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        np.testing.assert_allclose(model.denoise(x, 3), stub_model(3).denoise(x, 3), atol=1e-6)
        with pytest.raises(ValueError, match="adapted with 3"):
            model.denoise(x, 2)


def test_load_model_from_user_catalogue(tmp_path, monkeypatch):
    from meddiffusion.catalog import ModelEntry, register_user_model

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path))
    net = CLEARNet(**TINY)
    arch = {"network": "CLEARNet", "kwargs": TINY, "diffusion": {"num_timesteps": 10},
            "sampler": {"steps": 10, "cpu_steps": 3}}
    register_user_model(ModelEntry("tiny-ldct", "ldct", "1", arch), net.state_dict())
    register_user_model(ModelEntry("other-task", "motion", "1", arch), net.state_dict())
    model = ldct.load_model("tiny-ldct")
    assert model.default_steps(torch.device("cpu")) == 3 and model.default_steps(torch.device("meta")) == 10
    for name, value in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[name], value)
    with pytest.raises(ValueError, match="not low-dose CT"):
        ldct.load_model("other-task")
    with pytest.raises(ValueError, match="unknown model"):
        ldct.load_model("no-such-model")


# -- physics -----------------------------------------------------------------------------------------
def water_slices() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 26**2
    return torch.where(disk, 0.0, -1000.0).expand(2, 64, 64).contiguous()


def test_simulate_pair_adds_the_missing_noise_only():
    clean = water_slices()
    gen = torch.Generator().manual_seed(0)
    from meddiffusion.physics import simulate_low_dose

    normal = simulate_low_dose(clean, 1.0, pixel_size_mm=2.0, i0=2e4, num_views=96, generator=gen)
    low = simulate_pair(normal, 0.25, pixel_size_mm=2.0, i0=2e4, num_views=96, generator=gen)
    centre = (slice(None), slice(22, 42), slice(22, 42))
    nd_noise = float((normal - clean)[centre].std())
    ld_noise = float((low - clean)[centre].std())
    assert 1.7 < ld_noise / nd_noise < 2.3          # total variance / dose: sqrt(1 / 0.25) = 2
    assert abs(float((low - normal)[centre].mean())) < 0.3 * nd_noise


def test_simulate_volume_keeps_grid_and_pads_non_square():
    array = water_slices()[:, :, 4:60].numpy()        # 64 × 56 slices
    volume = Volume(array, (2.0, 2.0, 3.0), (5.0, 6.0, 7.0), modality="CT")
    low, i0 = simulate_volume(volume, 0.25, i0=1e4, noise_free=True, seed=3)
    again, _ = simulate_volume(volume, 0.25, i0=1e4, noise_free=True, seed=3)
    assert i0 == 1e4 and low.shape == volume.shape and low.origin == volume.origin
    np.testing.assert_array_equal(low.array, again.array)
    assert float(np.abs(low.array - array)[:, 24:40, 20:36].std()) > 1.0
    with pytest.raises(ValueError, match="square"):
        simulate_volume(Volume(array, (2.0, 1.0, 3.0)), 0.25, i0=1e4)
    with pytest.raises(ValueError, match="no noise to calibrate"):
        simulate_volume(volume, 0.25, noise_free=True)


# -- training data and loss -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_slabs(tmp_path_factory):
    options = DataOptions(size=48, slices=3, pixel_mm=(4.0, 5.0), nd_noise_hu=(10.0, 20.0), num_views=72)
    paths = build_cache(tmp_path_factory.mktemp("ldct_data"), 3, seed=5, options=options)
    return paths, options


def test_cache_is_reused_checked_and_noise_calibrated(tiny_slabs):
    paths, options = tiny_slabs
    stamp = paths[0].stat().st_mtime_ns
    assert build_cache(paths[0].parent, 1, seed=5, options=options)[0].stat().st_mtime_ns == stamp
    other = DataOptions(**{**options.__dict__, "dose": (0.1, 0.1)})
    with pytest.raises(ValueError, match="other data options"):
        build_cache(paths[0].parent, 1, seed=5, options=other)
    spec = slab_spec(5, 0, options)
    with np.load(paths[0]) as data:
        nd, ld = data["nd"].astype(float), data["ld"].astype(float)
    assert nd.shape == ld.shape == (3, 48, 48)
    added = (ld - nd)[nd > -500].std()
    assert 10.0 <= spec.nd_noise_hu <= 20.0
    assert 0.5 * spec.nd_noise_hu < added / np.sqrt(3) < 2.0 * spec.nd_noise_hu   # 25 % dose adds sqrt(3) x ND noise


def test_slab_draws_follow_the_scanner_and_anatomy_options(tmp_path):
    options = DataOptions(size=48, slices=2, pixel_mm=(4.0, 5.0), nd_noise_hu=(10.0, 20.0), num_views=72,
                          procedural=0.5, dose=(0.05, 0.5), kernels=("ram-lak", "hann"), electronic_noise=(0.0, 40.0))
    specs = [slab_spec(1, index, options) for index in range(60)]
    assert {s.source for s in specs} == {"phantom", "deadleaves"}
    assert {s.nd_kernel for s in specs} == {s.ld_kernel for s in specs} == {"ram-lak", "hann"}
    assert all(0.05 <= s.dose <= 0.5 and 0 <= s.electronic_noise <= 40 for s in specs)
    assert np.median([s.dose for s in specs]) < 0.275  # log-uniform: the median is the geometric mean 0.16
    assert all(0.1 <= s.texture_scale <= 1.5 for s in specs) and np.median([s.texture_scale for s in specs]) < 0.8
    leaves = next(i for i, s in enumerate(specs) if s.source == "deadleaves")
    path, = build_cache(tmp_path, 1, seed=1, options=options, first=leaves)
    with np.load(path) as data:
        nd, ld = data["nd"].astype(float), data["ld"].astype(float)
    assert nd.shape == (2, 48, 48) and (ld - nd).std() > 1.0
    for bad in ({"procedural": 1.5}, {"kernels": ("sharp",)}, {"dose": (0.5, 0.1)}, {"electronic_noise": (-1, 2)},
                {"texture_scale": (0.0, 1.0)}):
        with pytest.raises(ValueError):
            DataOptions(**{**options.__dict__, **bad})


def test_pairs_replicate_edges_and_crops_are_reproducible(tiny_slabs):
    paths, _ = tiny_slabs
    data = LDCTPairs(paths[:1])
    assert len(data) == 3
    first = data[0]
    assert torch.equal(first["ld"][0], first["ld"][1])   # slice 0 replicates itself above
    assert not torch.equal(first["ld"][1], first["ld"][2])
    batch = {k: torch.stack([data[i][k] for i in range(3)]) for k in ("ld", "nd", "box")}
    a = random_crops(batch, 32, torch.Generator().manual_seed(1))
    b = random_crops(batch, 32, torch.Generator().manual_seed(1))
    assert a[0].shape == (3, 3, 32, 32) and a[1].shape == (3, 1, 32, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert 0 <= float(a[0].min()) and float(a[0].max()) <= 1
    with pytest.raises(ValueError, match="larger than"):
        random_crops(batch, 64, torch.Generator())


def test_short_training_lowers_validation_loss(tiny_slabs):
    paths, _ = tiny_slabs
    torch.manual_seed(0)
    config = TrainConfig(steps=40, batch_size=4, lr=2e-3, ema_decay=0.9, ema_every=1, log_every=40, seed=0)
    trainer = Trainer(CLEARNet(**TINY), make_loss_fn(MeanPreservingDiffusion(10), 32), config,
                      LDCTPairs(paths[:2]), LDCTPairs(paths[2:]), device="cpu")
    before = trainer.validate()["loss"]
    trainer.fit()
    after = trainer.validate()["loss"]
    assert after < 0.5 * before


def test_noise_weighting_makes_quiet_and_noisy_crops_count_alike():
    """Identity network: each crop's loss is its low-dose error; weighted, a 10× noisier crop weighs the same,
    and the loss is of order one (an MSE-sized loss would put Adam's steps under its epsilon)."""
    clean = torch.full((2, 1, 32, 32), 0.25)
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    identity = CLEARNet(**TINY)
    torch.nn.init.zeros_(identity.out_conv.conv.weight)
    torch.nn.init.zeros_(identity.out_conv.conv.bias)
    diffusion = MeanPreservingDiffusion(10)

    def mean(weighting: str, scale: float) -> float:  # over seeds, so that some draw t >= 1 (t = 0: clean image)
        batch = {"ld": ((clean + noise * scale) * HU_RANGE + HU_MIN).expand(2, 3, 32, 32).round(),
                 "nd": (clean * HU_RANGE + HU_MIN).round(), "box": torch.tensor([[0, 32, 0, 32]] * 2)}
        loss_fn = make_loss_fn(diffusion, 32, replicate_share=1.0, weighting=weighting)
        return sum(float(loss_fn(identity, batch, torch.Generator().manual_seed(s))[0].detach()) for s in range(6)) / 6

    assert mean("none", 0.01) > 50 * mean("none", 0.001) > 0  # plain: the noisy crops' error rules
    quiet, noisy = mean("noise", 0.001), mean("noise", 0.01)
    assert 0.5 < noisy / quiet < 2
    assert 0.1 < noisy < 2
    with pytest.raises(ValueError, match="loss weighting"):
        make_loss_fn(diffusion, 32, weighting="median")


# -- one-shot adaptation ------------------------------------------------------------------------------
def noisy_trajectory(seed: int = 0):
    """Five images whose noise amplitude falls 1, .75, .5, .25, 0, like a sampler's trajectory."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 72, 72, generator=gen), 9, 1) * 0.2 + 0.25
    noise = 0.01 * torch.randn(1, 1, 64, 64, generator=gen)
    amplitudes = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    return clean, noise, amplitudes, torch.cat([clean + a * noise for a in amplitudes])


def test_paired_adaptation_finds_the_matching_step():
    clean, noise, amplitudes, images = noisy_trajectory()
    result = fit_weights(images, images[1:2].clone(), paired=True, iterations=100, lr=0.1)
    assert abs(float(result.weights.sum()) - 1) < 1e-5
    assert abs(float(result.weights @ amplitudes) - 0.75) < 0.08   # the blend keeps 75 % of the noise
    assert result.loss_end < result.loss_start


def test_unpaired_adaptation_matches_noise_level_of_a_shifted_slice():
    clean, noise, amplitudes, images = noisy_trajectory()
    other_noise = 0.01 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(9))
    target = torch.roll(clean, shifts=(2, 1), dims=(-2, -1)) + 0.5 * other_noise   # neighbour: moved, new noise
    result = fit_weights(images, target, paired=False, iterations=100, lr=0.1)
    assert abs(float(result.weights @ amplitudes) - 0.5) < 0.1


def test_band_energy_loss_is_shift_tolerant_but_sees_noise():
    clean, noise, _, _ = noisy_trajectory()
    shifted = torch.roll(clean + noise, shifts=(1, 1), dims=(-2, -1))
    assert band_energy_loss(clean + noise, shifted) < 0.2 * band_energy_loss(clean + noise, clean + 0.3 * noise)


def test_denoising_leaves_the_network_trainable():
    """denoise_volume must not turn the weights into inference tensors (adaptation trains them next)."""
    from meddiffusion.nets.clearnet import CLEARNet
    from meddiffusion.tasks.ldct.infer import denoise_volume
    from meddiffusion.tasks.ldct.model import build_model
    from meddiffusion.tasks.ldct.recipe import network_configs

    arch = {"network": "CLEARNet", "kwargs": network_configs()["tiny"], "diffusion": {"num_timesteps": 2},
            "sampler": {"steps": 2}}
    model = build_model(arch)
    volume = Volume(np.full((2, 16, 16), 40.0, np.float32), modality="CT")
    denoise_volume(volume, model, steps=1)
    x = torch.zeros(1, 3, 16, 16)
    out = model.net(x, torch.zeros(1, dtype=torch.long), None)
    out.sum().backward()
    assert isinstance(model.net, CLEARNet)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())
