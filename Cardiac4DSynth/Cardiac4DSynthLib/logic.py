"""Cardiac 4D Synth logic: a request (diagnosis, LV volumes, stack) in, ``meddiff synth-cardiac`` in a
child process, a labelled cine out, with its volume curves.  MRML and files only, no Qt, so scripts
and tests use it directly::

    logic = Cardiac4DSynthLogic()
    created = logic.synthesize("DCM", edv=230, esv=170, slices=10, frames=25, seed=3)
    created["output"]    # the cine: a sequence of scalar volumes ("Synthetic cine DCM EDV 230 ESV 170")
    created["labels"]    # its labels: a sequence of segmentations (RV, myocardium, LV)
    created["browser"]   # plays both, synchronised
    created["table"]     # per frame: time, phase, LV, RV and myocardial volumes (ml)
    created["plot"]      # LV and RV volume curves measured on the labels against the request
    logic.show(created)  # cine and labels in the slice views, the curves in the plot view

The task is generative: it has no required input, so :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic`
names the outputs from the request (:meth:`Cardiac4DSynthLogic.request_name`) and places them at the
top of the scene.  Its one input, the anatomy, is optional: the end-diastolic frame of a loaded
short-axis cine (e.g. the proxy volume of its browser, shown at end-diastole), exported as
``--anatomy`` only when the request says so; then only the motion is generated and the EDV and the
slice count are the anatomy's.

What is this module's own: the request (ESV or EF, the other following from the EDV), the labels
turned into a *segmentation* sequence (one segmentation per frame with the segments "RV",
"MYO" and "LV" under fixed IDs and terminology, so the proxy keeps its display settings from frame
to frame), one browser for cine and labels, and the plot of the measured curves with the
requested EDV and ESV as horizontal reference lines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer
import vtk

from meddiffusion.tasks.cardiac4d import GUIDANCE
from meddiffusion.tasks.cardiac4d.clinical import DIAGNOSIS_NAMES, LIMITS
from MedDiffusionUtilsLib import layouts, models, nodes, outputs
from MedDiffusionUtilsLib.models import ModelChoice, card_field, card_rank
from MedDiffusionUtilsLib.parameters import Bool, Choice, Float, Int, Node, ParameterSet, Text
from MedDiffusionUtilsLib.tasklogic import ATTRIBUTE_PREFIX, TaskLogic

__all__ = [
    "DIAGNOSES", "SYSTOLE", "DEVICES", "MAX_STEPS", "CPU_STEPS", "SEGMENTS", "REPORT_ATTRIBUTE",
    "Cardiac4DSynthParameters", "ef_of", "esv_of", "link_systole", "number_text", "model_choices",
    "measured_text", "segmentation_of_frame", "Cardiac4DSynthLogic",
]

#: ACDC's groups, as the backend takes them
DIAGNOSES = tuple(DIAGNOSIS_NAMES)
#: which of the end-systolic volume and the ejection fraction the request gives (the other follows)
SYSTOLE = ("ESV", "EF")
DEVICES = ("auto", "cpu", "cuda")
#: DDIM steps: at most the 1000 training timesteps of the cards; 20 on a CPU when a card says nothing
MAX_STEPS, CPU_STEPS = 1000, 20
#: the label values of the backend's label sequence -> segment ID, name, colour, SNOMED CT code
SEGMENTS = (
    (1, "RV", "Right ventricle", (0.29, 0.56, 0.89), outputs.Code("SCT", "53085002", "Right ventricle")),
    (2, "MYO", "Myocardium", (0.95, 0.75, 0.25), outputs.Code("SCT", "74281007", "Myocardium")),
    (3, "LV", "Left ventricle", (0.86, 0.24, 0.22), outputs.Code("SCT", "87878005", "Left ventricle")),
)
ANATOMICAL_STRUCTURE = outputs.Code("SCT", "123037004", "Anatomical Structure")
#: attribute of the cine holding the backend's report (requested and measured values, warnings)
REPORT_ATTRIBUTE = ATTRIBUTE_PREFIX + "cardiac4d"
REPORTED = ("requested", "measured", "plausible", "attempts", "anatomy_given", "warnings_request", "summary")
#: the plot's series: (name, table, y column, colour, line style); the request's table has the reference lines
CURVES = (("LV measured", "table", "lv_ml", (0.86, 0.24, 0.22), "Solid"),
          ("RV measured", "table", "rv_ml", (0.29, 0.56, 0.89), "Solid"),
          ("LV EDV requested", "request", "lv_edv_ml", (0.55, 0.1, 0.1), "Dash"),
          ("LV ESV requested", "request", "lv_esv_ml", (0.55, 0.1, 0.1), "Dot"))
#: a layout with slice views and a plot view, for when the current one has no plot
PLOT_LAYOUT = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotView


class Cardiac4DSynthParameters(ParameterSet):
    """The module's settings, stored on its parameter node (saved with the scene).

    The ranges of the form are wide: a request the backend cannot draw (an ESV above the EDV, a
    volume contradicting the diagnosis) is refused by the backend with its own message."""

    diagnosis = Choice("NOR", choices=DIAGNOSES)
    #: LV end-diastolic volume (ml); with an anatomy it is the anatomy's
    edv = Float(140.0, minimum=1.0, maximum=1000.0, label="EDV")
    esv = Float(56.0, minimum=0.0, maximum=1000.0, label="ESV")
    #: may be negative: an ESV above the EDV shows as such (and the backend refuses it)
    ef = Float(60.0, minimum=-999.9, maximum=100.0, label="EF")
    #: which of ESV and EF the request sends (the one edited last)
    systole = Choice("EF", choices=SYSTOLE)
    slices = Int(10, minimum=int(LIMITS["slices"][0]), maximum=int(LIMITS["slices"][1]))
    frames = Int(25, minimum=int(LIMITS["frames"][0]), maximum=int(LIMITS["frames"][1]))
    seed = Int(0, minimum=0, maximum=2**31 - 1)
    guidance = Float(GUIDANCE, minimum=0.0, maximum=20.0)
    heartRate = Float(70.0, minimum=20.0, maximum=250.0)
    maxAttempts = Int(5, minimum=1, maximum=100)
    keepImplausible = Bool(False)
    #: keep a loaded heart (its end-diastolic frame) and generate only the motion
    useAnatomy = Bool(False)
    anatomyVolume = Node("vtkMRMLScalarVolumeNode", label="anatomy volume")
    #: a catalogue model id (a motion card); empty lets the backend choose
    model = Text("")
    steps = Int(CPU_STEPS, minimum=1, maximum=MAX_STEPS)
    device = Choice("auto", choices=DEVICES)

    def missing(self) -> list[str]:
        """Nothing is required, except an anatomy volume once the anatomy is asked for."""
        return ["anatomyVolume"] if self.useAnatomy and self.anatomyVolume is None else []


# -- the request ---------------------------------------------------------------------------------
def ef_of(edv: float, esv: float) -> float:
    """Ejection fraction (%) of an EDV and ESV (ml)."""
    return 100.0 * (edv - esv) / edv if edv else 0.0


def esv_of(edv: float, ef: float) -> float:
    """End-systolic volume (ml) of an EDV (ml) and EF (%)."""
    return edv * (1.0 - ef / 100.0)


def _clamp(value: float, field) -> float:
    return min(max(value, field.minimum), field.maximum)


def link_systole(parameters: Cardiac4DSynthParameters, edited: str, value: float | None = None) -> None:
    """The user edited ``edited`` ("edv", "esv" or "ef"; ``value`` its new value, else the stored
    one): ESV and EF follow each other from the EDV.  Editing the ESV or the EF makes it the one
    the request sends; editing the EDV keeps that one and updates the other."""
    if edited not in ("edv", "esv", "ef"):
        raise ValueError(f"edited must be edv, esv or ef, got {edited!r}")
    fields = parameters.fields()
    values = {"edv": parameters.edv, "esv": parameters.esv, "ef": parameters.ef}
    if value is not None:
        values[edited] = float(value)
    systole = {"esv": "ESV", "ef": "EF"}.get(edited, parameters.systole)
    if systole == "ESV":
        update = {"ef": round(_clamp(ef_of(values["edv"], values["esv"]), fields["ef"]), 1)}
    else:
        update = {"esv": round(_clamp(esv_of(values["edv"], values["ef"]), fields["esv"]), 1)}
    parameters.update(**{edited: values[edited]}, systole=systole, **update)


def number_text(value: float) -> str:
    """A number as an argument and in a name: 230, 26.5."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


