"""PySide6 stand-ins for the CTK and qMRML widgets that Slicer module .ui files use.

Slicer's own widgets need the Slicer application (PythonQt), which does not exist outside
it.  These small classes have the same class names, the properties .ui files set and the
signals and methods module code calls, so a module's real .ui file loads through
:class:`UiLoader` and its widget code runs under pytest-qt.  They imitate behaviour only as
far as the modules rely on it; rendering and MRML-driven details are not reproduced.
"""

from .ctk import (ctkCheckBox, ctkCollapsibleButton, ctkCollapsibleGroupBox, ctkComboBox,
                  ctkDoubleSpinBox, ctkPathLineEdit, ctkSliderWidget)
from .loader import STANDINS, UiLoader, load_ui
from .mrml import qMRMLNodeComboBox, qMRMLWidget

__all__ = ["STANDINS", "UiLoader", "load_ui", "ctkCheckBox", "ctkCollapsibleButton",
           "ctkCollapsibleGroupBox", "ctkComboBox", "ctkDoubleSpinBox", "ctkPathLineEdit",
           "ctkSliderWidget", "qMRMLNodeComboBox", "qMRMLWidget"]
