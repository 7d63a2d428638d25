"""The PET/MR Denoise module's library.

  suv         the lesion SUV readout: SUVmax and SUVmean in a sphere or an ROI, before and after
              (numpy only)
  logic       parameters, model list (MR-guided / PET only), the task logic with its optional MR,
              the fused display, the lesion table, the sample (no Qt)
  panel       the module panel: task panel + model selector + fusion opacity + lesion readout +
              input | denoised views (Qt)

Submodules are imported explicitly (``from PETMRDenoiseLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("suv", "logic", "panel")
