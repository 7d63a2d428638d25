"""The PADM model of the SPECT task: per-study normalisation, 2.5D slices and the Brownian bridge.

- **intensities**: each study is scaled by its own robust maximum s (the 99.9th percentile of
  the NAC), as SPECT counts have no absolute scale: NAC → 2·NAC/s − 1 and AC → 2·AC/(K·s) − 1
  with the fixed ``ACF_SCALE`` K, so the AC of the same study lands in [−1, 1] too (the
  attenuation correction factor of a thorax stays below K) and the physics head's
  x̄ = y ⊙ ACF holds exactly in this space (``meddiffusion.nets.padm``). The output is scaled
  back, so it is in the input's units;
- **slices**: transaxial, each with its two neighbours (attenuation paths lie in the plane the
  camera rotates in, which is what the per-angle path lengths describe);
- **bridge**: T = 500, m_t = t/T, x̂0-prediction (PADM), BBDM's skip sampler.

Variants (the card's ``objective`` and ``alpha``): the PADM ``teacher`` (attends to the μ-map),
the CT-free ``student``, the ``bridge`` without the physics head (α = 0) and a plain ``unet``
regressor (one call at t = T − 1): the last two are the bench's ablations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from meddiffusion.catalog import ModelEntry, get_model, list_models, load_task_model
from meddiffusion.diffusion.bridge import BrownianBridge, network_calls

__all__ = ["TASK", "CONTEXT_SLICES", "NUM_TIMESTEPS", "DEFAULT_STEPS", "ACF_SCALE", "PIXEL_MM", "MU_SCALE",
           "study_scale", "normalize_nac", "normalize_ac", "denormalize_ac", "normalize_mu", "SpectModel",
           "build_model", "load_model", "default_teacher"]

TASK = "spect"
CONTEXT_SLICES = 3
NUM_TIMESTEPS = 500
DEFAULT_STEPS = 10
#: K: the AC of a study is scaled by K times the NAC's scale (thoracic ACFs stay below it)
ACF_SCALE = 6.0
#: the pixel size the shipped models learned (clinical 64² cardiac SPECT)
PIXEL_MM = 6.4
#: μ (1/cm) mapped to [-1, 1] over [0, MU_SCALE] for the teacher's attention (bone is about 0.27)
MU_SCALE = 0.3
#: share of voxels above the study's scale (the hottest 0.1 %: myocardium, liver or gut)
SCALE_PERCENTILE = 99.9


def study_scale(nac: np.ndarray) -> float:
    """s: the 99.9th percentile of a NAC study (robust to single hot voxels); ValueError for an empty study."""
    values = np.asarray(nac, dtype=np.float64)
    scale = float(np.percentile(values, SCALE_PERCENTILE)) if values.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("the SPECT study has no counts (its 99.9th percentile is not positive); expected a "
                         "reconstructed myocardial perfusion study")
    return scale


def normalize_nac(nac, scale: float):
    """NAC counts → [−1, 1] (negative reconstruction noise is clipped to 0)."""
    return 2 * nac.clip(min=0) / scale - 1


def normalize_ac(ac, scale: float):
    return 2 * ac.clip(min=0) / (ACF_SCALE * scale) - 1


def denormalize_ac(x, scale: float):
    """[−1, 1] → AC counts, in the NAC's units (negative values clipped to 0)."""
    return ((x + 1) / 2 * (ACF_SCALE * scale)).clip(min=0)


def normalize_mu(mu):
    """μ in 1/cm → [−1, 1] over [0, ``MU_SCALE``]."""
    return 2 * mu.clip(min=0) / MU_SCALE - 1


NetFn = Callable[..., torch.Tensor]


