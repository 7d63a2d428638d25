"""Networks of the backend, written in MONAI's style from MONAI building blocks where they fit."""

from .clearnet import (
    CLEARNET_PAPER,
    CLEARNET_SMALL,
    CLEARNet,
    ErrorModulation,
    clearnet_paper,
    clearnet_small,
    sinusoidal_embedding,
)
from .csrd import CSRD_CONFIGS, CSRDUNet3D, global_coordinates
from .padm import (
    PADM_CONFIGS,
    MuCrossAttention,
    PADMNet,
    PhysicsHead,
    acf_from_paths,
    attention_map,
    attention_transfer_loss,
    physics_image,
)
from .prodm import PRODM_CONFIGS, ProDMUNet

__all__ = [
    "CLEARNet",
    "ErrorModulation",
    "sinusoidal_embedding",
    "CLEARNET_PAPER",
    "CLEARNET_SMALL",
    "clearnet_paper",
    "clearnet_small",
    "CSRDUNet3D",
    "CSRD_CONFIGS",
    "global_coordinates",
    "ProDMUNet",
    "PRODM_CONFIGS",
    "PADMNet",
    "PADM_CONFIGS",
    "PhysicsHead",
    "MuCrossAttention",
    "acf_from_paths",
    "physics_image",
    "attention_map",
    "attention_transfer_loss",
]
