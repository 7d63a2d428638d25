"""The Cardiac 4D Synth module's library.

  logic       parameters, the request (ESV and EF linked by the EDV), the model list (motion cards),
              the task logic: the cine and its segmentation sequence in one browser, the volume
              table and the plot of the measured curves against the request (no Qt)
  panel       the module panel: task panel + model selector + the request's linked fields + the
              optional anatomy + the last result (Qt)

Submodules are imported explicitly (``from Cardiac4DSynthLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("logic", "panel")
