"""``meddiff train cardiac4d``: the three stages of the cascade on simulated short-axis cine studies.

Train in order, each stage naming the one before:

1. ``--variant vae``: the dual-decoder VAE on every frame (image and labels);
2. ``--variant anatomy --vae ID``: the static anatomy LDM on the VAE's end-diastolic latents;
3. ``--variant motion --vae ID --anatomy ID``: the residual-motion LDM on Δz = z_t − z_ED of
   every frame (``--anatomy`` only names the anatomy card the motion card runs with).

Studies ``0 .. studies-1`` of dataset ``--seed`` train and the next ``--val-studies`` validate;
the stages share the cache (``--data``). The LDM stages encode the studies once with the VAE
into ``latents-<vae sha256>.npz`` beside the cache; the anatomy stage adds ``--affine-copies``
resized copies of each training study's end-diastolic stack (the paper's augmentation, with
the volumes rescaled; ``data.affine_copies``), encoded once into ``anatomy-copies-…npz``. The
paper's deterministic latent-motion
teacher (its stage 2) is not trained: the phantom labels every frame, so Δz is taken directly
from the VAE's mean latents of each frame, which is the target that teacher approximates.

``--from-model ID`` fine-tunes a stage's card of the same kind: the card's network and weights,
its VAE's latent space (an LDM keeps the VAE it was trained on, and the motion LDM its motion
scale) and its diffusion schedule. The registration gate compares the validation image PSNR
(VAE) or the validation denoising error at fixed noise (LDMs).

``--variant vae --from-model ID --decoder-only`` trains the image decoder alone: the encoder and
the label decoder stay frozen, so every latent, and with them the LDMs trained on that VAE, stay
valid (Stable Diffusion sharpened its released decoders the same way). The critic plays from the
first step, since the decoder it judges is already trained; Dice and KL terms are left out, as
nothing they weigh can change.
"""

from __future__ import annotations

from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import PHANTOM, Outcome, Recipe, Score, TrainingData

__all__ = ["RECIPE", "network_kwargs", "model_id_of"]

def model_id_of(variant: str, config: str) -> str:
    return f"cardiac4d-{variant}-{config}"


def _protocol(args):
    from meddiffusion.tasks.cardiac4d.cine import CineProtocol

    return CineProtocol(frames=args.frames)


#: the network each ``--variant`` trains
NETWORKS = {"vae": "DualDecoderVAE", "anatomy": "AnatomyLDM", "motion": "MotionLDM"}


def _parent(args):
    """The ``--from-model`` card, or None."""
    from meddiffusion.catalog import get_model

    return get_model(args.from_model) if getattr(args, "from_model", None) else None


def _vae_id(args) -> str:
    """``--vae``; else the VAE a fine-tuned LDM was trained on (its latent space); else the config's."""
    parent = _parent(args)
    inherited = parent.architecture.get("vae") if parent is not None and args.variant != "vae" else None
    return args.vae or inherited or model_id_of("vae", args.config)


def network_kwargs(args) -> dict:
    """The config's network (``nets.cardiac4d.CARDIAC4D_CONFIGS``); an LDM takes its VAE's latent channels."""
    from meddiffusion.nets.cardiac4d import CARDIAC4D_CONFIGS

    kwargs = dict(CARDIAC4D_CONFIGS[args.config][args.variant])
    if args.variant != "vae":
        kwargs["latent_channels"] = _vae_entry(args).architecture["kwargs"]["latent_channels"]
    return kwargs


def _vae_entry(args):
    from meddiffusion.catalog import get_model

    entry = get_model(_vae_id(args))
    if entry.task != "cardiac4d" or entry.architecture.get("network") != "DualDecoderVAE":
        raise ValueError(f"--vae '{entry.id}' is not a cardiac4d VAE; train one first with 'meddiff train cardiac4d "
                         "--variant vae --register ID'")
    return entry


