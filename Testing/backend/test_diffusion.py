"""The four diffusion formulations against closed forms, oracle networks and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meddiffusion.diffusion import (
    BrownianBridge,
    EDMPreconditioning,
    LatentDiffusion,
    MeanPreservingDiffusion,
    guided_epsilon,
    heun_sample,
    sigma_schedule,
)

SHAPE = (2, 1, 16, 16)


def _randn(seed: int, shape=SHAPE, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _rand(seed: int, shape=SHAPE, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _assert_marginal(x: torch.Tensor, mean: torch.Tensor, variance: float) -> None:
    """Pixels of x - mean look like N(0, variance): mean within 5 standard errors, variance within 6%."""
    residual = (x - mean).double().flatten()
    n = residual.numel()
    assert abs(residual.mean().item()) < 5 * math.sqrt(variance / n) + 1e-12
    assert residual.var().item() == pytest.approx(variance, rel=0.06)


# ====================================================================== Brownian bridge
def _m_schedule(schedule: str, T: int) -> np.ndarray:
    """m_t written out independently of the module."""
    if schedule == "linear":
        return np.linspace(0.001, 0.999, T)
    if schedule == "paper":
        return np.arange(1, T + 1) / T
    fraction = np.arange(T) / T
    fraction[0] = 0.0005
    return 0.5 * np.sin(np.pi * (fraction - 0.5)) + 0.5


@pytest.mark.parametrize(
    "schedule, T, max_var",
    [("linear", 1000, 1.0), ("paper", 500, 1.0), ("sin", 200, 0.7)],
)
def test_bridge_posterior_equals_gaussian_conditioning(schedule, T, max_var):
    bridge = BrownianBridge(T, schedule, max_var)
    m = _m_schedule(schedule, T)
    delta = 2 * max_var * (m - m**2)
    x0, y, x_t = (_randn(seed, (3, 1, 4, 4), torch.float64) for seed in (1, 2, 3))
    for t in (1, 2, T // 3, T // 2, T - 2):
        # x_t = a x_{t-1} + b y + noise must reproduce the marginal means for every x0 -> a
        a = (1 - m[t]) / (1 - m[t - 1])
        cov = a * delta[t - 1]  # Cov(x_{t-1}, x_t)
        mean_prev = (1 - m[t - 1]) * x0 + m[t - 1] * y
        mean_t = (1 - m[t]) * x0 + m[t] * y
        expected_mean = mean_prev + cov / delta[t] * (x_t - mean_t)
        expected_var = delta[t - 1] - cov**2 / delta[t]

        g = x_t - x0  # the exact grad target for this x_t
        torch.testing.assert_close(bridge.posterior_mean(x_t, y, g, t), expected_mean, rtol=1e-9, atol=1e-10)
        *_, variance = bridge.posterior_coefficients(t)
        assert variance.item() == pytest.approx(expected_var, rel=1e-9)

    # per-sample timesteps give per-sample posteriors
    t_batch = torch.tensor([1, T // 2, T - 2])
    per_sample = bridge.posterior_mean(x_t, y, x_t - x0, t_batch)
    for i, t in enumerate(t_batch.tolist()):
        torch.testing.assert_close(per_sample[i : i + 1], bridge.posterior_mean(x_t[i : i + 1], y[i : i + 1],
                                                                              (x_t - x0)[i : i + 1], t))


def test_bridge_pinned_top_step_posterior_is_previous_marginal():
    T = 50
    bridge = BrownianBridge(T, "paper")
    m = _m_schedule("paper", T)
    x0, y = _randn(1, dtype=torch.float64), _randn(2, dtype=torch.float64)
    assert bridge.delta_t[T - 1].item() == 0.0  # x_{T-1} = y exactly
    mean = bridge.posterior_mean(y, y, y - x0, T - 1)
    torch.testing.assert_close(mean, (1 - m[T - 2]) * x0 + m[T - 2] * y)
    *_, variance = bridge.posterior_coefficients(T - 1)
    assert variance.item() == pytest.approx(2 * (m[T - 2] - m[T - 2] ** 2))


@pytest.mark.parametrize("schedule, T", [("linear", 1001), ("paper", 500)])
@pytest.mark.parametrize("max_var", [1.0, 0.6])
def test_bridge_variance_peaks_at_half_s_where_m_is_half(schedule, T, max_var):
    bridge = BrownianBridge(T, schedule, max_var)
    peak = int(bridge.delta_t.argmax())
    assert bridge.m_t[peak].item() == pytest.approx(0.5)
    assert bridge.delta_t[peak].item() == pytest.approx(0.5 * max_var)


def test_bridge_sample_steps_follow_bbdm_code():
    bridge = BrownianBridge(1000)
    steps = bridge.sample_steps(200)
    assert steps[:3] == [999, 993, 988] and steps[-4:] == [10, 5, 1, 0]
    assert len(steps) == 200 and all(a > b for a, b in zip(steps, steps[1:]))
    assert bridge.sample_steps(1) == [999]
    assert bridge.sample_steps(2) == [999, 0]
    assert bridge.sample_steps(3) == [999, 1, 0]
    assert BrownianBridge(10).sample_steps(10) == list(range(9, -1, -1))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="num_steps"):
            bridge.sample_steps(bad)


@pytest.mark.parametrize("schedule", ["linear", "paper"])
@pytest.mark.parametrize("num_steps", [1, 2, 10])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_bridge_oracle_sampler_recovers_x0(schedule, num_steps, eta):
    bridge = BrownianBridge(1000, schedule)
    x0, y = _randn(1), _randn(2)
    calls = []

    def oracle_grad(x_t, t):
        calls.append(t)
        return x_t - x0

    out = bridge.sample(oracle_grad, y, num_steps, eta, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)
    assert [int(t[0]) for t in calls] == bridge.sample_steps(num_steps)
    out = bridge.sample(lambda x_t, t: x0, y, num_steps, eta, prediction="x0")
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_bridge_sampler_states_follow_forward_marginal():
    """With an exact x0_hat, every state the stochastic sampler visits is a draw from q(x_s | x0, y)."""
    T = 500
    bridge = BrownianBridge(T, "paper")  # x_{T-1} = y exactly, so the start is itself exact
    x0, y = _randn(1, (1, 1, 128, 128)), _randn(2, (1, 1, 128, 128))
    seen = {}

    def oracle(x_t, t):
        seen[int(t[0])] = x_t.clone()
        return x_t - x0

    bridge.sample(oracle, y, num_steps=10, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert len(seen) == 10
    for s, x_s in seen.items():
        if s == T - 1:
            torch.testing.assert_close(x_s, y)
            continue
        m_s = bridge.m_t[s].item()
        _assert_marginal(x_s, (1 - m_s) * x0 + m_s * y, bridge.delta_t[s].item())


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t, s", [(999, 993), (700, 300), (120, 1)])
def test_bridge_skip_step_keeps_forward_marginal(eta, t, s):
    bridge = BrownianBridge(1000, "linear")
    shape = (1, 1, 128, 128)
    x0, y = _randn(1, shape), _randn(2, shape)
    x_t = bridge.q_sample(x0, y, t, _randn(3, shape))
    x_s = bridge.step(x_t, y, x0, t, s, eta, torch.Generator().manual_seed(4))
    m_s = bridge.m_t[s].item()
    _assert_marginal(x_s, (1 - m_s) * x0 + m_s * y, bridge.delta_t[s].item())


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_bridge_step_noise_is_eta_times_posterior_std(eta):
    """Between consecutive timesteps the injected noise has variance eta^2 times the exact posterior's."""
    T, t = 1000, 400
    bridge = BrownianBridge(T)
    m = _m_schedule("linear", T)
    delta = 2 * (m - m**2)
    a = (1 - m[t]) / (1 - m[t - 1])
    posterior_var = delta[t - 1] - (a * delta[t - 1]) ** 2 / delta[t]
    shape = (1, 1, 128, 128)
    x0, y, x_t = _randn(1, shape), _randn(2, shape), _randn(3, shape)
    draws = [bridge.step(x_t, y, x0, t, t - 1, eta, torch.Generator().manual_seed(seed)) for seed in (5, 6)]
    assert ((draws[0] - draws[1]).var() / 2).item() == pytest.approx(eta**2 * posterior_var, rel=0.06)


