"""``meddiff ldct-adapt``: adapt a low-dose CT model to a new dose from ONE slice (CoreDiff one-shot learning).

The network stays frozen; what is learned is a softmax blend of the sampler's intermediate
images, which sets how much noise and detail the output keeps at the new dose. It needs one
low-dose slice and a normal-dose target: the same slice of a normal-dose scan (paired), or a
neighbouring normal-dose slice (``--unpaired``: two slices away, as in CoreDiff; or pick it
with ``--target-slice``). The adapted model is written to the user model folder under
``--id`` and used with ``meddiff ldct-denoise --model ID``.
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff ldct-adapt tenth_dose.nrrd --target full_dose.nrrd --slice 40 --id ldct-10pct --dose 0.1
  meddiff ldct-adapt tenth_dose.nrrd --target full_dose.nrrd --unpaired --id ldct-10pct-unpaired
  meddiff ldct-denoise other_tenth_dose.nrrd -o out.nrrd --model ldct-10pct"""


def add_parser(subparsers) -> None:
    from meddiffusion.commands.options import add_device_options

    p = subparsers.add_parser("ldct-adapt", help="one-shot adaptation of an LDCT model to a new dose (new model id)",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("low_dose", help="low-dose CT in HU at the new dose (volume file or DICOM folder)")
    p.add_argument("--target", required=True, help="normal-dose CT in HU with the same in-plane grid")
    p.add_argument("--id", required=True, help="id of the adapted model (letters, digits, '.', '_', '-')")
    p.add_argument("--base", help="model to adapt (default: the installed default for the device)")
    p.add_argument("--slice", type=int, help="index of the low-dose slice to learn from (default: middle)")
    p.add_argument("--unpaired", action="store_true",
                   help="the target is a neighbouring slice (slice + 2), not the same one")
    p.add_argument("--target-slice", type=int, help="index of the normal-dose target slice (overrides the default)")
    p.add_argument("--dose", type=float, help="the new dose fraction, recorded in the model card")
    p.add_argument("--steps", type=int, help="sampling steps of the adapted model (default: the base model's)")
    p.add_argument("--iterations", type=int, default=300, help="optimisation steps (default: 300)")
    p.add_argument("--overwrite", action="store_true", help="replace a user model with the same id")
    add_device_options(p)


def _target_index(args: argparse.Namespace, index: int, count: int) -> int:
    if args.target_slice is not None:
        target = args.target_slice
    elif args.unpaired:
        target = index + 2 if index + 2 < count else index - 2
    else:
        target = index
    if not 0 <= target < count:
        raise ValueError(f"target slice {target} is outside the normal-dose volume's 0..{count - 1}")
    if args.unpaired and target == index:
        raise ValueError("--unpaired needs a target slice different from the low-dose slice")
    return target


def run(args: argparse.Namespace, progress) -> dict:
    import torch

    from meddiffusion.catalog import ModelEntry, register_user_model
    from meddiffusion.commands.options import check_hu
    from meddiffusion.commands.options import setup_device
    from meddiffusion.io import read_volume
    from meddiffusion.tasks.ldct.infer import context_indices
    from meddiffusion.tasks.ldct.model import TASK, load_model
    from meddiffusion.tasks.ldct.adapt import adapt

    if args.dose is not None and not 0 < args.dose <= 1:
        raise ValueError(f"--dose must be a fraction in (0, 1], got {args.dose}")
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    device = setup_device(args)
    with progress.stage("read", total=1) as step:
        low, target = read_volume(args.low_dose), read_volume(args.target)
        check_hu(low)
        check_hu(target)
        if low.shape[1:] != target.shape[1:]:
            raise ValueError(f"the normal-dose target has slices of {target.shape[1:]} but the low-dose CT "
                             f"{low.shape[1:]}; both must share the in-plane grid")
        if not args.unpaired and args.target_slice is None and low.shape != target.shape:
            raise ValueError(f"paired adaptation needs the normal-dose scan on the low-dose grid, got {target.shape} "
                             f"and {low.shape}; pass --unpaired or --target-slice")
        index = low.shape[0] // 2 if args.slice is None else args.slice
        if not 0 <= index < low.shape[0]:
            raise ValueError(f"--slice {index} is outside the low-dose volume's 0..{low.shape[0] - 1}")
        target_index = _target_index(args, index, target.shape[0])
        model = load_model(args.base, device)
        if model.trajectory_weights is not None:
            raise ValueError(f"model '{model.id}' is itself adapted; adapt its base model instead")
        step()
    steps = args.steps or model.default_steps(device)
    paired = not args.unpaired and args.target_slice in (None, index)
    result = adapt(model, low.array[list(context_indices(low.shape[0], index))], target.array[target_index],
                   paired=paired, steps=steps, iterations=args.iterations,
                   callback=progress.callback("adapt", args.iterations))
    base = model.entry
    architecture = {**base.architecture, "sampler": {"steps": steps, "cpu_steps": steps},
                    "adapted_from": base.id}
    state = {**model.net.state_dict(), "trajectory_weights": result.weights.to(torch.float32)}
    entry = ModelEntry(
        id=args.id, task=TASK, version="1.0", architecture=architecture, normalization=dict(base.normalization),
        training_data=(f"base '{base.id}' ({base.training_data}); one-shot {'paired' if paired else 'unpaired'} "
                       f"adaptation on slice {index} of {args.low_dose} with target slice {target_index} "
                       f"of {args.target}"),
        training_command=(f"meddiff ldct-adapt {args.low_dose} --target {args.target} --id {args.id} --base {base.id} "
                          f"--slice {index} --target-slice {target_index} --steps {steps}"
                          + (" --unpaired" if args.unpaired else "") + (f" --dose {args.dose:g}" if args.dose else "")),
        metrics={"dose": args.dose, "paired": paired, "loss_start": result.loss_start, "loss_end": result.loss_end,
                 "trajectory_weights": [round(float(w), 5) for w in result.weights]},
        license=base.license, description=f"{base.description}, adapted one-shot to dose {args.dose or 'unspecified'}")
    with progress.stage("register", total=1) as step:
        step()  # the last moment Cancel counts: once registered, the model stays and the result says so
        card = register_user_model(entry, state, overwrite=args.overwrite)
    return {"model_id": card.id, "weights": str(card.weights_path), "paired": paired, "slice": index,
            "target_slice": target_index, "loss_start": result.loss_start, "loss_end": result.loss_end,
            "trajectory_weights": entry.metrics["trajectory_weights"],
            "summary": (f"adapted '{base.id}' -> '{card.id}' ({'paired' if paired else 'unpaired'}, slice {index}); "
                        f"loss {result.loss_start:.4g} -> {result.loss_end:.4g}; use --model {card.id}")}
