"""ProDM's 2.5D conditional UNet: the Brownian-bridge state of one axial slice, conditioned on k slices.

ProDM (arXiv 2512.24948) corrects motion on axial slices with k = 3 adjacent slices of the
motion-corrupted CT as context (the best of 3, 5, 7, 9 in the paper). The bridge runs on the
centre slice: the network sees ``[x_t, y_above, y_centre, y_below]`` on its channels and the
timestep through MONAI's sinusoidal embedding, and predicts BBDM's ``grad`` target
``g = m_t (y - x0) + sqrt(delta_t) eps`` for the centre slice, so ``x0_hat = x_t - g``.

The paper does not report the UNet's size. The backbone is MONAI's ``DiffusionModelUNet``
(ResNet blocks with time-embedding scale/shift, as in BBDM's openai UNet) with attention only
in its middle block, as BBDM's template effectively has (its attention resolutions never
occur with three levels). ``small`` (0.64 M parameters) trains in minutes on a
CPU; ``large`` is the size for a GPU; ``tiny`` is for tests.

The same network trained as a plain regressor (``objective="regression"`` in the model card)
is called once with x_t = y_centre and t = T - 1, where the bridge is at y, and its output is
read as ``y - x0``: one network, two objectives, so the bench compares like with like.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

__all__ = ["ProDMUNet", "PRODM_CONFIGS"]

#: network sizes: ``large`` (GPU, 55 MB of weights), ``gpu`` (GPU, the widest whose weights ship within
#: 25 MB: 21.5 MB; ProDM's paper gives no sizes), ``small`` (CPU, shipped) and ``tiny`` (tests, smoke runs)
PRODM_CONFIGS: dict[str, dict] = {
    "large": {"channels": (64, 128, 256), "num_res_blocks": 2, "norm_num_groups": 32},
    "gpu": {"channels": (40, 80, 160), "num_res_blocks": 2, "norm_num_groups": 8},
    "small": {"channels": (16, 32, 64), "num_res_blocks": 1, "norm_num_groups": 8},
    "tiny": {"channels": (8, 8, 16), "num_res_blocks": 1, "norm_num_groups": 4},
}


class ProDMUNet(nn.Module):
    """``forward(x_t, t, condition)``: (B, 1, H, W), (B,), (B, k, H, W) -> (B, 1, H, W).

    H and W must be multiples of ``2 ** (len(channels) - 1)``.
    """

    def __init__(self, context_slices: int = 3, channels: tuple[int, ...] = (16, 32, 64), num_res_blocks: int = 1,
                 norm_num_groups: int = 8):
        super().__init__()
        if context_slices < 1 or context_slices % 2 == 0:
            raise ValueError(f"context_slices must be odd and >= 1 (centre slice plus pairs), got {context_slices}")
        self.context_slices = int(context_slices)
        self.multiple = 2 ** (len(channels) - 1)
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=1 + self.context_slices, out_channels=1, channels=tuple(channels),
            attention_levels=(False,) * len(channels), num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise ValueError(f"x_t must be (B, 1, H, W), got {tuple(x_t.shape)}")
        if condition.shape[1] != self.context_slices or condition.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"condition must be (B, {self.context_slices}, {x_t.shape[2]}, {x_t.shape[3]}), "
                             f"got {tuple(condition.shape)}")
        if x_t.shape[2] % self.multiple or x_t.shape[3] % self.multiple:
            raise ValueError(f"patch size must be a multiple of {self.multiple}, got {tuple(x_t.shape[2:])}")
        return self.unet(torch.cat([x_t, condition.to(x_t.dtype)], dim=1), t)
