"""PADM's network: a 2.5D bridge UNet with a physics (attenuation-correction-factor) head.

PADM (arXiv 2511.06948) corrects the attenuation of cardiac SPECT without CT. A Brownian bridge
(T = 500) runs from the NAC slice y to the AC slice x0 and the network predicts x0 directly
(§4.4, eq. 10-15): from the UNet's last feature map it reads, per pixel, N per-angle path
lengths s_m (cm), an attenuation coefficient mu (1/cm) and an auxiliary image x~0, and returns

    ACF = [(1/N) sum_m exp(-mu s_m)]^-1,    x^0 = alpha * (y ⊙ ACF) + (1 - alpha) * x~0.

Slices are transaxial: for a camera rotating about the body axis each photon path lies in
that plane, so the per-angle path lengths of one pixel are in-plane quantities.

Normalisation contract (the task normalises, this module relies on it). With s a robust
per-study maximum of the NAC and K = ``acf_scale``::

    y01 = NAC / s,         y = 2 y01 - 1        (every NAC slice of the stack)
    x01 = AC / (s K),      x = 2 x01 - 1        (the AC target)

so the physics image in normalised space is x̄ = 2 (y01_mid ACF / K) - 1, exact when ACF is
the true AC/NAC ratio. K bounds the ACFs that fit in [-1, 1] (myocardial ACFs are ~2-5).

Teacher and student (§4.5) share the UNet and the head and differ only in the condition C
concatenated with x_t: the teacher's :class:`MuCrossAttention` lets NAC tokens attend to the
CT attenuation map, the student's is a convolution of the NAC stack alone. Distillation
aligns the spatial attention maps (:func:`attention_map`) of their features
(:func:`attention_transfer_loss`, eq. 17).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, CrossAttentionBlock, MLPBlock, SpatialAttentionBlock
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

__all__ = [
    "PADMNet",
    "PADM_CONFIGS",
    "PhysicsHead",
    "MuCrossAttention",
    "acf_from_paths",
    "physics_image",
    "attention_map",
    "attention_transfer_loss",
]

#: network sizes. ``paper``: BBDM's channel multipliers (1, 4, 8) and 2 residual blocks per
#: level on a base width of 32 (BBDM's base of 128 would be ~16x larger): 10.8 M parameters (teacher 11.4 M),
#: 21.7 MB (22.8 MB) as fp16 safetensors, twice that in fp32;
#: ``small``: CPU training and inference on 64x64 slices; ``tiny``: tests and smoke runs.
PADM_CONFIGS: dict[str, dict] = {
    "paper": {"channels": (32, 128, 256), "num_res_blocks": 2, "norm_num_groups": 32, "cond_channels": 32,
              "attention_heads": 8, "token_dim": 128},
    "small": {"channels": (16, 32, 64), "num_res_blocks": 1, "norm_num_groups": 8, "cond_channels": 16,
              "attention_heads": 4, "token_dim": 32},
    "tiny": {"channels": (4, 8), "num_res_blocks": 1, "norm_num_groups": 2, "cond_channels": 4,
             "attention_heads": 2, "token_dim": 8},
}

WATER_MU = 0.153  # 1/cm at 140 keV (Tc-99m)


def acf_from_paths(mu: torch.Tensor, paths: torch.Tensor, max_exponent: float = 8.0) -> torch.Tensor:
    """First-order Chang correction factor per pixel, eq. 11: ACF = [(1/N) sum_m exp(-mu s_m)]^-1.

    Computed in the log domain, log ACF = log N - logsumexp_m(-min(mu s_m, max_exponent)), so
    it neither underflows nor overflows; the clamp bounds the ACF by exp(max_exponent).

    Args:
        mu: (B, 1, H, W) attenuation coefficients >= 0, 1/cm.
        paths: (B, N, H, W) path lengths >= 0 from each pixel to the body edge at N angles, cm.

    Returns:
        (B, 1, H, W) ACF >= 1.
    """
    exponent = (mu * paths).clamp(max=max_exponent)
    return torch.exp(math.log(paths.shape[1]) - torch.logsumexp(-exponent, dim=1, keepdim=True))


def physics_image(nac_mid: torch.Tensor, acf: torch.Tensor, acf_scale: float) -> torch.Tensor:
    """x̄ = 2 (y01 ACF / K) - 1 with y01 = (y + 1) / 2: the NAC slice y (in [-1, 1]) corrected by the ACF."""
    return (nac_mid + 1) * acf / acf_scale - 1


class PhysicsHead(nn.Module):
    """Eq. 12-15: UNet features -> (x^0, parts).

    Three 1x1 convolutions after GroupNorm + SiLU read N path lengths (softplus x ``path_scale``
    cm), mu (softplus x ``WATER_MU / ln 2``) and x~0. The scales make the untrained head start
    at a physically sensible guess (all paths ~``path_scale``, mu ~ water) rather than at
    ACF ~ 1; the path and mu weights start small so that guess holds, but not zero, which
    would keep the N path channels identical forever (they get identical gradients).

    Args:
        in_channels: channels of the feature map.
        n_angles: N, projection angles (16 matches the teacher best in the paper, Table 4).
        norm_num_groups: groups of the GroupNorm.
        alpha: fixed weight of the physics image (DiffCAS uses 0.5).
        acf_scale: K of the normalisation contract.
        path_scale: initial path length, cm.
        max_exponent: clamp of mu s in :func:`acf_from_paths`.
    """

    def __init__(self, in_channels: int, n_angles: int = 16, norm_num_groups: int = 8, alpha: float = 0.5,
                 acf_scale: float = 6.0, path_scale: float = 10.0, max_exponent: float = 8.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if acf_scale <= 0 or path_scale <= 0:
            raise ValueError(f"acf_scale and path_scale must be > 0, got {acf_scale} and {path_scale}")
        self.alpha, self.acf_scale, self.max_exponent = float(alpha), float(acf_scale), float(max_exponent)
        self.path_scale = float(path_scale) / math.log(2.0)  # softplus(0) = ln 2
        self.mu_scale = WATER_MU / math.log(2.0)
        self.norm = nn.Sequential(nn.GroupNorm(norm_num_groups, in_channels), nn.SiLU())
        self.paths = nn.Conv2d(in_channels, n_angles, 1)
        self.mu = nn.Conv2d(in_channels, 1, 1)
        self.aux = nn.Conv2d(in_channels, 1, 1)
        with torch.no_grad():
            for conv in (self.paths, self.mu):
                conv.weight.mul_(0.1)
                conv.bias.zero_()

    def forward(self, features: torch.Tensor, nac_mid: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            features: (B, in_channels, H, W).
            nac_mid: (B, 1, H, W) the NAC slice being corrected, normalised to [-1, 1].

        Returns:
            x^0 (B, 1, H, W) and parts: ``mu`` (B, 1, H, W) 1/cm, ``paths`` (B, N, H, W) cm,
            ``acf`` (B, 1, H, W), ``physics`` x̄ and ``aux`` x~0 (B, 1, H, W), normalised space.
        """
        h = self.norm(features)
        paths = F.softplus(self.paths(h)) * self.path_scale
        mu = F.softplus(self.mu(h)) * self.mu_scale
        aux = self.aux(h)
        acf = acf_from_paths(mu, paths, self.max_exponent)
        physics = physics_image(nac_mid, acf, self.acf_scale)
        x0_hat = self.alpha * physics + (1 - self.alpha) * aux
        return x0_hat, {"mu": mu, "paths": paths, "acf": acf, "physics": physics, "aux": aux}


