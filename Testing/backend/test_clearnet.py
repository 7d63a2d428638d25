"""meddiffusion.nets.clearnet: CoreDiff's CLEAR-Net (shapes, residual, time embedding, EMM)."""

import math

import pytest
import torch
import torch.nn.functional as F

from meddiffusion.nets import (
    CLEARNET_PAPER,
    CLEARNET_SMALL,
    CLEARNet,
    clearnet_paper,
    clearnet_small,
    sinusoidal_embedding,
)

TINY = dict(channels=(4, 8, 8), convs_per_level=(1, 1, 2), decoder_convs=(1, 1), time_dim=8, emm_channels=(4, 4, 4))


def _net(seed: int = 0, **overrides) -> CLEARNet:
    torch.manual_seed(seed)
    return CLEARNet(**{**TINY, **overrides}).eval()


def _inputs(batch: int = 1, height: int = 37, width: int = 50, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=gen), torch.rand(batch, 2, height, width, generator=gen)


def _hand_count(in_channels, out_channels, channels, convs_per_level, decoder_convs, time_dim, emm_channels) -> int:
    """Parameters of CLEAR-Net counted layer by layer from the architecture description."""
    conv = lambda a, b, k=3: k * k * a * b + b  # noqa: E731
    stack = lambda a, b, n: conv(a, b) + (n - 1) * conv(b, b)  # noqa: E731
    c0, c1, c2 = channels
    e0, e1, e2 = emm_channels
    total = (time_dim * 4 * time_dim + 4 * time_dim) + (4 * time_dim * time_dim + time_dim)  # time MLP
    total += stack(in_channels, c0, convs_per_level[0]) + stack(c0, c1, convs_per_level[1])
    total += stack(c1, c2, convs_per_level[2])
    total += conv(c2, c1, 2) + stack(c1, c1, decoder_convs[0])  # up1 (ConvTranspose 2x2) + decoder
    total += conv(c1, c0, 2) + stack(c0, c0, decoder_convs[1])  # up2 + decoder
    total += conv(c0, out_channels, 1)
    for c in (c0, c1, c1, c0):  # one time projection and one EMM head per stage
        total += time_dim * c + c
        total += conv(2, e0) + conv(e0, e1) + conv(e1, e2) + conv(e2, 2 * c, 1)
    return total


@pytest.mark.parametrize("config, expected", [(CLEARNET_PAPER, 4_825_953), (CLEARNET_SMALL, 184_145)])
def test_parameter_counts_match_the_architecture(config, expected):
    net = CLEARNet(**config)
    counted = sum(p.numel() for p in net.parameters())
    assert counted == expected
    assert _hand_count(3, 1, **config) == expected


def test_configs_are_read_only_and_factories_use_them():
    with pytest.raises(TypeError):
        CLEARNET_SMALL["channels"] = (8, 16, 32)
    assert sum(p.numel() for p in clearnet_small().parameters()) == 184_145
    assert clearnet_paper(out_channels=2).out_conv.conv.out_channels == 2
    assert clearnet_paper().conv2[0].conv.out_channels == 256


@pytest.mark.parametrize("use_emm", [False, True])
def test_odd_sizes_come_back_at_input_size(use_emm):
    net = _net()
    x, emm = _inputs(batch=2, height=37, width=50)
    out = net(x, torch.tensor([3, 7]), emm if use_emm else None)
    assert out.shape == (2, 1, 37, 50)
    assert torch.isfinite(out).all()


