"""Reader Study logic: a blinded reader's reads shown in MRML, answers recorded by the backend.

The study itself (design, per-reader schedule, hash-chained answer log, resume) is the
backend's ``meddiffusion.study`` (pure Python, imported in-process).  This logic puts the
current read on screen under a locked hanging protocol and hands each answer back::

    logic = ReaderStudyLogic()
    logic.open_study("/data/ldct-study")
    read = logic.start("R1")               # resumes at the first unanswered read
    logic.answer(read.questions[0].id, 4)  # durable on disk when this returns
    logic.stop()                           # the reader's nodes go, the scene comes back

What the reader sees is blind by construction: images become nodes named only by their
position ("A" left, "B" right, "Image" alone), read without a storage node (no file name),
with no attribute or description; the case code is not shown either, since seeing it again
would tell a repeated read.  The rest of the scene is hidden while reading and restored
afterwards.  The lead's side (create, progress per reader, analyze) runs ``meddiff study`` in
a child process through the shared runner.  MRML and files only, no Qt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import slicer
import vtk

from meddiffusion import checks
from meddiffusion.study import Current, ReaderSession, Study

from MedDiffusionUtilsLib import layouts, nodes
from MedDiffusionUtilsLib.parameters import ParameterSet, Text
from MedDiffusionUtilsLib.processes import backend_command, backend_environment
from MedDiffusionUtilsLib.runner import TaskProcess

__all__ = ["MODULE", "NAMES", "VIEWS", "CT_WINDOW_LEVEL", "SHOWN_ATTRIBUTE", "ReaderStudyParameters",
           "HangingProtocol", "ReaderProgress", "ReaderStudyLogic"]

MODULE = "ReaderStudy"
#: node name by image position: the only name a reader sees
NAMES = {"left": "A", "right": "B", "single": "Image"}
#: slice view by image position (Slicer's side-by-side layout is Red | Yellow)
VIEWS = {"left": layouts.BEFORE_VIEW, "right": layouts.AFTER_VIEW, "single": layouts.BEFORE_VIEW}
ONE_VIEW = slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView
#: soft-tissue window (width, centre) in HU, for CT when the design names none
CT_WINDOW_LEVEL = (400.0, 40.0)
#: percentiles that bound the window of an image that is not CT
PERCENTILES = (1.0, 99.0)
#: marks the nodes this module shows (value: the position), so leftovers are found after a reload
SHOWN_ATTRIBUTE = "ReaderStudy.shown"


class ReaderStudyParameters(ParameterSet):
    """What the module remembers with the scene: the study folder and who reads."""

    studyFolder = Text("")
    readerName = Text("")


@dataclass(frozen=True)
class HangingProtocol:
    """How every read is shown: one window/level for all images of a read (the design's, else
    CT soft tissue for CT, else the read's own 1-99 % range), the reader's window/level
    changes either followed on every view or, when ``locked``, undone; cine at ``cine_fps``."""

    window: float | None = None
    level: float | None = None
    locked: bool = False
    cine_fps: float = 10.0

    @classmethod
    def from_design(cls, display: dict | None) -> "HangingProtocol":
        """The protocol of ``study.json``'s ``display`` (``window``, ``level``, ``locked``, ``cine_fps``)."""
        display = dict(display or {})
        if ("window" in display) != ("level" in display):
            raise ValueError("the study's display sets only one of window and level; it needs both or neither")
        window, level = display.get("window"), display.get("level")
        if window is not None and not float(window) > 0:
            raise ValueError(f"the study's display window must be positive, got {window!r}")
        fps = float(display.get("cine_fps", cls.cine_fps))
        if not fps > 0:
            raise ValueError(f"the study's cine_fps must be positive, got {fps!r}")
        return cls(None if window is None else float(window), None if level is None else float(level),
                   bool(display.get("locked", False)), fps)

    def window_level(self, arrays: Sequence[np.ndarray]) -> tuple[float, float]:
        """(window, level) for a read showing ``arrays``: the same for every image, so a method
        is never judged under a kinder window than its comparator."""
        if self.window is not None:
            return self.window, self.level
        values = np.concatenate([checks.sample_values(array) for array in arrays])
        try:
            checks.CT.check(values, name="image")
            return CT_WINDOW_LEVEL
        except ValueError:
            low, high = np.percentile(values, PERCENTILES)
            return float(max(high - low, 1e-6)), float((high + low) / 2)


@dataclass(frozen=True)
class ReaderProgress:
    """One row of the lead's table."""

    reader: str
    done: int
    total: int
    state: str
    problems: tuple[str, ...] = ()


class _Shown:
    """The nodes of the read on screen and what the reader did to them."""

    def __init__(self, index: int):
        self.index = index
        self.volumes: dict[str, Any] = {}  # position -> the volume node shown (a cine's proxy)
        self.extra: list = []  # sequence and browser nodes of a cine
        self.observers: list[tuple[Any, int]] = []
        self.window_level = (0.0, 0.0)  # the protocol's, once the images are loaded
        self.last = [0.0, 0.0]  # the window/level on screen
        self.changes: list[list[float]] = []  # [window, level] set since the last record
        self.started = time.monotonic()


class ReaderStudyLogic:
    """The reader's screen and the lead's actions around one study folder (see the module doc).

    ``backend`` replaces ``[python, -m, meddiffusion]`` for the lead's child processes;
    ``clock`` (UTC datetimes) is passed to the session, for tests of the washout.
    """

    title = "Reader Study"

    def __init__(self, scene=None, *, backend: Sequence[str] | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.backend = list(backend) if backend else None
        self.clock = clock
        self.study: Study | None = None
        self.protocol = HangingProtocol()
        self.session: ReaderSession | None = None
        self.shown: _Shown | None = None
        self._hidden: list[str] = []  # display nodes hidden while reading
        self._layout: int | None = None  # the arrangement before reading
        self._arrangement: int | None = None  # the arrangement of the read on screen
        self._layout_observer: tuple[Any, int] | None = None

    def parameters(self) -> ReaderStudyParameters:
        return ReaderStudyParameters.for_module(self.scene, MODULE)

    # -- the study ---------------------------------------------------------------------------
    def open_study(self, folder: str | Path) -> Study:
        """Open a study folder (``ValueError`` saying what is wrong); ends a reading under way."""
        self.stop()
        study = Study.open(folder)
        self.protocol = HangingProtocol.from_design(study.design.display)
        self.study = study
        self.parameters().studyFolder = str(Path(folder).absolute())
        return study

    def _require_study(self) -> Study:
        if self.study is None:
            raise ValueError("open a study folder first")
        return self.study

    # -- reading ---------------------------------------------------------------------------
    @property
    def reading(self) -> bool:
        return self.session is not None

    def start(self, reader: str) -> Current | None:
        """Begin or resume ``reader``'s reads: the scene is hidden and the current read shown.

        Returns the read on screen, or None when the reader has finished.
        """
        study = self._require_study()
        reader = reader.strip()
        if not reader:
            raise ValueError("enter the reader's name first")
        if reader not in study.design.readers:
            raise ValueError(f"'{reader}' is not a reader of this study; ask the study lead "
                             f"(its readers are {', '.join(study.design.readers)})")
        self.stop()
        self.session = ReaderSession(study, reader, clock=self.clock)
        self.parameters().readerName = reader
        self._remove_leftovers()
        self._hide_scene()
        return self.show_current()

    def current(self) -> Current | None:
        return self.session.current() if self.session is not None else None

    def opens_at(self, read: Current | None) -> str | None:
        """When ``read``'s session opens if its washout still runs (ISO UTC), else None."""
        if read is None or not read.available_from:
            return None
        opens = datetime.fromisoformat(read.available_from.replace("Z", "+00:00"))
        return read.available_from if self.session.clock() < opens else None

    def show_current(self) -> Current | None:
        """Show the current read (a read already on screen stays as it is); the previous read's
        nodes are removed.  Nothing is shown while a washout runs or once the reader is done."""
        read = self.current()
        if read is not None and self.shown is not None and self.shown.index == read.index:
            return read
        self._clear_read()
        if read is not None and self.opens_at(read) is None:
            self._show(read)
        return read

    def progress(self) -> tuple[int, int]:
        return self.session.progress() if self.session is not None else (0, 0)

    def answer(self, question_id: str, value) -> Current | None:
        """Record an answer to the read on screen; shows the next read once this one is done."""
        self._record(lambda seconds, changes: self.session.answer(
            question_id, value, seconds=seconds, window_level=changes))
        return self.show_current()

    def skip(self, reason: str) -> Current | None:
        """Leave the read on screen unanswered, for ``reason``; shows the next read."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("say why the case is skipped (e.g. 'image did not load')")
        self._record(lambda seconds, changes: self.session.skip(reason, seconds=seconds, window_level=changes))
        return self.show_current()

    def _record(self, write: Callable[[float, list], dict]) -> dict:
        if self.shown is None:
            raise ValueError("no read is on screen" if self.session is not None else "start reading first")
        record = write(time.monotonic() - self.shown.started, list(self.shown.changes))
        self.shown.changes.clear()
        return record

    def stop(self) -> None:
        """End reading: the read's nodes are removed and the scene is shown as it was."""
        self._clear_read()
        self._release_layout()
        for node_id in self._hidden:
            display = self.scene.GetNodeByID(node_id)
            if display is not None:
                display.SetVisibility(True)
        self._hidden = []
        self.session = None

    # -- the hanging protocol ----------------------------------------------------------------
    def _show(self, read: Current) -> None:
        if set(read.images) not in ({"single"}, {"left", "right"}):
            raise ValueError(f"read {read.index} has images at {sorted(read.images)}; expected 'single' "
                             "or 'left' and 'right'")
        shown = _Shown(read.index)
        self.shown = shown
        try:
            for position in sorted(read.images):
                self._load(shown, position, Path(read.images[position]))
        except Exception:
            self._clear_read()
            raise
        arrays = [slicer.util.arrayFromVolume(volume) for volume in shown.volumes.values()]
        shown.window_level = self.protocol.window_level(arrays)
        shown.last = list(shown.window_level)
        for volume in shown.volumes.values():
            display = volume.GetDisplayNode()
            display.AutoWindowLevelOff()
            display.SetWindowLevel(*shown.window_level)
            shown.observers.append((display, display.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                                 self._on_display_modified)))
        self._arrange(shown)
        shown.started = time.monotonic()

    def _load(self, shown: _Shown, position: str, path: Path) -> None:
        name = NAMES[position]
        if _is_sequence(path):
            sequence, browser = nodes.read_sequence(path, scene=self.scene, name=f"{name} frames")
            browser.SetName(f"{name} cine")
            shown.extra += [sequence, browser]
            volume = browser.GetProxyNode(sequence)
            if volume is None:
                raise ValueError(f"the cine of image {name} could not be shown (no Sequences module)")
            lead = next((node for node in shown.extra if node.IsA("vtkMRMLSequenceBrowserNode")), browser)
            if lead is not browser:  # one browser plays every cine of the read, in step
                lead.AddSynchronizedSequenceNode(sequence)
                self.scene.RemoveNode(browser)
                shown.extra.remove(browser)
                volume = lead.GetProxyNode(sequence)
            lead.SetPlaybackRateFps(self.protocol.cine_fps)
            lead.SetPlaybackLooped(True)
            lead.SetPlaybackActive(True)
        else:
            volume = nodes.read_volume(path, scene=self.scene, name=name)
        volume.SetName(name)
        volume.SetAttribute(SHOWN_ATTRIBUTE, position)
        for node in shown.extra:
            node.SetAttribute(SHOWN_ATTRIBUTE, position)
        shown.volumes[position] = volume

    def _arrange(self, shown: _Shown) -> None:
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        self._arrangement = None  # the protocol itself changes it now
        if "single" in shown.volumes:
            layouts.set_layout(ONE_VIEW, self.scene)
            layouts.show_single(shown.volumes["single"], view=VIEWS["single"], scene=self.scene)
        else:
            layouts.show_side_by_side(shown.volumes["left"], shown.volumes["right"], link=True, scene=self.scene)
        for view in set(VIEWS.values()):
            try:
                composite = layouts.composite_node(view, self.scene)
            except ValueError:
                continue  # no slice views (a scene without the application's layout)
            composite.SetLabelVolumeID(None)
            composite.SetForegroundVolumeID(None)
        if layout is not None and self._layout_observer is None:
            self._layout_observer = (layout, layout.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_layout_modified))
        self._arrangement = layout.GetViewArrangement() if layout is not None else None

    def _on_layout_modified(self, layout, event) -> None:  # noqa: ARG002 - VTK observer
        """The layout is part of the protocol: a reader's change is undone while a read is shown."""
        if self.shown is not None and self._arrangement is not None and \
                layout.GetViewArrangement() != self._arrangement:
            layout.SetViewArrangement(self._arrangement)

    def _on_display_modified(self, display, event) -> None:  # noqa: ARG002 - VTK observer
        """Log each window/level the reader sets; keep every image of the read on it (or on
        the protocol's when locked)."""
        shown = self.shown
        if shown is None:
            return
        setting = [round(display.GetWindow(), 3), round(display.GetLevel(), 3)]
        if setting == [round(v, 3) for v in shown.last]:
            return
        shown.changes.append(setting)
        target = shown.window_level if self.protocol.locked else tuple(setting)
        shown.last = list(target)
        for volume in shown.volumes.values():
            other = volume.GetDisplayNode()
            if (round(other.GetWindow(), 3), round(other.GetLevel(), 3)) != tuple(round(v, 3) for v in target):
                other.SetWindowLevel(*target)

    def _clear_read(self) -> None:
        shown, self.shown = self.shown, None
        if shown is None:
            return
        for display, tag in shown.observers:
            display.RemoveObserver(tag)
        for node in [*shown.extra, *shown.volumes.values()]:
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)

    def _remove_leftovers(self) -> None:
        """Nodes a previous reading left in the scene (e.g. a module reload mid-read); a
        cine's proxy is found through its browser (playing overwrites the proxy's attributes)."""
        found = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
        found = [node for node in found if node is not None and node.GetAttribute(SHOWN_ATTRIBUTE) is not None]
        for browser in [node for node in found if node.IsA("vtkMRMLSequenceBrowserNode")]:
            sequences = vtk.vtkCollection()
            browser.GetSynchronizedSequenceNodes(sequences, True)
            found += [browser.GetProxyNode(sequences.GetItemAsObject(i)) for i in range(sequences.GetNumberOfItems())]
        for node in found:
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)

    def _hide_scene(self) -> None:
        """Hide the data's visible display nodes (models, segmentations, markups, volume rendering)."""
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        self._layout = layout.GetViewArrangement() if layout is not None else None
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLDisplayNode")):
            display = self.scene.GetNthNodeByClass(index, "vtkMRMLDisplayNode")
            shows = display.GetDisplayableNode()
            if shows is None or shows.GetHideFromEditors():
                continue  # the application's own (slice planes in 3D)
            if display.GetVisibility():
                display.SetVisibility(False)
                self._hidden.append(display.GetID())

    def _release_layout(self) -> None:
        if self._layout_observer is not None:
            layout, tag = self._layout_observer
            layout.RemoveObserver(tag)
            self._layout_observer = None
            if self._layout is not None:
                layout.SetViewArrangement(self._layout)
        self._layout = None

    # -- the lead's screen -------------------------------------------------------------------
    def reader_progress(self) -> list[ReaderProgress]:
        """Each reader's progress, read from the logs (nothing is written)."""
        study = self._require_study()
        rows = []
        for reader in study.design.readers:
            session = ReaderSession(study, reader, clock=self.clock)
            done, total = session.progress()
            read = session.current()
            opens = read.available_from if read is not None else None
            state = ("finished" if read is None else "not started" if not study.log_path(reader).exists()
                     else f"session {read.session}" + (f", opens {opens}" if opens else ""))
            if session.problems:
                state += " · log damaged"
            rows.append(ReaderProgress(reader, done, total, state, tuple(session.problems)))
        return rows

    def create_task(self, original: str | Path, methods: dict[str, str | Path], readers: Sequence[str],
                    output: str | Path, *, seed: int = 0, questions: str = "", title: str = "",
                    options: Sequence[str] = (), install=None, on_event=None, on_state=None) -> TaskProcess:
        """``meddiff study create`` in a child process (started); ``result["study"]`` is the folder.

        ``methods`` maps a method's name to its folder of outputs (same file names as the
        originals); ``options`` are further flags of the command (``--sessions 2`` ...);
        ``install`` is the dependency step, run first (as in TaskLogic.start).
        """
        if not methods:
            raise ValueError("name at least one method and its folder of outputs")
        readers = [reader.strip() for reader in readers if reader.strip()]
        if not readers:
            raise ValueError("name at least one reader (e.g. R1,R2)")
        arguments = ["create", "--original", original, "--readers", ",".join(readers), "--seed", seed, "-o", output]
        for name, folder in methods.items():
            arguments += ["--method", f"{name}={folder}"]
        arguments += (["--questions", questions] if questions else []) + (["--title", title] if title else [])
        return self._start(arguments + list(options), install, on_event, on_state, importer=lambda result: result)

    def analyze_task(self, output: str | Path, *, key: str | Path | None = None, reason: str = "",
                     install=None, on_event=None, on_state=None) -> TaskProcess:
        """``meddiff study analyze`` of the open study in a child process (started); its CSV
        tables come back as table nodes ("Reader study <table>") by file name."""
        study = self._require_study()
        arguments = ["analyze", study.folder, "-o", output]
        arguments += (["--key", key] if key else []) + (["--reason", reason] if reason else [])
        return self._start(arguments, install, on_event, on_state,
                           importer=lambda result: self._import_tables(Path(output)))

    def _start(self, arguments: list, install, on_event, on_state, importer) -> TaskProcess:
        command = backend_command("study", *[str(argument) for argument in arguments])
        if self.backend:
            command = [*self.backend, *command[3:]]
        task = TaskProcess(on_event=on_event, on_state=on_state, importer=importer)
        if install is not None and not task.install(install):
            return task  # failed or declined: the panel reports it
        task.start(command, env=backend_environment())
        return task

    def _import_tables(self, folder: Path) -> dict:
        return {path.stem: nodes.read_table(path, scene=self.scene, name=f"Reader study {path.stem}")
                for path in sorted(folder.glob("*.csv")) if not path.name.endswith(".schema.csv")}


def _is_sequence(path: Path) -> bool:
    """A 4D NRRD (a cine series) rather than one volume: its header says ``dimension: 4``."""
    with open(path, "rb") as handle:
        header = handle.read(4096).split(b"\n\n", 1)[0]
    return any(line.strip() == b"dimension: 4" for line in header.splitlines())
