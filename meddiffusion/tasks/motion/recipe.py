"""``meddiff train motion``: ProDM's 2.5D UNet trained on motion-corrupted phantom cases, or fine-tuned on
the user's own CT (``--source paired-folder|clean-folder``, ``--data``, ``--from-model``; see ``userdata``).

The cases (``cases``) are cut into patches (``data``) and trained with the bridge or the
regression objective plus the calcium term (``losses``). This declaration imports nothing
heavy (``meddiff --help`` reads it); the functions load torch.
"""

from __future__ import annotations

from meddiffusion.tasks.registry import Option
from meddiffusion.training.recipe import (CLEAN_FOLDER, PAIRED_FOLDER, PHANTOM, Outcome, Recipe, Score,
                                          TrainingData)

__all__ = ["RECIPE", "default_model_id", "data_options", "calcium_weight", "calcium_warmup", "focus", "architecture",
           "SCORE_PATCHES"]

#: validation patches the registration gate's score samples (evenly spaced), enough to rank two models in seconds
SCORE_PATCHES = 64


def default_model_id(objective: str, calcium_weight: float, config: str) -> str:
    """``motion-prodm-<config>`` (lambda > 0), ``motion-prodm-nocal-<config>`` or ``motion-unet-l1-<config>``."""
    if objective == "regression":
        return f"motion-unet-l1-{config}" if calcium_weight == 0 else f"motion-unet-l1-cal-{config}"
    return f"motion-prodm-{config}" if calcium_weight > 0 else f"motion-prodm-nocal-{config}"


def data_options(args):
    """The data options of a ``meddiff train motion`` command line."""
    from meddiffusion.tasks.motion.cases import MotionDataOptions

    return MotionDataOptions(size=args.size, slices=args.slices)


def calcium_weight(args) -> float:
    """``--calcium-weight``, by default 20 for the bridge (ProDM) and 0 for the regression."""
    if args.calcium_weight is not None:
        return args.calcium_weight
    return 20.0 if args.objective == "bridge" else 0.0


