"""``meddiff train spect``: PADM's teacher and student, and the bench's ablations, on simulated phantom studies
or fine-tuned on the user's own NAC/AC studies (``--source paired-folder``, ``--data``, ``--from-model``; see
``userdata``).

The studies (``physics.spect``: phantom patients of both sexes and all habitus, rest or stress,
with and without perfusion defects) are cached once (``data``) and read as 2.5D slices. The
teacher is trained first; the student is then distilled from it (``--teacher``), so the
shipped pair is made by two commands. This declaration imports nothing heavy (``meddiff
--help`` reads it).
"""

from __future__ import annotations

from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import PAIRED_FOLDER, PHANTOM, Outcome, Recipe, Score, TrainingData

__all__ = ["RECIPE", "model_id_of", "network_kwargs", "variant_of"]

#: PADM leaves λ of eq. 18 open; 0.1 keeps the attention term near a tenth of the L1 at the start
DEFAULT_AT_WEIGHT = 0.1
#: validation slices the registration gate samples (as ``spect-ac`` does) to score a network
SCORE_SLICES = 96


def model_id_of(variant: str, config: str) -> str:
    """``spect-padm-teacher-small``, ``spect-padm-student-small``, ``spect-bbdm-small`` or ``spect-unet-small``."""
    return {"teacher": f"spect-padm-teacher-{config}", "student": f"spect-padm-student-{config}",
            "bridge": f"spect-bbdm-{config}", "unet": f"spect-unet-{config}"}[variant]


def network_kwargs(variant: str, config: str) -> dict:
    """PADMNet's arguments: the config's widths, a teacher or not, the physics head only for PADM."""
    from meddiffusion.nets.padm import PADM_CONFIGS
    from meddiffusion.tasks.spect.model import ACF_SCALE, CONTEXT_SLICES

    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in PADM_CONFIGS[config].items()}
    kwargs.update(context_slices=CONTEXT_SLICES, teacher=variant == "teacher", acf_scale=ACF_SCALE,
                  alpha=kwargs.get("alpha", 0.5) if variant in ("teacher", "student") else 0.0)
    return kwargs


def variant_of(architecture: dict) -> str:
    """The ``--variant`` that trains a card's network: teacher, unet (regression), bridge (no physics) or student."""
    kwargs = architecture.get("kwargs", {})
    if kwargs.get("teacher"):
        return "teacher"
    if architecture.get("objective") == "regression":
        return "unet"
    return "student" if float(kwargs.get("alpha", 0.0)) > 0 else "bridge"


def _protocol(args):
    from meddiffusion.physics.spect import SpectProtocol

    return SpectProtocol()


def _grid_multiple(args) -> int:
    """What the run's network needs its slices' sides divisible by (its pooling, a teacher's token grid)."""
    import torch

    from meddiffusion.nets.padm import PADMNet

    with torch.device("meta"):  # the sizes alone: no weights made
        return PADMNet(**architecture(args)["kwargs"]).multiple


def build_data(args, progress) -> TrainingData:
    """Studies ``0 .. studies-1`` of dataset ``--seed`` train, the next ``--val-studies`` validate (by patient).

    With ``--source paired-folder`` the user's studies instead (``userdata.build_user_data``), on the
    grid of the run's network.
    """
    from pathlib import Path

    from meddiffusion.tasks.spect.data import SpectSlices, build_cache
    from meddiffusion.training.cache import read_meta

    if (getattr(args, "source", None) or PHANTOM) != PHANTOM:
        from meddiffusion.tasks.spect.userdata import build_user_data

        return build_user_data(args, progress, float(architecture(args)["pixel_mm"]), _grid_multiple(args))
    if getattr(args, "val_patients", None) is not None:
        raise ValueError("--val-patients is read with --source paired-folder; the phantom source validates on "
                         "--val-studies studies")
    if args.studies < 1 or args.val_studies < 1:
        raise ValueError(f"--studies and --val-studies must be >= 1, got {args.studies} and {args.val_studies}")
    folder = Path(args.data) if args.data else Path(args.out) / "data"
    total = args.studies + args.val_studies
    paths = build_cache(folder, range(total), args.seed, _protocol(args), progress.callback("simulate", total))
    train, val = SpectSlices(paths[: args.studies]), SpectSlices(paths[args.studies :])
    infos = [read_meta(p)[1] for p in paths[: args.studies]]
    progress.log(f"{len(train)} training slices from {args.studies} studies and {len(val)} validation slices from "
                 f"{args.val_studies} studies in {folder}")
    return TrainingData(train, val, {"patients": infos, "val_paths": [str(p) for p in paths[args.studies :]]})


