"""Diffusion formulations, each independent of the network (passed in as a callable) and the task.

- :class:`BrownianBridge`: BBDM bridge between two image domains (motion correction, SPECT AC).
- :class:`MeanPreservingDiffusion`: CoreDiff's noise-free blend degradation (low-dose CT).
- :class:`EDMPreconditioning`, :func:`heun_sample`: EDM residual score diffusion (PET denoising).
- :class:`LatentDiffusion`, :func:`guided_epsilon`: DDPM/DDIM with classifier-free guidance
  in a VAE latent (4D cardiac synthesis).
"""

from .bridge import BrownianBridge, bridge_schedule
from .edm import EDMPreconditioning, heun_sample, sigma_schedule
from .latent import LatentDiffusion, guided_epsilon
from .meanpreserving import MeanPreservingDiffusion, corediff_alphas

__all__ = [
    "BrownianBridge",
    "bridge_schedule",
    "MeanPreservingDiffusion",
    "corediff_alphas",
    "EDMPreconditioning",
    "sigma_schedule",
    "heun_sample",
    "LatentDiffusion",
    "guided_epsilon",
]
