"""The ``qt`` module of Slicer's PythonQt, mapped onto PySide6 for tests.

Module code written for Slicer does ``import qt`` and uses ``qt.QTimer``, ``qt.QWidget``,
``qt.QTableWidgetItem`` ...; in tests this file is that module.  ``qt.QUiLoader`` loads
.ui files with the CTK/qMRML stand-ins registered.
"""

from PySide6.QtCore import *  # noqa: F401,F403
from PySide6.QtGui import *  # noqa: F401,F403
from PySide6.QtWidgets import *  # noqa: F401,F403

from standins.loader import UiLoader as QUiLoader  # noqa: F401
