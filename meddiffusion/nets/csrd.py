"""CSRD's network: a 3D UNet in the spirit of DDPM++ (Song et al.) for EDM residual diffusion of PET.

CSRD (arXiv 2410.00184) denoises low-count PET by diffusing the residual r = x_full - x_low
with EDM (``meddiffusion.diffusion.edm``). The raw network F sees, concatenated as channels,

    [c_in(sigma) r_sigma, MR, PET_low, x, y, z]          (5 channels without the MR)

where x, y, z are the voxel's position in the *whole* volume, scaled to [-1, 1]
(:func:`global_coordinates`). Trained on random patches, the network then knows where a patch
lies, so overlapping patches of a sliding window see the same input in their overlap.

The blocks follow DDPM++: residual blocks whose noise-level embedding (MONAI's sinusoidal
embedding of c_noise = ln(sigma)/4, then an MLP) sets a GroupNorm scale and shift, dropout
before the second convolution, residual sums scaled by sqrt(1/2), channel multipliers
(1, 2, 2, 2) and no self-attention (CSRD's code never builds the one it configures).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

__all__ = ["CSRDUNet3D", "CSRD_CONFIGS", "global_coordinates", "COORDINATE_CHANNELS"]

COORDINATE_CHANNELS = 3

#: network sizes. ``paper``: CSRD's channel multipliers (1, 2, 2, 2) and 4 residual blocks per
#: level at a base width of 32 instead of 64, so the weights stay under 25 MB as fp16
#: safetensors (9.9 M parameters: 19.9 MB fp16, 39.8 MB fp32); ``small``: CPU training and
#: inference (the width and depth that keep a 128³ volume through a few Heun steps within
#: minutes on two cores); ``tiny``: tests and smoke runs.
CSRD_CONFIGS: dict[str, dict] = {
    "paper": {"model_channels": 32, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 4, "norm_num_groups": 16,
              "dropout": 0.13},
    "small": {"model_channels": 16, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 1, "norm_num_groups": 8,
              "dropout": 0.1},
    "tiny": {"model_channels": 4, "channel_mult": (1, 2), "num_res_blocks": 1, "norm_num_groups": 2,
             "dropout": 0.0},
}

_SKIP_SCALE = math.sqrt(0.5)


def global_coordinates(patch_shape, full_shape, start=(0, 0, 0), dtype=torch.float32,
                       device=None) -> torch.Tensor:
    """(3, D, H, W) x, y, z channels of a patch at voxel ``start`` of a volume of ``full_shape`` (z, y, x).

    Index i of an axis of n voxels maps to 2 i / (n - 1) - 1, so the volume spans [-1, 1]
    whatever the patch; voxels beyond the volume (padding) continue the same line. Channel 0
    is x (the last array axis), 1 is y, 2 is z.
    """
    axes = []
    for size, n, offset in zip(patch_shape, full_shape, start):
        index = torch.arange(offset, offset + size, dtype=torch.float64, device=device)
        axes.append((2 * index / (n - 1) - 1) if n > 1 else torch.zeros_like(index))
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z]).to(dtype)


class _ResBlock(nn.Module):
    """DDPM++ residual block: conv(SiLU(GN(x))) → GN·(1 + scale) + shift → SiLU → dropout → conv, summed √½.

    The second convolution starts at zero, so every block starts as its (1x1) skip.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, norm_num_groups: int,
                 dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(norm_num_groups, in_channels), in_channels, eps=1e-6)
        self.conv1 = Convolution(3, in_channels, out_channels, kernel_size=3, conv_only=True)
        self.affine = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Convolution(3, out_channels, out_channels, kernel_size=3, conv_only=True)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)
        self.skip = (nn.Identity() if in_channels == out_channels
                     else Convolution(3, in_channels, out_channels, kernel_size=1, conv_only=True))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h) * (1 + scale) + shift)))
        return (self.skip(x) + h) * _SKIP_SCALE


class CSRDUNet3D(nn.Module):
    """F of CSRD: (B, 5 or 6, D, H, W) inputs and c_noise → (B, 1, D, H, W).

    Args:
        use_mr: whether the MR is among the inputs (6 channels; 5 without it).
        model_channels: width of the first level; level k has ``model_channels * channel_mult[k]``.
        channel_mult: per-level multipliers; D, H and W must be multiples of 2^(levels - 1)
            (:attr:`multiple`).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        norm_num_groups: GroupNorm groups (must divide every width).
        dropout: dropout inside each residual block (CSRD: 0.13).
        emb_mult: embedding width as a multiple of ``model_channels`` (DDPM++: 4).
    """

    def __init__(self, use_mr: bool = True, model_channels: int = 16, channel_mult=(1, 2, 2, 2),
                 num_res_blocks: int = 1, norm_num_groups: int = 8, dropout: float = 0.0, emb_mult: int = 4):
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        if any(w % norm_num_groups for w in widths):
            raise ValueError(f"norm_num_groups {norm_num_groups} must divide every level's width {widths}")
        self.use_mr = bool(use_mr)
        self.in_channels = (3 if use_mr else 2) + COORDINATE_CHANNELS
        self.model_channels = model_channels
        self.multiple = 2 ** (len(widths) - 1)
        emb = emb_mult * model_channels
        self.embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())
        self.conv_in = Convolution(3, self.in_channels, widths[0], kernel_size=3, conv_only=True)

        def block(c_in: int, c_out: int) -> _ResBlock:
            return _ResBlock(c_in, c_out, emb, norm_num_groups, dropout)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, width = [widths[0]], widths[0]
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(width, w))
                width = w
                skips.append(width)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(Convolution(3, width, width, strides=2, kernel_size=3, conv_only=True))
                skips.append(width)
        self.mid = nn.ModuleList([block(width, width), block(width, width)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(block(width + skips.pop(), w))
                width = w
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Sequential(
                    UpSample(3, width, width, scale_factor=2, mode="nontrainable", interp_mode="nearest",
                             pre_conv=None, align_corners=None),
                    Convolution(3, width, width, kernel_size=3, conv_only=True)))
        self.norm_out = nn.GroupNorm(min(norm_num_groups, width), width, eps=1e-6)
        self.conv_out = Convolution(3, width, 1, kernel_size=3, conv_only=True)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor | float) -> torch.Tensor:
        """F(inputs, c_noise); ``c_noise`` is one value per sample, or one for all (sliding-window patches)."""
        self._check(x)
        c_noise = torch.as_tensor(c_noise, dtype=torch.float32, device=x.device).reshape(-1)
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(x.shape[0])
        if c_noise.shape[0] != x.shape[0]:
            raise ValueError(f"c_noise needs one value per sample ({x.shape[0]}) or one for all, "
                             f"got {c_noise.shape[0]}")
        emb = self.embed(get_timestep_embedding(c_noise, self.model_channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for level, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        for blk in self.mid:
            h = blk(h, emb)
        for level, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), emb)
            if level < len(self.upsample):
                h = self.upsample[level](h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            what = "[c_in r, MR, PET_low, x, y, z]" if self.use_mr else "[c_in r, PET_low, x, y, z]"
            raise ValueError(f"CSRDUNet3D(use_mr={self.use_mr}) takes (B, {self.in_channels}, D, H, W) = {what}, "
                             f"got {tuple(x.shape)}")
        if any(s % self.multiple for s in x.shape[2:]):
            raise ValueError(f"D, H and W must be multiples of {self.multiple}, got {tuple(x.shape[2:])}")