def calcium_warmup(args) -> int:
    return args.calcium_warmup if args.calcium_warmup is not None else min(300, args.steps // 10)


def focus(args) -> float:
    """``--focus``; unset (0) stays out of the recorded command, as in the cards made before it existed."""
    return args.focus or 0.0


def _network(config: str) -> dict:
    from meddiffusion.nets.prodm import PRODM_CONFIGS

    return PRODM_CONFIGS[config]


def _channels(args) -> list:
    """The network's channels: the ``--from-model`` parent's, else ``--config``'s."""
    start = getattr(args, "start_architecture", None)
    return list(start["kwargs"]["channels"]) if start else list(_network(args.config)["channels"])


def build_data(args, progress) -> TrainingData:
    """Cases ``0 .. cases-1`` of dataset ``--seed`` train and the next ``val_cases`` validate, from ``--data``.

    With a user source the volumes of ``--data`` instead (``userdata.build_user_data``).
    """
    from pathlib import Path

    from meddiffusion.tasks.motion.data import MotionPatches, build_cache, read_case_info

    multiple = 2 ** (len(_channels(args)) - 1)
    if args.crop % multiple or args.crop < multiple:
        what = f"--from-model '{args.from_model}'" if getattr(args, "start_architecture", None) else f"'{args.config}'"
        raise ValueError(f"--crop must be a multiple of {multiple} for the {what} network, got {args.crop}")
    options = data_options(args)
    if args.crop > options.patch:
        raise ValueError(f"--crop {args.crop} is larger than the stored patches ({options.patch} pixels)")
    if (getattr(args, "source", None) or PHANTOM) != PHANTOM:
        from meddiffusion.tasks.motion.userdata import build_user_data

        return build_user_data(args, progress, options)
    if getattr(args, "val_patients", None) is not None:
        raise ValueError("--val-patients is read with --source paired-folder or clean-folder; the phantom source "
                         "validates on --val-cases cases")
    if args.cases < 1 or args.val_cases < 1:
        raise ValueError(f"--cases and --val-cases must be >= 1, got {args.cases} and {args.val_cases}")
    folder = Path(args.data) if args.data else Path(args.out) / "data"
    total = args.cases + args.val_cases
    paths = build_cache(folder, total, args.seed, options, progress.callback("simulate", total))
    train, val = MotionPatches(paths[: args.cases]), MotionPatches(paths[args.cases :])
    infos = [read_case_info(p) for p in paths[: args.cases]]
    progress.log(f"{len(train)} training patches ({int(train.calcium.sum())} on calcium) from "
                 f"{args.cases} cases and {len(val)} validation patches from {args.val_cases} cases in {folder}")
    return TrainingData(train, val, {"scores": [i["agatston"] for i in infos],
                                     "profiles": sorted({i["profile"] for i in infos}),
                                     "views": sorted({i["views"] for i in infos})})


def make_model(args):
    from meddiffusion.nets.prodm import ProDMUNet
    from meddiffusion.tasks.motion.model import CONTEXT_SLICES

    return ProDMUNet(CONTEXT_SLICES, **_network(args.config))


def _bridge(args):
    from meddiffusion.diffusion.bridge import BrownianBridge

    return BrownianBridge(args.timesteps, schedule="linear", max_var=1.0)


def make_loss(args, step):
    from meddiffusion.tasks.motion.losses import make_loss_fn

    return make_loss_fn(args.objective, _bridge(args), calcium_weight(args), args.crop, calcium_warmup(args),
                        step=step, focus=focus(args))


def make_val(args):
    from meddiffusion.tasks.motion.losses import make_val_fn

    return make_val_fn(args.objective, _bridge(args), calcium_weight(args), args.crop, args.seed, focus(args))


def preview(args, net, data, device):
    """The first calcium patch of the validation cases: corrupted, corrected by ``net`` as ``motion-correct``'s
    sampler does (its card's steps), and static; (1, P, P) HU volumes."""
    import copy

    import numpy as np
    import torch

    from meddiffusion.io import Volume
    from meddiffusion.tasks.motion.model import DEFAULT_STEPS, MotionModel, denormalize, normalize

    val = data.val
    index = int(np.flatnonzero(val.calcium)[0]) if val.calcium.any() else 0
    corrupted, static = (np.asarray(array[index], dtype=np.float32) for array in (val.corrupted, val.static))
    model = MotionModel(copy.deepcopy(net).eval(), _bridge(args), args.objective, min(DEFAULT_STEPS, args.timesteps))
    with torch.inference_mode():
        stack = normalize(torch.from_numpy(corrupted)[None].to(device))
        out = denormalize(model.predict(stack, generator=torch.Generator(device=device).manual_seed(0)))[0]
    middle = corrupted.shape[0] // 2
    return (Volume(corrupted[middle : middle + 1], modality="CT"), Volume(out.float().cpu().numpy(), modality="CT"),
            Volume(static, modality="CT"))


def from_card(args, entry):
    """The ProDM UNet of a motion card with its weights, for ``--from-model``; its architecture becomes the run's."""
    from meddiffusion.tasks.motion.model import build_model
    from meddiffusion.training.finetune import check_parent_schedule

    arch = entry.architecture
    if arch.get("network") != "ProDMUNet":
        raise ValueError(f"--from-model '{entry.id}' uses the network {arch.get('network')!r}; meddiff train motion "
                         "fine-tunes ProDMUNet models only")
    objective = arch.get("objective", "bridge")
    if objective != args.objective:
        raise ValueError(f"--from-model '{entry.id}' was trained with the {objective} objective, not --objective "
                         f"{args.objective}; a fine-tune keeps its parent's objective")
    check_parent_schedule(entry, args.timesteps, 1000, "bridge timesteps")
    try:
        model = build_model(arch, entry.state_dict(), entry)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"--from-model '{entry.id}': its card's architecture does not build a ProDMUNet matching "
                         f"its weights ({str(exc).splitlines()[0]})") from None
    args.start_architecture = arch
    return model.net.train()


