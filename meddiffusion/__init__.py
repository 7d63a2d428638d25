"""SlicerMedDiffusion backend: diffusion models for cardiac and thoracic imaging."""

__version__ = "0.1.0"
