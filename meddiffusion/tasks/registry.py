"""The task registry: every task declared once, in its own package, listed here by one line.

A task package ``meddiffusion/tasks/<name>/`` holds, in its ``__init__.py``, a :class:`TaskSpec`
named ``SPEC``: the inference command with its inputs, outputs and options, the input rule,
and where its code lives (model loading, inference, training recipe, bench, extra commands)
as ``"module:attribute"`` strings. The declaration imports nothing heavy, so ``meddiff
--help``, ``meddiff info --json`` and Slicer read it without loading torch; the code it
points to loads only when a command runs.

``meddiff --help``, ``meddiff <command>``, ``meddiff train``, ``meddiff bench`` and
``meddiff info`` iterate over :func:`all_tasks`; nothing else lists tasks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Port", "Option", "TaskSpec", "TASK_PACKAGES", "all_tasks", "get_task", "register", "unregister",
           "resolve", "PORT_KINDS"]

#: one line per task: the package whose ``SPEC`` declares it
TASK_PACKAGES = (
    "meddiffusion.tasks.ldct",
    "meddiffusion.tasks.motion",
    "meddiffusion.tasks.spect",
    "meddiffusion.tasks.petmr",
    "meddiffusion.tasks.cardiac4d",
)

#: what an input or output can be, and the file suffixes each kind is written with
PORT_KINDS = {
    "volume": (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", "<DICOM folder>"),
    "segmentation": (".seg.nrrd",),
    "table": (".csv",),
    "sequence": (".seq.nrrd",),
    "picture": (".png",),
}


@dataclass(frozen=True)
class Port:
    """One input or output of a task's command.

    ``flags`` are its command-line flags (an input with none is positional), ``name`` its key
    in the result event and in Slicer, ``suffix`` the name a Slicer node gets after the input's
    ("<input> denoised"), ``file`` its file name in Slicer's run folder.
    """

    name: str
    kind: str
    help: str
    flags: tuple[str, ...] = ()
    required: bool = False
    suffix: str = ""
    file: str = ""
    rule: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PORT_KINDS:
            raise ValueError(f"port '{self.name}': kind must be one of {', '.join(PORT_KINDS)}, got {self.kind!r}")

    @property
    def dest(self) -> str:
        """The argparse attribute holding this port's path."""
        flag = next((f for f in self.flags if f.startswith("--")), None)
        return flag[2:].replace("-", "_") if flag else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "flags": list(self.flags), "required": self.required,
                "suffix": self.suffix, "file": self.file, "help": self.help, "rule": self.rule}


@dataclass(frozen=True)
class Option:
    """A task option: argparse flags and keyword arguments (``type`` as a builtin)."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        info = {key: (value.__name__ if isinstance(value, type) else value) for key, value in self.kwargs.items()}
        return {"flags": list(self.flags), **info}


@dataclass(frozen=True)
class TaskSpec:
    """Everything the house needs to know about one task.

    ``infer`` names ``run(job) -> (outputs, info)`` (see ``commands.task_command``), ``load_model``
    the catalogue loader, ``recipe`` the training module (``meddiff train <name>``), ``bench``
    the bench module (``meddiff bench <name>``), ``simulate_pair`` the physics that turns clean
    data into training pairs, ``commands`` further ``meddiff`` subcommands of the task (modules
    with ``add_parser`` and ``run``). ``check_arguments`` (optional) checks options before any
    file is read. ``module`` is the Slicer module that runs the task. ``limits`` (a
    ``checks.Limits``) says where the task's result means something.
    """

    name: str
    title: str
    command: str
    summary: str
    description: str
    rule: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    infer: str
    load_model: str
    options: tuple[Option, ...] = ()
    example: str = ""
    check_arguments: str = ""
    recipe: str = ""
    bench: str = ""
    bench_summary: str = ""
    simulate_pair: str = ""
    commands: tuple[str, ...] = ()
    module: str = ""
    limits: Any = None

    def __post_init__(self) -> None:
        names = [port.name for port in self.inputs + self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"task '{self.name}': input and output names must be unique, got {names}")
        if not self.inputs or not self.outputs:
            raise ValueError(f"task '{self.name}' must declare at least one input and one output")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``meddiff info --json`` prints (what Slicer reads)."""
        return {"name": self.name, "title": self.title, "command": self.command, "summary": self.summary,
                "rule": self.rule, "inputs": [p.to_dict() for p in self.inputs],
                "outputs": [p.to_dict() for p in self.outputs], "options": [o.to_dict() for o in self.options],
                "commands": [self.command, *(c.rsplit(".", 1)[-1].replace("_", "-") for c in self.commands)],
                "training": bool(self.recipe), "bench": bool(self.bench), "module": self.module}


_RUNTIME: dict[str, TaskSpec] = {}


def all_tasks() -> list[TaskSpec]:
    """The registered tasks: the packages of :data:`TASK_PACKAGES`, then any registered at run time."""
    specs = [importlib.import_module(package).SPEC for package in TASK_PACKAGES]
    return specs + [spec for name, spec in _RUNTIME.items() if name not in {s.name for s in specs}]


def get_task(name: str) -> TaskSpec:
    for spec in all_tasks():
        if spec.name == name:
            return spec
    raise ValueError(f"unknown task '{name}'; expected one of {', '.join(s.name for s in all_tasks())}")


def register(spec: TaskSpec) -> None:
    """Add a task at run time (a plug-in, or a test's toy task); its name must be new."""
    if any(s.name == spec.name for s in all_tasks()):
        raise ValueError(f"a task named '{spec.name}' is already registered")
    _RUNTIME[spec.name] = spec


def unregister(name: str) -> None:
    _RUNTIME.pop(name, None)


def resolve(target: str) -> Any:
    """The object a ``"package.module:attribute"`` string names (imports the module)."""
    module, _, attribute = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded
