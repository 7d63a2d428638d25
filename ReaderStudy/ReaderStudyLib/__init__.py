"""The Reader Study module's library.

  logic       the reader's screen in MRML (hanging protocol, blind node names, answers to the
              backend's session) and the lead's actions (create, progress, analyze); no Qt
  panel       the module panel: reader name, answer buttons with shortcuts, progress, skip,
              and the lead's section (Qt)

Submodules are imported explicitly (``from ReaderStudyLib import logic``), so importing the
package stays cheap and free of Qt.
"""

#: in dependency order, for Reload (MedDiffusionUtilsLib.reload_package)
SUBMODULES = ("logic", "panel")
