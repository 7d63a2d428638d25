"""qMRML widget stand-ins driven by a real vtkMRMLScene."""

from __future__ import annotations

from PySide6.QtCore import Property, Signal
from PySide6.QtWidgets import QComboBox, QWidget


class qMRMLWidget(QWidget):
    """Base of Slicer module panels: holds the scene and announces changes."""

    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(QComboBox):
    """A node selector listing the scene's nodes of ``nodeTypes`` (kept up to date).

    Module code uses ``setMRMLScene``, ``currentNode``/``setCurrentNode``,
    ``currentNodeID`` and the ``currentNodeChanged(node)`` signal, as with the real one.
    """

    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)
    nodeAdded = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._node_types: list[str] = []
        self._none_enabled = False
        self._observers: list[int] = []
        self._flags = {name: False for name in ("addEnabled", "removeEnabled", "editEnabled",
                                                 "renameEnabled", "showHidden",
                                                 "showChildNodeTypes", "selectNodeUponCreation")}
        self.currentIndexChanged.connect(self._on_index_changed)

    # -- properties set from .ui files -----------------------------------------------------
    def _get_node_types(self) -> list:
        return list(self._node_types)

    def _set_node_types(self, types) -> None:
        self._node_types = list(types)
        self._refill()

    def _get_none_enabled(self) -> bool:
        return self._none_enabled

    def _set_none_enabled(self, enabled: bool) -> None:
        self._none_enabled = bool(enabled)
        self._refill()

    nodeTypes = Property("QStringList", _get_node_types, _set_node_types)
    noneEnabled = Property(bool, _get_none_enabled, _set_none_enabled)
    addEnabled = Property(bool, lambda self: self._flags["addEnabled"],
                          lambda self, v: self._flags.__setitem__("addEnabled", v))
    removeEnabled = Property(bool, lambda self: self._flags["removeEnabled"],
                             lambda self, v: self._flags.__setitem__("removeEnabled", v))
    editEnabled = Property(bool, lambda self: self._flags["editEnabled"],
                           lambda self, v: self._flags.__setitem__("editEnabled", v))
    renameEnabled = Property(bool, lambda self: self._flags["renameEnabled"],
                             lambda self, v: self._flags.__setitem__("renameEnabled", v))
    showHidden = Property(bool, lambda self: self._flags["showHidden"],
                          lambda self, v: self._flags.__setitem__("showHidden", v))
    showChildNodeTypes = Property(bool, lambda self: self._flags["showChildNodeTypes"],
                                  lambda self, v: self._flags.__setitem__("showChildNodeTypes", v))
    selectNodeUponCreation = Property(bool, lambda self: self._flags["selectNodeUponCreation"],
                                      lambda self, v: self._flags.__setitem__("selectNodeUponCreation", v))

    # -- scene -----------------------------------------------------------------------------
    def setMRMLScene(self, scene) -> None:
        if self._scene is not None:
            for tag in self._observers:
                self._scene.RemoveObserver(tag)
        self._scene = scene
        self._observers = []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent):
                self._observers.append(scene.AddObserver(event, self._on_scene_changed))
        self._refill()

    def mrmlScene(self):
        return self._scene

    def _on_scene_changed(self, caller, event) -> None:  # noqa: ARG002 - VTK observer
        self._refill()

    def _matching_nodes(self) -> list:
        if self._scene is None or not self._node_types:
            return []
        found = []
        for index in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(index)
            if node is None or (node.GetHideFromEditors() and not self._flags["showHidden"]):
                continue
            if any(node.IsA(name) for name in self._node_types):
                found.append(node)
        return found

    def _refill(self) -> None:
        """Rebuild the list, keeping the selection; select the first node if none is allowed
        to be empty (as the real combo box does)."""
        previous = self.currentNodeID()
        self.blockSignals(True)
        self.clear()
        if self._none_enabled:
            self.addItem("None", "")
        for node in self._matching_nodes():
            self.addItem(node.GetName(), node.GetID())
        index = self.findData(previous) if previous else -1
        if index < 0:
            index = 0 if self.count() else -1
        self.setCurrentIndex(index)
        self.blockSignals(False)
        if self.currentNodeID() != previous:
            self._on_index_changed(self.currentIndex())

    # -- selection -------------------------------------------------------------------------
    def currentNodeID(self) -> str:
        data = self.currentData()
        return data or ""

    def currentNode(self):
        node_id = self.currentNodeID()
        return self._scene.GetNodeByID(node_id) if node_id and self._scene is not None else None

    def setCurrentNodeID(self, node_id: str) -> None:
        index = self.findData(node_id or "")
        if index < 0 and not node_id:
            index = -1
        self.setCurrentIndex(index)

    def setCurrentNode(self, node) -> None:
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def nodeCount(self) -> int:
        return len(self._matching_nodes())

    def _on_index_changed(self, index: int) -> None:
        self.currentNodeChanged.emit(self.currentNode())
        self.currentNodeIDChanged.emit(self.currentNodeID())
