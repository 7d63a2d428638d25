"""``meddiff train ldct``: CoreDiff's CLEAR-Net trained on thorax-phantom slab pairs (see ``data``),
or fine-tuned on the user's own CT (``--source``, ``--data``, ``--from-model``; see ``finetune``).

The declaration imports nothing heavy (``meddiff --help`` reads it); the functions load torch.
"""

from __future__ import annotations

from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import (CLEAN_FOLDER, LOWDOSE_FOLDER, PAIRED_FOLDER, PHANTOM, Outcome, Recipe,
                                          TrainingData)

__all__ = ["RECIPE", "network_configs", "start_at_identity", "data_options", "architecture"]


def _tiny_config() -> dict:
    return {"channels": (8, 8, 16), "convs_per_level": (1, 1, 1), "decoder_convs": (1, 1), "time_dim": 8,
            "emm_channels": (4, 4, 4)}


#: what the convolutions see of CoreDiff's [0, 1] scale: centred on 0 HU, one unit per 100 HU
#: (``nets.clearnet``: the published scale leaves residuals of 0.002-0.01 that a CPU run cannot learn)
INTENSITY = {"intensity_offset": 1024.0 / 4096.0, "intensity_scale": 4096.0 / 100.0}


def network_configs() -> dict[str, dict]:
    """CLEAR-Net sizes: ``paper`` (GPU), ``medium`` (long CPU runs), ``small`` (CPU) and ``tiny`` (tests)."""
    from meddiffusion.nets.clearnet import CLEARNET_MEDIUM, CLEARNET_PAPER, CLEARNET_SMALL

    sizes = {"paper": dict(CLEARNET_PAPER), "medium": dict(CLEARNET_MEDIUM), "small": dict(CLEARNET_SMALL),
             "tiny": _tiny_config()}
    return {name: {**kwargs, **INTENSITY} for name, kwargs in sizes.items()}


def start_at_identity(net):
    """Zero CLEAR-Net's output convolution, so training starts from x0_hat = x_t.

    The residual branch then grows from nothing instead of first unlearning a random
    residual of hundreds of HU, which costs a short CPU run most of its steps.
    """
    import torch

    torch.nn.init.zeros_(net.out_conv.conv.weight)
    torch.nn.init.zeros_(net.out_conv.conv.bias)
    return net


def data_options(args):
    """The slab options of a ``meddiff train ldct`` command line."""
    from meddiffusion.tasks.ldct.data import DataOptions

    given = {"nd_noise_hu": args.noise_range, "pixel_mm": args.pixel_range, "procedural": args.procedural,
             "kernels": args.kernels, "electronic_noise": args.electronic_noise,
             "texture_scale": args.texture_range}  # unset: DataOptions' defaults
    return DataOptions(size=args.size, slices=args.slices, dose=tuple(args.dose_range or (args.dose, args.dose)),
                       **{name: value if name == "procedural" else tuple(value)
                          for name, value in given.items() if value is not None})


def dose_words(dose: tuple[float, float]) -> str:
    """'0.25' or '0.07-0.4 (log-uniform per slab)'."""
    return f"{dose[0]:g}" if dose[0] == dose[1] else f"{dose[0]:g}-{dose[1]:g} (log-uniform per slab)"


def build_data(args, progress) -> TrainingData:
    """Slabs ``0 .. slabs-1`` of dataset ``--seed`` train and the next ``val_slabs`` validate, from ``<out>/data``.

    With a user source the volumes of ``--data`` instead (``finetune.build_user_data``).
    """
    from pathlib import Path

    from meddiffusion.tasks.ldct.data import LDCTPairs, build_cache

    if (args.source or PHANTOM) != PHANTOM:
        from meddiffusion.tasks.ldct.finetune import build_user_data

        return build_user_data(args, progress)
    if args.data or args.val_patients is not None:
        raise ValueError("--data and --val-patients are read with --source paired-folder, clean-folder or "
                         "lowdose-folder; the phantom source simulates its own slabs")

    options, folder, total = data_options(args), Path(args.out) / "data", args.slabs + args.val_slabs
    paths = build_cache(folder, total, args.seed, options, progress.callback("simulate", total))
    data = TrainingData(LDCTPairs(paths[: args.slabs]), LDCTPairs(paths[args.slabs :]))
    progress.log(f"{len(data.train)} training and {len(data.val)} validation slices "
                 f"({options.size}², dose {dose_words(options.dose)}) in {folder}")
    return data


