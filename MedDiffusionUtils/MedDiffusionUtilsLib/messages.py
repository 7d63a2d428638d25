"""The status line, log and refusals of a module panel whose .ui has ``statusLabel`` and ``logText``.

GUI code in the subset of Qt that PythonQt and PySide6 share; it touches only the two widgets
through ``self.ui`` and calls ``self.on_error(message)`` where the panel was given one.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["PanelMessages"]


class PanelMessages:
    """Mixin of the panels' message helpers: ``_try``, ``_fail``, ``_status`` and ``_log``.

    The panel sets ``self.ui`` (with ``statusLabel`` and ``logText``) and ``self.on_error``;
    ``_after_try`` runs after every ``_try``, failed or not (nothing by default).
    """

    on_error: Callable[[str], None] | None = None

    def _try(self, action: Callable[[], Any]):
        """``action()``'s result, or None with its ``ValueError``/``OSError`` shown to the user."""
        try:
            return action()
        except (ValueError, OSError) as error:
            self._fail(str(error))
            return None
        finally:
            self._after_try()

    def _after_try(self) -> None:
        """Run after each ``_try`` (e.g. a panel's ``update_buttons``)."""

    def _fail(self, message: str) -> None:
        """The first line in the status line, the whole message in the log and to ``on_error``."""
        self._status(message.splitlines()[0] if message else "")
        self._log(message)
        if self.on_error is not None:
            self.on_error(message)

    def _status(self, text: str) -> None:
        self.ui.statusLabel.setText(text)

    def _log(self, text: str) -> None:
        if text:
            self.ui.logText.appendPlainText(text)
