"""The Motion Correct module's library.

  logic       parameters, model list, ROI -> voxel box, the task logic with its summary table and
              lesion-centred views, the sample (no Qt)
  panel       the module panel: task panel + model selector + calcium scores + before/after views (Qt)

Submodules are imported explicitly (``from MotionCorrectLib import logic``), so importing the
package stays cheap and free of Qt.
"""

import importlib
import sys

#: in dependency order, for reload()
SUBMODULES = ("logic", "panel")


def reload() -> None:
    """Reload the already imported submodules (Slicer's "Reload" for developers)."""
    for name in SUBMODULES:
        module = sys.modules.get(f"{__name__}.{name}")
        if module is not None:
            importlib.reload(module)
