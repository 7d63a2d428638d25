"""Networks of the cascaded 4D cardiac MRI synthesis (arXiv 2606.26764): VAE, anatomy and motion LDMs.

Volumes are (B, C, D, H, W) with D the short-axis slices (16, ~10 mm apart) and H = W the
in-plane grid (~1.75 mm pixels). Stacks of n < D slices are padded centrally to D
(:func:`pad_slices`) and a slice mask (:func:`slice_mask`) tells the LDMs which slices are real.

- :class:`DualDecoderVAE`: one encoder, an image decoder and a segmentation decoder (labels 0 BG,
  1 RV, 2 MYO, 3 LV) sharing the latent, so labelled frames shape the latent of unlabelled ones
  (semi-supervised). It halves H and W only: with 10 mm slices a depth downsampling would merge
  anatomy that is already barely sampled, and it keeps the slice mask the same in image and latent.
- :class:`AnatomyLDM`: epsilon of the end-diastolic latent z_ED, given one clinical token
  (:class:`ClinicalEncoder`) by cross-attention and the slice mask as an input channel.
- :class:`MotionLDM`: epsilon of the residual Δz = z_t - z_ED of a frame at phase τ, given z_ED
  and the mask as channels and two tokens, clinical and phase (:func:`phase_embedding`).
- :func:`null_condition`, :func:`drop_condition`: classifier-free guidance (CFG) with the null diagnosis
  :data:`NULL_DIAGNOSIS` and zero scalars, the token the paper trains with (its generation code
  uses id 0, "Unknown", instead: a mismatch not repeated here).
- :func:`make_discriminator`: the PatchGAN critic of the VAE's LSGAN term.

Both LDMs are MONAI ``DiffusionModelUNet`` s and plug into
:class:`meddiffusion.diffusion.latent.LatentDiffusion` as ``model_fn(x_t, t, cond)``, ``cond``
a dict of batched tensors. MONAI zero-initialises their output convolution (and every residual
block's second convolution and every transformer's output projection), so an untrained LDM
predicts exactly 0 whatever its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import numpy as np
import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets import DiffusionModelUNet, PatchDiscriminator
from monai.networks.nets.autoencoderkl import AEKLResBlock
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

__all__ = [
    "CARDIAC4D_CONFIGS",
    "DIAGNOSES",
    "NULL_DIAGNOSIS",
    "LABELS",
    "DualDecoderVAE",
    "kl_divergence",
    "ClinicalEncoder",
    "clinical_scalars",
    "phase_embedding",
    "slice_mask",
    "pad_slices",
    "crop_slices",
    "AnatomyLDM",
    "MotionLDM",
    "null_condition",
    "drop_condition",
    "make_discriminator",
]

#: diagnosis ids 0..5 of the clinical token (ACDC's groups; DSB cases are "Unknown").
DIAGNOSES = ("Unknown", "NOR", "MINF", "DCM", "HCM", "RV")
#: the classifier-free-guidance null diagnosis (with scalars 0).
NULL_DIAGNOSIS = len(DIAGNOSES)
#: segmentation classes of the label decoder.
LABELS = ("BG", "RV", "MYO", "LV")

#: network sizes. ``paper``: the official code's (VAE (32, 64, 128), 2 ResBlocks, latent 8: 8.3 M
#: parameters; anatomy UNet (256, 512, 1024): 798 M; the motion net, a diffusers
#: ``UNet3DConditionModel`` (256, 512, 768, 768) with factorised 2D + 1D layers there, translated
#: to MONAI's full-3D UNet with attention below the first level: 838 M, more than the original).
#: ``small``: the constructors' defaults, for CPU training (VAE 1.2 M, each LDM 2.3 M parameters:
#: the LDMs' cost is in the convolutions at the full 16x24x24 latent, so the first width is kept
#: at 16); ``tiny``: tests and smoke runs.
CARDIAC4D_CONFIGS: dict[str, dict[str, dict]] = {
    "paper": {
        "vae": {"channels": (32, 64, 128), "latent_channels": 8, "num_res_blocks": 2, "norm_num_groups": 32},
        "anatomy": {"latent_channels": 8, "channels": (256, 512, 1024), "attention_levels": (False, True, True),
                    "num_res_blocks": 2, "num_head_channels": 32, "context_dim": 512, "norm_num_groups": 32},
        "motion": {"latent_channels": 8, "channels": (256, 512, 768, 768),
                   "attention_levels": (False, True, True, True), "num_res_blocks": 2, "num_head_channels": 64,
                   "context_dim": 512, "norm_num_groups": 32},
    },
    "small": {
        "vae": {"channels": (8, 16, 32), "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 4},
        "anatomy": {"latent_channels": 4, "channels": (16, 32, 64), "attention_levels": (False, True, True),
                    "num_res_blocks": 1, "num_head_channels": 32, "context_dim": 128, "norm_num_groups": 8},
        "motion": {"latent_channels": 4, "channels": (16, 32, 64), "attention_levels": (False, True, True),
                   "num_res_blocks": 1, "num_head_channels": 32, "context_dim": 128, "norm_num_groups": 8},
    },
    "tiny": {
        "vae": {"channels": (4, 4, 8), "latent_channels": 2, "num_res_blocks": 1, "norm_num_groups": 2},
        "anatomy": {"latent_channels": 2, "channels": (8, 16), "attention_levels": (False, True),
                    "num_res_blocks": 1, "num_head_channels": 8, "context_dim": 16, "norm_num_groups": 4},
        "motion": {"latent_channels": 2, "channels": (8, 16), "attention_levels": (False, True),
                   "num_res_blocks": 1, "num_head_channels": 8, "context_dim": 16, "norm_num_groups": 4},
    },
}

_LOGVAR_RANGE = (-30.0, 20.0)  # MONAI AutoencoderKL's clamp: sigma stays finite and nonzero in float32
_ANISOTROPIC = (1, 2, 2)  # (D, H, W) stride of each VAE down/upsampling

Array = Union[np.ndarray, torch.Tensor]
Condition = Mapping[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------- VAE
def _replicate_padding(module: nn.Module) -> nn.Module:
    """Switch every padded 3D convolution of ``module`` to replicate padding (in place).

    MONAI's ``Convolution`` (and so its AEKL ResBlock) has no padding-mode argument; torch's
    convolution reads ``padding_mode`` at each call, so setting it after construction is enough.
    Replicate padding (the paper's) keeps the border of a slice stack from looking like a dark edge.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv3d) and any(p > 0 for p in m.padding):
            m.padding_mode = "replicate"
    return module


def _conv(c_in: int, c_out: int, kernel_size: int = 3, strides=1) -> Convolution:
    return Convolution(3, c_in, c_out, strides=strides, kernel_size=kernel_size, conv_only=True)


class _Encoder(nn.Sequential):
    """MONAI's AEKL encoder without attention, downsampling in-plane only (stride (1, 2, 2))."""

    def __init__(self, in_channels: int, channels, out_channels: int, num_res_blocks: int, norm_num_groups: int,
                 norm_eps: float):
        layers: list[nn.Module] = [_conv(in_channels, channels[0])]
        width = channels[0]
        for level, c in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(AEKLResBlock(3, width, norm_num_groups, norm_eps, c))
                width = c
            if level < len(channels) - 1:
                layers.append(_conv(width, width, strides=_ANISOTROPIC))
        layers += [nn.GroupNorm(norm_num_groups, width, eps=norm_eps), nn.SiLU(), _conv(width, out_channels)]
        super().__init__(*layers)


class _Decoder(nn.Sequential):
    """MONAI's AEKL decoder without attention, upsampling in-plane only (nearest (1, 2, 2) + conv); linear output."""

    def __init__(self, in_channels: int, channels, out_channels: int, num_res_blocks: int, norm_num_groups: int,
                 norm_eps: float):
        width = channels[-1]
        layers: list[nn.Module] = [_conv(in_channels, width)]
        for level in reversed(range(len(channels))):
            for _ in range(num_res_blocks):
                layers.append(AEKLResBlock(3, width, norm_num_groups, norm_eps, channels[level]))
                width = channels[level]
            if level > 0:
                layers += [UpSample(3, width, width, scale_factor=_ANISOTROPIC, mode="nontrainable",
                                    interp_mode="nearest", pre_conv=None, align_corners=None),
                           _conv(width, width)]
        layers += [nn.GroupNorm(norm_num_groups, width, eps=norm_eps), nn.SiLU(), _conv(width, out_channels)]
        super().__init__(*layers)


class DualDecoderVAE(nn.Module):
    """The semi-supervised dual-decoder VAE: (B, 1, D, H, W) image ↔ (B, latent, D, H/f, W/f) latent.

    f = 2^(len(channels) - 1): each level but the last halves H and W (never D). The encoder
    ends in two 1x1 "quant" convolutions giving mu and log σ² (MONAI's AutoencoderKL layout); the
    image decoder returns the image linearly (data in [-1, 1]) and the segmentation decoder
    ``num_classes`` logits. All convolutions pad by replication. No attention.

    Args:
        in_channels: image channels.
        num_classes: segmentation classes (:data:`LABELS`).
        channels: widths of the levels, shared by the encoder and both decoders.
        latent_channels: channels of z.
        num_res_blocks: MONAI AEKL ResBlocks per level.
        norm_num_groups: GroupNorm groups (must divide every width).
        norm_eps: GroupNorm epsilon.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, channels=(8, 16, 32), latent_channels: int = 4,
                 num_res_blocks: int = 1, norm_num_groups: int = 4, norm_eps: float = 1e-6):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if any(c % norm_num_groups for c in channels):
            raise ValueError(f"norm_num_groups {norm_num_groups} must divide every width {channels}")
        self.in_channels, self.num_classes, self.latent_channels = in_channels, num_classes, latent_channels
        self.factor = 2 ** (len(channels) - 1)
        blocks = (num_res_blocks, norm_num_groups, norm_eps)
        self.encoder = _Encoder(in_channels, channels, latent_channels, *blocks)
        self.quant_conv_mu = _conv(latent_channels, latent_channels, kernel_size=1)
        self.quant_conv_logvar = _conv(latent_channels, latent_channels, kernel_size=1)
        self.image_decoder = _Decoder(latent_channels, channels, in_channels, *blocks)
        self.label_decoder = _Decoder(latent_channels, channels, num_classes, *blocks)
        _replicate_padding(self)

    def latent_shape(self, image_shape) -> tuple[int, ...]:
        """(B, C, D, H, W) → (B, latent_channels, D, H/f, W/f); H and W must be multiples of f."""
        *batch, _, d, h, w = (int(s) for s in image_shape)
        if h % self.factor or w % self.factor:
            raise ValueError(f"H and W must be multiples of {self.factor}, got {(h, w)}")
        return (*batch, self.latent_channels, d, h // self.factor, w // self.factor)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z | x), logvar = log σ² clamped to [-30, 20] as in MONAI's AutoencoderKL."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"DualDecoderVAE takes (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        self.latent_shape(x.shape)
        h = self.encoder(x)
        return self.quant_conv_mu(h), self.quant_conv_logvar(h).clamp(*_LOGVAR_RANGE)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + σ ε (reparameterisation), ε drawn with ``generator`` on its device."""
        draw_on = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=draw_on, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar.clamp(*_LOGVAR_RANGE)) * eps

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        return self.image_decoder(z)

    def decode_labels(self, z: torch.Tensor) -> torch.Tensor:
        """Segmentation logits (B, num_classes, D, H, W)."""
        return self.label_decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                labels: bool = True) -> dict[str, torch.Tensor]:
        """Encode, sample z (always, as MONAI's AutoencoderKL; use ``encode`` for the mean) and decode both
        (the image only with ``labels=False``: an image-decoder fine-tune never reads them)."""
        mu, logvar = self.encode(x)
        z = self.sample(mu, logvar, generator)
        out = {"image": self.decode_image(z), "mu": mu, "logvar": logvar, "z": z}
        if labels:
            out["logits"] = self.decode_labels(z)
        return out


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(0, I)) summed over the latent elements, averaged over the batch; logvar = log σ².

    ½ Σ (mu² + σ² − log σ² − 1). The official code puts log σ where σ belongs; not repeated here.
    """
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)
    return kl.flatten(1).sum(1).mean()


# ------------------------------------------------------------------------------------- conditions
def clinical_scalars(ef_percent, edv_ml, esv_ml, n_slices) -> torch.Tensor:
    """(B, 4) [EF/100, EDV/600, ESV/600, n_slices/20]: the paper's scaling to ~[0, 1]; floats or (B,) tensors."""
    values = [torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (ef_percent, edv_ml, esv_ml, n_slices)]
    values = torch.broadcast_tensors(*values)
    scale = torch.tensor([100.0, 600.0, 600.0, 20.0], device=values[0].device)
    return torch.stack(values, dim=1) / scale


