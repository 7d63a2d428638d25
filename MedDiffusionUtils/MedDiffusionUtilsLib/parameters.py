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
the allowed range.  :mod:`~MedDiffusionUtilsLib.binding` keeps .ui widgets in step with them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Sequence

import slicer

__all__ = ["Parameter", "Float", "Int", "Bool", "Text", "Choice", "Node", "ParameterSet", "Snapshot"]


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

    def snapshot(self) -> "Snapshot":
        """The values as they are now, for one run: edits made while it runs (another input
        picked, say) apply to the next run, not to the import of this one."""
        return Snapshot(missing=self.missing(), **self.values())

    def reset(self) -> None:
        """Back to defaults (node references cleared)."""
        self.update(**{name: field.default for name, field in self.fields().items()})


class Snapshot(SimpleNamespace):
    """A :class:`ParameterSet`'s values at one moment (attributes by parameter name)."""

    def __init__(self, *, missing: Sequence[str] = (), **values: Any):
        super().__init__(**values)
        self._missing = list(missing)

    def missing(self) -> list[str]:
        return list(self._missing)