def score(args, net, data, device) -> Score:
    """The network as ``motion-correct``'s sampler runs it (the card's steps, seeded noise) on validation patches.

    Up to ``SCORE_PATCHES`` patches, evenly spaced, their centre 64² crop (the inference window).
    ``calcium_hu_mae`` (the gate's metric, lower is better): the HU error of the corrected centre
    slice within a few pixels of calcium in the static or the corrupted slice, where the Agatston
    score is decided; ``hu_mae`` over the whole crop when the patches show no calcium. Same
    patches and noise for the model and its parent, so the two figures differ by the network alone.
    """
    import copy

    import numpy as np
    import torch

    from meddiffusion.tasks.motion.model import HU_HIGH, HU_LOW, PATCH_SIZE, MotionModel, denormalize, normalize
    from meddiffusion.training.calcium_loss import calcium_region

    arch, val = architecture(args), data.val
    picks = np.unique(np.linspace(0, len(val) - 1, min(SCORE_PATCHES, len(val))).round().astype(int))
    size = val.static.shape[-1]
    crop = min(PATCH_SIZE, size)
    lo = (size - crop) // 2
    window = (slice(None), slice(None), slice(lo, lo + crop), slice(lo, lo + crop))
    stacks = torch.from_numpy(val.corrupted[picks][window].astype(np.float32))
    static = torch.from_numpy(val.static[picks][window].astype(np.float32))
    model = MotionModel(copy.deepcopy(net).to(device).eval(), _bridge(args), arch.get("objective", args.objective),
                        int(arch.get("sampler", {}).get("steps", min(10, args.timesteps))))
    generator = torch.Generator(device=device).manual_seed(args.seed)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(picks), 16):
            batch = normalize(stacks[start : start + 16].to(device))
            outputs.append(denormalize(model.predict(batch, generator=generator)).float().cpu())
    corrected, target = torch.cat(outputs), static.clamp(HU_LOW, HU_HIGH)
    centre = stacks[:, 1:2].clamp(HU_LOW, HU_HIGH)
    error, region = (corrected - target).abs(), calcium_region(normalize(static), normalize(stacks[:, 1:2])) > 0
    values = {"hu_mae": float(error.mean()), "input_hu_mae": float((centre - target).abs().mean()),
              "patches": float(len(picks))}
    if region.any():
        values |= {"calcium_hu_mae": float(error[region].mean()),
                   "input_calcium_hu_mae": float((centre - target).abs()[region].mean())}
        return Score(values, "calcium_hu_mae", higher_is_better=False)
    return Score(values, "hu_mae", higher_is_better=False)


def model_id(args) -> str:
    return default_model_id(args.objective, calcium_weight(args), args.config)


def architecture(args) -> dict:
    """The card's architecture: the ``--from-model`` parent's, else ``--config``'s network with the run's terms."""
    from meddiffusion.tasks.motion.losses import FOCUS_CHANGE_HU, FOCUS_MARGIN_PX
    from meddiffusion.tasks.motion.model import CONTEXT_SLICES, DEFAULT_STEPS, PATCH_SIZE
    from meddiffusion.training.calcium_loss import REGION_MARGIN_PX, TAU_HU

    if getattr(args, "start_architecture", None):
        return args.start_architecture
    kwargs, lam, weight = _network(args.config), calcium_weight(args), focus(args)
    return {
        "network": "ProDMUNet",
        "kwargs": {"context_slices": CONTEXT_SLICES, "channels": list(kwargs["channels"]),
                   "num_res_blocks": kwargs["num_res_blocks"], "norm_num_groups": kwargs["norm_num_groups"]},
        "objective": args.objective,
        "diffusion": {"kind": "brownian_bridge", "num_timesteps": args.timesteps, "schedule": "linear",
                      "max_var": 1.0},
        "sampler": {"steps": min(DEFAULT_STEPS, args.timesteps), "eta": 0.0},
        "patch_size": PATCH_SIZE,
        "calcium_loss": {"lambda": float(lam), "tau_hu": round(TAU_HU, 4), "warmup_steps": calcium_warmup(args),
                         "region_margin_px": REGION_MARGIN_PX},
        "focus": {"weight": float(weight), "changed_hu": FOCUS_CHANGE_HU, "margin_px": FOCUS_MARGIN_PX},
    }


