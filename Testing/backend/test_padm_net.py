"""meddiffusion.nets.padm: PADM's physics head, teacher/student network and attention transfer."""

import math

import pytest
import torch

from meddiffusion.diffusion.bridge import BrownianBridge
from meddiffusion.nets import (
    PADM_CONFIGS,
    PADMNet,
    acf_from_paths,
    attention_map,
    attention_transfer_loss,
    physics_image,
)

TINY = PADM_CONFIGS["tiny"]
SIZE = 16


def _net(teacher: bool, seed: int = 0) -> PADMNet:
    torch.manual_seed(seed)
    return PADMNet(teacher=teacher, **TINY)


def _inputs(batch: int = 2, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 1, SIZE, SIZE, generator=gen)
    t = torch.randint(0, 500, (batch,), generator=gen)
    nac = torch.rand(batch, 3, SIZE, SIZE, generator=gen) * 2 - 1
    mu = torch.rand(batch, 3, SIZE, SIZE, generator=gen) * 2 - 1
    return x_t, t, nac, mu


def _disk_paths(size: int, radius: float, n_angles: int) -> torch.Tensor:
    """(1, N, size, size) distance (cm, 1 cm pixels) from each pixel inside a disk to its edge along N angles."""
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    py, px = torch.meshgrid(c, c, indexing="ij")
    phi = torch.arange(n_angles, dtype=torch.float64) * 2 * math.pi / n_angles
    dx, dy = phi.cos()[:, None, None], phi.sin()[:, None, None]
    along = px * dx + py * dy  # solve |p + s d| = R for s >= 0
    return (-along + (along**2 - (px**2 + py**2 - radius**2)).clamp_min(0).sqrt())[None]


def test_acf_matches_chang_for_a_uniform_disk():
    mu, radius, n = 0.15, 7.0, 16
    paths = _disk_paths(15, radius, n)  # odd size: pixel (7, 7) is the centre
    mu_map = torch.full((1, 1, 15, 15), mu, dtype=torch.float64)
    acf = acf_from_paths(mu_map, paths)
    expected = 1 / torch.exp(-mu * paths).mean(dim=1, keepdim=True)
    torch.testing.assert_close(acf, expected, rtol=1e-12, atol=0)
    assert acf[0, 0, 7, 7].item() == pytest.approx(math.exp(mu * radius), rel=1e-12)  # every path is R
    assert acf[0, 0, 7, 0] < acf[0, 0, 7, 7]  # nearer the edge, less attenuation


def test_acf_is_finite_and_bounded_for_huge_exponents():
    mu = torch.full((1, 1, 2, 2), 1e6, requires_grad=True)
    paths = torch.full((1, 16, 2, 2), 1e4)
    acf = acf_from_paths(mu, paths, max_exponent=8.0)
    torch.testing.assert_close(acf, torch.full_like(acf, math.exp(8.0)))
    acf.sum().backward()
    assert torch.isfinite(mu.grad).all()
    one_free_path = paths.clone()
    one_free_path[:, 0] = 0.0  # one unattenuated angle: ACF = N / (1 + (N-1) e^-8)
    assert acf_from_paths(mu.detach(), one_free_path)[0, 0, 0, 0].item() == pytest.approx(
        16 / (1 + 15 * math.exp(-8.0)), rel=1e-5)


def test_physics_image_with_the_true_acf_is_the_target():
    gen = torch.Generator().manual_seed(0)
    nac = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) * 50
    acf = 1 + 4 * torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    ac, k = nac * acf, 6.0
    s = nac.amax(dim=(1, 2, 3), keepdim=True)  # per-study maximum
    y, x = 2 * nac / s - 1, 2 * ac / (s * k) - 1
    torch.testing.assert_close(physics_image(y, acf, k), x, rtol=0, atol=1e-12)


