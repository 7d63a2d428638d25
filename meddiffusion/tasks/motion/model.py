"""The ProDM model of the motion task: ProDM's HU window and a 2.5D UNet with its Brownian bridge.

- **intensities**: HU clipped to [-200, 800] and mapped linearly to [-1, 1] (ProDM's window);
- **slices**: 2.5D, k = 3 adjacent axial slices of the corrupted CT as the condition;
- **bridge**: Brownian bridge with T = 1000 (linear m_t, BBDM's ``max_var`` 1), sampled with
  BBDM's skip sampler, 10 steps by default.

The default model is chosen by the model cards (``catalog.default_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from meddiffusion.catalog import ModelEntry, load_task_model
from meddiffusion.diffusion.bridge import BrownianBridge, network_calls

__all__ = ["TASK", "HU_LOW", "HU_HIGH", "CONTEXT_SLICES", "NUM_TIMESTEPS", "DEFAULT_STEPS", "PATCH_SIZE",
           "normalize", "denormalize", "MotionModel", "build_model", "load_model"]

TASK = "motion"
#: ProDM's HU window
HU_LOW, HU_HIGH = -200.0, 800.0
CONTEXT_SLICES = 3
NUM_TIMESTEPS = 1000
DEFAULT_STEPS = 10
#: training and inference patch size in pixels (about 45 mm at 0.7 mm pixels)
PATCH_SIZE = 64


def normalize(hu: torch.Tensor) -> torch.Tensor:
    """HU -> [-1, 1] over ProDM's window [-200, 800] HU (values outside are clipped)."""
    return (hu.clamp(HU_LOW, HU_HIGH) - HU_LOW) / (HU_HIGH - HU_LOW) * 2 - 1


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> HU in [-200, 800]."""
    return (x + 1) / 2 * (HU_HIGH - HU_LOW) + HU_LOW


# -- the model -----------------------------------------------------------------------------------------
NetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MotionModel:
    """A ProDM network with its bridge and sampler settings, ready to correct 3-slice stacks.

    ``net(x_t, t, condition)`` predicts BBDM's grad target g (so x0_hat = x_t − g); any callable
    with that signature works, which is how tests plug in an exact oracle. ``objective`` is
    ``"bridge"`` (the sampler runs ``steps`` network calls) or ``"regression"`` (one call at
    t = T − 1 from the corrupted centre slice).
    """

    net: NetFn
    bridge: BrownianBridge
    objective: str = "bridge"
    steps: int = DEFAULT_STEPS
    eta: float = 0.0
    patch_size: int = PATCH_SIZE
    cpu_bf16_ok: bool = False
    entry: ModelEntry | None = None

    def __post_init__(self) -> None:
        if self.objective not in ("bridge", "regression"):
            raise ValueError(f"objective must be 'bridge' or 'regression', got {self.objective!r}")
        if self.eta < 0:
            raise ValueError(f"sampler eta must be >= 0, got {self.eta}")
        if self.patch_size < 8:
            raise ValueError(f"patch size must be at least 8 pixels, got {self.patch_size}")
        self.check_steps(self.steps)

    @property
    def id(self) -> str:
        return self.entry.id if self.entry is not None else "(unregistered)"

    def default_steps(self, device: torch.device | str = "cpu") -> int:  # noqa: ARG002 - same on every device
        """The card's step count (the regression baseline always makes one call)."""
        return 1 if self.objective == "regression" else self.steps

    def check_steps(self, steps: int) -> int:
        """The number of network calls ``steps`` means for this model (ValueError if out of range)."""
        return network_calls(self.bridge, steps, self.objective)

    def device(self) -> torch.device:
        parameters = getattr(self.net, "parameters", None)
        first = next(iter(parameters()), None) if parameters is not None else None
        return first.device if first is not None else torch.device("cpu")

    def predict(self, stacks: torch.Tensor, steps: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised (B, 3, H, W) corrupted stacks [above, centre, below] -> (B, 1, H, W) x0_hat in [-1, 1]."""
        if stacks.ndim != 4 or stacks.shape[1] != CONTEXT_SLICES:
            raise ValueError(f"stacks must be (B, {CONTEXT_SLICES}, H, W), got {tuple(stacks.shape)}")
        centre = stacks[:, CONTEXT_SLICES // 2: CONTEXT_SLICES // 2 + 1]
        if self.objective == "regression":
            t = torch.full((stacks.shape[0],), self.bridge.num_timesteps - 1, dtype=torch.long, device=stacks.device)
            return (centre - self.net(centre, t, stacks).float()).clamp(-1.0, 1.0)
        steps = self.steps if steps is None else int(steps)
        return self.bridge.sample(lambda x_t, t: self.net(x_t, t, stacks).float(), centre, steps, eta=self.eta,
                                  generator=generator, clip_x0=(-1.0, 1.0))


def build_model(architecture: dict, state: dict[str, torch.Tensor] | None = None,
                entry: ModelEntry | None = None) -> MotionModel:
    """A :class:`MotionModel` from a model card's ``architecture`` and (optionally) its tensors.

    The card holds ``{"network": "ProDMUNet", "kwargs": {...}, "objective": "bridge" |
    "regression", "diffusion": {"kind": "brownian_bridge", "num_timesteps", "schedule",
    "max_var"}, "sampler": {"steps", "eta"}, "patch_size"}``.
    """
    from meddiffusion.nets import ProDMUNet

    if not isinstance(architecture, dict):
        raise ValueError(f"architecture must be a dict (the model card's), got {type(architecture).__name__}")
    name = architecture.get("network")
    if name != "ProDMUNet":
        raise ValueError(f"a motion model must use the ProDMUNet network, got {name!r}")
    kwargs = dict(architecture.get("kwargs", {}))
    if int(kwargs.get("context_slices", CONTEXT_SLICES)) != CONTEXT_SLICES:
        raise ValueError(f"this task feeds {CONTEXT_SLICES} context slices; the card asks for "
                         f"{kwargs.get('context_slices')}")
    diffusion = architecture.get("diffusion", {})
    kind = diffusion.get("kind", "brownian_bridge")
    if kind != "brownian_bridge":
        raise ValueError(f"a motion model's diffusion must be 'brownian_bridge', got {kind!r}")
    bridge = BrownianBridge(int(diffusion.get("num_timesteps", NUM_TIMESTEPS)), diffusion.get("schedule", "linear"),
                            float(diffusion.get("max_var", 1.0)))
    net = ProDMUNet(**kwargs)
    if state is not None:
        net.load_state_dict(dict(state))
    sampler = architecture.get("sampler", {})
    patch = int(architecture.get("patch_size", PATCH_SIZE))
    if patch % net.multiple:
        raise ValueError(f"patch size {patch} must be a multiple of {net.multiple} for this network")
    return MotionModel(net.eval(), bridge, architecture.get("objective", "bridge"),
                       int(sampler.get("steps", DEFAULT_STEPS)), float(sampler.get("eta", 0.0)), patch,
                       bool(architecture.get("cpu_bf16_ok", False)), entry)


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> MotionModel:
    """The motion model ``model_id`` from the catalogue, or the cards' default for ``device``."""
    entry = load_task_model(TASK, model_id, device, title="motion correction")
    window = (entry.normalization.get("min_hu", HU_LOW), entry.normalization.get("max_hu", HU_HIGH))
    if tuple(map(float, window)) != (HU_LOW, HU_HIGH):
        raise ValueError(f"model '{entry.id}' was trained on the HU window {window}; this task uses "
                         f"[{HU_LOW:g}, {HU_HIGH:g}]")
    model = build_model(entry.architecture, entry.state_dict(), entry)
    model.net.to(device)
    return model