def build_data(args, progress) -> TrainingData:
    """Cine studies (cached) as VAE frames, or encoded by ``--vae`` as the LDM stage's latents."""
    from pathlib import Path

    from meddiffusion.tasks.cardiac4d import data

    if args.studies < 1 or args.val_studies < 1:
        raise ValueError(f"--studies and --val-studies must be >= 1, got {args.studies} and {args.val_studies}")
    if getattr(args, "decoder_only", False) and (args.variant != "vae" or not getattr(args, "from_model", None)):
        raise ValueError("--decoder-only fine-tunes the image decoder of a VAE card: use it with --variant vae and "
                         "name the card with --from-model")
    if args.affine_copies < 0:
        raise ValueError(f"--affine-copies must be >= 0, got {args.affine_copies}")
    if args.variant == "vae" and args.anatomy:
        raise ValueError("--anatomy names the anatomy model a motion model runs with; it is read with --variant "
                         "motion only")
    parent = _parent(args)
    if parent is not None:
        _check_parent(args, parent)
    folder = Path(args.data) if args.data else Path(args.out) / "data"
    protocol = _protocol(args)
    total = args.studies + args.val_studies
    paths = data.build_cache(folder, range(total), args.seed, protocol, progress.callback("simulate", total))
    studies = data.load_studies(paths)
    info = {"groups": _groups(studies[: args.studies]), "protocol": protocol.to_dict(),
            "spacing": data.spacing_of(studies)}
    if args.variant == "vae":
        train, val = data.CineFrames(studies[: args.studies], protocol.depth), data.CineFrames(
            studies[args.studies :], protocol.depth)
        progress.log(f"{len(train)} training frames from {args.studies} studies, {len(val)} validation frames")
        return TrainingData(train, val, info)
    latents, vae_entry = _latents(args, studies, folder, protocol, progress)
    scale = float(vae_entry.architecture["latent_scale"])
    info |= {"vae": vae_entry.id, "latent_scale": scale}
    if args.variant == "anatomy":
        copies = _anatomy_copies(args, studies[: args.studies], folder, protocol, progress)
        train = data.AnatomyLatents(studies[: args.studies], latents[: args.studies], scale, copies)
        val = data.AnatomyLatents(studies[args.studies :], latents[args.studies :], scale)
    else:
        # a fine-tune keeps the scale its network learnt Δz in
        motion_scale = (float(parent.architecture["motion_scale"]) if parent is not None else
                        1.0 / data.motion_std(latents[: args.studies], scale))
        info["motion_scale"] = motion_scale
        train = data.MotionLatents(studies[: args.studies], latents[: args.studies], scale, motion_scale)
        val = data.MotionLatents(studies[args.studies :], latents[args.studies :], scale, motion_scale)
    progress.log(f"{len(train)} training and {len(val)} validation latents ({args.variant}) from {folder}")
    return TrainingData(train, val, info)


def _latents(args, studies, folder, protocol, progress):
    """Every study's latents under the VAE, cached per VAE (its sha256) beside the studies."""
    from meddiffusion.tasks.cardiac4d.data import encode_studies

    entry = _vae_entry(args)
    if entry.architecture["grid"]["matrix"] != protocol.matrix:
        raise ValueError(f"--vae '{entry.id}' learned a {entry.architecture['grid']['matrix']}² grid; the studies are "
                         f"{protocol.matrix}²")
    names = [s.path.name for s in studies]

    def encode() -> dict:
        vae, device = _vae_on_device(entry)
        with progress.stage("encode", total=len(studies)) as step:
            return dict(zip(names, encode_studies(vae, studies, protocol.depth, device, callback=step)))

    arrays = _cached(folder / f"latents-{entry.sha256[:12]}.npz", names, encode)
    return [arrays[name] for name in names], entry


def _anatomy_copies(args, studies, folder, protocol, progress) -> list:
    """The training studies' resized end-diastolic copies under the VAE, cached per VAE, seed and count."""
    import json

    import numpy as np

    from meddiffusion.tasks.cardiac4d.data import affine_copies

    n = args.affine_copies
    if n == 0:
        return []
    entry = _vae_entry(args)
    names = [s.path.name for s in studies]

    def resize() -> dict:
        vae, device = _vae_on_device(entry)
        with progress.stage("resized copies", total=len(studies)) as step:
            copies = affine_copies(studies, vae, protocol.depth, n, args.seed, device, callback=step)
        arrays = {}
        for k, name in enumerate(names):
            chunk = copies[k * n : (k + 1) * n]
            arrays[name] = np.stack([mu for mu, _ in chunk])
            arrays[f"{name}.values"] = np.asarray(json.dumps([values for _, values in chunk]))
        return arrays

    path = folder / f"anatomy-copies-{entry.sha256[:12]}-s{args.seed}-n{n}.npz"
    arrays = _cached(path, names + [f"{name}.values" for name in names], resize)
    return [(mu, values) for name in names
            for mu, values in zip(arrays[name], json.loads(str(arrays[f"{name}.values"])))]


