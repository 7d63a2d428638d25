"""The LDCT Denoise module's library.

  logic       parameters, model list, the task logic with its difference volume, the sample (no Qt)
  panel       the module panel: task panel + model selector + before/after views (Qt)

Submodules are imported explicitly (``from LDCTDenoiseLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("logic", "panel")
