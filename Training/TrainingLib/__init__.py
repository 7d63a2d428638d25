"""The Training module's library.

  choices     the parameters, the trainable tasks (every registered recipe), their defaults and
              own options (variant, models, numbers)
  runs        a run folder on disk: run.json, the runs listed, cancel, the gate verdict
  command     the ``meddiff train ... --detach`` launcher, its resume, registering a run's model
  scenedata   scene volumes kept as rows, written with their geometry and a manifest
  curves      a run's metrics.jsonl as a table node, a loss chart and one chart per metric
  monitor     RunMonitor: a run folder followed into MRML (curves, preview views, ETA)
  logic       TrainingLogic tying them together: start (detached), follow, cancel, resume,
              register; no Qt
  volumerows  the panel's table of scene volumes (Qt)
  taskoptions the panel's widgets of the task's own options (Qt)
  runview     the panel's runs list, followed run, progress and gate (Qt)
  panel       the module panel: task, base model, data, settings, runs list, progress (Qt)

Submodules are imported explicitly (``from TrainingLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("choices", "runs", "command", "scenedata", "curves", "monitor", "logic", "volumerows", "taskoptions",
              "runview", "panel")
