"""The CSRD model of the PET/MR task: CSRD's normalisation, the network and its EDM sampler settings.

- **MR**: (x − min) / (p99 − min), clipped to [0, 1]: the 99th percentile, not the maximum,
  so fat and vessels do not squeeze the brain into a few grey levels;
- **PET**: full and low count both scaled by the *low-count* image's min and max,
  (x − min_low) / (max_low − min_low): at inference only the low-count image exists, so the
  target must be expressed in its scale (CSRD's choice), and x̂_full = x_low + r̂ maps back
  with the same two numbers;
- **residual**: r = full − low in that space, times ``RESIDUAL_SCALE``, is what EDM diffuses
  (σ_data = 0.5, training noise ln σ ~ N(−1.2, 1.2²), Heun sampling from σ_max to
  σ_min = 0.002, ρ = 7; ``SIGMA_MAX`` and ``DEFAULT_SAMPLES`` give the few-step CPU setting).
  The scale is ours: in this space the residual of a clinical PET is small (std 0.01-0.03
  inside the body against CSRD's σ_data = 0.5), and EDM's preconditioning assumes data of
  σ_data's size; unscaled, the network learns the noise levels above the residual's size
  poorly and the sampler's first steps add more than they remove.

A model is a :class:`~meddiffusion.nets.csrd.CSRDUNet3D` with (``use_mr``) or without the MR
channel; the second runs on PET alone and is the ablation of the first. The bench's plain 3D
UNet baseline (MONAI's ``BasicUNet``, ``objective="regression"``) reads the same normalised PET
and MR, without coordinates or noise, and predicts the residual in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from meddiffusion.catalog import ModelEntry, list_models, load_task_model

__all__ = ["TASK", "SIGMA_DATA", "P_MEAN", "P_STD", "DEFAULT_STEPS", "DEFAULT_SAMPLES", "MAX_SAMPLES", "PATCH", "WINDOW", "MR_PERCENTILE", "RESIDUAL_SCALE",
           "normalize_mr", "pet_range", "normalize_pet", "denormalize_pet", "PetmrModel", "build_model", "plain_unet", "UNET_MULTIPLE",
           "unet_architecture_of",
           "load_model", "default_model_for", "architecture_of"]

TASK = "petmr"
SIGMA_DATA = 0.5
P_MEAN, P_STD = -1.2, 1.2
#: σ_max is 5, not EDM's 80 (CSRD samples 100 steps from 80). At the few steps a CPU affords, the
#: sample is the denoiser's estimate at σ_max, and training draws ln σ ~ N(−1.2, 1.2²): σ ≥ 80
#: almost never, σ ≥ 5 about 1 % of the time. Five is still ten times the residual's σ_data, so
#: the start stays pure noise; measured on training subjects (docs/experiments/petmr.md)
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 5.0, 7.0
#: Heun steps by device, chosen by measurement (docs/experiments/petmr.md): one step returns the
#: denoiser's estimate from σ_max (the minimum-mean-squared-error answer); with a few steps Heun's
#: trapezoid over a step tens of σ wide multiplies the denoiser's disagreement between levels and
#: ruins the sample. CSRD samples with 100; raise it only where ``meddiff bench petmr``'s sweep
#: shows more steps help a model
DEFAULT_STEPS = {"cpu": 1, "cuda": 1}
#: samples averaged by device. Each sample starts from its own noise; at σ_max the network's
#: answer still carries some of that noise, and the mean of a few samples estimates the
#: posterior mean E[r | PET, MR] (measured on training subjects: +0.3 dB for 3 samples). The CPU
#: count keeps a 128³ volume within 5 minutes on 2 cores
DEFAULT_SAMPLES = {"cpu": 3, "cuda": 8}
MAX_SAMPLES = 64
#: the residual's factor in the diffused space (about σ_data over its std inside the body)
RESIDUAL_SCALE = 20.0
#: training patch (CSRD: 64³). The inference window is the patch a model was trained on: its
#: group and instance norms take statistics over what they see, so a whole volume (mostly air)
#: is not what a patch of the body taught them; the windows slide with the coordinate channels.
PATCH = 64
WINDOW = PATCH
MR_PERCENTILE = 99.0


def normalize_mr(mr: np.ndarray) -> np.ndarray:
    """MR → [0, 1] by (x − min) / (p99 − min), clipped; ValueError for an MR without contrast."""
    values = np.asarray(mr, dtype=np.float32)
    low, high = float(values.min()), float(np.percentile(values, MR_PERCENTILE))
    if not high > low:
        raise ValueError("the MR has no contrast (its 99th percentile equals its minimum); expected an anatomical "
                         "MR of the PET's patient")
    return ((values - low) / (high - low)).clip(0.0, 1.0)


def pet_range(low: np.ndarray) -> tuple[float, float]:
    """(min, max) of the low-count PET, the scale of both PET images; ValueError for a flat image."""
    values = np.asarray(low, dtype=np.float64)
    low_min, low_max = float(values.min()), float(values.max())
    if not (np.isfinite(low_min) and np.isfinite(low_max)) or low_max <= low_min:
        raise ValueError("the PET image is flat (its maximum equals its minimum); expected a reconstructed PET")
    return low_min, low_max


def normalize_pet(x, scale: tuple[float, float]):
    low_min, low_max = scale
    return (x - low_min) / (low_max - low_min)


def denormalize_pet(x, scale: tuple[float, float]):
    low_min, low_max = scale
    return x * (low_max - low_min) + low_min


@dataclass
class PetmrModel:
    """A CSRD network with its EDM sampler settings.

    ``net(inputs, c_noise)`` takes [c_in r_σ, (MR), PET_low, x, y, z]; ``steps`` and
    ``samples`` map device types to default Heun steps and samples averaged; ``window`` is the
    inference window (voxels per axis).
    """

    net: torch.nn.Module
    use_mr: bool = True
    steps: dict = field(default_factory=lambda: dict(DEFAULT_STEPS))
    window: int = WINDOW
    sigma_data: float = SIGMA_DATA
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    entry: ModelEntry | None = None
    objective: str = "edm"
    residual_scale: float = RESIDUAL_SCALE
    samples: dict = field(default_factory=lambda: dict(DEFAULT_SAMPLES))

    @property
    def id(self) -> str:
        return self.entry.id if self.entry is not None else "(unregistered)"

    @property
    def multiple(self) -> int:
        return int(getattr(self.net, "multiple", 1))

    def default_steps(self, device: torch.device | str = "cpu") -> int:
        return _for_device(self.steps, device, DEFAULT_STEPS)

    def default_samples(self, device: torch.device | str = "cpu") -> int:
        return _for_device(self.samples, device, DEFAULT_SAMPLES)

    def samples_for(self, asked: int | None, device: torch.device | str = "cpu") -> int:
        """The samples to average: ``asked`` (checked), or the card's default for ``device``."""
        return self.default_samples(device) if asked is None else self.check_samples(asked)

    @staticmethod
    def check_samples(samples: int) -> int:
        """Samples averaged; ValueError outside 1..MAX_SAMPLES."""
        if not 1 <= int(samples) <= MAX_SAMPLES:
            raise ValueError(f"--samples must be 1-{MAX_SAMPLES} samples to average, got {samples}")
        return int(samples)

    @staticmethod
    def check_steps(steps: int) -> int:
        """Heun steps (each but the last calls the network twice); ValueError outside 1..1000."""
        if not 1 <= int(steps) <= 1000:
            raise ValueError(f"--steps must be 1-1000 Heun steps, got {steps}")
        return int(steps)