def make_model(args):
    from meddiffusion.nets.padm import PADMNet

    return PADMNet(**network_kwargs(args.variant, args.config))


def _bridge(args):
    from meddiffusion.diffusion.bridge import BrownianBridge

    return BrownianBridge(args.timesteps, schedule="linear", max_var=1.0)


def _teacher(args):
    """The frozen teacher network of a student's distillation (``--teacher``, default the config's teacher)."""
    if args.variant != "student" or args.at_weight == 0:
        return None
    from meddiffusion.tasks.spect.model import load_model

    model = load_model(args.teacher or model_id_of("teacher", args.config), "cpu")
    if not model.teacher:
        raise ValueError(f"--teacher '{model.id}' is not a teacher model (it does not attend to the μ-map)")
    for parameter in model.net.parameters():
        parameter.requires_grad_(False)
    return model.net


def make_loss(args, step):  # noqa: ARG001 - no schedule over the steps
    from meddiffusion.tasks.spect.losses import make_loss_fn

    return make_loss_fn(args.variant, _bridge(args), _teacher(args), args.at_weight)


def make_val(args):
    from meddiffusion.tasks.spect.losses import make_val_fn

    return make_val_fn(args.variant, _bridge(args), _teacher(args), args.at_weight, args.seed)


def from_card(args, entry):
    """The PADMNet of a SPECT card with its weights, for ``--from-model``; it must be of ``--variant``'s kind."""
    from meddiffusion.tasks.spect.model import NUM_TIMESTEPS, build_model
    from meddiffusion.training.finetune import check_parent_schedule

    arch = entry.architecture
    if arch.get("network") != "PADMNet":
        raise ValueError(f"--from-model '{entry.id}' uses the network {arch.get('network')!r}; meddiff train spect "
                         "fine-tunes PADMNet models only")
    variant = variant_of(arch)
    if variant != args.variant:
        raise ValueError(f"--from-model '{entry.id}' is a {variant} model, not --variant {args.variant}; a fine-tune "
                         f"keeps its parent's kind: pass --variant {variant}")
    check_parent_schedule(entry, args.timesteps, NUM_TIMESTEPS, "bridge timesteps")
    model = build_model(arch, entry.state_dict(), entry)
    args.start_architecture = arch
    return model.net.train()


def _as_inference_model(args, net):
    """A copy of ``net`` wrapped as ``spect-ac`` runs it: the variant's objective, the card's sampler steps."""
    import copy

    from meddiffusion.tasks.spect.model import DEFAULT_STEPS, SpectModel

    steps = int(architecture(args).get("sampler", {}).get("steps", min(DEFAULT_STEPS, args.timesteps)))
    return SpectModel(copy.deepcopy(net).eval(), _bridge(args), "regression" if args.variant == "unet" else "bridge",
                      args.variant == "teacher", steps)