def _vae_on_device(entry):
    """The card's VAE on the GPU when there is one, and that device."""
    import torch

    from meddiffusion.tasks.cardiac4d.model import build_network

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return build_network(entry.architecture, entry.state_dict()).to(device), device


def _cached(path, keys: list[str], make) -> dict:
    """The arrays ``keys`` from the npz ``path`` when it holds them all; else ``make()``'s, written there atomically
    (the stages and later runs share what one encoded)."""
    import numpy as np

    from meddiffusion.files import atomic_write

    if path.exists():
        with np.load(path) as stored:
            if all(key in stored for key in keys):
                return {key: stored[key] for key in keys}
    arrays = make()
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    return arrays


def _groups(studies) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in studies:
        counts[s.preset] = counts.get(s.preset, 0) + 1
    return counts


def make_model(args):
    from meddiffusion.nets import cardiac4d as nets

    return getattr(nets, NETWORKS[args.variant])(**network_kwargs(args))


def _check_parent(args, entry) -> None:
    """A ValueError unless ``--from-model`` is the stage ``--variant`` trains, on the grid, VAE and diffusion
    schedule of this run (checked before any study is simulated)."""
    arch, wanted = entry.architecture, NETWORKS[args.variant]
    if entry.task != "cardiac4d":
        return  # the loop refuses another task's model in its own words
    if arch.get("network") != wanted:
        raise ValueError(f"--from-model '{entry.id}' holds the network {arch.get('network')}; --variant "
                         f"{args.variant} fine-tunes {wanted} cards")
    if args.variant == "vae":
        matrix = _protocol(args).matrix
        if arch.get("grid", {}).get("matrix") != matrix:
            raise ValueError(f"--from-model '{entry.id}' learned a {arch.get('grid', {}).get('matrix')}² grid; the "
                             f"studies are {matrix}²")
        return
    if arch.get("vae") != _vae_id(args):
        raise ValueError(f"--from-model '{entry.id}' learned the latents of VAE '{arch.get('vae')}', not "
                         f"'{_vae_id(args)}': leave out --vae or name that one")
    diffusion = arch.get("diffusion", {})
    trained = (diffusion.get("num_train_timesteps"), diffusion.get("prediction"))
    if trained != (args.timesteps, args.prediction):
        raise ValueError(f"--from-model '{entry.id}' was trained with T={trained[0]} and {trained[1]}-prediction; "
                         f"pass --timesteps {trained[0]} --prediction {trained[1]}")


def from_card(args, entry):
    """The network of a cardiac4d card with its weights, for ``--from-model`` (see :func:`_check_parent`)."""
    from meddiffusion.tasks.cardiac4d.model import build_network

    _check_parent(args, entry)
    net = build_network(entry.architecture, entry.state_dict()).train()
    if args.variant == "vae" and getattr(args, "decoder_only", False):
        net.requires_grad_(False)
        net.image_decoder.requires_grad_(True)
    return net


def score(args, net, data, device) -> Score:
    """The registration gate's metric over the whole validation split: the VAE's image PSNR, or an LDM's
    denoising error at fixed noise and timesteps (``make_val``, the same for a model and its parent)."""
    import torch

    from meddiffusion.training.trainer import batch_mean

    val_fn, net = make_val(args), net.to(device).eval()
    with torch.inference_mode():
        values = batch_mean(data.val, lambda _, batch: val_fn(net, batch), 8, torch.device(device))
    if args.variant == "vae":
        return Score(values, "psnr", higher_is_better=True)
    return Score(values, "mse", higher_is_better=False)


def _diffusion(args):
    from meddiffusion.diffusion.latent import LatentDiffusion

    return LatentDiffusion(args.timesteps, prediction=args.prediction)


def make_loss(args, step):
    from meddiffusion.tasks.cardiac4d import losses

    if args.variant == "vae":
        from meddiffusion.nets.cardiac4d import make_discriminator

        if getattr(args, "decoder_only", False):
            weights = losses.VaeWeights(args.perceptual_weight, args.adv_weight, dice=0.0, kl=0.0, adv_start=0.0)
        else:
            weights = losses.VaeWeights(args.perceptual_weight, args.adv_weight, args.dice_weight, args.kl_weight)
        critic = make_discriminator() if args.adv_weight > 0 else None
        return losses.vae_loss_fn(weights, args.steps, step, critic)
    return losses.ldm_loss_fn(args.variant, _diffusion(args), args.cfg_dropout)


