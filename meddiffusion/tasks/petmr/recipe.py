"""``meddiff train petmr``: CSRD (EDM residual diffusion in 3D) on simulated PET/MR subjects.

Subjects (``physics.pet``: MNI152 brains and phantom thoraces with lesions, full count and DRF
4, 6, 8; DRF 10 stays out for the bench) are cached once (``data``) and read as random patches
with their coordinates. ``--no-mr`` trains the PET-only model, CSRD's ablation and the model
for PET without an MR; ``--variant unet`` the bench's plain 3D UNet baseline (MONAI's BasicUNet
regressing the residual on the same patches). This declaration imports nothing heavy (``meddiff --help`` reads it).
"""

from __future__ import annotations

from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import PHANTOM, Outcome, Recipe, Score, TrainingData

__all__ = ["RECIPE", "model_id_of", "network_kwargs"]

#: patches per (subject, DRF) volume: training items, and validation items
PER_VOLUME, VAL_PER_VOLUME = 32, 2


#: the plain UNet baseline's BasicUNet features per --config
UNET_FEATURES = {"paper": (32, 32, 64, 128, 256, 32), "small": (16, 16, 32, 64, 128, 16), "tiny": (4, 4, 8, 8, 16, 4)}


def model_id_of(use_mr: bool, config: str, variant: str = "csrd") -> str:
    """``petmr-csrd-<config>`` (MR-guided), ``petmr-csrd-nomr-<config>`` (PET only), ``petmr-unet-<config>``."""
    name = "csrd" if variant == "csrd" else "unet"
    return f"petmr-{name}-{config}" if use_mr else f"petmr-{name}-nomr-{config}"


def network_kwargs(config: str, variant: str = "csrd") -> dict:
    from meddiffusion.nets.csrd import CSRD_CONFIGS

    if variant == "unet":
        return {"features": list(UNET_FEATURES[config])}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in CSRD_CONFIGS[config].items()}


def _protocols(args) -> dict:
    """The simulation protocol of each anatomy (``PetProtocol.for_kind``'s clinical defaults)."""
    from meddiffusion.physics.pet import PetProtocol
    from meddiffusion.tasks.petmr.data import KIND_CHOICES

    return {kind: PetProtocol.for_kind(kind) for kind in KIND_CHOICES[args.kind]}


def _check(args) -> None:
    from meddiffusion.tasks.petmr.model import PATCH, UNET_MULTIPLE

    if not 0.0 <= args.start_share <= 1.0:
        raise ValueError(f"--start-share must be between 0 and 1, got {args.start_share}")
    if args.start_share > 0 and args.variant == "unet":
        raise ValueError("--start-share applies to the diffusion model (--variant csrd), not the UNet baseline")

    if args.subjects < 1 or args.val_subjects < 1:
        raise ValueError(f"--subjects and --val-subjects must be >= 1, got {args.subjects} and {args.val_subjects}")
    multiple = UNET_MULTIPLE if args.variant == "unet" else 2 ** (len(network_kwargs(args.config)["channel_mult"]) - 1)
    if args.patch < multiple or args.patch % multiple:
        raise ValueError(f"--patch must be a multiple of {multiple} for the {args.config} network, got {args.patch} "
                         f"(CSRD: {PATCH})")


def build_data(args, progress) -> TrainingData:
    """Subjects ``0 .. subjects-1`` of dataset ``--seed`` train, the next ``--val-subjects`` validate."""
    from pathlib import Path

    from meddiffusion.tasks.petmr.data import KIND_CHOICES, PetmrPatches, build_cache
    from meddiffusion.training.cache import read_meta

    _check(args)
    folder = Path(args.data) if args.data else Path(args.out) / "data"
    total = args.subjects + args.val_subjects
    paths = build_cache(folder, range(total), args.seed, KIND_CHOICES[args.kind], _protocols(args),
                        progress.callback("simulate", total))
    train = PetmrPatches(paths[: args.subjects], args.patch, PER_VOLUME, seed=args.seed)
    val = PetmrPatches(paths[args.subjects:], args.patch, VAL_PER_VOLUME, seed=args.seed + 1)
    infos = [read_meta(p)[1] for p in paths[: args.subjects]]
    progress.log(f"{len(train)} training patches of {args.patch}³ from {args.subjects} subjects and {len(val)} "
                 f"validation patches from {args.val_subjects} subjects in {folder}")
    return TrainingData(train, val, {"subjects": infos, "val_paths": [str(p) for p in paths[args.subjects:]]})


def make_model(args):
    from meddiffusion.nets.csrd import CSRDUNet3D
    from meddiffusion.tasks.petmr.model import plain_unet

    if args.variant == "unet":
        return plain_unet(not args.no_mr, **network_kwargs(args.config, "unet"))
    return CSRDUNet3D(use_mr=not args.no_mr, **network_kwargs(args.config))


def make_loss(args, step):  # noqa: ARG001 - no schedule over the steps
    from meddiffusion.tasks.petmr.losses import make_loss_fn, make_regression_loss_fn

    if args.variant == "unet":
        return make_regression_loss_fn(not args.no_mr)
    return make_loss_fn(not args.no_mr, start_share=args.start_share)