def _normalization() -> dict:
    from meddiffusion.tasks.motion.model import HU_HIGH, HU_LOW

    return {"kind": "hu_window", "min_hu": int(HU_LOW), "max_hu": int(HU_HIGH), "range": [-1, 1]}


def _val_metrics(outcome: Outcome) -> dict:
    return {f"val_{name}_{when}": values.get(name)
            for when, values in (("start", outcome.val_start), ("end", outcome.val_end))
            for name in ("l1", "calcium", "hu_mae")}


def card(args, outcome: Outcome) -> dict:
    """Network, objective, bridge, sampler, calcium and focus terms; the cases in words; per-term metrics."""
    if (getattr(args, "source", None) or PHANTOM) != PHANTOM:
        return _user_card(args, outcome)
    options, lam, weight = data_options(args), calcium_weight(args), focus(args)
    scores, profiles, views = (outcome.data.info[key] for key in ("scores", "profiles", "views"))
    metrics = {**_val_metrics(outcome), "cases": args.cases, "val_cases": args.val_cases,
               "patches": len(outcome.data.train), "profiles": len(profiles), "views": views,
               "agatston_range": [round(min(scores), 1), round(max(scores), 1)]}
    training_data = (
        f"{len(outcome.data.train)} patches ({options.patch}², random {args.crop}² crops) from {args.cases} "
        f"thorax-phantom gated CTs ({options.size}²×{options.slices}, pixels {options.pixel_mm[0]:g}-"
        f"{options.pixel_mm[1]:g} mm, {options.slice_mm:g} mm slices, full-dose noise at I0 "
        f"{options.i0[0]:g}-{options.i0[1]:g}) corrupted by ProDM's motion simulation: "
        f"{len(profiles)} of 21 profiles, views {', '.join(map(str, views))}; Agatston of the "
        f"static CTs {min(scores):.0f}-{max(scores):.0f} ({sum(s == 0 for s in scores)} zero, "
        f"{sum(s > 400 for s in scores)} above 400); data seed {args.seed}")
    description = (f"ProDM 2.5D UNet ({args.config}), {args.objective} objective"
                   + (f", T={args.timesteps}" if args.objective == "bridge" else ", one call at t=T-1")
                   + f", calcium loss weight {lam:g}" + (f", L1 focus weight {weight:g}" if weight > 0 else ""))
    return {"architecture": architecture(args), "training_data": training_data, "description": description,
            "normalization": _normalization(), "metrics": metrics}


def _user_card(args, outcome: Outcome) -> dict:
    """The card of a run on the user's data: which data, split and parent, in words (the numbers are in provenance)."""
    facts, patients = outcome.data.info["provenance"], outcome.data.info["patients"]
    what = {PAIRED_FOLDER: "non-gated CTs paired with gated CTs of the same patients",
            CLEAN_FOLDER: (f"gated CTs corrupted by ProDM's motion simulation (profile, view count and motion drawn "
                           f"from data seed {args.seed})")}[args.source]
    start = f"fine-tuned from {outcome.parent.id}" if outcome.parent is not None else f"trained ({args.config})"
    options, train = data_options(args), outcome.data.train
    searched = sorted({info["searched"] for info in patients.values()})
    training_data = (f"{len(train)} patches ({options.patch}², random {args.crop}² crops; {int(train.calcium.sum())} "
                     f"on calcium found by the region finder in the {' or '.join(searched)}) of the user's {what} "
                     f"from {facts['data']} ({facts['volumes']} volumes); validation patients "
                     f"{', '.join(facts['split']['val'])}; manifest sha256 {facts['manifest_sha256'][:12]}")
    metrics = {**_val_metrics(outcome), "patches": len(train), "patients": len(facts["split"]["train"]),
               "val_patients": len(facts["split"]["val"])}
    if args.source == CLEAN_FOLDER:
        metrics["profiles"] = sorted({info["profile"] for info in patients.values()})
        metrics["views"] = sorted({info["views"] for info in patients.values()})
    return {"architecture": architecture(args), "training_data": training_data, "normalization": _normalization(),
            "description": f"ProDM 2.5D UNet {start} on the user's CT ({args.source}), {args.objective} objective",
            "metrics": metrics}


