"""Before/after comparison views: side by side, fade, difference and checkerboard; the nuclear display.

Everything here is MRML (layout node, slice composite nodes, new volumes), so it runs and is
tested on slicer-core.  The views follow because Slicer's layout manager and slice logics
observe those nodes.  Only :func:`fit_views` needs the application and is a no-op without it.

The input volumes are only shown, never modified; difference and checkerboard are new nodes.
"""

from __future__ import annotations

import numpy as np
import slicer

from . import nodes, outputs

__all__ = [
    "SIDE_BY_SIDE", "composite_node", "slice_node", "set_layout", "show_side_by_side",
    "show_fade", "show_single", "difference_volume", "checkerboard_volume", "fit_views",
    "NUCLEAR_COLORS", "DISPLAY_PERCENTILE", "nuclear_display",
]

#: Slicer's "Side by side" layout: Red (before) | Yellow (after)
SIDE_BY_SIDE = slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
BEFORE_VIEW, AFTER_VIEW = "Red", "Yellow"
#: Slicer's diverging colour table (a file-based table, absent from slicer-core)
DIVERGING_COLORS = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
#: nuclear colour tables, first found wins: PET-Heat is procedural (in every Slicer, slicer-core
#: too), the others are Slicer's colour files
NUCLEAR_COLORS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeFileInferno.txt",
                  "vtkMRMLPETProceduralColorNodePET-Rainbow2")
#: a nuclear display window runs from 0 to this percentile (robust to a hot voxel)
DISPLAY_PERCENTILE = 99.9


def _scene(scene):
    return scene if scene is not None else slicer.mrmlScene


def composite_node(view: str, scene=None):
    """The slice composite node of view ``view`` ("Red", "Yellow", ...)."""
    scene = _scene(scene)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == view:
            return node
    raise ValueError(f"no slice view named '{view}' in the scene (the layout creates them)")


def slice_node(view: str, scene=None):
    scene = _scene(scene)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        if node.GetLayoutName() == view:
            return node
    raise ValueError(f"no slice view named '{view}' in the scene (the layout creates them)")


def set_layout(arrangement: int, scene=None) -> bool:
    """Switch the view layout through the scene's layout node; False if there is none."""
    layout = _scene(scene).GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None:
        return False
    layout.SetViewArrangement(arrangement)
    return True


def show_side_by_side(before, after, *, views: tuple[str, str] = (BEFORE_VIEW, AFTER_VIEW),
                      link: bool = True, scene=None) -> None:
    """Before in the left view, after in the right one; pan/zoom/slice linked when ``link``."""
    scene = _scene(scene)
    set_layout(SIDE_BY_SIDE, scene)
    group = slice_node(views[0], scene).GetViewGroup()
    for view, volume in zip(views, (before, after)):
        composite = composite_node(view, scene)
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(link)
        slice_node(view, scene).SetViewGroup(group)  # linking acts within one view group
    fit_views()


def show_fade(before, after, opacity: float = 0.5, *, view: str = BEFORE_VIEW, scene=None) -> None:
    """Before as background, after as foreground at ``opacity`` (0 = before, 1 = after)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"fade opacity must be between 0 and 1, got {opacity}")
    composite = composite_node(view, _scene(scene))
    composite.SetBackgroundVolumeID(before.GetID())
    composite.SetForegroundVolumeID(after.GetID())
    composite.SetForegroundOpacity(opacity)


def show_single(volume, *, view: str = BEFORE_VIEW, scene=None) -> None:
    """Show one volume (e.g. a difference map) alone in ``view``."""
    composite = composite_node(view, _scene(scene))
    composite.SetBackgroundVolumeID(volume.GetID())
    composite.SetForegroundVolumeID(None)


def difference_volume(before, after, suffix: str = "difference"):
    """A new float32 volume ``after - before`` on the shared grid, named "<after> <suffix>".

    The display window is centred on zero and symmetric, so gains and losses look alike,
    with Slicer's blue-white-red colour table where it is installed.
    """
    nodes.check_same_geometry(after, before, f"'{after.GetName()}'")
    difference = (slicer.util.arrayFromVolume(after).astype(np.float32)
                  - slicer.util.arrayFromVolume(before).astype(np.float32))
    node = outputs.volume_from_array(difference, after, suffix)
    extent = float(np.percentile(np.abs(difference), 99.5)) or 1.0
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(2.0 * extent, 0.0)
        if node.GetScene().GetNodeByID(DIVERGING_COLORS) is not None:
            display.SetAndObserveColorNodeID(DIVERGING_COLORS)
    return node


def checkerboard_volume(before, after, block_voxels: int = 16, suffix: str = "checkerboard"):
    """A new volume alternating before/after in ``block_voxels``-sized squares of each slice.

    Edges that line up across squares show that the two volumes agree; breaks show where the
    processing moved or changed structures.
    """
    if block_voxels < 1:
        raise ValueError(f"checkerboard blocks must be at least 1 voxel, got {block_voxels}")
    nodes.check_same_geometry(after, before, f"'{after.GetName()}'")
    first = slicer.util.arrayFromVolume(before)
    second = slicer.util.arrayFromVolume(after)
    _, rows, columns = first.shape
    j, i = np.meshgrid(np.arange(rows) // block_voxels, np.arange(columns) // block_voxels,
                       indexing="ij")
    use_after = ((j + i) % 2 == 1)[np.newaxis]
    board = np.where(use_after, second, first).astype(np.result_type(first, second))
    return outputs.volume_from_array(board, after, suffix)


def nuclear_display(volume, *, colors=NUCLEAR_COLORS, percentile: float = DISPLAY_PERCENTILE,
                    top: float | None = None) -> str:
    """Show ``volume`` as nuclear medicine does: the first of ``colors`` the scene has, window
    from 0 to ``top`` (by default the ``percentile`` of its voxels).  Only the display node
    changes; returns the colour node's ID ("" when none of ``colors`` exists: it stays grey)."""
    display = volume.GetDisplayNode()
    if display is None:
        volume.CreateDefaultDisplayNodes()
        display = volume.GetDisplayNode()
    if top is None:
        values = slicer.util.arrayFromVolume(volume)
        top = float(np.percentile(values, percentile)) if values.size else 0.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, top if np.isfinite(top) and top > 0 else 1.0)
    scene = volume.GetScene()
    for color in colors:
        if scene is not None and scene.GetNodeByID(color) is not None:
            display.SetAndObserveColorNodeID(color)
            return color
    return ""


def fit_views() -> None:
    """Fit the slice views to their volumes (needs the Slicer application; else nothing)."""
    app = getattr(slicer, "app", None)
    if app is None or not hasattr(app, "layoutManager") or app.layoutManager() is None:
        return
    slicer.util.resetSliceViews()