# -- model catalogue -----------------------------------------------------------------------------
def _selector_card(entry: Any) -> dict:
    """A motion card as the shared selector reads it: per-device DDIM steps ({"cpu": 20, "cuda": 30})
    as ``steps`` and ``cpu_steps``, the training timesteps as the steps' upper bound."""
    architecture = dict(card_field(entry, "architecture", {}) or {})
    sampler = dict(architecture.get("sampler", {}) or {})
    steps = sampler.get("steps")
    if isinstance(steps, dict):
        cpu = steps.get("cpu", CPU_STEPS)
        sampler.update(steps=steps.get("cuda", cpu), cpu_steps=cpu)
    architecture["sampler"] = sampler
    diffusion = dict(architecture.get("diffusion", {}) or {})
    if "num_train_timesteps" in diffusion:
        diffusion.setdefault("num_timesteps", diffusion["num_train_timesteps"])
    architecture["diffusion"] = diffusion
    fields = ("id", "version", "description", "training_data", "metrics", "default_for")
    return {**{name: card_field(entry, name) for name in fields}, "architecture": architecture}


def model_choices(entries: Sequence[Any]) -> list[ModelChoice]:
    """Selector entries for the runnable cards: a cascade is run through its motion card (it names
    its anatomy card and both their VAE), so the VAE and anatomy cards are not listed; as the cards
    rank them (``default_for``)."""
    motion = [entry for entry in entries
              if (card_field(entry, "architecture", {}) or {}).get("network") == "MotionLDM"]
    ordered = sorted(motion, key=card_rank)  # stable: equal ranks keep the catalogue's order
    return models.model_choices([_selector_card(entry) for entry in ordered], max_steps=MAX_STEPS,
                                default_steps=CPU_STEPS, headline="description")


