"""The cascade of the 4D cardiac synthesis: VAE, anatomy LDM, motion LDM, and how one cine is drawn.

Three cards make one model. The motion card is the one a user runs (``--model``); it names its
anatomy card and both name their VAE, so a cascade is always the three networks it was trained
with. The VAE card carries the grid the networks learned (matrix, voxel size, stack depth) and
the latent scale (1 / std of its training latents, as in latent diffusion); the motion card the
scale of the residual Δz = z_t − z_ED (the paper's "flow scale").

Drawing one cine (:meth:`Cardiac4DModel.generate`):

1. the clinical token from diagnosis, EF, EDV, ESV and slice count; the slice mask;
2. the end-diastolic latent z_ED from the anatomy LDM (guided DDIM from seeded noise), or the
   encoded ED frame of a given stack. A drawn z_ED is decoded and its labels checked
   (``measure.check_sample``) before any motion is drawn: an implausible heart is redrawn, up to
   ``ANATOMY_ATTEMPTS`` draws in all. This is the paper's rejection sampling at the stage where it
   is cheap (one latent instead of one per frame): the invalid cines examined on validation and
   held-out requests were invalid in their end-diastolic anatomy already;
3. every frame's Δz from the motion LDM, conditioned on z_ED and the phase τ of the frame, all
   frames from **the same** initial noise (one heart, smooth in time);
4. z_t = z_ED + Δz decoded by both decoders: image and labels (argmax), the central slices kept;
5. the labels read by the SCMR basal-slice convention (``measure.exclude_open_end_slices``): an
   end slice of the LV whose blood pool is less than half surrounded by myocardium is atrium or
   outflow tract, not LV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from meddiffusion.catalog import ModelEntry, get_model, list_models, load_task_model
from meddiffusion.tasks.cardiac4d import GUIDANCE

__all__ = ["TASK", "DEFAULT_STEPS", "SYSTOLIC_FRACTION", "ANATOMY_ATTEMPTS", "ANATOMY_SEED_OFFSET",
           "Cardiac4DModel", "Generated", "load_model", "load_vae", "build_network", "frame_phases", "decode_frames"]

TASK = "cardiac4d"
#: DDIM steps by device: the paper's 30 on a GPU; fewer on a CPU keep a 10 × 25 cine within a minute
DEFAULT_STEPS = {"cpu": 20, "cuda": 30}
#: share of the cycle in systole at generation (the training phantoms draw 0.32-0.38)
SYSTOLIC_FRACTION = 0.35
#: anatomy draws per cine draw: an end-diastolic heart whose labels fail ``measure.check_sample`` is redrawn
#: (each draw costs one latent's DDIM, a twentieth of the motion stage's 20-frame cine)
ANATOMY_ATTEMPTS = 4
#: the anatomy redraws' noise seed is the cine's seed plus this (cine redraws step by ``infer.SEED_STRIDE``, 1000003)
ANATOMY_SEED_OFFSET = 500_000_001
NUM_TRAIN_TIMESTEPS = 1000


def build_network(architecture: dict, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The network a card's ``architecture`` names, with its weights (eval mode)."""
    from meddiffusion.nets import cardiac4d as nets

    name = architecture.get("network")
    if name not in ("DualDecoderVAE", "AnatomyLDM", "MotionLDM"):
        raise ValueError(f"a cardiac4d card must name DualDecoderVAE, AnatomyLDM or MotionLDM, got {name!r}")
    net = getattr(nets, name)(**architecture.get("kwargs", {}))
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


def load_vae(model_id: str, device="cpu") -> tuple[torch.nn.Module, ModelEntry]:
    entry = get_model(model_id)
    if entry.task != TASK or entry.architecture.get("network") != "DualDecoderVAE":
        raise ValueError(f"'{model_id}' is not a cardiac4d VAE (its card names {entry.architecture.get('network')!r})")
    return build_network(entry.architecture, entry.state_dict()).to(device), entry


def frame_phases(frames: int, systolic_fraction: float = SYSTOLIC_FRACTION) -> np.ndarray:
    """τ of ``frames`` equally spaced frames from end-diastole (the acquisition's own rule)."""
    from meddiffusion.tasks.cardiac4d.cine import phase_of_frames

    return phase_of_frames(frames, systolic_fraction)


