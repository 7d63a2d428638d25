"""CSRD's 3D network and its EDM wiring: inputs, noise conditioning, coordinates, preconditioning, sampler oracle.

The EDM formulas themselves (scalings, schedule, Gaussian ODE, loss) are tested in
test_diffusion.py; here they are checked through the task's whole-volume sampler.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meddiffusion.diffusion.edm import EDMPreconditioning, heun_sample
from meddiffusion.nets.csrd import CSRD_CONFIGS, CSRDUNet3D, global_coordinates
from meddiffusion.tasks.petmr.infer import conditions, sample_residual
from meddiffusion.tasks.petmr.model import PetmrModel


def _tiny(use_mr=True, **changes):
    torch.manual_seed(0)
    return CSRDUNet3D(use_mr, **{**CSRD_CONFIGS["tiny"], **changes}).eval()


def test_inputs_outputs_and_channel_contract():
    net = _tiny()
    assert net.in_channels == 6 and _tiny(False).in_channels == 5 and net.multiple == 2
    out = net(torch.randn(2, 6, 8, 12, 16), torch.tensor([0.1, -0.5]))
    assert out.shape == (2, 1, 8, 12, 16) and torch.isfinite(out).all()
    assert net(torch.randn(3, 6, 8, 8, 8), 0.2).shape == (3, 1, 8, 8, 8)  # one c_noise for every window
    with pytest.raises(ValueError, match="takes"):
        net(torch.randn(1, 5, 8, 8, 8), 0.0)
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.randn(1, 6, 7, 8, 8), 0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        net(torch.randn(2, 6, 8, 8, 8), torch.zeros(3))


def test_the_noise_level_changes_the_output_once_trained_blocks_are_not_identities():
    net = _tiny()
    for module in net.modules():  # the zero-initialised second convolutions would hide the embedding
        if isinstance(module, torch.nn.Conv3d) and not module.weight.detach().any():
            torch.nn.init.normal_(module.weight, std=0.1)
    x = torch.randn(1, 6, 8, 8, 8)
    assert not torch.allclose(net(x, -1.0), net(x, 1.0), atol=1e-5)


def test_paper_config_fits_25_mb_as_fp16():
    count = sum(p.numel() for p in CSRDUNet3D(True, **CSRD_CONFIGS["paper"]).parameters())
    assert 2 * count < 25e6


def test_global_coordinates_span_the_volume_and_patches_are_cut_from_it():
    full = global_coordinates((5, 6, 7), (5, 6, 7))
    assert full.shape == (3, 5, 6, 7)
    assert full[0, 0, 0, 0] == -1 and full[0, 0, 0, -1] == 1          # x along the last axis
    assert full[2, 0, 0, 0] == -1 and full[2, -1, 0, 0] == 1          # z along the first
    patch = global_coordinates((3, 4, 5), (5, 6, 7), start=(1, 2, 2))
    assert torch.equal(patch, full[:, 1:4, 2:6, 2:7])
    beyond = global_coordinates((1, 1, 2), (5, 6, 7), start=(0, 0, 6))  # padding continues the line
    assert beyond[0, 0, 0, 1] == pytest.approx(1 + 2 / 6)


def test_preconditioned_network_is_the_identity_at_tiny_noise_and_the_network_at_large():
    """D = c_skip r + c_out F: → r as σ → 0, → σ_data F as σ → ∞ (the network alone decides)."""
    net, precond = _tiny(), EDMPreconditioning(0.5)
    r, cond = torch.randn(1, 1, 8, 8, 8), torch.randn(1, 5, 8, 8, 8)

    def net_fn(x_in, c, c_noise):
        return net(torch.cat([x_in, c], 1), c_noise)

    assert torch.allclose(precond.denoise(net_fn, r, 1e-5, cond), r, atol=1e-4)
    big = 1e4
    f = net(torch.cat([r * float(precond.c_in(torch.tensor(big))), cond], 1), math.log(big) / 4)
    assert torch.allclose(precond.denoise(net_fn, r, big, cond), 0.5 * f + r * 0.25 / big**2, atol=1e-4)


class _GaussianOracle(torch.nn.Module):
    """F whose preconditioned D is the exact denoiser of residuals r ~ N(mu, s²) (per voxel)."""

    multiple = 1

    def __init__(self, mu: float, s: float, sigma_data: float = 0.5):
        super().__init__()
        self.mu, self.s, self.precond = mu, s, EDMPreconditioning(sigma_data)

    def forward(self, x, c_noise):
        sigma = torch.exp(4 * torch.as_tensor(c_noise, dtype=torch.float64)).reshape(-1)[0]
        r = x[:, :1].double() / self.precond.c_in(sigma)
        exact = self.mu + self.s**2 / (self.s**2 + sigma**2) * (r - self.mu)
        return ((exact - self.precond.c_skip(sigma) * r) / self.precond.c_out(sigma)).to(x.dtype)


def test_whole_volume_heun_sampler_reaches_the_gaussian_oracles_answer_through_sliding_windows():
    """The probability-flow ODE of N(mu, s²) keeps (r - mu)/sqrt(s² + σ²).

    So r(0) = mu + s (r_T - mu)/sqrt(s² + σ_max²).
    """
    mu, s, steps = 0.3, 0.5, 40
    model = PetmrModel(_GaussianOracle(mu, s), use_mr=False, window=8)
    cond = conditions(model, np.zeros((10, 12, 9), np.float32), None)
    r = sample_residual(model, cond, steps=steps, overlap=0.5, seed=3).double()
    noise = torch.randn((1, 1, *cond.shape[2:]), generator=torch.Generator().manual_seed(3))
    top = model.sigma_max
    exact = mu + s * (noise.double() * top - mu) / math.sqrt(s**2 + top**2)
    assert (r - exact).abs().max() < 0.03  # Heun's error at 40 steps (test_diffusion.py)

    def ideal(x, sigma):  # the same denoiser applied directly, without windows or preconditioning
        v = sigma.view(-1, 1, 1, 1, 1) ** 2
        return (s**2 * x + v * mu) / (s**2 + v)

    direct = heun_sample(ideal, noise, steps, sigma_max=top)
    assert (r - direct.double()).abs().max() < 1e-4


def test_averaged_samples_are_the_mean_of_the_seeds_and_approach_the_posterior_mean():
    """``samples = K`` averages the samples from seeds seed .. seed + K - 1. For N(mu, s²) each
    sample keeps its start noise with std s·σ_max/√(s² + σ_max²); the mean of K keeps 1/√K of it."""
    mu, s = 0.3, 0.5
    model = PetmrModel(_GaussianOracle(mu, s), use_mr=False, window=8)
    cond = conditions(model, np.zeros((10, 12, 9), np.float32), None)
    ticks = []
    mean = sample_residual(model, cond, steps=4, seed=3, samples=3, callback=lambda done, total: ticks.append((done, total)))
    each = [sample_residual(model, cond, steps=4, seed=seed) for seed in (3, 4, 5)]
    assert torch.allclose(mean, sum(each) / 3, atol=1e-6)
    assert ticks[-1] == (12, 12) and len(ticks) == 12
    many = sample_residual(model, cond, steps=40, seed=0, samples=16).double()
    noise = sum(torch.randn((1, 1, *cond.shape[2:]), generator=torch.Generator().manual_seed(k)) for k in range(16)) / 16
    top = model.sigma_max
    assert (many - (mu + s * (noise.double() * top - mu) / math.sqrt(s**2 + top**2))).abs().max() < 0.03
    assert float(many.std()) < 0.4 * float(each[0].std())  # 1/√16 of one sample's spread, with margin


class _Pointwise(torch.nn.Module):
    """A deterministic network without spatial context: each voxel's output depends on its own channels only."""

    multiple = 1

    def forward(self, x, c_noise):
        return torch.sin(3 * x[:, 3:4]) * x[:, 4:5] + torch.cos(2 * x[:, 5:6]) + x[:, 1:2] * x[:, 2:3]


