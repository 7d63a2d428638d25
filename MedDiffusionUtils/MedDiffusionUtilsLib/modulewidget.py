"""The widget every task module's ``X.py`` builds on, so that ``X.py`` holds the module's
metadata, its .ui and only what is special to it::

    class LDCTDenoiseWidget(TaskModuleWidget):
        logic_class = LDCTDenoiseLogic
        panel_class = LDCTDenoisePanel

:class:`TaskModuleWidget` loads ``Resources/UI/<module>.ui``, makes the logic and the panel,
follows scene close (a run whose input is about to disappear is stopped; the panel binds to
the new parameter node), installs the backend's packages as the first step of Apply (after
asking), shows errors in a dialog, and reloads the shared layer with the module's library.
It needs the Slicer application (``slicer.ScriptedLoadableModule``).
"""

from __future__ import annotations

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

__all__ = ["TaskModuleWidget"]


class TaskModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """A task module's widget: ``logic_class()`` and ``panel_class(ui, parameters, logic, ...)``."""

    #: the module's logic (a CompareTaskLogic) and panel (a ComparePanel)
    logic_class = None
    panel_class = None

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic_class()
        self.panel = self.panel_class(uiWidget, self.logic.parameters(), self.logic,
                                      install=self.installDependencies, on_error=self.showError)
        self.panel.set_scene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def installDependencies(self):
        """Runs as the first step of Apply: asks, then installs what the backend needs."""
        from MedDiffusionUtilsLib import dependencies

        installed = dependencies.DependencyInstaller().ensure(slicer.util.confirmOkCancelDisplay, log=print)
        if installed:
            self.panel.refresh_models()

    def showError(self, message):
        slicer.util.errorDisplay(message, windowTitle=self.logic.title)

    def onSceneStartClose(self, caller, event):
        self.panel.task_panel.cleanup()  # stops a run whose input is about to disappear

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.panel.set_parameters(self.logic.parameters())

    def enter(self):
        if self.panel is not None and self.panel.task_panel.binding is None:
            self.panel.set_parameters(self.logic.parameters())

    def cleanup(self):
        self.removeObservers()
        if self.panel is not None:
            self.panel.cleanup()

    def onReload(self):
        import MedDiffusionUtilsLib

        MedDiffusionUtilsLib.reload()
        MedDiffusionUtilsLib.reload_package(f"{self.moduleName}Lib")
        ScriptedLoadableModuleWidget.onReload(self)