def _sampled_psnr(args, net, data, device, limit: int = SCORE_SLICES) -> float:
    """PSNR (dB, [−1, 1] scale) of ``net`` run as ``spect-ac`` runs it, on the first ``limit`` validation slices."""
    import torch

    from meddiffusion.tasks.spect.losses import psnr

    model = _as_inference_model(args, net)
    values = []
    val = data.val
    with torch.inference_mode():
        for start in range(0, min(limit, len(val)), 32):
            stop = min(start + 32, limit, len(val))
            nac, mu, ac = (getattr(val, key)[start:stop].to(device) for key in ("nac", "mu", "ac"))
            x0, _ = model.predict(nac, mu, generator=torch.Generator(device=device).manual_seed(0))
            values.append(float(psnr(x0, ac)) * (stop - start))
    return sum(values) / min(limit, len(val))


def score(args, net, data, device) -> Score:
    """PSNR of the network sampled as ``spect-ac`` runs it (seeded noise) on the validation slices, the gate's metric:
    the same slices and noise for the model and its parent, so the figures differ by the network alone."""
    return Score({"psnr": _sampled_psnr(args, net, data, device)}, "psnr", higher_is_better=True)


def preview(args, net, data, device):
    """The validation slice with the most counts: NAC, the network's AC and the reference, in [−1, 1]."""
    import numpy as np
    import torch

    from meddiffusion.io import Volume

    val = data.val
    index = int(torch.argmax(val.nac[:, 1].flatten(1).amax(1)))
    model = _as_inference_model(args, net)
    with torch.inference_mode():
        nac, mu = val.nac[index : index + 1].to(device), val.mu[index : index + 1].to(device)
        x0, _ = model.predict(nac, mu, generator=torch.Generator(device=device).manual_seed(0))
    as_volume = lambda a: Volume(np.asarray(a, np.float32)[None], modality="NM")  # noqa: E731
    return as_volume(val.nac[index, 1]), as_volume(x0[0, 0].float().cpu()), as_volume(val.ac[index, 0])


def architecture(args) -> dict:
    """The card's architecture: the parent's for a fine-tune, else ``--variant``/``--config``'s network."""
    from meddiffusion.tasks.spect.model import DEFAULT_STEPS

    if getattr(args, "start_architecture", None):
        return args.start_architecture
    return {"network": "PADMNet", "kwargs": network_kwargs(args.variant, args.config),
            "objective": "regression" if args.variant == "unet" else "bridge",
            "diffusion": {"kind": "brownian_bridge", "num_timesteps": args.timesteps, "schedule": "linear",
                          "max_var": 1.0},
            "sampler": {"steps": min(DEFAULT_STEPS, args.timesteps), "eta": 0.0},
            "pixel_mm": _protocol(args).pixel_mm}


def model_id(args) -> str:
    return model_id_of(args.variant, args.config)


def _normalization() -> dict:
    from meddiffusion.tasks.spect.model import ACF_SCALE, MU_SCALE, SCALE_PERCENTILE

    return {"kind": "study_scale", "percentile": SCALE_PERCENTILE, "acf_scale": ACF_SCALE, "mu_scale_per_cm": MU_SCALE,
            "range": [-1, 1]}


def _val_metrics(outcome: Outcome) -> dict:
    return {f"val_{name}_{when}": values.get(name)
            for when, values in (("start", outcome.val_start), ("end", outcome.val_end))
            for name in ("l1", "psnr", "at")}


def _description(args) -> str:
    return {"teacher": "PADM teacher: Brownian bridge with the physics (ACF) head, attends to the μ-map",
            "student": "PADM student (CT-free): Brownian bridge with the physics (ACF) head"
                       + (f", distilled from {args.teacher or model_id_of('teacher', args.config)} (attention "
                          f"transfer λ = {args.at_weight:g})" if args.at_weight > 0 else ""),
            "bridge": "Brownian bridge without the physics head (PADM's ablation), CT-free",
            "unet": "plain UNet regressor (one network call), CT-free"}[args.variant]


