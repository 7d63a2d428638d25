"""The LDCT Denoise module's library.

  logic       checks, input file, ``meddiff ldct-denoise`` arguments, result nodes, views (no Qt)
  panel       the module panel: task panel + model selector + before/after views (Qt)
  sampledata  the sample low-dose chest CT for Slicer's Sample Data module

Submodules are imported explicitly (``from LDCTDenoiseLib import logic``), so importing the
package stays cheap and free of Qt.
"""

import importlib
import sys

#: in dependency order, for reload()
SUBMODULES = ("logic", "sampledata", "panel")


def reload() -> None:
    """Reload the already imported submodules (Slicer's "Reload" for developers)."""
    for name in SUBMODULES:
        module = sys.modules.get(f"{__name__}.{name}")
        if module is not None:
            importlib.reload(module)