def test_bridge_training_target_and_loss():
    bridge = BrownianBridge(1000)
    x0, y, noise = _randn(1), _randn(2), _randn(3)
    t = torch.tensor([0, 600])
    x_t = bridge.q_sample(x0, y, t, noise)
    torch.testing.assert_close(bridge.training_target(x0, y, t, noise), x_t - x0)
    m = 0.001 + 600 * 0.998 / 999  # linspace(0.001, 0.999, 1000)[600]
    torch.testing.assert_close(x_t[1], (1 - m) * x0[1] + m * y[1] + math.sqrt(2 * (m - m**2)) * noise[1])

    loss, x0_hat = bridge.training_loss(lambda x, tt: x - x0, x0, y, t, noise)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(x0_hat, x0)
    loss, _ = bridge.training_loss(lambda x, tt: torch.zeros_like(x), x0, y, t, noise)
    assert loss.item() == pytest.approx((x_t - x0).abs().mean().item(), rel=1e-6)
    only_first = torch.zeros_like(x0)
    only_first[0] = 2.0                                     # a weighted mean over the first sample alone
    loss, _ = bridge.training_loss(lambda x, tt: torch.zeros_like(x), x0, y, t, noise, weight=only_first)
    assert loss.item() == pytest.approx((x_t - x0)[0].abs().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="weight must have"):
        bridge.training_loss(lambda x, tt: x, x0, y, t, noise, weight=only_first[:1])