def test_coordinate_channels_make_overlapping_windows_agree():
    rng = np.random.default_rng(0)
    low, mr = rng.random((12, 14, 10), dtype=np.float32), rng.random((12, 14, 10), dtype=np.float32)
    model = PetmrModel(_Pointwise(), use_mr=True, window=6)
    cond = conditions(model, low, mr)
    net = model.net
    x = torch.cat([torch.zeros_like(cond[:, :1]), cond], 1)
    a, b = x[..., 0:8, :, :], x[..., 4:12, :, :]          # two windows overlapping in slices 4-7
    assert torch.equal(net(a, 0.0)[..., 4:8, :, :], net(b, 0.0)[..., 0:4, :, :])
    local = b.clone()
    local[:, 3:] = global_coordinates(b.shape[2:], b.shape[2:])[None]  # coordinates of the window alone
    assert not torch.allclose(net(a, 0.0)[..., 4:8, :, :], net(local, 0.0)[..., 0:4, :, :])
    # and a network pass through 6³ sliding windows (overlap 0.5) is the pass over the whole volume at once
    sliding = sample_residual(model, cond, steps=1, overlap=0.5, seed=1)
    whole = sample_residual(PetmrModel(_Pointwise(), use_mr=True, window=64), cond, steps=1, overlap=0.5, seed=1)
    assert torch.allclose(sliding, whole, rtol=1e-5, atol=1e-4)