def _for_device(table: dict, device: torch.device | str, default: dict) -> int:
    """A per-device setting: the device type's entry, else the CPU's, else ``default``'s CPU value."""
    return int(table.get(torch.device(device).type, table.get("cpu", default["cpu"])))


def _by_device(value) -> dict:
    """A card's per-device setting as a dict: ``{"cpu": 4, "cuda": 32}``, or one number for the CPU."""
    return dict(value) if isinstance(value, dict) else {"cpu": int(value)}


def architecture_of(use_mr: bool, network_kwargs: dict, patch: int = PATCH) -> dict:
    """The card's ``architecture`` of a CSRD network (what ``meddiff train petmr`` writes)."""
    return {"network": "CSRDUNet3D", "kwargs": {**network_kwargs, "use_mr": bool(use_mr)},
            "diffusion": {"kind": "edm_residual", "sigma_data": SIGMA_DATA, "p_mean": P_MEAN, "p_std": P_STD},
            "sampler": {"kind": "heun", "steps": dict(DEFAULT_STEPS), "samples": dict(DEFAULT_SAMPLES), "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX,
                        "rho": RHO, "window": int(patch)},
            "patch": int(patch), "residual_scale": RESIDUAL_SCALE}


def build_model(architecture: dict, state: dict[str, torch.Tensor] | None = None,
                entry: ModelEntry | None = None) -> PetmrModel:
    """A :class:`PetmrModel` from a card's ``architecture`` and, optionally, its tensors."""
    from meddiffusion.nets.csrd import CSRDUNet3D

    if not isinstance(architecture, dict) or architecture.get("network") not in ("CSRDUNet3D", "BasicUNet"):
        raise ValueError(f"a PET/MR model must use the CSRDUNet3D (or BasicUNet) network, got "
                         f"{architecture.get('network')!r}" if isinstance(architecture, dict)
                         else "architecture must be the model card's dict")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in architecture.get("kwargs", {}).items()}
    if architecture["network"] == "BasicUNet":
        net = plain_unet(**kwargs)
        if state is not None:
            net.load_state_dict(dict(state))
        return PetmrModel(net.eval(), bool(kwargs.get("use_mr", True)), {"cpu": 1, "cuda": 1},
                          int(architecture.get("sampler", {}).get("window", WINDOW)), entry=entry,
                          objective="regression", residual_scale=float(architecture.get("residual_scale", 1.0)))
    diffusion = architecture.get("diffusion", {})
    if float(diffusion.get("sigma_data", SIGMA_DATA)) != SIGMA_DATA:
        raise ValueError(f"this task's EDM uses sigma_data = {SIGMA_DATA}; the card says {diffusion['sigma_data']}")
    net = CSRDUNet3D(**kwargs)
    if state is not None:
        net.load_state_dict(dict(state))
    sampler = architecture.get("sampler", {})
    steps, samples = (_by_device(sampler.get(key, default))
                      for key, default in (("steps", DEFAULT_STEPS), ("samples", DEFAULT_SAMPLES)))
    return PetmrModel(net.eval(), net.use_mr, steps, int(sampler.get("window", WINDOW)), SIGMA_DATA,
                      float(sampler.get("sigma_min", SIGMA_MIN)), float(sampler.get("sigma_max", SIGMA_MAX)),
                      float(sampler.get("rho", RHO)), entry,
                      residual_scale=float(architecture.get("residual_scale", 1.0)), samples=samples)


