"""The ``ctk`` module of Slicer's PythonQt, mapped onto the PySide6 stand-ins for tests."""

from standins.ctk import *  # noqa: F401,F403
