"""Render module panels from their real .ui files (PySide6 offscreen) for the README.

    python Resources/Screenshots/make_panel_screenshots.py

Each panel is shown as a user sees it after loading the module's bundled sample, with the
models the catalogue lists: LDCT Denoise with the low-dose chest CT, Motion Correct with the
non-gated chest CT.  CTK/qMRML widgets are drawn by the test
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
from MotionCorrectLib.logic import MotionCorrectLogic  # noqa: E402
from MotionCorrectLib.panel import MotionCorrectPanel  # noqa: E402



def grab(widget, name: str) -> None:
    widget.resize(440, widget.sizeHint().height())
    widget.show()
    QApplication.processEvents()
    widget.grab().save(str(Path(__file__).parent / f"panel_{name}.png"))
    widget.close()


def screenshot(module: str, sample_name: str, logic_class, panel_class) -> None:
    """The module's panel with the first two slices of its sample loaded (the selector shows it)."""
    with mrml_fixtures.slicer_globals(mrml_fixtures.make_scene()) as test:
        sample = read_volume(REPO / "meddiffusion" / "data" / f"{sample_name}.nrrd")
        node = mrml_fixtures.add_volume(test.scene, sample.array[:2], name=sample_name)
        mrml_fixtures.put_in_study(test.scene, node)
        root = load_ui(REPO / module / "Resources" / "UI" / f"{module}.ui")
        logic = logic_class(test.scene)
        panel = panel_class(root, logic.parameters(), logic)
        panel.set_scene(test.scene)
        grab(root, module)
        panel.cleanup()


def main() -> None:
    app = QApplication.instance() or QApplication([])  # noqa: F841 - keeps Qt alive
    screenshot("LDCTDenoise", "sample_ldct_chest", LDCTDenoiseLogic, LDCTDenoisePanel)
    screenshot("MotionCorrect", "sample_nongated_chest_ct", MotionCorrectLogic, MotionCorrectPanel)


if __name__ == "__main__":
    main()