def make_val(args):
    from meddiffusion.tasks.petmr.losses import make_regression_loss_fn, make_val_fn
    from meddiffusion.training.sampler import fixed_noise_val

    if args.variant == "unet":
        return fixed_noise_val(make_regression_loss_fn(not args.no_mr), args.seed)
    return make_val_fn(not args.no_mr, args.seed)


def from_card(args, entry):
    """The CSRDUNet3D of a PET/MR card with its weights, for ``--from-model``; MR use must match ``--no-mr``."""
    from meddiffusion.tasks.petmr.model import build_model

    arch = entry.architecture
    wanted = "BasicUNet" if args.variant == "unet" else "CSRDUNet3D"
    if arch.get("network") != wanted:
        raise ValueError(f"--from-model '{entry.id}' uses the network {arch.get('network')!r}; --variant "
                         f"{args.variant} fine-tunes {wanted} models")
    model = build_model(arch, entry.state_dict(), entry)
    from meddiffusion.tasks.petmr.model import RESIDUAL_SCALE

    if model.residual_scale != RESIDUAL_SCALE:
        raise ValueError(f"--from-model '{entry.id}' diffuses the residual × {model.residual_scale:g}; this version "
                         f"trains on × {RESIDUAL_SCALE:g}: train a new model instead of fine-tuning this one")
    if model.use_mr == bool(args.no_mr):
        raise ValueError(f"--from-model '{entry.id}' {'reads' if model.use_mr else 'does not read'} the MR; "
                         f"{'drop' if model.use_mr else 'pass'} --no-mr to match")
    args.start_architecture = arch
    return model.net.train()


def _as_inference_model(args, net):
    """A copy of ``net`` wrapped as ``pet-denoise`` runs it (EDM Heun sampler or one regression pass)."""
    import copy

    from meddiffusion.tasks.petmr.model import PetmrModel

    return PetmrModel(copy.deepcopy(net).eval(), use_mr=bool(net.use_mr), window=int(args.patch),
                      objective="regression" if args.variant == "unet" else "edm")


def _sampled(args, net, item: dict, device):
    """(x̂_full, x_full) of one validation patch in the low-count image's scale, sampled as at inference."""
    from meddiffusion.tasks.petmr.infer import sample_residual
    from meddiffusion.tasks.petmr.losses import conditions_of

    model = _as_inference_model(args, net)
    batch = {key: value[None] for key, value in item.items()}
    cond = conditions_of(batch, model.use_mr, device, coords=model.objective == "edm")
    r = sample_residual(model, cond, steps=model.default_steps("cpu"), seed=0, window=cond.shape[-1])
    low, scale = batch["low"].to(device), model.residual_scale
    return (low + r / scale).float().cpu(), (low + batch["r"].to(device) / scale).float().cpu()


def score(args, net, data, device) -> Score:
    """PSNR of the validation patches sampled as ``pet-denoise`` runs (seeded, CPU default steps), in the
    low-count image's [0, 1] scale: the registration gate's metric, the same patches and noise for a
    model and its parent."""
    import math

    import torch

    errors = []
    with torch.inference_mode():
        for index in range(len(data.val)):
            estimate, target = _sampled(args, net, data.val[index], device)
            errors.append(float(((estimate - target) ** 2).mean()))
    mse = sum(errors) / len(errors)
    return Score({"psnr": math.inf if mse == 0 else 10 * math.log10(1.0 / mse)}, "psnr", higher_is_better=True)


def preview(args, net, data, device):
    """The middle slice of the first validation patch: low count, the network's output and the full count."""
    import numpy as np

    from meddiffusion.io import Volume

    item = data.val[0]
    estimate, target = _sampled(args, net, item, device)
    middle = item["low"].shape[1] // 2
    as_volume = lambda a: Volume(np.asarray(a, np.float32)[None], modality="PT")  # noqa: E731
    return (as_volume(item["low"][0, middle]), as_volume(estimate[0, 0, middle]),
            as_volume(target[0, 0, middle]))


def architecture(args) -> dict:
    from meddiffusion.tasks.petmr.model import architecture_of

    if getattr(args, "start_architecture", None):
        return args.start_architecture
    if args.variant == "unet":
        from meddiffusion.tasks.petmr.model import unet_architecture_of

        return unet_architecture_of(not args.no_mr, UNET_FEATURES[args.config], args.patch)
    return architecture_of(not args.no_mr, network_kwargs(args.config), args.patch)


def model_id(args) -> str:
    return model_id_of(not args.no_mr, args.config, args.variant)