def test_odd_size_equals_crop_of_reflect_padded_input():
    net = _net()
    x, _ = _inputs(height=37, width=50)
    padded = F.pad(x, (0, 2, 0, 3), mode="reflect")  # 40 x 52, multiples of 4: no internal padding
    with torch.no_grad():
        out = net(x, 5)
        ref = net(padded, 5)
    unet_out = out - x[:, 1:2]
    unet_ref = ref[..., :37, :50] - padded[:, 1:2, :37, :50]
    torch.testing.assert_close(unet_out, unet_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_channels", [3, 5])
def test_zeroed_output_conv_returns_the_centre_slice(in_channels):
    net = _net(in_channels=in_channels)
    with torch.no_grad():
        net.out_conv.conv.weight.zero_()
        net.out_conv.conv.bias.zero_()
    x = torch.rand(2, in_channels, 16, 20)
    out = net(x, torch.tensor([0, 9]), torch.rand(2, 2, 16, 20))
    assert torch.equal(out, x[:, in_channels // 2 : in_channels // 2 + 1])


def test_intensity_scale_is_seen_by_the_convolutions_and_undone_on_the_residual():
    torch.manual_seed(0)
    plain = CLEARNet(**TINY)
    scaled = CLEARNet(**TINY, intensity_offset=0.25, intensity_scale=40.0)
    scaled.load_state_dict(plain.state_dict())
    x, emm = 0.25 + 0.01 * torch.randn(2, 3, 16, 16), 0.25 + 0.01 * torch.randn(2, 2, 16, 16)
    centre = x[:, 1:2]
    # the same weights on (x - 0.25) * 40: the scaled net's residual is the plain one's on that input, / 40
    expected = (plain((x - 0.25) * 40, 3, (emm - 0.25) * 40) - (x[:, 1:2] - 0.25) * 40) / 40 + centre
    torch.testing.assert_close(scaled(x, 3, emm), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="intensity_scale"):
        CLEARNet(**TINY, intensity_scale=0)


def test_emm_changes_the_output_and_receives_gradients():
    net = _net().train()
    x, emm = _inputs(height=24, width=24)
    with torch.no_grad():
        assert not torch.allclose(net(x, 4), net(x, 4, emm))
    net(x, 4, emm).square().mean().backward()
    for name, param in net.emm.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_emm_without_emm_input_gets_no_gradient():
    net = _net().train()
    x, _ = _inputs(height=16, width=16)
    net(x, 4).square().mean().backward()
    assert all(param.grad is None for param in net.emm.parameters())


def test_unit_scale_zero_shift_emm_equals_plain_embedding():
    """feat + γ·e + β with γ = 1, β = 0 is exactly the EMM-off path feat + e."""
    net = _net()
    with torch.no_grad():
        for head in net.emm:
            last = head.body[-1].conv
            last.weight.zero_()
            half = last.out_channels // 2
            last.bias.copy_(torch.cat([torch.ones(half), torch.zeros(half)]))
        x, emm = _inputs(height=24, width=32)
        torch.testing.assert_close(net(x, 6, emm), net(x, 6), rtol=0, atol=1e-6)


def test_timestep_changes_the_output_per_sample():
    net = _net()
    x, emm = _inputs(batch=1, height=16, width=16)
    with torch.no_grad():
        assert not torch.allclose(net(x, 0, emm), net(x, 9, emm))
        both = net(x.repeat(2, 1, 1, 1), torch.tensor([0, 9]), emm.repeat(2, 1, 1, 1))
        torch.testing.assert_close(both[0:1], net(x, torch.tensor([0]), emm))
        torch.testing.assert_close(both[1:2], net(x, torch.tensor([9.0]), emm))


def test_sinusoidal_embedding_closed_form():
    emb = sinusoidal_embedding(torch.tensor([0, 1, 3]), dim=4)  # frequencies 1 and 10000^-1
    expected = torch.tensor(
        [[math.sin(t), math.sin(t * 1e-4), math.cos(t), math.cos(t * 1e-4)] for t in (0.0, 1.0, 3.0)]
    )
    torch.testing.assert_close(emb, expected)


def test_small_config_runs_and_is_residual():
    torch.manual_seed(0)
    net = CLEARNet(**CLEARNET_SMALL).eval()
    with torch.no_grad():
        net.out_conv.conv.weight.zero_()
    x = torch.rand(1, 3, 30, 42)
    with torch.inference_mode():
        out = net(x, 9)
    torch.testing.assert_close(out, x[:, 1:2] + net.out_conv.conv.bias.view(1, 1, 1, 1))


@pytest.mark.parametrize(
    "x_shape, t, emm_shape, message",
    [
        ((1, 1, 16, 16), 0, None, r"x must have shape \(B, 3, H, W\)"),
        ((1, 3, 16, 5), 0, None, "at least 8"),
        ((2, 3, 16, 16), torch.tensor([1, 2, 3]), None, r"t must be a scalar or have shape \(2,\)"),
        ((1, 3, 16, 16), 0, (1, 2, 16, 12), r"emm_input must have shape \(1, 2, 16, 16\)"),
    ],
)
def test_bad_input_is_a_clear_error(x_shape, t, emm_shape, message):
    net = _net()
    emm = None if emm_shape is None else torch.rand(emm_shape)
    with pytest.raises(ValueError, match=message):
        net(torch.rand(x_shape), t, emm)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(channels=(8, 16)), "channels must have 3 entries"),
        (dict(decoder_convs=(0, 1)), "decoder_convs must hold positive integers"),
        (dict(time_dim=7), "time_dim must be an even number"),
    ],
)
def test_bad_configuration_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        CLEARNet(**{**TINY, **overrides})