RECIPE = Recipe(
    name="motion",
    description="coronary calcium motion correction: ProDM's 2.5D UNet on motion-corrupted phantom CTs",
    configs={"large": "GPU", "gpu": "GPU, weights within 25 MB", "small": "CPU", "tiny": "tests"},
    options=(
        Option(("--objective",), {"choices": ("bridge", "regression"), "default": "bridge",
                                  "help": "bridge: ProDM's Brownian bridge (default); regression: the same network "
                                          "as a plain L1 regressor, one call at t=T-1"}),
        Option(("--calcium-weight",), {"type": float, "default": None, "metavar": "LAMBDA",
                                       "help": "weight of the calcium consistency loss (default: 20 for bridge, "
                                               "0 for regression)"}),
        Option(("--calcium-warmup",), {"type": int, "default": None, "metavar": "STEPS",
                                       "help": "hold the calcium weight at 0 for STEPS steps, then ramp it up over "
                                               "as many (default: min(300, steps/10))"}),
        Option(("--focus",), {"type": float, "default": None, "metavar": "WEIGHT",
                              "help": "pixels the motion changed (and calcium) count 1+WEIGHT times in the L1 term "
                                      "(default: 0, a plain mean)"}),
        Option(("--cases",), {"type": int, "default": 160, "help": "training cases (phantom patients; default: 160)"}),
        Option(("--val-cases",), {"type": int, "default": 40,
                                  "help": "validation cases, the next ones: enough patients to choose lambda, the "
                                          "focus weight and the checkpoint on (default: 40)"}),
        Option(("--data",), {"metavar": "DIR|CSV",
                             "help": "phantom: the case cache to use and fill, shareable between runs with the same "
                                     "--seed and data options (default: <out>/data); --source paired-folder: DIR with "
                                     "input/ (non-gated CT) and target/ (gated CT) matched by name, or a CSV with "
                                     "columns input,target[,patient]; clean-folder: gated CTs in DIR, or a CSV with "
                                     "volume[,patient]"}),
        Option(("--val-patients",), {"type": float, "metavar": "N", "default": None,
                                     "help": "validation patients with a user --source: a count, or a fraction "
                                             "below 1 (default: 0.2, at least 1), drawn by --seed"}),
        Option(("--size",), {"type": int, "default": 192, "help": "case image size in pixels (default: 192)"}),
        Option(("--slices",), {"type": int, "default": 40, "help": "3 mm slices per case (default: 40)"}),
        Option(("--timesteps",), {"type": int, "default": 1000, "help": "bridge timesteps T (default: 1000)"}),
        Option(("--crop",), {"type": int, "default": 64, "help": "training crop size in pixels (default: 64)"}),
    ),
    defaults={"steps": 6000, "batch_size": 8, "lr": 5e-4},
    sources=(PHANTOM, PAIRED_FOLDER, CLEAN_FOLDER),
    ema_cap=0.999,  # the bridge's 1000 timesteps are learnt slowly; the shipped motion models averaged this long
    build_data=build_data, make_model=make_model, make_loss=make_loss, make_val=make_val, model_id=model_id,
    card=card, preview=preview, from_card=from_card, score=score,
    example="""  meddiff train motion --config small --data runs/motion-data --out runs/motion-prodm-small
  meddiff train motion --config small --calcium-weight 0 --data runs/motion-data --out runs/motion-prodm-nocal-small
  meddiff train motion --config small --objective regression --data runs/motion-data --out runs/motion-unet-l1-small
  meddiff train motion --config small --steps 5000 --focus 20 --calcium-weight 0 --data runs/motion-data --out runs/motion-nocal-f
  meddiff train motion --source paired-folder --data my_scans/ --from-model motion-prodm-small --steps 300 \
      --out runs/motion-mine --register motion-mine""",
)