def make_model(args):
    from meddiffusion.nets.clearnet import CLEARNet

    return start_at_identity(CLEARNet(**network_configs()[args.config]))


def make_loss(args, step):  # noqa: ARG001 - the loss does not change over the run
    from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
    from meddiffusion.tasks.ldct.data import make_loss_fn

    gain = _noise_gain(args)
    if args.source == LOWDOSE_FOLDER:
        from meddiffusion.tasks.ldct.finetune import make_self_supervised_loss

        if gain is not None:
            raise ValueError("--noise-gain trains towards amplified normal-dose targets; --source lowdose-folder "
                             "has none (use paired-folder or clean-folder, or leave --noise-gain out)")
        return make_self_supervised_loss(MeanPreservingDiffusion(args.timesteps), args.crop)
    return make_loss_fn(MeanPreservingDiffusion(args.timesteps), args.crop, weighting=args.loss_weighting, gain=gain)


def _noise_gain(args):
    """The ``--noise-gain`` of the run (``noisegain.NoiseGain``), or None."""
    if getattr(args, "noise_gain", None) is None:
        return None
    from meddiffusion.tasks.ldct.noisegain import NoiseGain

    return NoiseGain(args.noise_gain)


def make_val(args):
    """PSNR / SSIM of the sampled validation slices beside the validation loss; none without targets."""
    if args.source == LOWDOSE_FOLDER:
        return None
    from meddiffusion.tasks.ldct.data import make_val_fn

    return make_val_fn(architecture(args))


def from_card(args, entry):
    """The CLEAR-Net of an LDCT card with its weights, for ``--from-model``; its architecture becomes the run's."""
    from meddiffusion.tasks.ldct.model import build_model
    from meddiffusion.training.finetune import check_parent_schedule

    arch = entry.architecture
    if arch.get("network") != "CLEARNet":
        raise ValueError(f"--from-model '{entry.id}' uses the network {arch.get('network')!r}; meddiff train ldct "
                         "fine-tunes CLEARNet models only")
    check_parent_schedule(entry, args.timesteps, 10, "diffusion steps")
    if "trajectory_weights" in entry.metrics:
        raise ValueError(f"--from-model '{entry.id}' is a one-shot adaptation (ldct-adapt) whose step weights "
                         "fit its parent's network; fine-tune that parent instead")
    try:
        model = build_model(arch, entry.state_dict(), entry)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"--from-model '{entry.id}': its card's architecture does not build a CLEARNet matching "
                         f"its weights ({str(exc).splitlines()[0]})") from None
    args.start_architecture = arch
    return model.net.train()


def score(args, net, data, device):
    from meddiffusion.tasks.ldct.finetune import score as score_volumes

    return score_volumes(args, net, data, device)


def preview(args, net, data, device):
    from meddiffusion.tasks.ldct.finetune import preview as render

    return render(args, net, data, device)


def architecture(args) -> dict:
    """The card's architecture: the parent's for a fine-tune, else ``--config``'s network with the sampler options;
    ``--noise-gain`` sets (or replaces) the card's noise-level gain."""
    if getattr(args, "start_architecture", None):
        arch = dict(args.start_architecture)
    else:
        kwargs = network_configs()[args.config]
        arch = {"network": "CLEARNet", "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
                "diffusion": {"kind": "mean_preserving", "num_timesteps": args.timesteps},
                "sampler": {"steps": args.timesteps, "cpu_steps": args.cpu_steps or args.timesteps}}
    gain = _noise_gain(args)
    if gain is not None:
        arch["noise_gain"] = gain.to_card()
    return arch


def model_id(args) -> str:
    return f"ldct-corediff-{args.config}"


