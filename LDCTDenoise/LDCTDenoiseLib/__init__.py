"""The LDCT Denoise module's library.

  logic       parameters, model list, the task logic with its difference volume, the sample (no Qt)
  panel       the module panel: task panel + model selector + before/after views (Qt)

Submodules are imported explicitly (``from LDCTDenoiseLib import logic``), so importing the
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
