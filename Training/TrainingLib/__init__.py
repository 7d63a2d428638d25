"""The Training module's library.

  logic       training runs on disk followed in MRML: start (detached), curves table and charts,
              preview volumes, cancel, resume, reconnect, register; no Qt
  panel       the module panel: task, base model, data, settings, runs list, progress (Qt)

Submodules are imported explicitly (``from TrainingLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("logic", "panel")