def card(args, outcome: Outcome) -> dict:
    """Architecture and sampler, normalisation, the data in words, and the dose (the module's selector shows it)."""
    options = data_options(args)
    if (args.source or PHANTOM) != PHANTOM:
        return _user_card(args, outcome)
    return {
        "architecture": architecture(args),
        "normalization": {"kind": "hu_offset_scale", "offset_hu": 1024, "scale_hu": 4096, "clip": [0.0, 1.0]},
        "training_data": (f"{len(outcome.data.train)} slices of {args.slabs} slabs ({options.procedural:.0%} "
                          f"procedural dead leaves in HU, the rest thorax phantom with its tissue texture scaled "
                          f"{options.texture_scale[0]:g}-{options.texture_scale[1]:g}× log-uniform; {options.size}², "
                          f"pixels {options.pixel_mm[0]:g}-{options.pixel_mm[1]:g} mm, full-dose noise "
                          f"{options.nd_noise_hu[0]:g}-{options.nd_noise_hu[1]:g} HU log-uniform, kernels "
                          f"{', '.join(options.kernels)}, electronic noise {options.electronic_noise[0]:g}-"
                          f"{options.electronic_noise[1]:g} counts), low dose {dose_words(options.dose)} by "
                          f"projection-domain noise insertion into the noisy full-dose slices; data seed {args.seed}"),
        "description": (f"CoreDiff CLEAR-Net ({args.config}) for {dose_words(options.dose).split(' ')[0]} dose CT, "
                        f"T={args.timesteps}"),
        "metrics": {"dose": list(options.dose) if options.dose[0] != options.dose[1] else options.dose[0]},
    }


def _user_card(args, outcome: Outcome) -> dict:
    """The card of a run on the user's data: which data, split and parent, in words (the numbers are in provenance)."""
    facts = outcome.data.info["provenance"]
    what = {PAIRED_FOLDER: "low-/normal-dose pairs", CLEAN_FOLDER: f"normal-dose volumes paired at dose {args.dose:g}",
            LOWDOSE_FOLDER: "low-dose volumes alone (self-supervised: neighbouring-slice pairs)"}[args.source]
    start = f"fine-tuned from {outcome.parent.id}" if outcome.parent is not None else f"trained ({args.config})"
    return {
        "architecture": architecture(args),
        "normalization": {"kind": "hu_offset_scale", "offset_hu": 1024, "scale_hu": 4096, "clip": [0.0, 1.0]},
        "training_data": (f"{len(outcome.data.train)} slices of the user's {what} from {facts['data']} "
                          f"({facts['volumes']} volumes); {_split_words(facts['split'])}; "
                          f"manifest sha256 {facts['manifest_sha256'][:12]}"),
        "description": f"CoreDiff CLEAR-Net {start} on the user's CT ({args.source})",
        "metrics": {"dose": args.dose} if args.source == CLEAN_FOLDER else {},
    }


def _split_words(split: dict) -> str:
    if split.get("by") == "slices":
        return f"validation on held-out slices of the only patient ({split['val'][0]}), {split['gap']} slices away"
    return f"validation patients {', '.join(split['val'])}"