@torch.no_grad()
def decode_frames(vae, z: torch.Tensor, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, D, H, W) in [-1, 1] and argmax labels (uint8) of latents (N, C, D, h, w), ``batch`` at a time."""
    images, labels = [], []
    for start in range(0, len(z), batch):
        chunk = z[start : start + batch]
        images.append(vae.decode_image(chunk)[:, 0].clamp(-1, 1).cpu())
        labels.append(vae.decode_labels(chunk).argmax(1).to(torch.uint8).cpu())
    return torch.cat(images), torch.cat(labels)


@dataclass
class Generated:
    """One drawn cine: images (F, S, H, W) in [-1, 1], labels (F, S, H, W) uint8, phase τ per frame."""

    images: np.ndarray
    labels: np.ndarray
    tau: np.ndarray
    info: dict = field(default_factory=dict)


class Cardiac4DModel:
    """The three networks of a cascade with their scales, the DDPM schedule and the learned grid."""

    def __init__(self, entry: ModelEntry, vae, anatomy, motion, vae_entry: ModelEntry, anatomy_entry: ModelEntry):
        self.entry, self.vae_entry, self.anatomy_entry = entry, vae_entry, anatomy_entry
        self.vae, self.anatomy, self.motion = vae, anatomy, motion
        self.latent_scale = float(vae_entry.architecture["latent_scale"])
        self.motion_scale = float(entry.architecture["motion_scale"])
        self.grid = dict(vae_entry.architecture["grid"])
        self.diffusion, self.anatomy_diffusion = _schedule_of(entry), _schedule_of(anatomy_entry)
        self.steps = dict(entry.architecture.get("sampler", {}).get("steps", DEFAULT_STEPS))

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def depth(self) -> int:
        return int(self.grid["depth"])

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (float(self.grid["pixel_mm"]), float(self.grid["pixel_mm"]), float(self.grid["slice_mm"]))

    def default_steps(self, device="cpu") -> int:
        kind = str(device).split(":")[0]
        return int(self.steps.get(kind, self.steps.get("cpu", DEFAULT_STEPS["cpu"])))

    def to(self, device) -> "Cardiac4DModel":
        for net in (self.vae, self.anatomy, self.motion):
            net.to(device)
        return self

    # ------------------------------------------------------------------ conditions
    def condition(self, request, device, batch: int = 1) -> dict[str, torch.Tensor]:
        """The anatomy LDM's condition of ``request`` (a ``clinical.Request``), ``batch`` copies."""
        from meddiffusion.nets.cardiac4d import clinical_scalars, slice_mask
        from meddiffusion.tasks.cardiac4d.clinical import DIAGNOSIS_IDS

        h = w = int(self.grid["matrix"]) // self.vae.factor
        scalars = clinical_scalars(request.ef_percent, request.edv_ml, request.esv_ml, request.slices)
        return {"diagnosis": torch.full((batch,), DIAGNOSIS_IDS[request.diagnosis], dtype=torch.long, device=device),
                "scalars": scalars.reshape(1, 4).expand(batch, 4).to(device=device, dtype=torch.float32),
                "mask": slice_mask(request.slices, self.depth, h, w).expand(batch, -1, -1, -1, -1).to(device)}

    # ------------------------------------------------------------------ stages
    def read(self, z: torch.Tensor, slices: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Images (float32, [-1, 1]) and labels (uint8) of unscaled latents (N, C, D, h, w), the central ``slices``
        kept and the labels read by the basal-slice convention; and how many end slices' cavities it removed."""
        from meddiffusion.nets.cardiac4d import crop_slices
        from meddiffusion.tasks.cardiac4d.measure import exclude_open_end_slices

        images, labels = decode_frames(self.vae, z)
        labels, removed = exclude_open_end_slices(crop_slices(labels, slices).numpy())
        return crop_slices(images, slices).numpy().astype(np.float32), labels.astype(np.uint8), removed

    @torch.no_grad()
    def encode_anatomy(self, images: np.ndarray, device) -> torch.Tensor:
        """The scaled latent (1, C, D, h, w) of a normalised ED stack (S, H, W) on the model's grid."""
        from meddiffusion.nets.cardiac4d import pad_slices

        x = torch.from_numpy(pad_slices(images.astype(np.float32), self.depth, -1.0))[None, None].to(device)
        mu, _ = self.vae.encode(x)
        return mu * self.latent_scale

    @torch.no_grad()
    def draw_anatomy(self, cond, steps: int, guidance: float, generator: torch.Generator, device,
                     callback=None) -> torch.Tensor:
        from meddiffusion.nets.cardiac4d import null_condition

        h = w = int(self.grid["matrix"]) // self.vae.factor
        shape = (1, self.vae.latent_channels, self.depth, h, w)
        noise = torch.randn(shape, generator=generator, device=generator.device).to(device)
        return self.anatomy_diffusion.ddim_sample(self.anatomy, noise, cond, null_condition(cond), num_steps=steps,
                                          guidance_scale=guidance, callback=callback)

    @torch.no_grad()
    def draw_motion(self, z_ed: torch.Tensor, cond, tau: np.ndarray, steps: int, guidance: float,
                    generator: torch.Generator, device, callback=None, batch: int = 16) -> torch.Tensor:
        """Scaled Δz (F, C, D, h, w) of every frame, all from one initial noise; ED (τ = 0) keeps Δz = 0."""
        from meddiffusion.nets.cardiac4d import null_condition

        noise = torch.randn(z_ed.shape, generator=generator, device=generator.device).to(device)
        frames = len(tau)
        out = torch.zeros((frames, *z_ed.shape[1:]), device=device)
        chunks = [list(range(s, min(s + batch, frames))) for s in range(0, frames, batch)]
        done = [0]

        def step(i: int, total: int) -> None:
            if callback is not None and i == total:
                done[0] += 1
                callback(done[0], len(chunks))

        for chunk in chunks:
            n = len(chunk)
            c = {key: value[:1].expand(n, *value.shape[1:]) for key, value in cond.items()}
            c["z_ed"] = z_ed.expand(n, -1, -1, -1, -1)
            c["tau"] = torch.as_tensor(tau[chunk], dtype=torch.float32, device=device)
            out[chunk] = self.diffusion.ddim_sample(self.motion, noise.expand(n, -1, -1, -1, -1).clone(), c,
                                                    null_condition(c), num_steps=steps, guidance_scale=guidance,
                                                    callback=step)
        out[torch.as_tensor(tau) == 0] = 0.0
        return out

    @torch.no_grad()
    def check_anatomy(self, z_ed: torch.Tensor, slices: int):
        """The decoded end-diastolic labels (1, S, H, W) of a scaled z_ED, read as generated cines are, and their
        ``measure.check_sample`` verdict."""
        from meddiffusion.tasks.cardiac4d.measure import check_sample

        _, labels, _ = self.read(z_ed / self.latent_scale, slices)
        return labels, check_sample(labels[0], self.spacing)

    @torch.no_grad()
    def draw_checked_anatomy(self, request, cond, steps: int, guidance: float, generator: torch.Generator, device,
                             seed: int, attempts: int = ANATOMY_ATTEMPTS, progress=None) -> tuple[torch.Tensor, dict]:
        """The scaled z_ED of the first of up to ``attempts`` anatomy draws whose decoded end-diastolic labels pass
        ``measure.check_sample``, and what happened (``draws``, ``rejected``: why each failed, ``kept``).

        The first draw takes its noise from ``generator``, as an unchecked cascade does; redraws take theirs from
        a generator of their own (``seed`` + ``ANATOMY_SEED_OFFSET``), so ``generator`` then gives the motion the
        same noise whichever anatomy is kept. If no draw passes, the first is kept: the check never returns a
        heart the unchecked cascade would not have drawn, except a plausible one.
        """
        if attempts < 1:
            raise ValueError(f"anatomy attempts must be >= 1, got {attempts}")
        redraws = torch.Generator(device="cpu").manual_seed(int(seed) + ANATOMY_SEED_OFFSET)
        rejected, first = [], None
        for attempt in range(attempts):
            source = generator if attempt == 0 else redraws
            if progress is None:
                z_ed = self.draw_anatomy(cond, steps, guidance, source, device)
            else:
                name = "anatomy" if attempt == 0 else f"anatomy, draw {attempt + 1}"
                with progress.stage(name, total=steps) as tick:
                    z_ed = self.draw_anatomy(cond, steps, guidance, source, device, callback=lambda i, n: tick())
            if attempt == 0:
                first = z_ed
            _, check = self.check_anatomy(z_ed, request.slices)
            if check.valid:
                return z_ed, {"draws": attempt + 1, "rejected": rejected, "kept": attempt + 1}
            rejected.append("; ".join(check.reasons))
            if progress is not None:
                progress.log(f"end-diastolic anatomy draw {attempt + 1} rejected: {rejected[-1]}")
        return first, {"draws": attempts, "rejected": rejected, "kept": 1}

    @torch.no_grad()
    def generate(self, request, *, seed: int = 0, steps: int | None = None, guidance: float = GUIDANCE, device="cpu",
                 anatomy: torch.Tensor | None = None, progress=None,
                 anatomy_attempts: int = ANATOMY_ATTEMPTS) -> Generated:
        """One cine of ``request`` (see the module docstring); ``anatomy`` a scaled ED latent to keep, else the
        anatomy is drawn and checked (``anatomy_attempts`` draws at most; 1: the anatomy LDM's first draw as is)."""
        steps = self.default_steps(device) if steps is None else int(steps)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        cond = self.condition(request, device)
        stage = (lambda name, total: progress.stage(name, total=total)) if progress is not None else None
        checked = {"draws": 0, "rejected": [], "kept": 0}
        if anatomy is None:
            z_ed, checked = self.draw_checked_anatomy(request, cond, steps, guidance, generator, device, seed,
                                                      anatomy_attempts, progress)
        else:
            z_ed = anatomy.to(device)
            torch.randn(z_ed.shape, generator=generator)  # the same motion noise as a drawn anatomy of this seed
        tau = frame_phases(request.frames)
        if stage is None:
            dz = self.draw_motion(z_ed, cond, tau, steps, guidance, generator, device)
        else:
            chunks = -(-request.frames // 16)
            with stage("motion", chunks) as tick:
                dz = self.draw_motion(z_ed, cond, tau, steps, guidance, generator, device,
                                      callback=lambda i, n: tick())
        z = (z_ed + dz / self.motion_scale) / self.latent_scale
        images, labels, removed = self.read(z, request.slices)
        return Generated(images, labels, tau,
                         {"seed": int(seed), "steps": steps, "guidance": float(guidance),
                          "open_end_slices_removed": removed,
                          "anatomy_draws": checked["draws"], "anatomy_rejected": checked["rejected"],
                          "anatomy_kept": checked["kept"]})


def _schedule_of(entry: ModelEntry):
    """The DDPM schedule and prediction (ε or v) a card's network was trained with."""
    from meddiffusion.diffusion.latent import LatentDiffusion

    schedule = entry.architecture.get("diffusion", {})
    try:
        return LatentDiffusion(int(schedule.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS)),
                               prediction=schedule.get("prediction", "epsilon"))
    except ValueError as error:
        raise ValueError(f"'{entry.id}': {error}") from None


def _motion_cards() -> list[ModelEntry]:
    return [m for m in list_models(TASK) if m.architecture.get("network") == "MotionLDM"]


def load_model(model_id: str | None = None, device="cpu") -> Cardiac4DModel:
    """The cascade of motion card ``model_id`` (or the cards' default for ``device``) with its anatomy card and VAE."""
    if model_id is None:
        cards = _motion_cards()
        if not cards:
            raise ValueError("no cardiac4d motion model is installed; train the cascade with 'meddiff train "
                             "cardiac4d --variant vae|anatomy|motion' or pass --model")
        kind = str(device).split(":")[0]
        entry = min(cards, key=lambda m: m.default_for.get(kind, m.default_for.get("cpu", 1_000_000)))
    else:
        entry = load_task_model(TASK, model_id, device, title="4D cardiac synthesis")
    network = entry.architecture.get("network")
    if network != "MotionLDM":
        stage = {"DualDecoderVAE": "the VAE", "AnatomyLDM": "the anatomy LDM"}.get(network, f"a {network}")
        known = ", ".join(m.id for m in _motion_cards()) or "none installed"
        raise ValueError(f"'{entry.id}' is {stage} of a cascade; synth-cardiac runs a motion model, which names its "
                         f"anatomy model and VAE (installed: {known})")
    anatomy_entry = get_model(entry.architecture["anatomy"])
    if anatomy_entry.architecture.get("network") != "AnatomyLDM":
        raise ValueError(f"motion model '{entry.id}' names '{anatomy_entry.id}' as its anatomy model, which is not one")
    if anatomy_entry.architecture.get("vae") != entry.architecture.get("vae"):
        raise ValueError(f"motion model '{entry.id}' and its anatomy model '{anatomy_entry.id}' were trained on "
                         f"different VAEs ({entry.architecture.get('vae')} and {anatomy_entry.architecture.get('vae')})")
    vae, vae_entry = load_vae(entry.architecture["vae"], device)
    anatomy = build_network(anatomy_entry.architecture, anatomy_entry.state_dict()).to(device)
    motion = build_network(entry.architecture, entry.state_dict()).to(device)
    return Cardiac4DModel(entry, vae, anatomy, motion, vae_entry, anatomy_entry)