def card(args, outcome: Outcome) -> dict:
    """Network, variant, bridge, sampler; the studies in words; validation figures before and after."""
    if (getattr(args, "source", None) or PHANTOM) != PHANTOM:
        return _user_card(args, outcome)
    patients = outcome.data.info["patients"]
    protocol = _protocol(args)

    def count(test) -> int:
        return sum(1 for p in patients if test(p))

    women = count(lambda p: p.get("patient", {}).get("sex") == "female")
    defects = count(lambda p: p.get("patient", {}).get("defect_shown") or p.get("patient", {}).get("scar"))
    stress = count(lambda p: p.get("condition") == "stress")
    training_data = (
        f"{len(outcome.data.train)} transaxial slices (with their two neighbours) of {args.studies} simulated "
        f"Tc-99m MPI studies of thorax-phantom patients ({women} women with breast tissue, {defects} showing a "
        f"perfusion defect or scar, {stress} stress / {args.studies - stress} rest; body habitus, diaphragm height and "
        f"sub-diaphragmatic uptake varied): {protocol.matrix}² × {protocol.pixel_mm:g} mm, {protocol.views} views "
        f"over {protocol.orbit_deg:g}°, Poisson counts, OSEM {protocol.iterations}×{protocol.subsets} without (NAC, "
        f"input) and with the true μ-map (AC, target); data seed {args.seed}")
    metrics = {**_val_metrics(outcome), "studies": args.studies, "val_studies": args.val_studies,
               "slices": len(outcome.data.train)}
    return {"architecture": architecture(args), "training_data": training_data,
            "description": f"{_description(args)} ({args.config}, T={args.timesteps})",
            "normalization": _normalization(), "metrics": {k: v for k, v in metrics.items() if v is not None}}


def _user_card(args, outcome: Outcome) -> dict:
    """The card of a run on the user's studies: which data, split and parent, in words (the numbers are in
    provenance)."""
    facts, patients = outcome.data.info["provenance"], outcome.data.info["patients"]
    with_mu = sorted({info["mu"] for info in patients.values() if info.get("mu")})
    start = f"fine-tuned from {outcome.parent.id}" if outcome.parent is not None else f"trained ({args.config})"
    training_data = (f"{len(outcome.data.train)} transaxial slices (with their two neighbours) of the user's NAC/AC "
                     f"SPECT studies from {facts['data']} ({facts['volumes']} studies"
                     + (f", μ from the patient's {' or '.join('CT' if m == 'ct' else 'μ-map' for m in with_mu)}"
                        if with_mu else "") + f"); validation patients {', '.join(facts['split']['val'])}; manifest "
                     f"sha256 {facts['manifest_sha256'][:12]}")
    metrics = {**_val_metrics(outcome), "slices": len(outcome.data.train), "patients": len(facts["split"]["train"]),
               "val_patients": len(facts["split"]["val"])}
    return {"architecture": architecture(args), "training_data": training_data, "normalization": _normalization(),
            "description": f"{_description(args)}, {start} on the user's studies ({args.source})",
            "metrics": {k: v for k, v in metrics.items() if v is not None}}


def mu_needed(args) -> str | None:
    """Why this run reads each study's μ-map (words for a message), or None."""
    if args.variant == "teacher":
        return "the teacher variant attends to each patient's attenuation map"
    if args.variant == "student" and args.at_weight > 0:
        return ("the student's attention transfer runs the teacher, which attends to each patient's attenuation map "
                "(pass --at-weight 0 to fine-tune the student without it)")
    return None


