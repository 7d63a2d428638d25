"""Two-way binding of .ui widgets to a :class:`~MedDiffusionUtilsLib.parameters.ParameterSet`.

A widget names the parameter it edits in its ``SlicerParameterName`` dynamic property, as in
Slicer's own parameter-node GUI connection.  Only Qt API that Slicer's PythonQt and PySide6
share is used (``signal.connect``, ``property()``, ``setValue``, ``blockSignals``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import vtk

from .parameters import Parameter, ParameterSet

__all__ = ["GuiBinding", "named_widgets", "required_widgets", "release", "PARAMETER_PROPERTY"]

#: the dynamic property a .ui widget carries to say which parameter it edits
PARAMETER_PROPERTY = "SlicerParameterName"


def release(binding, parameters, observer) -> None:
    """Undo a panel's hold on its parameter node: disconnect the widgets, stop observing the node."""
    if binding is not None:
        binding.disconnect()
    if observer is not None and parameters is not None:
        parameters.node.RemoveObserver(observer)


def named_widgets(root) -> dict[str, Any]:
    """Every descendant of ``root`` with an object name, by name (PythonQt and PySide6)."""
    found: dict[str, Any] = {}
    pending = list(root.children())
    while pending:
        child = pending.pop()
        name = child.property("objectName")
        if name and name not in found:
            found[name] = child
        pending.extend(child.children())
    return found


def required_widgets(root, names: Sequence[str], ui_name: str) -> SimpleNamespace:
    """Every named widget of ``root`` as an attribute; ``ValueError`` if one of ``names`` is
    missing, naming the .ui file (``ui_name``) so an outdated .ui is easy to find."""
    widgets = named_widgets(root)
    missing = [name for name in names if name not in widgets]
    if missing:
        raise ValueError(f"{ui_name} lacks widgets {missing}")
    return SimpleNamespace(**widgets)


class _Adapter:
    """How one widget kind shows and edits a value."""

    def __init__(self, widget, field: Parameter):
        self.widget = widget
        self.field = field

    def signal(self):
        raise NotImplementedError

    def read(self) -> Any:
        raise NotImplementedError

    def write(self, value: Any) -> None:
        raise NotImplementedError

    def configure(self) -> None:
        """Make the widget's own limits match the parameter's."""


class _NodeComboAdapter(_Adapter):
    def configure(self):
        self.widget.setProperty("nodeTypes", list(self.field.classes))

    def signal(self):
        return self.widget.currentNodeChanged

    def read(self):
        return self.widget.currentNode()

    def write(self, value):
        self.widget.setCurrentNode(value)


class _CheckAdapter(_Adapter):
    def signal(self):
        return self.widget.toggled

    def read(self):
        return self.widget.isChecked()

    def write(self, value):
        self.widget.setChecked(bool(value))


class _ComboAdapter(_Adapter):
    def configure(self):
        if self.widget.property("count") == 0:
            for choice in getattr(self.field, "choices", ()):
                self.widget.addItem(str(choice))

    def signal(self):
        return self.widget.currentIndexChanged

    def read(self):
        return self.widget.property("currentText")

    def write(self, value):
        self.widget.setCurrentIndex(self.widget.findText(str(value)))


class _LineEditAdapter(_Adapter):
    def signal(self):
        return self.widget.textChanged

    def read(self):
        return self.widget.property("text")

    def write(self, value):
        self.widget.setText(str(value))


class _ValueAdapter(_Adapter):
    """Spin boxes, sliders and ctkSliderWidget: a ``value`` property and ``valueChanged``."""

    def configure(self):
        for limit in ("minimum", "maximum"):
            bound = getattr(self.field, limit, None)
            if bound is not None:
                self.widget.setProperty(limit, bound)

    def signal(self):
        return self.widget.valueChanged

    def read(self):
        return self.widget.property("value")

    def write(self, value):
        self.widget.setValue(value)


def _adapter_for(widget, field: Parameter) -> _Adapter:
    if widget.inherits("qMRMLNodeComboBox"):
        return _NodeComboAdapter(widget, field)
    if widget.inherits("QAbstractButton"):
        return _CheckAdapter(widget, field)
    if widget.inherits("QComboBox"):
        return _ComboAdapter(widget, field)
    if widget.inherits("QLineEdit"):
        return _LineEditAdapter(widget, field)
    if widget.property("value") is not None:
        return _ValueAdapter(widget, field)
    raise ValueError(f"widget '{widget.property('objectName')}' ({type(widget).__name__}) "
                     f"cannot edit parameter '{field.name}'")


class GuiBinding:
    """Two-way link between a :class:`ParameterSet` and the widgets naming its parameters.

    ``widgets`` is any iterable of widgets (e.g. ``named_widgets(root).values()``); those
    whose ``SlicerParameterName`` property names a parameter are bound.  ``on_error`` gets
    the ``ValueError`` of a rejected edit (the widget is then reset to the stored value).
    """

    def __init__(self, parameters: ParameterSet, widgets: Iterable[Any],
                 on_error: Callable[[ValueError], None] | None = None):
        self.parameters = parameters
        self.on_error = on_error
        fields = parameters.fields()
        self.adapters: dict[str, _Adapter] = {}
        for widget in widgets:
            name = widget.property(PARAMETER_PROPERTY) if hasattr(widget, "property") else None
            if not name:
                continue
            if name not in fields:
                raise ValueError(f"widget '{widget.property('objectName')}' names parameter "
                                 f"'{name}', which {type(parameters).__name__} does not declare")
            self.adapters[name] = _adapter_for(widget, fields[name])
        self._slots: list[tuple[Any, Callable]] = []
        self._observer: int | None = None

    @property
    def connected(self) -> bool:
        return self._observer is not None

    def connect(self) -> None:
        """Show the stored values, then follow edits in both directions."""
        if self.connected:
            return
        for name, adapter in self.adapters.items():
            adapter.configure()
            slot = self._make_slot(name)
            adapter.signal().connect(slot)
            self._slots.append((adapter.signal(), slot))
        self._observer = self.parameters.node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                          self._on_node_modified)
        self._adopt_selected_nodes()
        self.update_widgets()

    def disconnect(self) -> None:
        for signal, slot in self._slots:
            signal.disconnect(slot)
        self._slots = []
        if self._observer is not None:
            self.parameters.node.RemoveObserver(self._observer)
            self._observer = None

    def update_widgets(self) -> None:
        """Copy every stored value into its widget without echoing back.

        Widgets already showing the value are left alone (re-setting a line edit's text
        would move its cursor while the user types).
        """
        for name, adapter in self.adapters.items():
            value = self.parameters.get(name)
            if adapter.read() == value:
                continue
            blocked = adapter.widget.blockSignals(True)
            try:
                adapter.write(value)
            finally:
                adapter.widget.blockSignals(blocked)

    def _adopt_selected_nodes(self) -> None:
        """An unset node parameter takes the node its selector already shows (a selector
        without a "None" entry always shows one), so GUI and parameter node agree."""
        for name, adapter in self.adapters.items():
            if isinstance(adapter, _NodeComboAdapter) and self.parameters.get(name) is None:
                node = adapter.read()
                if node is not None:
                    self.parameters.set(name, node)

    def _make_slot(self, name: str) -> Callable:
        def on_widget_changed(*_args) -> None:
            try:
                self.parameters.set(name, self.adapters[name].read())
            except ValueError as error:
                self.update_widgets()
                if self.on_error is not None:
                    self.on_error(error)
        return on_widget_changed

    def _on_node_modified(self, caller, event) -> None:  # noqa: ARG002 - VTK observer signature
        self.update_widgets()