def measured_text(report: dict | None) -> str:
    """The result in one line per ventricle, e.g. "LV: EDV 231 ml (asked 230), ESV 168 ml (asked 170),
    EF 27 % (asked 26)" and "RV: EDV 180 ml, ESV 95 ml, EF 47 %" ("—" without a report)."""
    if not report or "measured" not in report:
        return "—"
    measured, requested = report["measured"], report.get("requested", {})
    lv = (f"LV: EDV {measured['lv_edv_ml']:.0f} ml (asked {requested.get('edv_ml', math.nan):.0f}), "
          f"ESV {measured['lv_esv_ml']:.0f} ml (asked {requested.get('esv_ml', math.nan):.0f}), "
          f"EF {measured['lv_ef_percent']:.0f} % (asked {requested.get('ef_percent', math.nan):.0f})")
    rv = (f"RV: EDV {measured['rv_edv_ml']:.0f} ml, ESV {measured['rv_esv_ml']:.0f} ml, "
          f"EF {measured['rv_ef_percent']:.0f} %")
    lines = [lv, rv]
    if report.get("plausible") is False:
        lines.append("Implausible labels kept (see the log)")
    return "\n".join(lines)


# -- the logic -----------------------------------------------------------------------------------
class Cardiac4DSynthLogic(TaskLogic):
    """``meddiff synth-cardiac`` around MRML (see :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic`)."""

    task = "cardiac4d"
    title = "Cardiac 4D Synth"
    Parameters = Cardiac4DSynthParameters
    select_input = "the end-diastolic frame of a short-axis cine as the anatomy"

    # -- the request -----------------------------------------------------------------------
    def input_volume(self, run):
        """The anatomy, when the request asks for one."""
        return run.anatomyVolume if run.useAnatomy else None

    def request_name(self, run) -> str:
        """ "DCM EDV 230 ESV 170", "NOR EDV 140 EF 60", or with an anatomy "MINF EF 35 on <anatomy>"."""
        systole = f"ESV {number_text(run.esv)}" if run.systole == "ESV" else f"EF {number_text(run.ef)}"
        anatomy = self.input_volume(run)
        if anatomy is not None:
            return f"{run.diagnosis} {systole} on {anatomy.GetName()}"
        return f"{run.diagnosis} EDV {number_text(run.edv)} {systole}"

    def options(self, run) -> list:
        """The request, then model, steps and device.  With an anatomy its EDV and slice count
        are used, so neither is sent."""
        anatomy = self.input_volume(run) is not None
        arguments: list = ["--diagnosis", run.diagnosis]
        if not anatomy:
            arguments += ["--edv", number_text(run.edv)]
        arguments += ["--esv", number_text(run.esv)] if run.systole == "ESV" else ["--ef", number_text(run.ef)]
        if not anatomy:
            arguments += ["--slices", run.slices]
        arguments += ["--frames", run.frames, "--seed", run.seed, "--guidance", number_text(run.guidance),
                      "--heart-rate", number_text(run.heartRate), "--max-attempts", run.maxAttempts]
        if run.keepImplausible:
            arguments.append("--keep-implausible")
        return arguments + super().options(run)

    # -- nodes out -------------------------------------------------------------------------
    def import_output(self, port, path: Path, run):
        """The cine as it is read; the labels as a segmentation sequence.  Both are indexed by
        time in ms (the backend's frame times)."""
        if port.name == "labels":
            return self.segmentation_sequence(path, self.output_name(run, port), self.input_volume(run))
        node = super().import_output(port, path, run)
        if port.kind == "sequence":
            _time_index(node)
        return node

    def segmentation_sequence(self, path: Path, name: str, study=None):
        """A label sequence file (1 RV, 2 MYO, 3 LV) as a new sequence of segmentations, one per
        frame, each with the three segments of :data:`SEGMENTS` under fixed IDs (empty where a
        frame lacks a label) in one shared label-map layer on the frame's own grid."""
        labels, _browser = nodes.read_sequence(path, scene=self.scene, name="__meddiffusion_labels", browse=False)
        try:
            _time_index(labels)
            sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
            sequence.SetIndexType(labels.GetIndexType())
            sequence.SetIndexName(labels.GetIndexName())
            sequence.SetIndexUnit(labels.GetIndexUnit())
            for index in range(labels.GetNumberOfDataNodes()):
                segmentation = segmentation_of_frame(labels.GetNthDataNode(index), f"frame {index} of the labels")
                sequence.SetDataNodeAtValue(segmentation, labels.GetNthIndexValue(index))
        finally:
            self.scene.RemoveNode(labels)
        outputs.place_in_study(sequence, study)
        return sequence

    def derived_outputs(self, run, result: dict, created: dict) -> dict:
        """The browser of cine and labels, the request's reference lines and the plot."""
        cine = created["output"]
        browser = self.browser_of(cine)
        # real time, within what a screen shows smoothly
        browser.SetPlaybackRateFps(min(30.0, max(1.0, cine.GetNumberOfDataNodes() * run.heartRate / 60.0)))
        browser.SetPlaybackLooped(True)
        derived = {"browser": browser}
        table = created.get("table")
        if table is not None and "requested" in result:
            request = self.request_table(table, result["requested"], f"Request {self.request_name(run)}",
                                         self.input_volume(run))
            derived.update(request=request, plot=self.volume_plot(table, request, self.request_name(run),
                                                                   self.input_volume(run)))
        return derived

    def provenance(self, run, result: dict) -> dict:
        """The request, and what the backend reported (see :meth:`report_of`)."""
        reported = {key: result[key] for key in REPORTED if key in result}
        return {"request": self.request_name(run), "cardiac4d": json.dumps(reported)}

    def request_table(self, table, requested: dict, name: str, study=None):
        """The requested LV EDV and ESV over the cycle (first and last frame time): the plot's
        horizontal reference lines."""
        times = table.GetTable().GetColumnByName("time_ms")
        span = [times.GetValue(0), times.GetValue(times.GetNumberOfValues() - 1)] if times is not None else [0.0, 1.0]
        rows = [{"time_ms": float(t), "lv_edv_ml": float(requested["edv_ml"]),
                 "lv_esv_ml": float(requested["esv_ml"])} for t in span]
        node = outputs.table_from_rows(rows, name, scene=self.scene)
        outputs.place_in_study(node, study)
        return node

    def volume_plot(self, table, request, name: str, study=None):
        """A chart of the LV and RV volumes of every frame (measured on the generated labels) with
        the requested EDV and ESV as horizontal lines."""
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"Volume curves {name}")
        chart.SetTitle(f"LV and RV volumes: {name}")
        chart.SetXAxisTitle("time (ms)")
        chart.SetYAxisTitle("volume (ml)")
        tables = {"table": table, "request": request}
        for label, source, column, color, style in CURVES:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", label)
            series.SetAndObserveTableNodeID(tables[source].GetID())
            series.SetXColumnName("time_ms")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetLineStyle(getattr(slicer.vtkMRMLPlotSeriesNode, f"LineStyle{style}"))
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle if source == "table"
                                  else slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        outputs.place_in_study(chart, study)
        return chart

    # -- running ---------------------------------------------------------------------------
    def synthesize(self, diagnosis: str, *, edv: float = 140.0, esv: float | None = None, ef: float | None = None,
                   slices: int = 10, frames: int = 25, seed: int = 0, guidance: float = GUIDANCE,
                   heart_rate: float = 70.0, anatomy=None, max_attempts: int = 5, keep_implausible: bool = False,
                   model: str = "", steps: int = CPU_STEPS, device: str = "auto",
                   timeout: float | None = None) -> dict:
        """Run to the end; returns the new nodes by name (see the module's docstring; blocking,
        raises TaskFailed / TaskCancelled).  Give exactly one of ``esv`` and ``ef``."""
        if (esv is None) == (ef is None):
            raise ValueError("give exactly one of esv (ml) and ef (%)")
        parameters = self.parameters()
        systole = {"systole": "ESV", "esv": esv} if esv is not None else {"systole": "EF", "ef": ef}
        parameters.update(diagnosis=diagnosis, edv=edv, slices=slices, frames=frames, seed=seed,
                          guidance=guidance, heartRate=heart_rate, maxAttempts=max_attempts,
                          keepImplausible=keep_implausible, useAnatomy=anatomy is not None, anatomyVolume=anatomy,
                          model=model, steps=steps, device=device, **systole)
        link_systole(parameters, "esv" if esv is not None else "ef")
        return self.run(parameters, timeout=timeout)

    # -- reading a result back -------------------------------------------------------------
    @staticmethod
    def report_of(cine) -> dict | None:
        """What the backend reported for a generated cine: "requested" and "measured" (lv_edv_ml,
        lv_esv_ml, lv_ef_percent, rv_..., myo_volume_ml), "plausible", "attempts",
        "warnings_request", "summary" (None for other nodes)."""
        text = cine.GetAttribute(REPORT_ATTRIBUTE) if cine is not None else None
        return json.loads(text) if text else None

    # -- display ---------------------------------------------------------------------------
    def show(self, created: dict) -> None:
        """The cine (its browser's proxy) in every slice view with the labels over it, the browser
        in the Sequences toolbar, and the volume curves in the plot view."""
        browser, cine = created.get("browser"), created.get("output")
        proxy = browser.GetProxyNode(cine) if browser is not None and cine is not None else None
        if proxy is not None:
            for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
                composite = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
                composite.SetBackgroundVolumeID(proxy.GetID())
                composite.SetForegroundVolumeID(None)
                composite.SetLabelVolumeID(None)
            selection = self.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
            if selection is not None:
                selection.SetActiveVolumeID(proxy.GetID())
        labels = created.get("labels")
        label_proxy = browser.GetProxyNode(labels) if browser is not None and labels is not None else None
        if label_proxy is not None and label_proxy.GetDisplayNode() is not None:
            label_proxy.GetDisplayNode().SetVisibility(True)
        sequences = getattr(getattr(slicer, "modules", None), "sequences", None)
        if browser is not None and hasattr(sequences, "setToolBarActiveBrowserNode"):  # the Slicer application
            sequences.setToolBarActiveBrowserNode(browser)
        if created.get("plot") is not None:
            self.show_plot(created["plot"])
        layouts.fit_views()

    def show_plot(self, chart) -> None:
        """``chart`` in the plot view: through the Plots module where it is (Slicer), else by
        MRML (a layout with a plot view, the chart selected and set on every plot view)."""
        plots = getattr(getattr(slicer, "modules", None), "plots", None)
        if plots is not None:
            plots.logic().ShowChartInLayout(chart)
            return
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layout is not None:
            layout.SetViewArrangement(PLOT_LAYOUT)
        selection = self.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        if selection is not None:
            selection.SetReferenceActivePlotChartID(chart.GetID())
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode")):
            self.scene.GetNthNodeByClass(index, "vtkMRMLPlotViewNode").SetPlotChartNodeID(chart.GetID())


