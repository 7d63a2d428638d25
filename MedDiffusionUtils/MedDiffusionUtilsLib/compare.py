"""The before/after comparison every task module offers once a run is done.

:class:`CompareTaskLogic` is a :class:`~MedDiffusionUtilsLib.tasklogic.TaskLogic` whose main
output can be shown beside its input: linked side-by-side views (input | output), the output
faded over the input in the left view, and a difference volume on request.  A module may
choose where the views go afterwards (:meth:`CompareTaskLogic.focus`).  MRML only, no Qt.
"""

from __future__ import annotations

from . import layouts
from .tasklogic import TaskLogic

__all__ = ["CompareTaskLogic", "DIFFERENCE_SUFFIX"]

DIFFERENCE_SUFFIX = "difference"


class CompareTaskLogic(TaskLogic):
    """A task logic with before/after views of its input and its main output."""

    def show_comparison(self, before, after, *, difference=None, fade: float = 0.0) -> None:
        """Before | after in linked side-by-side views (the difference on the right, if given),
        ``after`` faded over ``before`` on the left, then the module's :meth:`focus`."""
        layouts.show_side_by_side(before, after, scene=self.scene)
        self.set_fade(before, after, fade)
        if difference is not None:
            self.show_after(difference)
        self.focus(after)

    def focus(self, after) -> None:
        """Where the views go once a comparison is shown (by default: where they are)."""

    def set_fade(self, before, after, opacity: float) -> None:
        """Blend ``after`` over ``before`` in the left view: 0 shows before, 1 shows after."""
        layouts.show_fade(before, after, opacity, view=layouts.BEFORE_VIEW, scene=self.scene)

    def show_after(self, volume) -> None:
        """Show ``volume`` (the output or a difference volume) in the right view."""
        layouts.show_single(volume, view=layouts.AFTER_VIEW, scene=self.scene)

    def difference(self, before, after):
        """A new volume ``after - before`` named "<after> difference" (nothing is modified)."""
        return layouts.difference_volume(before, after, DIFFERENCE_SUFFIX)