@dataclass
class SpectModel:
    """A PADM network with its bridge and sampler settings, ready to correct 3-slice stacks.

    ``net.forward_features(x_t, t, nac, mu)`` returns (x̂0, features, parts); ``parts["mu"]`` is
    the physics head's attenuation estimate (1/cm). ``teacher`` models need μ stacks.
    """

    net: torch.nn.Module
    bridge: BrownianBridge
    objective: str = "bridge"
    teacher: bool = False
    steps: int = DEFAULT_STEPS
    eta: float = 0.0
    pixel_mm: float = PIXEL_MM
    entry: ModelEntry | None = None
    multiple: int = 1

    def __post_init__(self) -> None:
        if self.objective not in ("bridge", "regression"):
            raise ValueError(f"objective must be 'bridge' or 'regression', got {self.objective!r}")
        self.check_steps(self.steps)

    @property
    def id(self) -> str:
        return self.entry.id if self.entry is not None else "(unregistered)"

    def default_steps(self, device: torch.device | str = "cpu") -> int:  # noqa: ARG002 - same on every device
        return 1 if self.objective == "regression" else self.steps

    def check_steps(self, steps: int) -> int:
        """The number of network calls ``steps`` means (ValueError outside 1..T)."""
        return network_calls(self.bridge, steps, self.objective)

    def device(self) -> torch.device:
        first = next(iter(self.net.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    @torch.no_grad()
    def predict(self, nac: torch.Tensor, mu: torch.Tensor | None = None, steps: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (B, 3, H, W) NAC stacks (and μ stacks for a teacher) → (x̂0, μ estimate), each (B, 1, H, W).

        x̂0 is in [−1, 1] (the AC's normalised space); the μ estimate in 1/cm is the physics
        head's at the last network call.
        """
        if nac.ndim != 4 or nac.shape[1] != CONTEXT_SLICES:
            raise ValueError(f"NAC stacks must be (B, {CONTEXT_SLICES}, H, W), got {tuple(nac.shape)}")
        if self.teacher and mu is None:
            raise ValueError(f"model '{self.id}' is a teacher: it needs the attenuation map (--ct or --mumap)")
        if not self.teacher:
            mu = None
        centre = nac[:, CONTEXT_SLICES // 2: CONTEXT_SLICES // 2 + 1]
        last: dict[str, torch.Tensor] = {}

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x0, _, parts = self.net.forward_features(x_t, t, nac, mu)
            last["mu"] = parts["mu"]
            return x0.float()

        if self.objective == "regression":
            t = torch.full((nac.shape[0],), self.bridge.num_timesteps - 1, dtype=torch.long, device=nac.device)
            x0 = model_fn(centre, t).clamp(-1.0, 1.0)
        else:
            x0 = self.bridge.sample(model_fn, centre, self.steps if steps is None else int(steps), eta=self.eta,
                                    generator=generator, prediction="x0", clip_x0=(-1.0, 1.0))
        return x0, last["mu"].float()


def build_model(architecture: dict, state: dict[str, torch.Tensor] | None = None,
                entry: ModelEntry | None = None) -> SpectModel:
    """A :class:`SpectModel` from a card's ``architecture`` (``{"network": "PADMNet", "kwargs", "objective",
    "diffusion", "sampler", "pixel_mm"}``) and, optionally, its tensors."""
    from meddiffusion.nets.padm import PADMNet

    if not isinstance(architecture, dict) or architecture.get("network") != "PADMNet":
        raise ValueError(f"a SPECT model must use the PADMNet network, got {architecture.get('network')!r}"
                         if isinstance(architecture, dict) else "architecture must be the model card's dict")
    kwargs = dict(architecture.get("kwargs", {}))
    if int(kwargs.get("context_slices", CONTEXT_SLICES)) != CONTEXT_SLICES:
        raise ValueError(f"this task feeds {CONTEXT_SLICES} context slices; the card asks for "
                         f"{kwargs.get('context_slices')}")
    if float(kwargs.get("acf_scale", ACF_SCALE)) != ACF_SCALE:
        raise ValueError(f"this task scales the AC by K = {ACF_SCALE:g}; the card says {kwargs.get('acf_scale')}")
    diffusion = architecture.get("diffusion", {})
    bridge = BrownianBridge(int(diffusion.get("num_timesteps", NUM_TIMESTEPS)), diffusion.get("schedule", "linear"),
                            float(diffusion.get("max_var", 1.0)))
    net = PADMNet(**kwargs)
    if state is not None:
        net.load_state_dict(dict(state))
    sampler = architecture.get("sampler", {})
    return SpectModel(net.eval(), bridge, architecture.get("objective", "bridge"), bool(kwargs.get("teacher", False)),
                      int(sampler.get("steps", DEFAULT_STEPS)), float(sampler.get("eta", 0.0)),
                      float(architecture.get("pixel_mm", PIXEL_MM)), entry, net.multiple)


def default_teacher() -> str:
    """The id of the teacher the cards rank first (``default_for``), else the first installed teacher."""
    teachers = [m for m in list_models(TASK) if _teaches(m)]
    if not teachers:
        raise ValueError("no SPECT teacher model is installed, so --ct/--mumap cannot be used; train one with "
                         "'meddiff train spect --variant teacher' or run without them (the CT-free student)")
    ranked = sorted(teachers, key=lambda m: min(m.default_for.values(), default=1_000_000))
    return ranked[0].id


def _teaches(entry: ModelEntry) -> bool:
    return bool(entry.architecture.get("kwargs", {}).get("teacher"))


def is_teacher(model_id: str) -> bool:
    """Whether catalogue model ``model_id`` attends to an attenuation map (needs --ct or --mumap)."""
    return _teaches(get_model(model_id))


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> SpectModel:
    """The SPECT model ``model_id`` from the catalogue, or the cards' default (the CT-free student) for ``device``."""
    entry = load_task_model(TASK, model_id, device, title="SPECT attenuation correction")
    model = build_model(entry.architecture, entry.state_dict(), entry)
    model.net.to(device)
    return model
