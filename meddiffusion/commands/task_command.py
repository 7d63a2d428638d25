"""The one command path of every task: read → check → infer → write all outputs staged → result.

``meddiff <task command>`` (``ldct-denoise``, ``motion-correct``, …) is built from the task's
:class:`~meddiffusion.tasks.registry.TaskSpec`: its inputs become the positional argument and
flags, its outputs the output flags, its options and the shared ``--model``/``--steps``/device
options follow. Running it:

1. checks every path before any work (outputs never equal an input or each other, suffixes
   match the output kind, a DICOM output folder is new or empty);
2. reads each input volume and applies the task's input rule (``meddiffusion.checks``);
3. loads the model (the cards' default for the device unless ``--model``) and its step count;
4. calls the task's ``run(job)`` (``meddiffusion.tasks.job``), which reports progress and honours
   cancellation;
5. writes every output under a hidden name and renames them together at the end, so a failure or
   Cancel leaves no output and files the user had stay as they were.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meddiffusion.tasks.registry import Port, TaskSpec, resolve

__all__ = ["add_task_parser", "run", "check_paths", "write_outputs"]

def add_task_parser(subparsers, spec: TaskSpec) -> argparse.ArgumentParser:
    """The subcommand ``spec.command`` with the task's inputs, outputs and options."""
    from meddiffusion.checks import rule_for
    from meddiffusion.commands.options import add_device_options

    p = subparsers.add_parser(spec.command, help=spec.summary, description=spec.description, epilog=spec.example,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    for port in spec.inputs + spec.outputs:
        if port.flags:
            p.add_argument(*port.flags, dest=port.dest, required=port.required, help=port.help)
        else:
            p.add_argument(port.name, help=port.help)
    p.add_argument("--model", help=f"{spec.name} model id from the catalogue (default: the one the model cards "
                                   "rank first for the device; see meddiff info)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model card's)")
    for option in spec.options:
        p.add_argument(*option.flags, **option.kwargs)
    rules = {rule_for(port.rule or spec.rule) for port in spec.inputs}
    for flag in sorted({rule.skip_flag for rule in rules if rule.skip_flag}):
        expected = " or ".join(rule.expected for rule in rules if rule.skip_flag == flag)
        p.add_argument(flag, action="store_true", help=f"skip the check that the input looks like {expected}")
    add_device_options(p)
    p.set_defaults(_task=spec)
    return p


def run(args: argparse.Namespace, progress) -> dict:
    """Run ``args._task`` end to end (see the module docstring); returns the result event's payload."""
    from meddiffusion.checks import rule_for
    from meddiffusion.commands.options import setup_device
    from meddiffusion.io import read_volume
    from meddiffusion.tasks.job import Job

    spec: TaskSpec = args._task
    inputs = {port.name: getattr(args, port.dest) for port in spec.inputs if getattr(args, port.dest, None)}
    outputs = {port.name: getattr(args, port.dest) for port in spec.outputs if getattr(args, port.dest, None)}
    check_paths(spec, inputs, outputs)
    if getattr(args, "batch_size", 1) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if spec.check_arguments:
        resolve(spec.check_arguments)(args, frozenset(outputs))
    device = setup_device(args)
    ports = {port.name: port for port in spec.inputs}
    warnings: list[str] = []
    with progress.stage("read", total=len(inputs) + 1) as step:
        volumes = {}
        for name, path in inputs.items():
            rule = rule_for(ports[name].rule or spec.rule)
            volumes[name] = read_volume(path)
            rule.check(volumes[name].array, name=Path(path).name, modality=volumes[name].modality,
                       skip=bool(rule.skip_flag) and getattr(args, rule.skip_flag[2:].replace("-", "_")))
            if spec.limits is not None:
                warnings += spec.limits.check(volumes[name].shape, volumes[name].spacing, name=Path(path).name)
            step()
        for warning in warnings:
            progress.log(f"warning: {warning}")
        model = resolve(spec.load_model)(args.model, device)
        steps = model.default_steps(device) if args.steps is None else args.steps
        step()
    job = Job(volumes, model, steps, device, args, progress, frozenset(outputs))
    values, info = resolve(spec.infer)(job)
    missing = sorted(set(outputs) - set(values))
    if missing:
        raise RuntimeError(f"task '{spec.name}' produced no value for the output(s) {missing}")
    with progress.stage("write", total=len(outputs)) as step:
        write_outputs(spec, {name: values[name] for name in outputs}, outputs, step)
    if warnings and "summary" in info:
        info["summary"] += "".join(f"\nwarning: {w}" for w in warnings)
    return {**{port.name: str(Path(outputs[port.name])) if port.name in outputs else None
               for port in spec.outputs}, **info, "warnings": warnings}


def check_paths(spec: TaskSpec, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, or have the wrong kind."""
    from meddiffusion.commands.paths import check_distinct, check_output

    ports = {port.name: port for port in spec.outputs}
    for name, path in outputs.items():
        check_output(_label(spec, name), path, ports[name].kind)
    check_distinct({_label(spec, name): path for name, path in inputs.items()},
                   {_label(spec, name): path for name, path in outputs.items()})


def _label(spec: TaskSpec, name: str) -> str:
    port = next(p for p in spec.inputs + spec.outputs if p.name == name)
    return "/".join(port.flags) if port.flags else name


def write_outputs(spec: TaskSpec, values: dict, paths: dict[str, str], step=lambda *a: None) -> None:
    """Write each value to its path under a hidden name, then rename all of them into place."""
    from meddiffusion.files import StagedOutputs

    ports = {port.name: port for port in spec.outputs}
    with StagedOutputs() as staged:
        for name, value in values.items():
            _write(ports[name], value, staged.path(paths[name]))
            step()


def _write(port: Port, value, path: Path) -> None:
    from meddiffusion.figures import write_png
    from meddiffusion.io import Volume, write_segmentation, write_volume
    from meddiffusion.io.sequences import write_sequence
    from meddiffusion.tasks.job import FolderOutput, Segmentation, Sequence, Table, VolumeOutput

    if port.kind == "volume":
        output = value if isinstance(value, VolumeOutput) else VolumeOutput(value)
        if not isinstance(output.volume, Volume):
            raise TypeError(f"output '{port.name}' must be a Volume, got {type(output.volume).__name__}")
        write_volume(output.volume, path, dtype=output.dtype)
    elif port.kind == "segmentation":
        if not isinstance(value, Segmentation):
            raise TypeError(f"output '{port.name}' must be a Segmentation, got {type(value).__name__}")
        write_segmentation(path, value.layers, value.segments, value.reference)
    elif port.kind == "table":
        if not isinstance(value, Table):
            raise TypeError(f"output '{port.name}' must be a Table, got {type(value).__name__}")
        value.write(path)
    elif port.kind == "picture":
        write_png(path, value)
    elif port.kind == "sequence" and isinstance(value, FolderOutput):
        path.mkdir(parents=True, exist_ok=True)
        value.write(path)
    elif port.kind == "sequence":
        if not isinstance(value, Sequence):
            raise TypeError(f"output '{port.name}' must be a Sequence, got {type(value).__name__}")
        frames = value.frames if value.dtype is None else [f.with_array(f.array.astype(value.dtype)) for f in value.frames]
        write_sequence(frames, path, index_name=value.index_name, index_unit=value.index_unit,
                       index_values=value.index_values)
    else:
        raise ValueError(f"output '{port.name}': writing {port.kind} outputs is not supported")
