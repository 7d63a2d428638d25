"""CLEAR-Net: the contextual, error-modulated restoration network of CoreDiff (LDCT denoising).

Gao et al., "CoreDiff: Contextual Error-Modulated Generalized Diffusion Model for Low-Dose CT
Denoising and Generalization", IEEE TMI 2024 (arXiv 2304.01814).

The network is a CBDNet-style 2D UNet (no normalisation, no attention) that predicts the
normal-dose slice x̂0 from the degraded centre slice x_t and its two LDCT neighbours. A sinusoidal
time embedding is added at four stages; the error-modulation module (EMM) looks at the previous
prediction and the LDCT input and rescales/shifts that embedding so the network is told how far
the sampler's actual input has drifted from the nominal x_t.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample

__all__ = [
    "CLEARNet",
    "ErrorModulation",
    "sinusoidal_embedding",
    "CLEARNET_PAPER",
    "CLEARNET_MEDIUM",
    "CLEARNET_SMALL",
    "clearnet_paper",
    "clearnet_small",
]

_RELU = ("relu", {"inplace": True})
_MULTIPLE = 4  # two 2x poolings: the UNet path needs H and W divisible by 4
_MIN_SIZE = 8  # the EMM pools three times before its global average


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal timestep embedding ``[sin(t·f_k), cos(t·f_k)]`` with ``f_k = 10000^(-k/(dim/2 - 1))``.

    This is CoreDiff's variant (sin first, ``dim/2 - 1`` in the exponent), kept as is so that
    weights trained with the original code keep their meaning when mapped onto this module.

    Args:
        t: timestep indices, shape (B,), integer or float.
        dim: embedding width, even and at least 4.

    Returns:
        (B, dim) float32 tensor.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


def _conv_stack(in_channels: int, out_channels: int, count: int) -> nn.Sequential:
    """``count`` × (3×3 conv + ReLU); the first maps ``in_channels`` to ``out_channels``."""
    return nn.Sequential(
        *(
            Convolution(2, in_channels if i == 0 else out_channels, out_channels, kernel_size=3, act=_RELU, norm=None)
            for i in range(count)
        )
    )


class ErrorModulation(nn.Module):
    """Error-modulation module (EMM, ``adjust_net`` in CoreDiff's code) for one UNet stage.

    Three (3×3 conv + ReLU + 2×2 average pool) blocks, a 1×1 conv to ``2 * out_channels`` and a
    global average pool turn [x̂0_prev, x_T] into one scale γ and one shift β per feature channel.
    (The paper's equation writes the pair as (β, γ); the names here follow the released code.)

    Args:
        out_channels: channels C of the UNet stage being modulated.
        hidden_channels: widths of the three conv blocks. Defaults to ``(32, 64, 128)``.
        in_channels: channels of the EMM input. Defaults to 2 ([x̂0_prev, x_T]).
    """

    def __init__(self, out_channels: int, hidden_channels: Sequence[int] = (32, 64, 128), in_channels: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for hidden in hidden_channels:
            layers += [Convolution(2, width, hidden, kernel_size=3, act=_RELU, norm=None), nn.AvgPool2d(2)]
            width = hidden
        layers.append(Convolution(2, width, 2 * out_channels, kernel_size=1, conv_only=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (B, in_channels, H, W) with H, W ≥ 8.

        Returns:
            (γ, β), each (B, out_channels, 1, 1).
        """
        out = F.adaptive_avg_pool2d(self.body(x), 1)
        gamma, beta = out.chunk(2, dim=1)
        return gamma, beta


class CLEARNet(nn.Module):
    """CLEAR-Net, CoreDiff's restoration network: predicts the normal-dose centre slice x̂0.

    Layout (c0, c1, c2 = ``channels``; "k×" = ``convs_per_level`` / ``decoder_convs``)::

        inc:   2× conv3+ReLU @ c0 ─────────────────────────────────────────────┐ skip (add)
        AvgPool → stage 1 (+emb) → 3× conv @ c1 ──────────────────┐ skip (add) │
        AvgPool → stage 2 (+emb) → 6× conv @ c2                   │            │
        ConvT 2×2 → c1, + skip → stage 3 (+emb) → 3× conv @ c1 ───┘            │
        ConvT 2×2 → c0, + skip → stage 4 (+emb) → 2× conv @ c0 ────────────────┘
        1×1 conv → out_channels, + centre input channel (residual)

    At each stage the time embedding ``e = MLP(SinPE(t))`` is projected by GELU + Linear to the
    stage's width C and added: ``feat += e`` without an EMM input, ``feat += γ·e + β`` with one,
    where (γ, β) come from that stage's own :class:`ErrorModulation` head.

    Any H, W ≥ 8 are accepted: the input is reflect-padded on the bottom/right to a multiple of
    4 (the two poolings) and the output is cropped back, so the result has the input's size.
    The EMM input is not padded (its heads end in a global average).

    On CPUs, converting the model and inputs to ``torch.channels_last`` makes the many
    low-channel convolutions markedly faster (oneDNN skips its layout reorders).

    Args:
        in_channels: input slices; the centre one (index ``in_channels // 2``) is the residual
            base. Defaults to 3 ([slice above, x_t, slice below]).
        out_channels: output channels. Defaults to 1.
        channels: widths (c0, c1, c2) of the three resolution levels. Defaults to ``(64, 128, 256)``.
        convs_per_level: 3×3 convs at each encoder level. Defaults to ``(2, 3, 6)``.
        decoder_convs: 3×3 convs at the decoder's c1 and c0 levels. Defaults to ``(3, 2)``.
        time_dim: sinusoidal embedding width (even, ≥ 4); the MLP's hidden width is 4×. Defaults to 32.
        emm_channels: widths of the three EMM conv blocks. Defaults to ``(32, 64, 128)``.
        intensity_offset, intensity_scale: the convolutions see ``(x - offset) * scale`` (and
            the EMM input likewise) and the residual they add is divided by ``scale``. On
            CoreDiff's [0, 1] scale (4096 HU) noise of 10-50 HU is 0.002-0.01: with offset 0.25
            (0 HU) and scale 40.96 (one unit per 100 HU) inputs are centred and the residual is
            of order one, which a short run with Adam can learn. Defaults 0 and 1 (as published).

    Example::

        net = CLEARNet(**CLEARNET_SMALL)
        x0_hat = net(torch.rand(1, 3, 512, 512), torch.tensor([9]))  # first sampling step: no EMM
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256),
        convs_per_level: Sequence[int] = (2, 3, 6),
        decoder_convs: Sequence[int] = (3, 2),
        time_dim: int = 32,
        emm_channels: Sequence[int] = (32, 64, 128),
        intensity_offset: float = 0.0,
        intensity_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not intensity_scale > 0:
            raise ValueError(f"intensity_scale must be > 0, got {intensity_scale}")
        self.intensity_offset, self.intensity_scale = float(intensity_offset), float(intensity_scale)
        _check_positive("in_channels", [in_channels])
        _check_positive("out_channels", [out_channels])
        _check_positive("channels", channels, length=3)
        _check_positive("convs_per_level", convs_per_level, length=3)
        _check_positive("decoder_convs", decoder_convs, length=2)
        _check_positive("emm_channels", emm_channels, length=3)
        if time_dim < 4 or time_dim % 2:
            raise ValueError(f"time_dim must be an even number ≥ 4, got {time_dim}")
        c0, c1, c2 = channels
        self.in_channels = in_channels
        self.time_dim = time_dim

        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 4 * time_dim), nn.GELU(), nn.Linear(4 * time_dim, time_dim))

        self.inc = _conv_stack(in_channels, c0, convs_per_level[0])
        self.pool = nn.AvgPool2d(2)
        self.conv1 = _conv_stack(c0, c1, convs_per_level[1])
        self.conv2 = _conv_stack(c1, c2, convs_per_level[2])
        self.up1 = UpSample(2, c2, c1, scale_factor=2, mode="deconv")
        self.conv3 = _conv_stack(c1, c1, decoder_convs[0])
        self.up2 = UpSample(2, c1, c0, scale_factor=2, mode="deconv")
        self.conv4 = _conv_stack(c0, c0, decoder_convs[1])
        self.out_conv = Convolution(2, c0, out_channels, kernel_size=1, conv_only=True)

        stage_channels = (c0, c1, c1, c0)  # after down1, down2, up1, up2
        self.time_proj = nn.ModuleList(nn.Sequential(nn.GELU(), nn.Linear(time_dim, c)) for c in stage_channels)
        self.emm = nn.ModuleList(ErrorModulation(c, emm_channels) for c in stage_channels)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | int | float, emm_input: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            x: (B, in_channels, H, W), e.g. [LDCT slice above, x_t, LDCT slice below]; H, W ≥ 8.
            t: timestep index, shape (B,) or a scalar used for the whole batch; integer or float.
            emm_input: (B, 2, H, W) = [previous x̂0, x_T] to switch the EMM on, or None to add the
                plain time embedding (CoreDiff's first sampling step and training stage I).

        Returns:
            (B, out_channels, H, W): UNet output plus the centre input channel.
        """
        t = self._check_inputs(x, t, emm_input)
        height, width = x.shape[-2:]
        centre = x[:, self.in_channels // 2 : self.in_channels // 2 + 1]
        x = (x - self.intensity_offset) * self.intensity_scale
        if emm_input is not None:
            emm_input = (emm_input - self.intensity_offset) * self.intensity_scale
        x = F.pad(x, (0, -width % _MULTIPLE, 0, -height % _MULTIPLE), mode="reflect")
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim))

        skip0 = self.inc(x)
        skip1 = self.conv1(self._condition(0, self.pool(skip0), emb, emm_input))
        feat = self.conv2(self._condition(1, self.pool(skip1), emb, emm_input))
        feat = self.conv3(self._condition(2, self.up1(feat) + skip1, emb, emm_input))
        feat = self.conv4(self._condition(3, self.up2(feat) + skip0, emb, emm_input))
        return self.out_conv(feat)[..., :height, :width] / self.intensity_scale + centre

    def _condition(
        self, stage: int, feat: torch.Tensor, emb: torch.Tensor, emm_input: torch.Tensor | None
    ) -> torch.Tensor:
        """Add the stage's time embedding, calibrated by its EMM head when an EMM input is given."""
        cond = self.time_proj[stage](emb)[:, :, None, None]
        if emm_input is None:
            return feat + cond
        gamma, beta = self.emm[stage](emm_input)
        return feat + gamma * cond + beta

    def _check_inputs(
        self, x: torch.Tensor, t: torch.Tensor | int | float, emm_input: torch.Tensor | None
    ) -> torch.Tensor:
        """Validate shapes and return ``t`` as a (B,) tensor on ``x``'s device."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < _MIN_SIZE:
            raise ValueError(f"x must be at least {_MIN_SIZE}×{_MIN_SIZE} pixels, got {tuple(x.shape[-2:])}")
        batch = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        if emm_input is not None and emm_input.shape != (batch, 2, *x.shape[-2:]):
            raise ValueError(
                f"emm_input must have shape ({batch}, 2, {x.shape[-2]}, {x.shape[-1]}) "
                f"([previous x̂0, x_T]), got {tuple(emm_input.shape)}"
            )
        return t


def _check_positive(name: str, values: Sequence[int], length: int | None = None) -> None:
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {tuple(values)}")
    if any(int(v) != v or v < 1 for v in values):
        raise ValueError(f"{name} must hold positive integers, got {tuple(values)}")


#: The published CLEAR-Net (CoreDiff's released code): 4,825,953 parameters.
CLEARNET_PAPER: Mapping[str, object] = MappingProxyType(
    {
        "channels": (64, 128, 256),
        "convs_per_level": (2, 3, 6),
        "decoder_convs": (3, 2),
        "time_dim": 32,
        "emm_channels": (32, 64, 128),
    }
)

#: A CPU-sized variant (184,145 parameters): same topology at a quarter of the width, fewer
#: convolutions per level and a narrower EMM, so a 10-step CoreDiff sampler stays within about
#: 2 s per 512² slice on two CPU cores.
CLEARNET_SMALL: Mapping[str, object] = MappingProxyType(
    {
        "channels": (16, 32, 64),
        "convs_per_level": (2, 2, 3),
        "decoder_convs": (2, 2),
        "time_dim": 32,
        "emm_channels": (8, 16, 32),
    }
)


#: Between the two (701,441 parameters): half the published width, for long CPU runs; about 1.2 s per
#: 512² slice at 10 steps on two CPU cores with bf16.
CLEARNET_MEDIUM: Mapping[str, object] = MappingProxyType({**CLEARNET_SMALL, "channels": (32, 64, 128),
                                                          "emm_channels": (16, 32, 64)})


def clearnet_paper(**overrides) -> CLEARNet:
    """CLEAR-Net with the published widths and depths; ``overrides`` replace any constructor argument."""
    return CLEARNet(**{**CLEARNET_PAPER, **overrides})


def clearnet_small(**overrides) -> CLEARNet:
    """The CPU-sized CLEAR-Net (:data:`CLEARNET_SMALL`); ``overrides`` replace any constructor argument."""
    return CLEARNet(**{**CLEARNET_SMALL, **overrides})