def _time_index(sequence) -> None:
    """Index a cine's sequence by time in ms (the backend writes its frame times; older readers
    do not take the index name and unit from its header)."""
    if sequence.GetIndexUnit() in ("", None):
        sequence.SetIndexName("time")
        sequence.SetIndexUnit("ms")


def segmentation_of_frame(frame, what: str = "the label map"):
    """A segmentation node (not in a scene) of one label frame (a volume node holding 0 and the
    values of :data:`SEGMENTS`): the three segments share one binary label-map layer, the frame's
    voxels on its grid, each segment its label value; ``ValueError`` for any other value."""
    image = slicer.vtkOrientedImageData()
    image.DeepCopy(frame.GetImageData())
    values = {int(v) for v in np.unique(slicer.util.arrayFromVolume(frame))} - {0}
    unknown = sorted(values - {value for value, *_ in SEGMENTS})
    if unknown:
        raise ValueError(f"{what} holds values {unknown}; expected only 1 (RV), 2 (MYO) and 3 (LV)")
    matrix = vtk.vtkMatrix4x4()
    frame.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    node = slicer.vtkMRMLSegmentationNode()
    segmentation = node.GetSegmentation()
    representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(representation)
    for value, segment_id, name, color, code in SEGMENTS:
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.SetColor(*color)
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), _terminology(code))
        segment.AddRepresentation(representation, image)
        segment.SetLabelValue(value)
        segmentation.AddSegment(segment, segment_id)
    return node


_TERMINOLOGY: dict[str, str] = {}


def _terminology(code) -> str:
    if code.value not in _TERMINOLOGY:
        _TERMINOLOGY[code.value] = outputs.terminology_entry(code, ANATOMICAL_STRUCTURE)
    return _TERMINOLOGY[code.value]