def make_val(args):
    from meddiffusion.tasks.cardiac4d import losses

    if args.variant == "vae":
        return losses.vae_val_fn()
    return losses.ldm_val_fn(args.variant, _diffusion(args), args.seed)


def architecture(args, outcome: Outcome | None = None) -> dict:
    from meddiffusion.tasks.cardiac4d import GUIDANCE
    from meddiffusion.tasks.cardiac4d.model import DEFAULT_STEPS

    arch = {"network": NETWORKS[args.variant], "kwargs": network_kwargs(args)}
    info = outcome.data.info if outcome is not None else {}
    if args.variant == "vae":
        protocol = _protocol(args)
        arch["grid"] = {"matrix": protocol.matrix, "pixel_mm": protocol.pixel_mm, "slice_mm": protocol.slice_mm,
                        "depth": protocol.depth}
        parent = _parent(args) if getattr(args, "decoder_only", False) else None
        if parent is not None:  # the frozen encoder keeps its latents and their scale
            arch["latent_scale"] = float(parent.architecture["latent_scale"])
            return arch
        std = (outcome.val_end.get("latent_std") if outcome is not None else None) or 1.0
        arch["latent_scale"] = 1.0 / std
        return arch
    arch |= {"vae": info.get("vae", _vae_id(args)),
             "diffusion": {"kind": "ddpm", "num_train_timesteps": args.timesteps, "schedule": "scaled_linear_beta",
                           "prediction": args.prediction},
             "sampler": {"kind": "ddim", "steps": dict(DEFAULT_STEPS), "guidance": GUIDANCE}}
    if args.variant == "motion":
        arch |= {"anatomy": args.anatomy or model_id_of("anatomy", args.config),
                 "motion_scale": info.get("motion_scale", 1.0)}
    return arch


def model_id(args) -> str:
    return model_id_of(args.variant, args.config)


def card(args, outcome: Outcome) -> dict:
    """Network and scales; the studies in words; validation figures before and after."""
    info = outcome.data.info
    groups = ", ".join(f"{n} {g}" for g, n in sorted(info["groups"].items()))
    p = info["protocol"]
    copies = getattr(args, "affine_copies", 0)
    anatomy = (f"{len(outcome.data.train)} end-diastolic latents" if not copies else
               f"{len(outcome.data.train)} end-diastolic latents (each stack and {copies} copies resized in-plane by "
               "up to ±9 %, volumes rescaled)")
    what = {"vae": f"{len(outcome.data.train)} frames", "anatomy": anatomy,
            "motion": f"{len(outcome.data.train)} frame latents"}[args.variant]
    training_data = (f"{what} of {args.studies} simulated short-axis cine studies of thorax-phantom patients "
                     f"({groups}): bSSFP magnitude with coil shading, Rician noise and contrast varied, {p['matrix']}² × "
                     f"{p['pixel_mm']:g} mm, {p['slice_mm']:g} mm slices, 8-16 slices covering the LV, "
                     f"{p['frames']} frames per cycle, ACDC labels; data seed {args.seed}")
    description = {
        "vae": "dual-decoder VAE (image and labels) of short-axis cine frames, anisotropic (slices never pooled)"
               + (f"; image decoder fine-tuned from {args.from_model} with its encoder and label decoder frozen "
                  "(same latents)" if getattr(args, "decoder_only", False) else ""),
        "anatomy": f"static anatomy LDM (end-diastolic latent from diagnosis, EF, EDV, ESV, slices), VAE "
                   f"{info.get('vae')}",
        "motion": f"residual-motion LDM (Δz of each cardiac phase from the end-diastolic latent), VAE {info.get('vae')}",
    }[args.variant]
    metrics = {f"val_{name}_{when}": values.get(name)
               for when, values in (("start", outcome.val_start), ("end", outcome.val_end))
               for name in ("l1", "psnr", "dice_rv", "dice_myo", "dice_lv", "mse", "eps_mse")}
    metrics |= {"studies": args.studies, "val_studies": args.val_studies}
    return {"architecture": architecture(args, outcome), "training_data": training_data,
            "description": f"{description} ({args.config})",
            "normalization": {"kind": "cine_percentiles", "percentiles": [0.5, 99.5], "range": [-1, 1]},
            "metrics": {k: v for k, v in metrics.items() if v is not None}}