def card(args, outcome: Outcome) -> dict:
    """Network, inputs, EDM settings; the subjects in words; validation losses before and after."""
    from meddiffusion.tasks.petmr.model import MR_PERCENTILE, RESIDUAL_SCALE

    subjects = outcome.data.info["subjects"]
    protocols = _protocols(args)
    brains = sum(1 for s in subjects if s.get("kind") == "brain")
    lesions = sum(int(s.get("lesions", 0)) for s in subjects)
    drfs = sorted({d for p in protocols.values() for d in p.drf_train})
    held = sorted({d for p in protocols.values() for d in p.drf_heldout})
    scanners = "; ".join(f"{kind}: {p.matrix}² × {p.slices} at {p.voxel_mm:g} mm, {p.counts:.0e} trues at full dose, "
                         f"OSEM {p.iterations}×{p.subsets} with a {p.postfilter_fwhm_mm:g} mm post-filter"
                         for kind, p in protocols.items())
    training_data = (
        f"{len(outcome.data.train)} random {args.patch}³ patches (with their global coordinates) of {args.subjects} "
        f"simulated FDG PET/MR subjects ({brains} MNI152 brains warped per subject, {args.subjects - brains} phantom "
        f"thoraces; {lesions} hyper- and hypometabolic lesions), each at full count and at DRF "
        f"{', '.join(map(str, drfs))} by binomial thinning of the list-mode counts, all reconstructed by the same "
        f"OSEM ({scanners}); DRF {', '.join(map(str, held))} held out; T1 MR with bias field and Rician noise; data "
        f"seed {args.seed}")
    inputs = "low-count PET, T1 MR and x/y/z coordinates" if not args.no_mr else \
        "low-count PET and x/y/z coordinates (no MR: PET only, CSRD's ablation)"
    description = f"CSRD: EDM residual diffusion (r = full − low) with a 3D DDPM++-style UNet on {inputs} ({args.config})"
    if args.start_share > 0:
        from meddiffusion.tasks.petmr.model import SIGMA_MAX

        description += (f"; {args.start_share:.0%} of the training samples at the sampler's start σ = {SIGMA_MAX:g}, "
                        f"the rest at ln σ ~ N(−1.2, 1.2²)")
    if args.variant == "unet":
        description = (f"plain 3D UNet baseline (MONAI BasicUNet, L1 regression of r = full − low) on low-count PET"
                       f"{' and T1 MR' if not args.no_mr else ''} ({args.config})")
    metrics = {**{f"val_{name}_{when}": values.get(name)
                  for when, values in (("start", outcome.val_start), ("end", outcome.val_end)) for name in ("loss",)},
               "subjects": args.subjects, "val_subjects": args.val_subjects, "patches": len(outcome.data.train)}
    return {"architecture": architecture(args), "training_data": training_data,
            "description": description,
            "normalization": {"kind": "csrd", "pet": "full and low scaled by the low-count min and max",
                              "mr": f"(x - min) / (p{MR_PERCENTILE:g} - min), clipped to [0, 1]",
                              "residual": f"(full - low) x {RESIDUAL_SCALE:g} in the PET's scaled space"},
            "metrics": {k: v for k, v in metrics.items() if v is not None}}


RECIPE = Recipe(
    name="petmr",
    description="MR-guided PET denoising: CSRD (3D EDM residual diffusion) on simulated brain and thorax PET/MR",
    configs={"paper": "GPU", "small": "CPU", "tiny": "tests"},
    options=(
        Option(("--variant",), {"choices": ("csrd", "unet"), "default": "csrd",
                                "help": "csrd: the diffusion model (default); unet: the plain 3D UNet baseline "
                                        "(regression, for the bench)"}),
        Option(("--no-mr",), {"action": "store_true", "help": "train the PET-only model (CSRD's ablation; for PET "
                                                               "without an MR)"}),
        Option(("--start-share",), {"type": float, "default": 0.0, "metavar": "Q",
                                    "help": "CSRD: share of training samples at the sampler's start σ (5) instead "
                                            "of ln σ ~ N(-1.2, 1.2²), for the few-step CPU sampler (default: 0, "
                                            "the paper's)"}),
        Option(("--subjects",), {"type": int, "default": 24, "help": "training subjects (default: 24)"}),
        Option(("--val-subjects",), {"type": int, "default": 4, "help": "validation subjects, the next ones "
                                                                        "(default: 4)"}),
        Option(("--kind",), {"choices": ("both", "brain", "thorax"), "default": "both",
                             "help": "anatomies: brains and thoraces alternating (default), or one of them"}),
        Option(("--patch",), {"type": int, "default": 64, "help": "training patch edge in voxels (default: 64, "
                                                                  "CSRD's)"}),
        Option(("--data",), {"metavar": "DIR", "help": "subject cache to use and fill, shareable between runs with "
                                                       "the same --seed (default: <out>/data)"}),
    ),
    defaults={"steps": 4000, "batch_size": 4, "lr": 2e-4},
    sources=(PHANTOM,),
    build_data=build_data, make_model=make_model, make_loss=make_loss, make_val=make_val, model_id=model_id,
    card=card, from_card=from_card, score=score, preview=preview,
    example="""  meddiff train petmr --config small --data runs/petmr-data --out runs/petmr-csrd
  meddiff train petmr --config small --no-mr --data runs/petmr-data --out runs/petmr-csrd-nomr""",
)
