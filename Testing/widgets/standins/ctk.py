"""CTK widget stand-ins: same class names, properties and signals, plain Qt inside."""

from __future__ import annotations

from PySide6.QtCore import Property, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout,
                               QLineEdit, QSlider, QWidget)
from PySide6.QtCore import Qt


class ctkCollapsibleButton(QGroupBox):
    """A section header that folds its content: here a checkable group box.

    ``text`` is the header (QGroupBox calls it ``title``); ``collapsed`` is "not checked".
    """

    contentsCollapsed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setCheckable(True)
        self.setChecked(True)
        self.toggled.connect(lambda checked: self.contentsCollapsed.emit(not checked))

    def _text(self) -> str:
        return self.title()

    def _set_text(self, text: str) -> None:
        self.setTitle(text)

    def _collapsed(self) -> bool:
        return not self.isChecked()

    def _set_collapsed(self, collapsed: bool) -> None:
        self.setChecked(not collapsed)

    text = Property(str, _text, _set_text)
    collapsed = Property(bool, _collapsed, _set_collapsed)


class ctkCollapsibleGroupBox(ctkCollapsibleButton):
    """Folding group box; the same stand-in serves."""


class ctkCheckBox(QCheckBox):
    pass


class ctkComboBox(QComboBox):
    def _default_text(self) -> str:
        return self.placeholderText()

    def _set_default_text(self, text: str) -> None:
        self.setPlaceholderText(text)

    defaultText = Property(str, _default_text, _set_default_text)


class ctkDoubleSpinBox(QDoubleSpinBox):
    pass


class ctkSliderWidget(QWidget):
    """A slider with a spin box: ``value``/``minimum``/``maximum``/``singleStep``/``decimals``
    properties and ``valueChanged(double)``, like CTK's."""

    valueChanged = Signal(float)
    _TICKS = 1000

    def __init__(self, parent=None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, self._TICKS)
        self.spinBox = QDoubleSpinBox(self)
        self.spinBox.setRange(0.0, 99.0)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider)
        layout.addWidget(self.spinBox)
        self.spinBox.valueChanged.connect(self._on_spin)
        self.slider.valueChanged.connect(self._on_slider)

    def _on_spin(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_ticks(value))
        self.slider.blockSignals(False)
        self.valueChanged.emit(value)

    def _on_slider(self, ticks: int) -> None:
        low, high = self.spinBox.minimum(), self.spinBox.maximum()
        self.spinBox.setValue(low + (high - low) * ticks / self._TICKS)

    def _to_ticks(self, value: float) -> int:
        low, high = self.spinBox.minimum(), self.spinBox.maximum()
        return 0 if high <= low else round((value - low) / (high - low) * self._TICKS)

    def _value(self) -> float:
        return self.spinBox.value()

    def setValue(self, value: float) -> None:
        self.spinBox.setValue(value)

    def _minimum(self) -> float:
        return self.spinBox.minimum()

    def _set_minimum(self, value: float) -> None:
        self.spinBox.setMinimum(value)

    def _maximum(self) -> float:
        return self.spinBox.maximum()

    def _set_maximum(self, value: float) -> None:
        self.spinBox.setMaximum(value)

    def _single_step(self) -> float:
        return self.spinBox.singleStep()

    def _set_single_step(self, value: float) -> None:
        self.spinBox.setSingleStep(value)

    def _decimals(self) -> int:
        return self.spinBox.decimals()

    def _set_decimals(self, value: int) -> None:
        self.spinBox.setDecimals(value)

    # as in PythonQt, ``value`` reads as an attribute; module code uses property("value")
    value = Property(float, _value, setValue, notify=valueChanged)
    minimum = Property(float, _minimum, _set_minimum)
    maximum = Property(float, _maximum, _set_maximum)
    singleStep = Property(float, _single_step, _set_single_step)
    decimals = Property(int, _decimals, _set_decimals)

    def setMinimum(self, value: float) -> None:
        self._set_minimum(value)

    def setMaximum(self, value: float) -> None:
        self._set_maximum(value)


class ctkPathLineEdit(QWidget):
    """A path field: ``currentPath`` property and ``currentPathChanged(str)``."""

    currentPathChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lineEdit = QLineEdit(self)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.lineEdit)
        self.lineEdit.textChanged.connect(self.currentPathChanged.emit)

    def _current_path(self) -> str:
        return self.lineEdit.text()

    def _set_current_path(self, path: str) -> None:
        self.lineEdit.setText(path)

    currentPath = Property(str, _current_path, _set_current_path)
