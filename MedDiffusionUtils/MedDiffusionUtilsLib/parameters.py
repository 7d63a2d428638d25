"""Typed module parameters stored on a ``vtkMRMLScriptedModuleNode``, bound to .ui widgets.

A module declares its parameters once::

    class DenoiseParameters(ParameterSet):
        inputVolume = Node("vtkMRMLScalarVolumeNode", required=True)
        steps = Int(10, minimum=1, maximum=200)
        strength = Float(0.5, minimum=0.0, maximum=1.0)
        model = Choice("coreDiff-v1", choices=("coreDiff-v1", "coreDiff-v2"))
        useGPU = Bool(True)

    params = DenoiseParameters.for_module(scene, "LDCTDenoise")
    params.steps = 20          # validated, stored as text on the parameter node
    params.inputVolume = node  # stored as a node reference

Values live on the MRML node, so they are saved with the scene and undo with it.  Unset
values read as their defaults; invalid values raise ``ValueError`` naming the parameter and
the allowed range.  :class:`GuiBinding` keeps widgets that carry the ``SlicerParameterName``
dynamic property in step with the node, using only Qt API that Slicer's PythonQt and
PySide6 share (``signal.connect``, ``property()``, ``setValue``, ``blockSignals``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import slicer
import vtk

__all__ = [
    "Parameter", "Float", "Int", "Bool", "Text", "Choice", "Node", "ParameterSet",
    "GuiBinding", "named_widgets", "required_widgets", "PARAMETER_PROPERTY",
]

#: the dynamic property a .ui widget carries to say which parameter it edits
PARAMETER_PROPERTY = "SlicerParameterName"


# -- parameter kinds -------------------------------------------------------------------------
class Parameter:
    """One declared parameter: default, validation and text conversion."""

    def __init__(self, default: Any = None, *, label: str | None = None):
        self.default = default
        self.label = label
        self.name = ""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return instance.get(self.name)

    def __set__(self, instance, value) -> None:
        instance.set(self.name, value)

    def validate(self, value: Any) -> Any:
        """Return ``value`` in this parameter's type, or raise ``ValueError``."""
        return value

    def to_text(self, value: Any) -> str:
        return str(value)

    def from_text(self, text: str) -> Any:
        return self.validate(text)

    def _error(self, message: str) -> ValueError:
        return ValueError(f"parameter '{self.name}' {message}")


class _Number(Parameter):
    kind: type = float

    def __init__(self, default: float = 0, *, minimum: float | None = None,
                 maximum: float | None = None, label: str | None = None):
        super().__init__(default, label=label)
        self.minimum = minimum
        self.maximum = maximum

    def validate(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise self._error(f"must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self._error(f"must be a number, got {value!r}") from None
        if math.isnan(number):
            raise self._error("must be a number, got NaN")
        if self.kind is int:
            if number != int(number):
                raise self._error(f"must be a whole number, got {value!r}")
            number = int(number)
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if not low <= number <= high:
            raise self._error(f"must be between {low:g} and {high:g}, got {number:g}")
        return number

    def to_text(self, value: Any) -> str:
        return repr(self.validate(value))


class Float(_Number):
    kind = float


class Int(_Number):
    kind = int


class Bool(Parameter):
    def __init__(self, default: bool = False, *, label: str | None = None):
        super().__init__(bool(default), label=label)

    def validate(self, value: Any) -> bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise self._error(f"must be true or false, got {value!r}")
        return bool(value)

    def to_text(self, value: Any) -> str:
        return "true" if self.validate(value) else "false"


class Text(Parameter):
    def __init__(self, default: str = "", *, label: str | None = None):
        super().__init__(default, label=label)

    def validate(self, value: Any) -> str:
        return "" if value is None else str(value)


class Choice(Parameter):
    def __init__(self, default: str, *, choices: Sequence[str], label: str | None = None):
        if default not in choices:
            raise ValueError(f"default {default!r} is not one of the choices {list(choices)}")
        super().__init__(default, label=label)
        self.choices = tuple(choices)

    def validate(self, value: Any) -> str:
        if value not in self.choices:
            raise self._error(f"must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value


class Node(Parameter):
    """A reference to a MRML node of one of ``classes`` (stored as a node reference)."""

    def __init__(self, *classes: str, required: bool = False, label: str | None = None):
        super().__init__(None, label=label)
        self.classes = classes or ("vtkMRMLNode",)
        self.required = required

    def validate(self, value: Any) -> Any:
        if value is None:
            return None
        if not hasattr(value, "IsA") or not any(value.IsA(name) for name in self.classes):
            raise self._error(f"must be a {' or '.join(self.classes)}, got "
                              f"{getattr(value, 'GetClassName', lambda: type(value).__name__)()}")
        return value


# -- the set of parameters on one node -------------------------------------------------------
class ParameterSet:
    """Typed access to the parameters stored on one ``vtkMRMLScriptedModuleNode``."""

    def __init__(self, node):
        if node is None or not node.IsA("vtkMRMLScriptedModuleNode"):
            raise ValueError("a ParameterSet needs a vtkMRMLScriptedModuleNode")
        self.node = node

    @classmethod
    def fields(cls) -> dict[str, Parameter]:
        found: dict[str, Parameter] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Parameter):
                    found[name] = value
        return found

    @classmethod
    def for_module(cls, scene, module_name: str):
        """The module's singleton parameter node in ``scene`` (created on first use)."""
        node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(module_name)
            node.SetName(f"{module_name} parameters")
            node.SetModuleName(module_name)
            node = scene.AddNode(node)
        return cls(node)

    def _field(self, name: str) -> Parameter:
        try:
            return self.fields()[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no parameter '{name}'; known: "
                                 f"{', '.join(self.fields())}") from None

    def get(self, name: str) -> Any:
        field = self._field(name)
        if isinstance(field, Node):
            return self.node.GetNodeReference(name)
        text = self.node.GetParameter(name)
        if text == "":
            return field.default
        return field.from_text(text)

    def set(self, name: str, value: Any) -> None:
        field = self._field(name)
        value = field.validate(value)
        if isinstance(field, Node):
            self.node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            self.node.SetParameter(name, field.to_text(value))

    def update(self, **values: Any) -> None:
        """Set several parameters with a single Modified event."""
        was_modifying = self.node.StartModify()
        try:
            for name, value in values.items():
                self.set(name, value)
        finally:
            self.node.EndModify(was_modifying)

    def values(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self.fields()}

    def missing(self) -> list[str]:
        """Required node parameters that are not set (what keeps Apply disabled)."""
        return [name for name, field in self.fields().items()
                if isinstance(field, Node) and field.required and self.get(name) is None]

    def reset(self) -> None:
        """Back to defaults (node references cleared)."""
        self.update(**{name: field.default for name, field in self.fields().items()})


# -- binding .ui widgets ---------------------------------------------------------------------
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