def _coordinates(like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel coordinates in [-1, 1], in like's dtype and device."""
    b, _, h, w = like.shape
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(b, 2, h, w)


def _token_embedding(in_channels: int, token_dim: int) -> nn.Sequential:
    """Two stride-2 3x3 convolutions: (B, in, H, W) -> (B, token_dim, H/4, W/4)."""
    return nn.Sequential(
        Convolution(2, in_channels, token_dim, strides=2, kernel_size=3, act="GELU", norm=None),
        Convolution(2, token_dim, token_dim, strides=2, kernel_size=3, conv_only=True),
    )


class MuCrossAttention(nn.Module):
    """The teacher's condition C = CrossAttn(NAC, A) (§4.5): NAC tokens query the mu-map tokens.

    Both stacks, with two coordinate channels appended, are embedded by strided convolutions
    into tokens on a grid 4x coarser than the slice. Attention is permutation-invariant, so the
    coordinates are what lets a NAC token find the mu tokens at its own position. Then, as in
    the paper, Attention(Q = NAC, K = V = mu) + residual -> LayerNorm -> FFN + residual ->
    LayerNorm. The tokens are upsampled back to H x W by a bilinear x4 and a 3x3 convolution
    and added to a full-resolution convolution of the NAC stack (the student's condition), so
    fine NAC detail is not lost to the coarse grid. The attention branch's last convolution
    starts at zero: an untrained teacher conditions exactly like a student.

    Args:
        nac_channels: slices in the NAC stack.
        mu_channels: slices in the mu-map stack.
        out_channels: channels of C.
        token_dim: width of the tokens.
        num_heads: attention heads; must divide token_dim.

    ``forward(nac, mu)``: (B, nac_channels, H, W), (B, mu_channels, H, W) -> (B, out_channels, H, W),
    with H and W multiples of 4.
    """

    def __init__(self, nac_channels: int, mu_channels: int, out_channels: int, token_dim: int = 64,
                 num_heads: int = 4):
        super().__init__()
        if token_dim % num_heads:
            raise ValueError(f"token_dim ({token_dim}) must be a multiple of num_heads ({num_heads})")
        self.nac_tokens = _token_embedding(nac_channels + 2, token_dim)
        self.mu_tokens = _token_embedding(mu_channels + 2, token_dim)
        self.attention = CrossAttentionBlock(token_dim, num_heads, qkv_bias=True)
        self.norm1 = nn.LayerNorm(token_dim)
        self.ffn = MLPBlock(token_dim, 4 * token_dim, dropout_rate=0.0)
        self.norm2 = nn.LayerNorm(token_dim)
        self.upsample = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)
        self.out = Convolution(2, token_dim, out_channels, kernel_size=3, conv_only=True)
        nn.init.zeros_(self.out.conv.weight)
        nn.init.zeros_(self.out.conv.bias)
        self.skip = Convolution(2, nac_channels, out_channels, kernel_size=3, conv_only=True)

    def forward(self, nac: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        coords = _coordinates(nac)
        q = self.nac_tokens(torch.cat([nac, coords], dim=1))
        b, d, h, w = q.shape
        q = q.flatten(2).transpose(1, 2)  # (B, hw, d)
        kv = self.mu_tokens(torch.cat([mu, coords], dim=1)).flatten(2).transpose(1, 2)
        tokens = self.norm1(q + self.attention(q, context=kv))
        tokens = self.norm2(tokens + self.ffn(tokens))
        grid = tokens.transpose(1, 2).reshape(b, d, h, w)
        return self.skip(nac) + self.out(self.upsample(grid))


class _ResBlock(nn.Module):
    """Residual block with the time embedding as GroupNorm scale/shift (BBDM's ``use_scale_shift_norm``).

    h = conv1(SiLU(GN(x))); h = conv2(SiLU(GN(h) (1 + scale) + shift)); out = skip(x) + h, with
    conv2 starting at zero so every block starts as the identity (or its 1x1 skip).
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, norm_num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels)
        self.conv1 = Convolution(2, in_channels, out_channels, kernel_size=3, conv_only=True)
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(temb_channels, 2 * out_channels))
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels)
        self.conv2 = Convolution(2, out_channels, out_channels, kernel_size=3, conv_only=True)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)
        self.skip = (nn.Identity() if in_channels == out_channels
                     else Convolution(2, in_channels, out_channels, kernel_size=1, conv_only=True))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class PADMNet(nn.Module):
    """PADM's teacher or student: ``forward(x_t, t, nac, mu=None) -> x0_hat``.

    Shapes: x_t (B, 1, H, W), the bridge state of the middle slice; t (B,) long in [0, T);
    nac (B, context_slices, H, W), the NAC slice and its neighbours in [-1, 1]; mu
    (B, mu_slices, H, W), the CT attenuation map around the same slice, normalised by the
    caller (e.g. mu / 0.3 * 2 - 1), teacher only. Returns x0_hat (B, 1, H, W), normalised AC.

    Layout: C = condition(nac[, mu]) (``cond_channels``); a UNet on concat(x_t, C) with
    len(channels) levels, ``num_res_blocks`` scale/shift residual blocks per level on the way
    down and up, a stride-2 convolution down and nearest x2 + convolution up, skip
    concatenation per level, and a middle block res -> self-attention -> res (the only
    attention BBDM's UNet template ends up with); the time embedding is MONAI's sinusoidal one
    followed by an MLP to 4 x channels[0]; then the :class:`PhysicsHead`.

    H and W must be multiples of ``2 ** (len(channels) - 1)``, and of 4 for a teacher (its
    token grid).

    Args:
        context_slices: odd number of NAC slices; the middle one is corrected.
        mu_slices: slices of the mu-map stack (teacher).
        n_angles: N of the physics head.
        channels: widths of the UNet levels.
        num_res_blocks: residual blocks per level (each way).
        norm_num_groups: GroupNorm groups; must divide every width.
        cond_channels: channels of C.
        teacher: whether C attends to the mu map (and ``mu`` is required).
        alpha: weight of the physics image in x0_hat.
        acf_scale: K of the normalisation contract.
        attention_heads: heads of the middle self-attention and of the teacher's cross-attention.
        token_dim: width of the teacher's cross-attention tokens.
    """

    def __init__(self, context_slices: int = 3, mu_slices: int = 3, n_angles: int = 16,
                 channels: tuple[int, ...] = (32, 64, 128), num_res_blocks: int = 1, norm_num_groups: int = 8,
                 cond_channels: int = 16, teacher: bool = False, alpha: float = 0.5, acf_scale: float = 6.0,
                 attention_heads: int = 4, token_dim: int = 64):
        super().__init__()
        if context_slices < 1 or context_slices % 2 == 0:
            raise ValueError(f"context_slices must be odd and >= 1 (middle slice plus pairs), got {context_slices}")
        if channels[-1] % attention_heads:
            raise ValueError(f"channels[-1] ({channels[-1]}) must be a multiple of attention_heads ({attention_heads})")
        self.context_slices, self.mu_slices, self.teacher = int(context_slices), int(mu_slices), bool(teacher)
        self.multiple = math.lcm(2 ** (len(channels) - 1), 4 if teacher else 1)
        if teacher:
            self.condition = MuCrossAttention(context_slices, mu_slices, cond_channels, token_dim, attention_heads)
        else:
            self.condition = Convolution(2, context_slices, cond_channels, kernel_size=3, conv_only=True)

        self.time_channels = channels[0]
        temb = 4 * channels[0]
        self.time_embed = nn.Sequential(nn.Linear(channels[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = Convolution(2, 1 + cond_channels, channels[0], kernel_size=3, conv_only=True)

        def blocks(c_in: int, c_out: int) -> nn.ModuleList:
            return nn.ModuleList(_ResBlock(c_in if i == 0 else c_out, c_out, temb, norm_num_groups)
                                 for i in range(num_res_blocks))

        levels = len(channels)
        self.down = nn.ModuleList(blocks(channels[max(i - 1, 0)], channels[i]) for i in range(levels))
        self.downsample = nn.ModuleList(Convolution(2, c, c, strides=2, kernel_size=3, conv_only=True)
                                        for c in channels[:-1])
        self.mid = nn.ModuleList([_ResBlock(channels[-1], channels[-1], temb, norm_num_groups),
                                  _ResBlock(channels[-1], channels[-1], temb, norm_num_groups)])
        self.mid_attention = SpatialAttentionBlock(2, channels[-1], channels[-1] // attention_heads, norm_num_groups)
        # decoder level i sees its input (channels[i + 1] after upsampling, channels[-1] at the bottom) + skip i
        self.up = nn.ModuleList(blocks(channels[min(i + 1, levels - 1)] + channels[i], channels[i])
                                for i in range(levels))
        self.upsample = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          Convolution(2, c, c, kernel_size=3, conv_only=True))
            for c in channels[1:])
        self.head = PhysicsHead(channels[0], n_angles, norm_num_groups, alpha, acf_scale)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, nac: torch.Tensor,
                mu: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_features(x_t, t, nac, mu)[0]

    def forward_features(self, x_t: torch.Tensor, t: torch.Tensor, nac: torch.Tensor, mu: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """x0_hat, the features for attention transfer and the physics head's parts.

        The features are C (the condition, eq. 16), each encoder level's output, the middle
        block's and each decoder level's output, deepest first; teacher and student of one
        configuration give the same shapes. parts: see :meth:`PhysicsHead.forward`.
        """
        self._check(x_t, t, nac, mu)
        nac = nac.to(x_t.dtype)
        cond = self.condition(nac, mu.to(x_t.dtype)) if self.teacher else self.condition(nac)
        emb = self.time_embed(get_timestep_embedding(t, self.time_channels).to(x_t.dtype))

        feats, skips = [cond], []
        h = self.conv_in(torch.cat([x_t, cond], dim=1))
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, emb)
            feats.append(h)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid[1](self.mid_attention(self.mid[0](h, emb)), emb)
        feats.append(h)
        for i in reversed(range(len(self.up))):
            h = torch.cat([h, skips[i]], dim=1)
            for block in self.up[i]:
                h = block(h, emb)
            feats.append(h)
            if i > 0:
                h = self.upsample[i - 1](h)
        middle = self.context_slices // 2
        x0_hat, parts = self.head(h, nac[:, middle:middle + 1])
        return x0_hat, feats, parts

    def _check(self, x_t: torch.Tensor, t: torch.Tensor, nac: torch.Tensor, mu: torch.Tensor | None) -> None:
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise ValueError(f"x_t must be (B, 1, H, W), got {tuple(x_t.shape)}")
        b, _, h, w = x_t.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"H and W must be multiples of {self.multiple}, got {(h, w)}")
        if t.shape != (b,):
            raise ValueError(f"t must be ({b},), got {tuple(t.shape)}")
        if nac.shape != (b, self.context_slices, h, w):
            raise ValueError(f"nac must be {(b, self.context_slices, h, w)}, got {tuple(nac.shape)}")
        if self.teacher and mu is None:
            raise ValueError("a teacher PADMNet is conditioned on the attenuation map: pass mu")
        if not self.teacher and mu is not None:
            raise ValueError("a student PADMNet sees the NAC only: mu must be None")
        if mu is not None and mu.shape != (b, self.mu_slices, h, w):
            raise ValueError(f"mu must be {(b, self.mu_slices, h, w)}, got {tuple(mu.shape)}")


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """PADM's Agg: the spatial attention map sum_c |f|^2, flattened and L2-normalised per sample.

    (B, C, H, W) -> (B, H*W); dividing by the norm makes it invariant to each sample's scale.
    """
    return F.normalize(features.pow(2).sum(dim=1).flatten(1), dim=1)


def attention_transfer_loss(teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 17, || Q_T / ||Q_T|| - Q_S / ||Q_S|| ||_2, averaged over the feature layers and the batch.

    The teacher's features are detached: the teacher is frozen and only the student learns.
    """
    if len(teacher_feats) != len(student_feats) or not teacher_feats:
        raise ValueError(f"need matching, non-empty feature lists, got {len(teacher_feats)} and {len(student_feats)}")
    losses = []
    for f_t, f_s in zip(teacher_feats, student_feats):
        if f_t.shape[0] != f_s.shape[0] or f_t.shape[2:] != f_s.shape[2:]:
            raise ValueError(f"feature shapes differ: {tuple(f_t.shape)} and {tuple(f_s.shape)}")
        losses.append((attention_map(f_t.detach()) - attention_map(f_s)).norm(dim=1).mean())
    return torch.stack(losses).mean()