def check_extras(pairs: list[tuple[str, set[str]]], args) -> list[str]:
    """What the reader refuses of the studies' CT and μ-map columns: both given for one study, or none where
    the run reads μ (``pairs``: each study's name and the extra columns it brings)."""
    problems = []
    both = [name for name, extras in pairs if {"ct", "mumap"} <= extras]
    if both:
        problems.append(f"{', '.join(both[:5])}: both a CT and a μ-map given; give one (the teacher attends to one "
                        "attenuation map)")
    needed = mu_needed(args)
    missing = [name for name, extras in pairs if not extras & {"ct", "mumap"}]
    if needed and missing:
        problems.append(f"{needed}, but {len(missing)} of {len(pairs)} studies have no CT or μ-map "
                        f"({', '.join(missing[:5])}); add the patient's CT (ct.nrrd, in HU) or μ-map (mumap.nrrd, "
                        "1/cm) to each patient folder, or ct/ or mumap/ beside input/ and target/, or ct or mumap "
                        "columns to the manifest")
    return problems


RECIPE = Recipe(
    name="spect",
    description="SPECT attenuation correction: PADM's teacher and student (and ablations) on simulated phantom studies "
                "or the user's NAC/AC pairs",
    configs={"paper": "GPU", "small": "CPU", "tiny": "tests"},
    options=(
        Option(("--variant",), {"choices": ("teacher", "student", "bridge", "unet"), "default": "student",
                                "help": "teacher: PADM with the μ-map (train first); student: PADM CT-free, distilled "
                                        "from --teacher (default); bridge: without the physics head; unet: a plain "
                                        "regressor"}),
        Option(("--teacher",), {"metavar": "ID", "help": "teacher model of the student's distillation (default: "
                                                         "spect-padm-teacher-<config>)"}),
        Option(("--at-weight",), {"type": float, "default": DEFAULT_AT_WEIGHT, "metavar": "LAMBDA",
                                  "help": f"weight of the attention-transfer loss for the student (default: "
                                          f"{DEFAULT_AT_WEIGHT:g}; 0 trains a student without distillation)"}),
        Option(("--studies",), {"type": int, "default": 120, "help": "training studies (phantom patients; default: "
                                                                     "120)"}),
        Option(("--val-studies",), {"type": int, "default": 16, "help": "validation studies, the next patients "
                                                                        "(default: 16)"}),
        Option(("--data",), {"metavar": "DIR|CSV",
                             "help": "phantom: the study cache to use and fill, shareable between runs with the same "
                                     "--seed (default: <out>/data); --source paired-folder: DIR with one folder per "
                                     "patient holding nac and ac volumes (and ct or mumap for the teacher), or "
                                     "input/ (NAC) and target/ (AC) matched by name, or a CSV with columns "
                                     "input,target[,patient][,ct][,mumap]"}),
        Option(("--val-patients",), {"type": float, "metavar": "N", "default": None,
                                     "help": "validation patients with --source paired-folder: a count, or a "
                                             "fraction below 1 (default: 0.2, at least 1), drawn by --seed"}),
        Option(("--timesteps",), {"type": int, "default": 500, "help": "bridge timesteps T (default: 500, PADM's)"}),
    ),
    defaults={"steps": 4000, "batch_size": 16, "lr": 2e-4},
    sources=(PHANTOM, PAIRED_FOLDER),
    extras={"ct": "CT (HU)", "mumap": "μ-map (1/cm)"}, check_extras=check_extras,
    read_with={"--teacher": ("--variant", ("student",)), "--at-weight": ("--variant", ("student",))},
    build_data=build_data, make_model=make_model, make_loss=make_loss, make_val=make_val, model_id=model_id,
    card=card, from_card=from_card, score=score, preview=preview,
    example="""  meddiff train spect --variant teacher --config small --data runs/spect-data --out runs/spect-teacher
  meddiff train spect --variant student --config small --data runs/spect-data --out runs/spect-student \\
      --teacher spect-padm-teacher-small
  meddiff train spect --variant bridge --config small --data runs/spect-data --out runs/spect-bbdm
  meddiff train spect --variant unet --config small --data runs/spect-data --out runs/spect-unet
  meddiff train spect --source paired-folder --data my_studies/ --from-model spect-padm-student-small --at-weight 0 \\
      --steps 300 --out runs/spect-mine --register spect-mine""",
)
