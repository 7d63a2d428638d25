"""The Motion Correct module's library.

  logic       parameters, model list, ROI -> voxel box, the task logic with its summary table and
              lesion-centred views, the sample (no Qt)
  panel       the module panel: task panel + model selector + calcium scores + before/after views (Qt)

Submodules are imported explicitly (``from MotionCorrectLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("logic", "panel")