def test_bridge_seeded_sampling_is_reproducible():
    bridge = BrownianBridge(1000)
    y = _randn(2)
    model = lambda x_t, t: 0.3 * x_t  # an imperfect network: noise reaches the output

    def run(seed):
        return bridge.sample(model, y, num_steps=10, eta=1.0, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert (run(7) - run(8)).abs().max() > 1e-3


def test_bridge_rejects_bad_input():
    with pytest.raises(ValueError, match="schedule"):
        BrownianBridge(10, "cosine")
    bridge = BrownianBridge(10)
    with pytest.raises(ValueError, match="prediction"):
        bridge.x0_from_prediction(_randn(1), _randn(2), "noise")
    with pytest.raises(ValueError, match="timestep"):
        bridge.q_sample(_randn(1), _randn(2), 10, _randn(3))
    with pytest.raises(ValueError, match="timestep"):
        bridge.posterior_coefficients(0)
    with pytest.raises(ValueError, match="integer"):
        bridge.q_sample(_randn(1), _randn(2), torch.tensor([0.5, 1.0]), _randn(3))


# ====================================================================== CoreDiff
def test_corediff_alpha_schedule_matches_code():
    alphas = MeanPreservingDiffusion(10).alphas
    expected = [0.999] + [1 - k / 9 for k in range(1, 10)]
    np.testing.assert_allclose(alphas.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(alphas.numpy(), [0.999, 0.889, 0.778, 0.667, 0.556, 0.444, 0.333, 0.222, 0.111, 0],
                               atol=6e-4)


def test_corediff_degrade_endpoints():
    diffusion = MeanPreservingDiffusion(10)
    x0, xT = _rand(1), _rand(2)
    assert torch.equal(diffusion.degrade(x0, xT, -1), x0)
    torch.testing.assert_close(diffusion.degrade(x0, xT, 9), xT)
    torch.testing.assert_close(diffusion.degrade(x0, xT, 0), 0.999 * x0 + 0.001 * xT)
    torch.testing.assert_close(diffusion.degrade(x0, xT, 3), (6 / 9) * x0 + (3 / 9) * xT)
    mixed = diffusion.degrade(x0, xT, torch.tensor([-1, 9]))
    torch.testing.assert_close(mixed[0], x0[0])
    torch.testing.assert_close(mixed[1], xT[1])
    with pytest.raises(ValueError, match="timestep"):
        diffusion.degrade(x0, xT, 10)


@pytest.mark.parametrize("num_steps", [1, 2, 10])
def test_corediff_oracle_sampler_recovers_x0(num_steps):
    diffusion = MeanPreservingDiffusion(10)
    x0, xT = _rand(1, dtype=torch.float64), _rand(2, dtype=torch.float64)
    emm_inputs = []

    def oracle(x_t, t, context, emm_input):
        emm_inputs.append(emm_input)
        return x0

    out, trajectory = diffusion.sample(oracle, xT, num_steps, clamp=None, return_trajectory=True)
    torch.testing.assert_close(out, x0)
    steps = diffusion.sample_steps(num_steps)
    assert len(trajectory) == len(steps) == num_steps
    for state, next_step in zip(trajectory, steps[1:] + [-1]):  # each state is x at the next step
        torch.testing.assert_close(state, diffusion.degrade(x0, xT, next_step))
    # error modulation: off on the first step only, then fed [previous x0_hat, x_T]
    assert emm_inputs[0] is None
    for emm_input in emm_inputs[1:]:
        torch.testing.assert_close(emm_input, torch.cat([x0, xT], dim=1))
    torch.testing.assert_close(diffusion.sample(oracle, xT, num_steps), x0)  # default clamp (0, 1)


def test_corediff_sample_steps_and_clamp():
    diffusion = MeanPreservingDiffusion(10)
    assert diffusion.sample_steps() == list(range(9, -1, -1))
    assert diffusion.sample_steps(4) == [9, 6, 3, 0]
    assert diffusion.sample_steps(1) == [9]
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.sample_steps(11)
    xT = _rand(2)
    out, trajectory = diffusion.sample(lambda x, t, c, e: 3 * x, xT, return_trajectory=True)
    assert len(trajectory) == 10
    assert out.max() <= 1.0 and trajectory[-1].max() > 1.0  # final image clamped, trajectory raw
    torch.testing.assert_close(out, trajectory[-1].clamp(0, 1))


def test_corediff_two_stage_loss_trains_stage_one_through_stage_two():
    diffusion = MeanPreservingDiffusion(10)
    x0, xT = _rand(1), _rand(2)
    stage_one = torch.nn.Parameter(torch.tensor(0.8))
    stage_two = torch.nn.Parameter(torch.tensor(1.1))
    calls = []

    def model(x_t, t, context, emm_input):
        calls.append((t.clone(), emm_input))
        return x_t * (stage_one if emm_input is None else stage_two)  # stage II ignores emm_input

    loss, x0_hat, x0_hat2 = diffusion.two_stage_loss(model, x0, xT, 4)
    assert [int(t[0]) for t, _ in calls] == [4, 3]
    torch.testing.assert_close(calls[1][1], torch.cat([x0_hat, xT], dim=1))
    x_t = (5 / 9) * x0 + (4 / 9) * xT
    torch.testing.assert_close(x0_hat, 0.8 * x_t)
    torch.testing.assert_close(x0_hat2, 1.1 * ((6 / 9) * x0_hat + (3 / 9) * xT))
    expected = 0.5 * ((x0_hat - x0) ** 2).mean() + 0.5 * ((x0_hat2 - x0) ** 2).mean()
    torch.testing.assert_close(loss, expected)

    # the stage-II term alone must reach the stage-I parameter through x0_hat (not detached)
    ((x0_hat2 - x0) ** 2).mean().backward()
    assert stage_one.grad is not None and abs(stage_one.grad.item()) > 1e-6

    calls.clear()
    loss, x0_hat, x0_hat2 = diffusion.two_stage_loss(model, x0, xT, 0)
    assert len(calls) == 1 and x0_hat2 is x0_hat  # no step before t = 0


# ====================================================================== EDM
def test_edm_preconditioning_identities():
    precond = EDMPreconditioning(sigma_data=0.5)
    sd = 0.5
    sigma = torch.logspace(-3, 2, 30, dtype=torch.float64)
    c_skip, c_out, c_in = precond.c_skip(sigma), precond.c_out(sigma), precond.c_in(sigma)
    torch.testing.assert_close(c_skip + c_out**2 / sd**2, torch.ones_like(sigma))
    torch.testing.assert_close(c_in**2 * (sigma**2 + sd**2), torch.ones_like(sigma))
    torch.testing.assert_close(precond.loss_weight(sigma) * c_out**2, torch.ones_like(sigma))
    # the network's effective target (r - c_skip r_sigma)/c_out has unit variance
    torch.testing.assert_close((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2, c_out**2)
    torch.testing.assert_close(precond.c_noise(sigma), sigma.log() / 4)
    tiny, huge = torch.tensor(1e-6, dtype=torch.float64), torch.tensor(1e6, dtype=torch.float64)
    assert precond.c_skip(tiny).item() == pytest.approx(1.0) and precond.c_out(tiny).item() < 1e-5
    assert precond.c_skip(huge).item() < 1e-12 and precond.c_out(huge).item() == pytest.approx(sd)


def test_edm_scalings_give_unit_variance_in_practice():
    precond = EDMPreconditioning(0.5)
    r, n = 0.5 * _randn(1, (1, 1, 128, 128)), _randn(2, (1, 1, 128, 128))
    for sigma in (0.05, 1.0, 20.0):
        s = torch.tensor(sigma)
        r_sigma = r + sigma * n
        assert (precond.c_in(s) * r_sigma).std().item() == pytest.approx(1.0, rel=0.05)
        target = (r - precond.c_skip(s) * r_sigma) / precond.c_out(s)
        assert target.std().item() == pytest.approx(1.0, rel=0.05)


def test_edm_denoise_passes_scaled_input_and_noise_level():
    precond = EDMPreconditioning(0.5)
    r_sigma = _randn(1)
    seen = {}

    def net(x_in, cond, c_noise):
        seen.update(x_in=x_in, cond=cond, c_noise=c_noise)
        return torch.full_like(x_in, 2.0)

    sigma = torch.tensor([0.3, 4.0])
    out = precond.denoise(net, r_sigma, sigma, cond="mr")
    s = sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x_in"], r_sigma / (s**2 + 0.25).sqrt())
    torch.testing.assert_close(seen["c_noise"], sigma.log() / 4)
    assert seen["cond"] == "mr"
    torch.testing.assert_close(out, 0.25 / (s**2 + 0.25) * r_sigma + 2.0 * s * 0.5 / (s**2 + 0.25).sqrt())
    torch.testing.assert_close(precond.denoise(net, r_sigma, 0.3, None)[0], out[0])
    with pytest.raises(ValueError, match="sigma"):
        precond.denoise(net, r_sigma, 0.0)


def test_edm_sigma_schedule_endpoints_and_order():
    sigmas = sigma_schedule(18)
    assert len(sigmas) == 19
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert sigmas[-1].item() == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    # rho = 1 spaces the noise levels evenly
    evenly = torch.tensor([5.0, 4, 3, 2, 1, 0], dtype=torch.float64)
    torch.testing.assert_close(sigma_schedule(5, 1.0, 5.0, rho=1.0), evenly)
    torch.testing.assert_close(sigma_schedule(1), torch.tensor([80.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        sigma_schedule(0)
    with pytest.raises(ValueError):
        sigma_schedule(10, sigma_min=1.0, sigma_max=0.5)


def test_edm_training_sigmas_are_lognormal():
    sigma = EDMPreconditioning.sample_sigma(20000, -1.2, 1.2, torch.Generator().manual_seed(0))
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.05)
    assert sigma.log().std().item() == pytest.approx(1.2, rel=0.03)


@pytest.mark.parametrize("num_steps", [1, 2, 10])
def test_edm_oracle_denoiser_recovers_residual(num_steps):
    r = 0.5 * _randn(1, dtype=torch.float64)
    calls = []

    def oracle(x, sigma):
        calls.append(sigma[0].item())
        return r.expand_as(x)

    out = heun_sample(oracle, SHAPE, num_steps, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(out, r, rtol=0, atol=1e-10)
    assert len(calls) == 2 * num_steps - 1  # Heun everywhere but the last (Euler) step


def test_edm_heun_solves_gaussian_probability_flow_ode():
    """For data N(mu, s^2) the ideal denoiser is known and the ODE solution is closed form."""
    mu, s = 0.3 * _randn(1, dtype=torch.float64), 0.5
    noise = _randn(2, dtype=torch.float64)

    def ideal(x, sigma):
        v = sigma.view(-1, 1, 1, 1) ** 2
        return (s**2 * x + v * mu) / (s**2 + v)

    exact = mu + (80.0 * noise - mu) * s / math.sqrt(s**2 + 80.0**2)
    err_40 = (heun_sample(ideal, noise, 40) - exact).abs().max().item()
    err_100 = (heun_sample(ideal, noise, 100) - exact).abs().max().item()
    assert err_40 < 0.03  # an Euler-only sampler is off by ~0.1 here
    assert err_100 < err_40 / 4  # second order in the step count


def test_edm_loss_zero_for_oracle_and_one_per_element_for_zero_network():
    precond = EDMPreconditioning(0.5)
    r = 0.5 * _randn(1, (2, 1, 32, 32))

    def oracle_net(x_in, cond, c_noise):
        sigma = (4 * c_noise).exp().view(-1, 1, 1, 1)
        r_sigma = x_in / precond.c_in(sigma)
        return (r - precond.c_skip(sigma) * r_sigma) / precond.c_out(sigma)

    loss = precond.edm_loss(oracle_net, r, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # F = 0 leaves D = c_skip r_sigma, whose weighted error has expectation 1 per element
    zero = precond.edm_loss(lambda x, c, n: torch.zeros_like(x), r, generator=torch.Generator().manual_seed(1))
    assert zero.item() / r[0].numel() == pytest.approx(1.0, rel=0.15)


def test_edm_start_share_trains_that_share_at_the_samplers_start():
    draw = lambda share: EDMPreconditioning.sample_sigma(20000, generator=torch.Generator().manual_seed(0),
                                                         start_share=share, start_sigma=5.0)
    paper, mixed = draw(0.0), draw(0.5)
    assert (paper == 5.0).float().mean().item() == 0.0 and (paper >= 5.0).float().mean().item() < 0.02
    assert (mixed == 5.0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    rest = mixed[mixed != 5.0].log()  # the others keep ln sigma ~ N(-1.2, 1.2^2)
    assert rest.mean().item() == pytest.approx(-1.2, abs=0.05) and rest.std().item() == pytest.approx(1.2, abs=0.05)
    with pytest.raises(ValueError, match="start_share"):
        draw(1.5)


def test_edm_seeded_sampling_is_reproducible():
    denoiser = lambda x, sigma: 0.5 * x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    def run(seed):
        return heun_sample(denoiser, SHAPE, 8, torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert (run(3) - run(4)).abs().max() > 1e-3


# ====================================================================== latent DDPM / DDIM
def _alphas_cumprod(T=1000, beta_start=0.0015, beta_end=0.0195) -> torch.Tensor:
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def test_latent_schedule_and_add_noise():
    diffusion = LatentDiffusion()
    abar = _alphas_cumprod()
    torch.testing.assert_close(diffusion.alphas_cumprod, abar, rtol=1e-5, atol=1e-7)
    x0, noise = _randn(1), _randn(2)
    t = torch.tensor([10, 900])
    x_t = diffusion.add_noise(x0, noise, t)
    for i, ti in enumerate(t.tolist()):
        a = abar[ti].item()
        torch.testing.assert_close(x_t[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i])
    assert diffusion.training_target(x0, noise, t) is noise
    assert diffusion.ddim_timesteps(30)[:2] == [999, 965] and diffusion.ddim_timesteps(30)[-1] == 0
    assert len(set(diffusion.ddim_timesteps(30))) == 30


@pytest.mark.parametrize("num_steps", [1, 2, 10, 30])
def test_latent_oracle_ddim_recovers_x0(num_steps):
    diffusion = LatentDiffusion()
    abar = _alphas_cumprod()
    x0 = _randn(1)
    noise = _randn(2)
    seen = {}

    def oracle(x_t, t, cond):
        a = abar[int(t[0])].item()
        seen.setdefault(int(t[0]), x_t[: x0.shape[0]].clone())
        target = x0.repeat(x_t.shape[0] // x0.shape[0], 1, 1, 1)  # guidance doubles the batch
        return (x_t - math.sqrt(a) * target) / math.sqrt(1 - a)

    out = diffusion.ddim_sample(oracle, noise, num_steps=num_steps, eta=0.0)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)
    # deterministic DDIM keeps the first step's noise estimate: every visited state is
    # exactly add_noise(x0, eps, t) at its own timestep
    first = diffusion.ddim_timesteps(num_steps)[0]
    eps = (noise - math.sqrt(abar[first].item()) * x0) / math.sqrt(1 - abar[first].item())
    for t, x_t in seen.items():
        torch.testing.assert_close(x_t, diffusion.add_noise(x0, eps, t), rtol=0, atol=1e-4)

    guided = diffusion.ddim_sample(oracle, noise, cond=torch.ones(2, 4), null_cond=torch.zeros(1, 4),
                                   num_steps=num_steps, guidance_scale=3.0)
    torch.testing.assert_close(guided, x0, rtol=0, atol=1e-4)  # both branches agree, so guidance is exact


def test_guidance_one_samples_the_conditional_model_with_one_call_per_step():
    diffusion = LatentDiffusion()
    calls = []

    def model(x_in, t_in, cond):
        calls.append(x_in.shape[0])
        return 0.1 * x_in * cond.view(-1, 1, 1, 1) + 0.01 * t_in.view(-1, 1, 1, 1) / 1000

    noise, cond, null = _randn(3), torch.tensor([2.0]), torch.tensor([0.5])
    plain = diffusion.ddim_sample(model, noise, cond=cond, num_steps=5)
    calls.clear()
    one = diffusion.ddim_sample(model, noise, cond=cond, null_cond=null, num_steps=5, guidance_scale=1.0)
    assert calls == [len(noise)] * 5                         # no unconditional pass
    torch.testing.assert_close(one, plain, rtol=0, atol=0)
    calls.clear()
    guided = diffusion.ddim_sample(model, noise, cond=cond, null_cond=null, num_steps=5, guidance_scale=2.0)
    assert calls == [2 * len(noise)] * 5 and not torch.allclose(guided, plain)


def test_guidance_scale_interpolates_in_one_batched_call():
    x = _randn(1)
    t = torch.tensor([500, 500])
    calls = []

    def model(x_in, t_in, cond):
        calls.append(x_in.shape[0])
        return x_in * cond.view(-1, 1, 1, 1)

    cond, null = torch.tensor([2.0, 4.0]), torch.tensor([0.5])
    torch.testing.assert_close(guided_epsilon(model, x, t, cond, null, 1.0), x * cond.view(-1, 1, 1, 1))
    torch.testing.assert_close(guided_epsilon(model, x, t, cond, null, 0.0), 0.5 * x)
    torch.testing.assert_close(guided_epsilon(model, x, t, cond, null, 3.0),
                               0.5 * x + 3.0 * (cond.view(-1, 1, 1, 1) - 0.5) * x)
    assert calls == [4, 4, 4]

    def dict_model(x_in, t_in, cond):
        return x_in * (cond["diagnosis"] + cond["ef"]).view(-1, 1, 1, 1)

    out = guided_epsilon(dict_model, x, t, {"diagnosis": torch.tensor([3.0, 1.0]), "ef": torch.tensor([0.5, 0.5])},
                         {"diagnosis": torch.tensor([6.0]), "ef": torch.tensor([0.0])}, 1.0)
    torch.testing.assert_close(out, x * torch.tensor([3.5, 1.5]).view(-1, 1, 1, 1))
    with pytest.raises(ValueError, match="null_cond"):
        guided_epsilon(model, x, t, cond, torch.ones(3), 1.0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_latent_seeded_sampling_is_reproducible(eta):
    diffusion = LatentDiffusion()
    model = lambda x, t, cond: 0.1 * x

    def run(seed):
        return diffusion.ddim_sample(model, SHAPE, num_steps=5, eta=eta, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert (run(1) - run(2)).abs().max() > 1e-3


# ====================================================================== all samplers
def _samplers():
    x0 = _rand(1)
    return {
        "bridge": lambda cb: BrownianBridge(100).sample(lambda x, t: x - x0, _rand(2), 4, callback=cb),
        "corediff": lambda cb: MeanPreservingDiffusion(10).sample(lambda x, t, c, e: x0, _rand(2), 4, callback=cb),
        "edm": lambda cb: heun_sample(lambda x, s: x0.expand_as(x), SHAPE, 4, callback=cb),
        "latent": lambda cb: LatentDiffusion(100).ddim_sample(lambda x, t, c: 0 * x, SHAPE, num_steps=4, callback=cb),
    }


@pytest.mark.parametrize("name", ["bridge", "corediff", "edm", "latent"])
def test_sampler_reports_progress_and_can_be_cancelled(name):
    run = _samplers()[name]
    reports = []
    run(lambda done, total: reports.append((done, total)))
    assert reports == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Stop(Exception):
        pass

    def cancel(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        run(cancel)


def test_latent_v_prediction_target_converts_back_to_the_noise_and_an_oracle_samples_x0():
    from meddiffusion.diffusion.latent import LatentDiffusion

    diffusion = LatentDiffusion(1000, prediction="v")
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 4, 4, generator=generator), torch.randn(3, 2, 4, 4, 4, generator=generator)
    t = torch.tensor([0, 500, 999])
    x_t = diffusion.add_noise(x0, noise, t)
    v = diffusion.training_target(x0, noise, t)
    abar = diffusion.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(v, abar.sqrt() * noise - (1 - abar).sqrt() * x0)
    torch.testing.assert_close(diffusion.epsilon(v, x_t, t), noise, rtol=0, atol=1e-5)
    target = x0[:1]

    def oracle(x, tt, cond):  # the exact v of x_t for the one clean sample
        a = diffusion.alphas_cumprod[tt].float().view(-1, 1, 1, 1, 1)
        eps = (x - a.sqrt() * target) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * target

    out = diffusion.ddim_sample(oracle, (1, 2, 4, 4, 4), num_steps=7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="unknown prediction"):
        LatentDiffusion(prediction="x0")