RECIPE = Recipe(
    name="cardiac4d",
    description="4D cardiac cine synthesis: the dual-decoder VAE, then the anatomy and motion LDMs, on simulated "
                "short-axis cine studies",
    configs={"paper": "GPU", "small": "CPU", "tiny": "tests"},
    options=(
        Option(("--variant",), {"choices": ("vae", "anatomy", "motion"), "default": "vae",
                                "help": "vae: the dual-decoder VAE (train first); anatomy: the static anatomy LDM; "
                                        "motion: the residual-motion LDM (default: vae)"}),
        Option(("--vae",), {"metavar": "ID", "help": "VAE of the LDM stages (default: cardiac4d-vae-<config>)"}),
        Option(("--anatomy",), {"metavar": "ID", "help": "anatomy model a motion model runs with (default: "
                                                         "cardiac4d-anatomy-<config>)"}),
        Option(("--studies",), {"type": int, "default": 360, "help": "training studies (phantom patients, balanced "
                                                                     "over the five groups; default: 360)"}),
        Option(("--val-studies",), {"type": int, "default": 40, "help": "validation studies, the next patients "
                                                                        "(default: 40)"}),
        Option(("--frames",), {"type": int, "default": 20, "help": "frames per cycle of the studies (default: 20)"}),
        Option(("--data",), {"metavar": "DIR", "help": "the study cache to use and fill, shareable between stages and "
                                                       "runs with the same --seed (default: <out>/data)"}),
        Option(("--affine-copies",), {"type": int, "default": 5,
                                      "help": "anatomy LDM: resized copies of each training study's end-diastolic "
                                              "stack, in-plane scale ±9 %%, volumes rescaled (default: 5, the paper's; "
                                              "0: none)"}),
        Option(("--timesteps",), {"type": int, "default": 1000, "help": "DDPM timesteps of the LDMs (default: 1000)"}),
        Option(("--prediction",), {"choices": ("v", "epsilon"), "default": "v",
                                   "help": "what the LDMs predict: v (default; stable after short runs) or epsilon (the "
                                           "paper's)"}),
        Option(("--cfg-dropout",), {"type": float, "default": 0.1, "help": "share of LDM samples trained without "
                                                                           "the clinical condition (default: 0.1)"}),
        Option(("--perceptual-weight",), {"type": float, "default": 0.3,
                                          "help": "VAE: weight of the per-slice 1 − SSIM term (default: 0.3)"}),
        Option(("--adv-weight",), {"type": float, "default": 0.1, "help": "VAE: weight of the LSGAN term, from half "
                                                                         "the run (default: 0.1; 0 turns it off)"}),
        Option(("--dice-weight",), {"type": float, "default": 20.0, "help": "VAE: weight of the labels' DiceCE "
                                                                           "(default: 20)"}),
        Option(("--decoder-only",), {"action": "store_true",
                                     "help": "VAE fine-tune (--from-model): train the image decoder only; the encoder "
                                             "and label decoder stay frozen, so the latents and the LDMs trained on "
                                             "them stay valid"}),
        Option(("--kl-weight",), {"type": float, "default": 1e-7, "help": "VAE: KL weight, ramped in from 20 %% of "
                                                                         "the run (default: 1e-7)"}),
    ),
    defaults={"steps": 3000, "batch_size": 4, "lr": 1e-4},
    sources=(PHANTOM,),
    read_with={"--vae": ("--variant", ("anatomy", "motion")), "--anatomy": ("--variant", ("motion",)),
               "--affine-copies": ("--variant", ("anatomy",)),
               **dict.fromkeys(("--timesteps", "--prediction", "--cfg-dropout"), ("--variant", ("anatomy", "motion"))),
               **dict.fromkeys(("--perceptual-weight", "--adv-weight", "--dice-weight", "--kl-weight",
                                "--decoder-only"),
                               ("--variant", ("vae",)))},
    build_data=build_data, make_model=make_model, make_loss=make_loss, make_val=make_val, model_id=model_id,
    card=card, from_card=from_card, score=score,
    example="""  meddiff train cardiac4d --variant vae --config small --data runs/c4d-data --out runs/c4d-vae \\
      --register cardiac4d-vae-small
  meddiff train cardiac4d --variant anatomy --config small --data runs/c4d-data --out runs/c4d-anatomy
  meddiff train cardiac4d --variant motion --config small --data runs/c4d-data --out runs/c4d-motion
  meddiff train cardiac4d --variant anatomy --from-model cardiac4d-anatomy-small --steps 500 --out runs/c4d-ft""",
)