#: the UNet baseline's size multiple: four poolings, and instance norm needs 2³ at the bottom
UNET_MULTIPLE = 32


def plain_unet(use_mr: bool = True, features=(16, 16, 32, 64, 128, 16)) -> torch.nn.Module:
    """The plain 3D UNet baseline: MONAI's BasicUNet on [MR, PET_low] (or PET_low) → residual."""
    from monai.networks.nets import BasicUNet

    net = BasicUNet(spatial_dims=3, in_channels=2 if use_mr else 1, out_channels=1, features=tuple(features))
    net.use_mr, net.multiple = bool(use_mr), UNET_MULTIPLE
    return net


def unet_architecture_of(use_mr: bool, features, patch: int) -> dict:
    """The card's ``architecture`` of the UNet baseline (what ``meddiff train petmr --variant unet`` writes)."""
    return {"network": "BasicUNet", "kwargs": {"features": list(features), "use_mr": bool(use_mr)},
            "objective": "regression", "sampler": {"window": int(patch)}, "patch": int(patch),
            "residual_scale": RESIDUAL_SCALE}


def uses_mr(entry: ModelEntry) -> bool:
    return bool(entry.architecture.get("kwargs", {}).get("use_mr", True))


def default_model_for(with_mr: bool, device: str = "cpu") -> str:
    """The id of the model the cards rank first among those that do (``with_mr``) or do not read an MR."""
    models = [m for m in list_models(TASK) if uses_mr(m) == with_mr]
    if not models:
        raise ValueError("no PET/MR model that reads an MR is installed; run without --mr (PET only) or train one "
                         "with 'meddiff train petmr'" if with_mr else
                         "no PET-only model is installed: give the patient's MR with --mr, or train one with "
                         "'meddiff train petmr --no-mr'")
    kind = str(device).split(":")[0]
    ranked = sorted(models, key=lambda m: min(m.default_for.get(kind, m.default_for.get("cpu", 1_000_000)),
                                              1_000_000))
    return ranked[0].id


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> PetmrModel:
    """The PET/MR model ``model_id`` from the catalogue, or the cards' default for ``device``."""
    entry = load_task_model(TASK, model_id, device, title="MR-guided PET denoising")
    model = build_model(entry.architecture, entry.state_dict(), entry)
    model.net.to(device)
    return model
