"""The SPECT Attenuation module's library.

  logic       parameters, model list (CT-free student / CT-guided teacher), the task logic with its
              optional CT or μ-map, polar map, bull's-eye picture and short axis, the nuclear display,
              the sample (no Qt)
  panel       the module panel: task panel + model selector + polar-map summary + NAC | AC views (Qt)

Submodules are imported explicitly (``from SPECTAttenuationLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("logic", "panel")