def _mlp(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out), nn.SiLU(), nn.Linear(c_out, c_out))


class ClinicalEncoder(nn.Module):
    """The clinical token: [Embedding(diagnosis) ; MLP(scalars)] → MLP → (B, 1, dim).

    ``forward(diagnosis, scalars)``: diagnosis (B,) long in 0..:data:`NULL_DIAGNOSIS`, scalars
    (B, 4) from :func:`clinical_scalars` (zeros with the null diagnosis).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.diagnosis = nn.Embedding(NULL_DIAGNOSIS + 1, dim)
        self.scalars = _mlp(4, dim)
        self.out = _mlp(2 * dim, dim)

    def forward(self, diagnosis: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        diagnosis = torch.as_tensor(diagnosis, device=self.diagnosis.weight.device).long().reshape(-1)
        if diagnosis.numel() and (diagnosis.min() < 0 or diagnosis.max() > NULL_DIAGNOSIS):
            raise ValueError(f"diagnosis ids must lie in 0..{NULL_DIAGNOSIS}, got {diagnosis.tolist()}")
        if scalars.ndim != 2 or scalars.shape != (diagnosis.shape[0], 4):
            raise ValueError(f"scalars must be (B, 4) = ({diagnosis.shape[0]}, 4), got {tuple(scalars.shape)}")
        scalars = scalars.to(self.diagnosis.weight)
        return self.out(torch.cat([self.diagnosis(diagnosis), self.scalars(scalars)], dim=1))[:, None]


def phase_embedding(tau, dim: int) -> torch.Tensor:
    """(B, dim) sinusoidal embedding (MONAI's: [cos, sin], max period 10000) of the cardiac phase τ.

    τ is 0 at end-diastole, 100 at end-systole and 200 at the next end-diastole (piecewise
    linear in the frame index). As in the paper, τ = 0 and τ = 200 get different embeddings.
    """
    tau = torch.as_tensor(tau, dtype=torch.float32).reshape(-1)
    return get_timestep_embedding(tau, dim)


def slice_mask(n_slices, depth: int, height: int, width: int) -> torch.Tensor:
    """(B, 1, depth, height, width) float: 1 on the central n slices (start (depth - n) // 2), 0 elsewhere.

    The same centring as :func:`pad_slices`, so the mask marks exactly the real slices of a padded
    stack. ``n_slices``: an int (B = 1) or a (B,) tensor. The VAE keeps the depth, so the mask of
    the image is also the mask of its latent.
    """
    n = torch.as_tensor(n_slices).long().reshape(-1)
    if (n < 1).any() or (n > depth).any():
        raise ValueError(f"n_slices must lie in 1..{depth}, got {n.tolist()}")
    start = (depth - n) // 2
    index = torch.arange(depth, device=n.device)
    inside = (index[None] >= start[:, None]) & (index[None] < (start + n)[:, None])
    return inside.float()[:, None, :, None, None].expand(-1, 1, depth, height, width).contiguous()


def _check_slices(n: int, depth: int) -> int:
    if not 1 <= n <= depth:
        raise ValueError(f"a stack of {n} slices does not fit a depth of {depth}")
    return (depth - n) // 2


def pad_slices(array: Array, depth: int, fill: float = 0.0) -> Array:
    """(…, n, H, W) → (…, depth, H, W), the n slices centred (start (depth - n) // 2), the rest ``fill``.

    numpy arrays stay numpy, tensors stay tensors. Use -1 for images in [-1, 1], 0 for labels.
    """
    n = array.shape[-3]
    start = _check_slices(n, depth)
    shape = (*array.shape[:-3], depth, *array.shape[-2:])
    if isinstance(array, torch.Tensor):
        out = torch.full(shape, fill, dtype=array.dtype, device=array.device)
    else:
        out = np.full(shape, fill, dtype=array.dtype)
    out[..., start:start + n, :, :] = array
    return out


def crop_slices(array: Array, n_slices: int) -> Array:
    """The inverse of :func:`pad_slices`: the central ``n_slices`` of (…, depth, H, W)."""
    start = _check_slices(int(n_slices), array.shape[-3])
    return array[..., start:start + int(n_slices), :, :]


# ------------------------------------------------------------------------------------------ LDMs
def _check_condition(cond: Condition, keys: tuple[str, ...], x: torch.Tensor, owner: str) -> None:
    missing = [k for k in keys if k not in cond]
    if missing:
        raise KeyError(f"{owner} needs condition keys {keys}; missing {missing}")
    for key in keys:
        if cond[key].shape[0] != x.shape[0]:
            raise ValueError(f"cond[{key!r}] has batch {cond[key].shape[0]}, x_t has {x.shape[0]}")
    mask = cond["mask"]
    if mask.ndim != 5 or mask.shape[1] != 1 or mask.shape[2:] != x.shape[2:]:
        raise ValueError(f"cond['mask'] must be (B, 1, {', '.join(map(str, x.shape[2:]))}), got {tuple(mask.shape)}")


class _LatentUNet(nn.Module):
    """MONAI's conditioned ``DiffusionModelUNet`` on [x_t, extra channels] and the clinical encoder."""

    def __init__(self, in_channels: int, latent_channels: int, channels, attention_levels, num_res_blocks: int,
                 num_head_channels: int, context_dim: int, norm_num_groups: int, use_flash_attention: bool):
        super().__init__()
        self.latent_channels, self.context_dim = latent_channels, context_dim
        # MONAI's UNet halves D, H and W at each level (the latent's D too, as in the paper)
        self.multiple = 2 ** (len(channels) - 1)
        self.unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=latent_channels, num_res_blocks=num_res_blocks,
            channels=tuple(channels), attention_levels=tuple(attention_levels), norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels, with_conditioning=True, cross_attention_dim=context_dim,
            use_flash_attention=use_flash_attention)
        self.clinical = ClinicalEncoder(context_dim)

    def _check(self, x_t: torch.Tensor) -> None:
        if x_t.ndim != 5 or x_t.shape[1] != self.latent_channels:
            raise ValueError(f"x_t must be (B, {self.latent_channels}, D, h, w), got {tuple(x_t.shape)}")
        if any(s % self.multiple for s in x_t.shape[2:]):
            raise ValueError(f"D, h and w must be multiples of {self.multiple}, got {tuple(x_t.shape[2:])}")

    def _timesteps(self, t, x_t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])


class AnatomyLDM(_LatentUNet):
    """Stage 3: epsilon of the end-diastolic latent, ``forward(x_t, t, cond) -> (B, latent, D, h, w)``.

    Input channels [x_t, mask]; context one clinical token. ``cond``: ``diagnosis`` (B,) long,
    ``scalars`` (B, 4), ``mask`` (B, 1, D, h, w) (:func:`slice_mask`); other keys are ignored.
    With a single token the cross-attention weights are all 1: the token adds the same
    per-sample feature offset at every position of the attention levels.

    Args:
        latent_channels: channels of the latent (x_t and the output).
        channels: widths of the UNet levels. Each level halves D, h and w (MONAI's UNet is
            isotropic; the latent's depth too, as in the paper), so D, h and w must be multiples
            of 2^(len(channels) - 1).
        attention_levels: levels with a transformer (self-attention, then cross-attention to the
            context); the tokens reach the UNet only there.
        num_res_blocks: residual blocks per level on the way down (one more up: MONAI's layout).
        num_head_channels: channels per attention head.
        context_dim: width of the context tokens.
        norm_num_groups: GroupNorm groups (must divide every width).
        use_flash_attention: MONAI's switch to torch's ``scaled_dot_product_attention``: the
            same result to float rounding, a quarter faster on CPU, memory-efficient on GPU.
    """

    keys = ("diagnosis", "scalars", "mask")

    def __init__(self, latent_channels: int = 4, channels=(16, 32, 64), attention_levels=(False, True, True),
                 num_res_blocks: int = 1, num_head_channels: int = 32, context_dim: int = 128,
                 norm_num_groups: int = 8, use_flash_attention: bool = True):
        super().__init__(latent_channels + 1, latent_channels, channels, attention_levels, num_res_blocks,
                         num_head_channels, context_dim, norm_num_groups, use_flash_attention)

    def forward(self, x_t: torch.Tensor, t, cond: Condition) -> torch.Tensor:
        self._check(x_t)
        _check_condition(cond, self.keys, x_t, "AnatomyLDM")
        context = self.clinical(cond["diagnosis"], cond["scalars"])
        x = torch.cat([x_t, cond["mask"].to(x_t)], dim=1)
        return self.unet(x, self._timesteps(t, x_t), context=context)


class MotionLDM(_LatentUNet):
    """Stage 4: epsilon of the residual motion Δz (scaled), ``forward(x_t, t, cond) -> (B, latent, D, h, w)``.

    Input channels [x_t, z_ED, mask]; context two tokens, clinical and phase (an MLP of
    :func:`phase_embedding`). ``cond``: ``diagnosis``, ``scalars``, ``mask`` as for
    :class:`AnatomyLDM`, ``z_ed`` (B, latent, D, h, w), ``tau`` (B,) float. The paper's motion net
    is a diffusers ``UNet3DConditionModel``; this is MONAI's UNet with the same inputs and tokens.
    Arguments as :class:`AnatomyLDM`.
    """

    keys = ("diagnosis", "scalars", "mask", "z_ed", "tau")

    def __init__(self, latent_channels: int = 4, channels=(16, 32, 64), attention_levels=(False, True, True),
                 num_res_blocks: int = 1, num_head_channels: int = 32, context_dim: int = 128,
                 norm_num_groups: int = 8, use_flash_attention: bool = True):
        super().__init__(2 * latent_channels + 1, latent_channels, channels, attention_levels, num_res_blocks,
                         num_head_channels, context_dim, norm_num_groups, use_flash_attention)
        self.phase = _mlp(context_dim, context_dim)

    def forward(self, x_t: torch.Tensor, t, cond: Condition) -> torch.Tensor:
        self._check(x_t)
        _check_condition(cond, self.keys, x_t, "MotionLDM")
        if cond["z_ed"].shape != x_t.shape:
            raise ValueError(f"cond['z_ed'] must have x_t's shape {tuple(x_t.shape)}, got {tuple(cond['z_ed'].shape)}")
        clinical = self.clinical(cond["diagnosis"], cond["scalars"])
        phase = self.phase(phase_embedding(cond["tau"].to(x_t.device), self.context_dim).to(x_t))[:, None]
        x = torch.cat([x_t, cond["z_ed"].to(x_t), cond["mask"].to(x_t)], dim=1)
        return self.unet(x, self._timesteps(t, x_t), context=torch.cat([clinical, phase], dim=1))


# ------------------------------------------------------------------------------------------- CFG
def null_condition(cond: Condition) -> dict[str, torch.Tensor]:
    """A copy of ``cond`` with the clinical part nulled (diagnosis :data:`NULL_DIAGNOSIS`, scalars 0).

    The mask, z_ED and τ stay: guidance is on the clinical condition only.
    """
    out = dict(cond)
    out["diagnosis"] = torch.full_like(torch.as_tensor(cond["diagnosis"]), NULL_DIAGNOSIS)
    out["scalars"] = torch.zeros_like(cond["scalars"])
    return out


def drop_condition(cond: Condition, p: float, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Training-time CFG dropout: each sample's clinical part nulled with probability ``p`` (paper: 0.1)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    diagnosis = torch.as_tensor(cond["diagnosis"])
    draw_on = generator.device if generator is not None else diagnosis.device
    drop = (torch.rand(diagnosis.shape[0], generator=generator, device=draw_on) < p).to(diagnosis.device)
    out = dict(cond)
    out["diagnosis"] = torch.where(drop, torch.full_like(diagnosis, NULL_DIAGNOSIS), diagnosis)
    out["scalars"] = torch.where(drop[:, None].to(cond["scalars"].device), torch.zeros_like(cond["scalars"]),
                                 cond["scalars"])
    return out


# ---------------------------------------------------------------------------------- discriminator
def make_discriminator(channels: int = 16, num_layers: int = 2, in_channels: int = 1) -> PatchDiscriminator:
    """The VAE's LSGAN critic: MONAI's 3D ``PatchDiscriminator``; ``disc(x)[-1]`` is the patch logit map.

    MONAI's strides are fixed at 2 on every axis (not an argument), so the depth is halved too:
    with 2 layers a (B, 1, 16, 96, 96) frame gives (B, 1, 2, 22, 22) patches whose receptive field
    (34 voxels) spans all 16 slices but ~60 mm in-plane: a critic of in-plane texture over the
    whole stack, which works at depth 16. BatchNorm as in MONAI's default.
    """
    return PatchDiscriminator(spatial_dims=3, channels=channels, in_channels=in_channels, out_channels=1,
                              num_layers_d=num_layers)