def test_head_parts_are_consistent_and_start_near_water():
    net = _net(teacher=False).eval()
    x_t, t, nac, _ = _inputs()
    with torch.no_grad():
        x0_hat, feats, parts = net.forward_features(x_t, t, nac)
    assert parts["mu"].shape == (2, 1, SIZE, SIZE) and parts["paths"].shape == (2, 16, SIZE, SIZE)
    assert (parts["mu"] - 0.153).abs().max() < 0.02
    assert (parts["paths"] - 10.0).abs().max() < 2.0
    torch.testing.assert_close(parts["acf"], acf_from_paths(parts["mu"], parts["paths"]))
    torch.testing.assert_close(parts["physics"], physics_image(nac[:, 1:2], parts["acf"], 6.0))
    torch.testing.assert_close(x0_hat, 0.5 * parts["physics"] + 0.5 * parts["aux"])


@pytest.mark.parametrize("teacher", [False, True])
def test_output_shapes(teacher):
    x_t, t, nac, mu = _inputs()
    net = _net(teacher)
    assert net(x_t, t, nac, mu if teacher else None).shape == (2, 1, SIZE, SIZE)


def test_teacher_needs_mu_and_student_refuses_it():
    x_t, t, nac, mu = _inputs()
    with pytest.raises(ValueError, match="mu"):
        _net(teacher=True)(x_t, t, nac)
    with pytest.raises(ValueError, match="mu"):
        _net(teacher=False)(x_t, t, nac, mu)
    with pytest.raises(ValueError, match="multiples of 4"):
        _net(teacher=True)(x_t[..., :14], t, nac[..., :14], mu[..., :14])
    with pytest.raises(ValueError, match="nac"):
        _net(teacher=False)(x_t, t, nac[:, :2])


def test_teacher_and_student_features_match_in_shape():
    x_t, t, nac, mu = _inputs()
    _, feats_t, _ = _net(teacher=True).forward_features(x_t, t, nac, mu)
    _, feats_s, _ = _net(teacher=False).forward_features(x_t, t, nac)
    assert [f.shape for f in feats_t] == [f.shape for f in feats_s]
    assert len(feats_t) == 2 * len(TINY["channels"]) + 2  # C, encoder levels, middle, decoder levels
    assert attention_transfer_loss(feats_t, feats_s).item() > 0


def test_attention_transfer_loss_properties():
    gen = torch.Generator().manual_seed(3)
    teacher = [torch.randn(3, 4, 8, 8, generator=gen, requires_grad=True),
               torch.randn(3, 8, 4, 4, generator=gen, requires_grad=True)]
    student = [torch.randn(3, 2, 8, 8, generator=gen, requires_grad=True),
               torch.randn(3, 8, 4, 4, generator=gen, requires_grad=True)]
    assert attention_transfer_loss(teacher, [f.detach().clone() for f in teacher]).item() == pytest.approx(0, abs=1e-6)
    loss = attention_transfer_loss(teacher, student)
    assert loss.item() > 0
    scale = torch.tensor([0.01, 1.0, 300.0])[:, None, None, None]  # a different scale per sample
    torch.testing.assert_close(attention_transfer_loss(teacher, [f * scale for f in student]), loss)
    assert attention_map(student[0]).norm(dim=1).allclose(torch.ones(3))
    loss.backward()
    assert all(f.grad is None for f in teacher)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in student)


def test_bridge_training_reduces_the_loss():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    size, k = SIZE, 6.0
    paths = _disk_paths(size, 7.5, 16).float()
    inside = (paths > 0).any(dim=1, keepdim=True).float()
    acf_true = acf_from_paths(torch.full((1, 1, size, size), 0.15) * inside, paths)
    nac = (torch.rand(4, 3, size, size, generator=gen) * inside) * 20
    s = nac.amax(dim=(1, 2, 3), keepdim=True)
    y_stack = 2 * nac / s - 1
    x0 = 2 * nac[:, 1:2] * acf_true / (s * k) - 1
    t = torch.tensor([10, 120, 260, 480])
    noise = torch.randn(x0.shape, generator=gen)
    bridge, net = BrownianBridge(500, "linear"), PADMNet(**TINY)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return bridge.training_loss(lambda x_t, tt: net(x_t, tt, y_stack), x0, y_stack[:, 1:2], t=t, noise=noise,
                                    prediction="x0")[0]

    first = loss().item()
    for _ in range(30):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    last = loss().item()
    assert last < 0.5 * first
