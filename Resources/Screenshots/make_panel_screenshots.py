"""Render module panels from their real .ui files (PySide6 offscreen) for the README.

    python Resources/Screenshots/make_panel_screenshots.py

The LDCT Denoise panel is shown as a user sees it after loading the bundled low-dose sample,
with the models the catalogue lists.  CTK/qMRML widgets are drawn by the test
stand-ins in Testing/widgets/standins: the layout, labels and defaults are the module's own,
the styling is plain Qt rather than Slicer's.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]
for folder in ("Testing/widgets", "Testing/slicer"):
    sys.path.insert(0, str(REPO / folder))

import mrml_fixtures  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from standins import load_ui  # noqa: E402

from meddiffusion.io import read_volume  # noqa: E402

mrml_fixtures.add_module_paths()
from LDCTDenoiseLib.logic import LDCTDenoiseLogic  # noqa: E402
from LDCTDenoiseLib.panel import LDCTDenoisePanel  # noqa: E402



def grab(widget, name: str) -> None:
    widget.resize(440, widget.sizeHint().height())
    widget.show()
    QApplication.processEvents()
    widget.grab().save(str(Path(__file__).parent / f"panel_{name}.png"))
    widget.close()


def main() -> None:
    app = QApplication.instance() or QApplication([])  # noqa: F841 - keeps Qt alive
    with mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as test:
        sample = read_volume(REPO / "meddiffusion" / "data" / "sample_ldct_chest.nrrd")
        node = mrml_fixtures.add_volume(test.scene, sample.array[:2], name="sample_ldct_chest")
        mrml_fixtures.put_in_study(test.scene, node)
        root = load_ui(REPO / "LDCTDenoise" / "Resources" / "UI" / "LDCTDenoise.ui")
        logic = LDCTDenoiseLogic(test.scene)
        panel = LDCTDenoisePanel(root, logic.parameters(), logic)
        panel.set_scene(test.scene)
        grab(root, "LDCTDenoise")
        panel.cleanup()


if __name__ == "__main__":
    main()