RECIPE = Recipe(
    name="ldct",
    description="low-dose CT denoising: CoreDiff CLEAR-Net on thorax-phantom pairs",
    configs={"paper": "GPU", "medium": "CPU, long runs", "small": "CPU", "tiny": "tests"},
    options=(
        Option(("--dose",), {"type": float, "default": 0.25, "help": "low-dose fraction of the full dose "
                                                                     "(default: 0.25)"}),
        Option(("--dose-range",), {"type": float, "nargs": 2, "default": None, "metavar": ("MIN", "MAX"),
                                   "help": "phantom source: draw each slab's dose log-uniform in this range, for one "
                                           "model that serves several doses (default: --dose for all)"}),
        Option(("--procedural",), {"type": float, "default": None,
                                   "help": "share of the phantom source's slabs that are procedural dead-leaves "
                                           "images (sharp edges and texture at every scale; default: 0.5)"}),
        Option(("--kernels",), {"nargs": "+", "default": None, "choices": ("ram-lak", "shepp-logan", "cosine", "hann"),
                                "help": "reconstruction kernels (ramp windows, sharp to smooth) drawn per slab for "
                                        "the full-dose and the inserted low-dose noise (default: all four)"}),
        Option(("--electronic-noise",), {"type": float, "nargs": 2, "default": None, "metavar": ("MIN", "MAX"),
                                         "help": "detector electronic noise in counts, uniform per slab "
                                                 "(default: 5 30)"}),
        Option(("--slabs",), {"type": int, "default": 24, "help": "training slabs of adjacent phantom slices "
                                                                  "(default: 24)"}),
        Option(("--val-slabs",), {"type": int, "default": 2, "help": "validation slabs, other patients (default: 2)"}),
        Option(("--slices",), {"type": int, "default": 4, "help": "adjacent slices per slab (default: 4)"}),
        Option(("--size",), {"type": int, "default": 512, "help": "slab image size in pixels (default: 512)"}),
        Option(("--pixel-range",), {"type": float, "nargs": 2, "default": None, "metavar": ("MIN", "MAX"),
                                    "help": "pixel size range in mm (default: 0.25 1.0)"}),
        Option(("--noise-range",), {"type": float, "nargs": 2, "default": None, "metavar": ("MIN", "MAX"),
                                    "help": "full-dose noise in HU, drawn log-uniform per slab (default: 1 40)"}),
        Option(("--texture-range",), {"type": float, "nargs": 2, "default": None, "metavar": ("MIN", "MAX"),
                                      "help": "factor on the phantom's tissue texture, drawn log-uniform per slab, "
                                              "from nearly flat organs to coarse ones (default: 0.1 1.5)"}),
        Option(("--crop",), {"type": int, "default": 96, "help": "training crop size in pixels (default: 96)"}),
        Option(("--timesteps",), {"type": int, "default": 10, "help": "diffusion steps T (default: 10, as CoreDiff)"}),
        Option(("--loss-weighting",), {"choices": ("noise", "none"), "default": "noise",
                                       "help": "noise: each crop's error relative to its low-dose error, so quiet "
                                               "scans count as much as noisy ones; none: CoreDiff's plain mean "
                                               "(default: noise)"}),
        Option(("--noise-gain",), {"type": float, "default": None, "metavar": "HU",
                                   "help": "train on crops as the noise-level gain shows them to the network (a crop "
                                           "quieter than HU has its detail and target amplified to that noise, at "
                                           "most 3x) and put the same gain on the card (default: none; a "
                                           "--from-model card's own gain is kept)"}),
        Option(("--cpu-steps",), {"type": int, "default": None,
                                  "help": "sampling steps the model card sets as the CPU default (default: T)"}),
        Option(("--data",), {"metavar": "DIR|CSV", "help": "the user's volumes, with --source paired-folder (DIR with "
                                                           "input/ and target/ matched by name, or a CSV with columns "
                                                           "input,target[,patient]), clean-folder or lowdose-folder "
                                                           "(volumes in DIR, or a CSV with volume[,patient])"}),
        Option(("--val-patients",), {"type": float, "metavar": "N", "default": None,
                                     "help": "validation patients with --data: a count, or a fraction below 1 "
                                             "(default: 0.2, at least 1), drawn by --seed"}),
    ),
    sources=(PHANTOM, PAIRED_FOLDER, CLEAN_FOLDER, LOWDOSE_FOLDER),
    build_data=build_data, make_model=make_model, make_loss=make_loss, make_val=make_val, model_id=model_id, card=card,
    from_card=from_card, score=score, preview=preview,
    example="""  meddiff train ldct --config small --steps 3000 --out runs/ldct-small --register my-ldct
  meddiff train ldct --config paper --steps 150000 --batch-size 8 --device cuda --out runs/ldct-paper
  meddiff train ldct --config small --out runs/ldct-small --resume
  meddiff train ldct --source paired-folder --data my_scans/ --from-model ldct-corediff-small --steps 200 \
      --out runs/ldct-mine --register ldct-mine""",
)
