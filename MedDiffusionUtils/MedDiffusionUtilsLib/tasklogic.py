"""The logic every task module builds on: parameters in, backend child process, new nodes out.

A task is declared once in the backend registry (``meddiffusion.tasks.registry``): its
command, its input and output ports (kind, flags, file, node name suffix) and its input rule.
:class:`TaskLogic` reads that declaration, so a module's logic names its task and writes only
what is special to it::

    class DenoiseLogic(TaskLogic):
        task = "ldct"
        title = "LDCT Denoise"
        Parameters = DenoiseParameters
        select_input = "the low-dose CT volume to denoise"

    nodes = DenoiseLogic().run(parameters)     # {"output": <"CT denoised" volume>}

Before anything starts the input is checked with the task's rule (the backend's own check
and message).  Each input is written to the run's folder with its geometry; each output
port the module imports (volume, segmentation, table, sequence) gets its flag and a file in
that folder; after a clean run each file becomes a new node "<input> <suffix>" under the
input's study, returned by port name; the sequences of a run play together in one browser.
The input node is never modified, and a cancelled or failed run adds no node.  No Qt.

A *generative* task (every input optional, e.g. a synthesis from a request) runs without an
input: Apply needs none, the optional input is checked by its rule only when it is given, and
the outputs, on grids of their own, are named from the request: "<Suffix> <request>" (see
:meth:`TaskLogic.request_name`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import slicer

from meddiffusion.checks import rule_for
from meddiffusion.tasks import registry

from . import inputs, nodes, outputs
from .parameters import ParameterSet, Snapshot
from .processes import backend_command, backend_environment
from .runner import RunState, TaskCancelled, TaskFailed, TaskProcess

__all__ = ["TaskLogic", "IMPORTED_KINDS", "ATTRIBUTE_PREFIX", "INPUT_REFERENCE_ROLE"]

#: output kinds that become nodes (a picture is for the command line)
IMPORTED_KINDS = ("volume", "segmentation", "table", "sequence")
#: attributes recording how an output was made (read back by scripts and reports)
ATTRIBUTE_PREFIX = "MedDiffusion."
#: node reference from every output to the volume it was computed from
INPUT_REFERENCE_ROLE = "meddiffusionInput"


class TaskLogic:
    """``meddiff <command>`` around MRML for the registered task ``task``.

    ``backend`` replaces ``[python, -m, meddiffusion, <command>]`` (tests run a fake child
    that speaks the same protocol); ``environment`` adds variables for the child (e.g.
    ``CUDA_VISIBLE_DEVICES=-1``).  A logic without ``task`` writes its own arguments and
    imports its own results (:meth:`write_inputs`, :meth:`import_results`).
    """

    #: the task's name in the backend registry
    task: str = ""
    #: the module's title, for messages ("LDCT Denoise")
    title: str = ""
    #: the module's parameters; ``inputVolume`` holds the input, ``outputVolume`` (if declared)
    #: a volume the user chose for the "output" port
    Parameters: type[ParameterSet] = ParameterSet
    #: what the "no input" message asks the user to select
    select_input: str = "the input volume"

    def __init__(self, scene=None, *, backend: Sequence[str] | None = None,
                 environment: dict[str, str] | None = None):
        if scene is None:
            scene = slicer.mrmlScene
        self.scene = scene
        self.backend = list(backend) if backend else None
        self.environment = dict(environment or {})

    # -- the declaration -------------------------------------------------------------------
    @property
    def spec(self) -> registry.TaskSpec:
        return registry.get_task(self.task)

    def parameters(self) -> ParameterSet:
        """The module's parameter node in this logic's scene."""
        return self.Parameters.for_module(self.scene, self.spec.module)

    def imported_outputs(self) -> list[registry.Port]:
        """The output ports that become nodes, in the spec's order."""
        return [port for port in self.spec.outputs if port.kind in IMPORTED_KINDS]

    def suffix(self, port: registry.Port) -> str:
        return port.suffix or port.name

    @property
    def generative(self) -> bool:
        """Whether the task makes its outputs from a request alone: none of its inputs is
        required (each has a flag and is optional), e.g. a synthesis task."""
        return all(port.flags and not port.required for port in self.spec.inputs)

    def input_volume(self, run: Snapshot):
        """The volume the run gives the task's input port: ``inputVolume`` (None when a
        generative task runs without its optional input)."""
        return getattr(run, "inputVolume", None)

    def request_name(self, run: Snapshot) -> str:
        """What names a generative run's outputs ("DCM EDV 230"); a module says what its
        request is."""
        return ""

    def output_name(self, run: Snapshot, port: registry.Port) -> str:
        """A new node's name: "<input> <suffix>", or for a generative task "<Suffix> <request>"."""
        suffix = self.suffix(port)
        if self.generative:
            return f"{suffix[:1].upper()}{suffix[1:]} {self.request_name(run)}".strip()
        return outputs.output_name(self.input_volume(run), suffix)

    # -- checks ----------------------------------------------------------------------------
    def check_input(self, node) -> str:
        """Raise ``ValueError`` unless ``node`` may be the task's input (the backend's rule, limits
        and messages); returns its DICOM modality ("" when not loaded from DICOM)."""
        modality = inputs.check_input_volume(node, rule_for(self.spec.rule), module=self.title,
                                             select=self.select_input)
        if self.spec.limits is not None:  # refusals here; the backend logs the warnings of a run
            dimensions = node.GetImageData().GetDimensions()
            self.spec.limits.check(dimensions[::-1], node.GetSpacing(), name=node.GetName())
        return modality

    def check(self, run: Snapshot) -> None:
        """Raise ``ValueError`` naming what is wrong before anything is started (a generative
        task's optional input only when it is given)."""
        if not self.task:
            return
        volume = self.input_volume(run)
        if volume is None and self.generative:
            return
        self.check_input(volume)
        inputs.check_output_volume(getattr(run, "outputVolume", None), volume)

    # -- what a module may add ---------------------------------------------------------------
    def prepare(self, run: Snapshot) -> Snapshot:
        """The run's settings completed before it starts (e.g. an ROI as a voxel box)."""
        return run

    def options(self, run: Snapshot) -> list:
        """The command's options after its files: model, steps and device."""
        arguments: list = ["--steps", run.steps, "--device", run.device]
        return arguments + (["--model", run.model] if run.model else [])

    def derived_outputs(self, run: Snapshot, result: dict, created: dict) -> dict:
        """Further nodes made from the result event or the imported ones (by name)."""
        return {}

    def provenance(self, run: Snapshot, result: dict) -> dict:
        """Further attributes of the main output, besides task, input, model, steps, seconds."""
        return {}

    # -- files in, nodes out -----------------------------------------------------------------
    def write_inputs(self, run: Snapshot, workdir: Path) -> list:
        """Write the input files into ``workdir``; return the command's arguments."""
        spec = self.spec
        if len(spec.inputs) > 1 or any(port.kind != "volume" for port in spec.inputs) \
                or (not spec.inputs and not self.generative):
            raise NotImplementedError(f"task '{spec.name}': write_inputs handles one input volume")
        volume = self.input_volume(run)
        arguments: list = []
        if volume is not None and spec.inputs:
            port = spec.inputs[0]
            path = workdir / port.file
            # uncompressed: the file lives for one run, and gzip would cost seconds on a full CT
            nodes.write_volume(volume, path, compress=False)
            arguments += [port.flags[0], path] if port.flags else [path]
        for port in self.imported_outputs():
            arguments += [port.flags[0], workdir / port.file]
        rule = rule_for(spec.rule)
        if volume is not None and rule.skip_flag and inputs.dicom_modality(volume).upper() == "CT":
            # a CT series may be cropped to soft tissue: the rule accepted it without air
            arguments.append(rule.skip_flag)
        return arguments + self.options(run)

    def import_results(self, run: Snapshot, result: dict, workdir: Path) -> dict:
        """Every output file as a new node, by port name (the sequences in one browser), then
        the derived ones."""
        for node in (self.input_volume(run), getattr(run, "outputVolume", None)):
            if node is not None and node.GetScene() is None:
                raise ValueError(f"'{node.GetName()}' was removed from the scene during the run")
        created = {}
        for port in self.imported_outputs():
            path = workdir / port.file
            if not path.exists():
                raise ValueError(f"the backend reported success but wrote no {self.suffix(port)} {port.kind}")
            created[port.name] = self.import_output(port, path, run)
        self.import_sequences(run, [created[port.name] for port in self.imported_outputs() if port.kind == "sequence"])
        created.update(self.derived_outputs(run, result, created))
        self.record_provenance(run, result, created)
        return created

    def import_output(self, port: registry.Port, path: Path, run: Snapshot):
        """One output file as a new node on the input's grid, named "<input> <suffix>" (a
        generative task's on its own grid, named from the request); a sequence without its
        browser (see :meth:`import_sequences`)."""
        if self.generative:
            return self.import_generated(port, path, run)
        reference, suffix = run.inputVolume, self.suffix(port)
        if port.kind == "volume":
            node = outputs.volume_from_file(path, reference, suffix)
            chosen = getattr(run, "outputVolume", None) if port.name == "output" else None
            return outputs.move_into(node, chosen, reference) if chosen is not None else node
        if port.kind == "segmentation":
            return outputs.segmentation_from_seg_file(path, reference, suffix)
        if port.kind == "table":
            return outputs.table_from_csv(path, outputs.output_name(reference, suffix), reference=reference)
        sequence, _browser = nodes.read_sequence(path, scene=self.scene, reference=reference,
                                                 name=outputs.output_name(reference, suffix), browse=False)
        outputs.place_in_study(sequence, reference)
        return sequence

    def import_generated(self, port: registry.Port, path: Path, run: Snapshot):
        """A generative task's output file as a new node on the grid it was made on, named
        from the request, under the optional input's study (else at the top of the scene)."""
        name, study = self.output_name(run, port), self.input_volume(run)
        if port.kind == "volume":
            node = nodes.read_volume(path, scene=self.scene, name=name)
        elif port.kind == "segmentation":
            node = nodes.read_segmentation(path, scene=self.scene, name=name)
        elif port.kind == "table":
            node = nodes.read_table(path, scene=self.scene, name=name)
        else:
            node, _browser = nodes.read_sequence(path, scene=self.scene, name=name, browse=False)
        outputs.place_in_study(node, study)
        return node

    def import_sequences(self, run: Snapshot, sequences: list):
        """One browser playing a run's sequence outputs together, named after the first
        ("<first> browser"), beside it in Subject Hierarchy; None without sequences."""
        if not sequences:
            return None
        browser = nodes.sequence_browser(sequences[0], synchronized=sequences[1:])
        outputs.place_in_study(browser, self.input_volume(run))
        return browser

    @staticmethod
    def browser_of(sequence):
        """The browser that plays ``sequence`` (None if none does)."""
        scene = sequence.GetScene() if sequence is not None else None
        if scene is None:
            return None
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
            browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
            if browser.IsSynchronizedSequenceNodeID(sequence.GetID(), True):
                return browser
        return None

    def record_provenance(self, run: Snapshot, result: dict, created: dict) -> None:
        """Link every output to the input (when there is one); the main output keeps how it
        was made."""
        volume = self.input_volume(run)
        if volume is not None:
            for node in created.values():
                node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, volume.GetID())
        main = created.get("output")
        if main is None:
            return
        values = {"task": self.spec.command, "input": volume.GetName() if volume is not None else "none",
                  "model": result.get("model", getattr(run, "model", "")),
                  "steps": result.get("steps", getattr(run, "steps", "")), "seconds": result.get("seconds", ""),
                  **self.provenance(run, result)}
        for key, value in values.items():
            main.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))

    @staticmethod
    def input_of(output):
        """The volume an output was computed from (None if unknown)."""
        return output.GetNodeReference(INPUT_REFERENCE_ROLE) if output is not None else None

    # -- running -----------------------------------------------------------------------------
    def command_line(self, arguments: Sequence) -> list[str]:
        if self.backend:
            return [*self.backend, *[str(a) for a in arguments], "--events", "jsonl"]
        if not self.task:
            raise ValueError(f"{type(self).__name__} names no task")
        return backend_command(self.spec.command, *arguments)

    def start(self, parameters: ParameterSet, *, on_event: Callable[[dict], None] | None = None,
              on_state: Callable[[RunState], None] | None = None,
              install: Callable[[], Any] | None = None, cancel_timeout_s: float = 10.0) -> TaskProcess:
        """Check, then start a run in the background with the settings as they are now, and
        return it (poll it, or drive it with Qt).

        ``install`` is the dependency step (e.g. ``DependencyInstaller().ensure`` bound to a
        confirmation dialog); it runs first, in the run's "installing" state.
        """
        run = parameters.snapshot()
        self.check(run)
        missing = run.missing()
        if missing:
            raise ValueError(f"set {', '.join(missing)} before running")
        run = self.prepare(run)
        task = TaskProcess(on_event=on_event, on_state=on_state, cancel_timeout_s=cancel_timeout_s)
        task.importer = lambda result: self._import(run, result, task.workdir)
        if install is not None and not task.install(install):
            return task
        if task.state.finished:
            return task
        try:
            arguments = self.write_inputs(run, task.workdir)
        except Exception as error:
            task.discard(f"preparing the inputs failed: {error}")
            raise
        task.start(self.command_line(arguments), env=backend_environment(self.environment))
        return task

    def run(self, parameters: ParameterSet, *, timeout: float | None = None, **options) -> dict:
        """Run to the end and return the new nodes by name; raises TaskFailed / TaskCancelled."""
        task = self.start(parameters, **options)
        state = task.wait(timeout)
        if state == RunState.FAILED:
            raise TaskFailed(task.error or "the run failed")
        if state == RunState.CANCELLED:
            raise TaskCancelled("the run was cancelled")
        return task.outputs

    def _import(self, run: Snapshot, result: dict, workdir: Path):
        with outputs.rollback_on_error(self.scene):
            return self.import_results(run, result, workdir)
