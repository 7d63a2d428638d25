"""Noise-level gain: show the network a quiet slice's noise at the level it denoises well.

The CoreDiff networks trained here remove most of the noise of a slice with 15-40 HU of
noise, but only about a quarter of it (in energy) at 8 HU, where BM3D removes three quarters
(``scripts/ldct_quiet_probe.py --breakdown``, docs/experiments/ldct.md). Networks trained only on
quiet slices do not close that gap, so the quiet slice is brought to the network instead:

    x' = s + k · (x - s),   s = Gaussian(x, smooth_px) per slice,   k = clip(target / σ, 1, max_gain)
    y  = x + (net(x') - x') / k

σ is the slice's noise measured in its flattest soft tissue (``physics.estimate_noise_hu``,
the measurement the bench gives BM3D); only the fine detail (noise and edges' high
frequencies) is amplified, the slow anatomy and the HU scale stay, and the network's change
is divided by the same k, so whatever it keeps comes back at its own amplitude. Slices with
``target`` HU of noise or more, and slices without flat soft tissue to measure, are passed
as they are (k = 1). A model card turns the gain on with ``architecture["noise_gain"]``
(the target chosen on the validation split: ``scripts/ldct_noise_gain_sweep.py``). A network
continued or fine-tuned from a card inherits the card's architecture and so its gain; the
sweep's ``--model ID`` checks the target for the new weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["NoiseGain", "slice_noise_hu"]

#: slices whose gains are smoothed together along z (noise changes slowly with the body's width)
_Z_MEDIAN = 5


def slice_noise_hu(slice_hu: np.ndarray) -> float | None:
    """The noise (HU) of one slice in its flattest soft tissue, or None where it has too little to measure."""
    from meddiffusion.tasks.ldct.physics import estimate_noise_hu

    try:
        noise = estimate_noise_hu(slice_hu)[0]
    except ValueError:
        return None
    return noise if np.isfinite(noise) and noise > 0 else None


@dataclass(frozen=True)
class NoiseGain:
    """The gain of the module docstring: ``target_noise_hu`` (the noise level the network is shown at
    most), ``max_gain`` (the largest k) and ``smooth_px`` (the Gaussian σ of the slow part s, pixels)."""

    target_noise_hu: float
    max_gain: float = 3.0
    smooth_px: float = 2.0

    def __post_init__(self) -> None:
        if not self.target_noise_hu > 0:
            raise ValueError(f"noise_gain target_noise_hu must be > 0, got {self.target_noise_hu}")
        if not self.max_gain >= 1:
            raise ValueError(f"noise_gain max_gain must be >= 1, got {self.max_gain}")
        if not self.smooth_px > 0:
            raise ValueError(f"noise_gain smooth_px must be > 0, got {self.smooth_px}")

    @classmethod
    def from_card(cls, spec: dict | None) -> NoiseGain | None:
        """The gain a model card's ``architecture["noise_gain"]`` describes; None without one."""
        if not spec:
            return None
        unknown = set(spec) - {"target_noise_hu", "max_gain", "smooth_px"}
        if unknown:
            raise ValueError(f"unknown noise_gain setting(s) {sorted(unknown)} in the model card; expected "
                             "target_noise_hu, max_gain, smooth_px")
        return cls(**{key: float(value) for key, value in spec.items()})

    def to_card(self) -> dict:
        return asdict(self)

    def gains(self, volume_hu: np.ndarray) -> np.ndarray:
        """k of every axial slice of a (slices, H, W) HU array, median-smoothed along z."""
        noise = [slice_noise_hu(s) for s in volume_hu]
        k = np.array([1.0 if n is None else self.target_noise_hu / n for n in noise])
        k = np.clip(k, 1.0, self.max_gain)
        if len(k) >= _Z_MEDIAN:
            k = ndimage.median_filter(k, size=_Z_MEDIAN, mode="nearest")
        return k

    def amplify(self, stack_hu: np.ndarray, k: np.ndarray) -> np.ndarray:
        """x' of context stacks (B, C, H, W) in HU, each stack with its centre slice's k (B,)."""
        k = np.asarray(k, np.float32).reshape(-1, 1, 1, 1)
        if np.all(k == 1.0):
            return stack_hu
        smooth = ndimage.gaussian_filter(stack_hu.astype(np.float32), (0, 0, self.smooth_px, self.smooth_px))
        return smooth + k * (stack_hu - smooth)

    def network_input(self, stack_hu: np.ndarray, k: np.ndarray) -> np.ndarray:
        """x' of :meth:`amplify` clipped to the network's HU range: what the network is shown, and what
        :meth:`restore` must subtract so that restoring stays exact where the network would clamp."""
        from meddiffusion.tasks.ldct.model import HU_MIN, HU_RANGE  # model.py imports this module

        return np.clip(self.amplify(stack_hu, k), HU_MIN, HU_MIN + HU_RANGE)

    @staticmethod
    def restore(original_hu: np.ndarray, amplified_hu: np.ndarray, output_hu: np.ndarray, k: np.ndarray) -> np.ndarray:
        """y = x + (net(x') - x') / k for centre slices (B, H, W)."""
        k = np.asarray(k, np.float32).reshape(-1, 1, 1)
        return original_hu + (output_hu - amplified_hu) / k
