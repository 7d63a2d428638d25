"""Before/after pictures of a volume-to-volume result (denoising, motion correction) as one PNG.

Two axial slices side by side, optionally a third with the difference, each with a small
text label.  The PNG is written through SimpleITK (no plotting library) and drawn in the
radiological convention: anterior at the top, the patient's left on the picture's right,
whatever the volume's direction matrix (axes are only permuted and flipped, never
resampled, except that non-square pixels are stretched to square ones).

Labels use a built-in 5×7 bitmap font (upper case, digits and a few signs), so no font
library is needed either.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from meddiffusion.files import atomic_write
from meddiffusion.io import Volume

__all__ = ["before_after_png", "before_after_image", "axial_slice_count", "tile_image", "write_png", "SEPARATOR_PX"]

#: width of the white line between panels, in pixels
SEPARATOR_PX = 4
#: grey-level window of the difference panel (after - before), HU
DIFFERENCE_WINDOW = (-100.0, 100.0)

# 5×7 glyphs, rows top to bottom, "#" = ink
_GLYPHS = {
    "A": ".###. #...# #...# ##### #...# #...# #...#", "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.", "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####", "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####", "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#", "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#", "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.", "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#", "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.", "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.", "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.", "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####", "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.", "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.", "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.", "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....", "-": "..... ..... ..... ##### ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....", ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...", "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.", ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....", "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "=": "..... ..... ##### ..... ##### ..... .....",
}
_FONT = {char: np.array([[c == "#" for c in row] for row in rows.split()], bool) for char, rows in _GLYPHS.items()}


# -- orientation -------------------------------------------------------------------------------
def _radiological_axes(volume: Volume) -> tuple[tuple[int, int, int], tuple[bool, bool, bool],
                                                tuple[float, float, float]]:
    """How to view ``volume.array`` as (superior, posterior, left): array axes, flips and spacings.

    Each voxel axis is matched to the LPS axis it runs closest to (the assignment with the
    largest total |cosine|, so oblique scans still get one axis each); a flip makes every
    displayed axis run towards +S, +P (down the picture) and +L (to the right).
    """
    cosines = np.asarray(volume.direction, float).reshape(3, 3)       # column a: direction of voxel axis a (x, y, z)
    physical = max(itertools.permutations(range(3)),
                   key=lambda p: sum(abs(cosines[p[a], a]) for a in range(3)))
    order, flips, spacings = [], [], []
    for target in (2, 1, 0):                                            # S, P, L
        axis = physical.index(target)                                  # voxel axis 0=x, 1=y, 2=z
        order.append(2 - axis)                                         # array axis (z, y, x)
        flips.append(bool(cosines[target, axis] < 0))
        spacings.append(volume.spacing[axis])
    return tuple(order), tuple(flips), tuple(spacings)


def axial_slice_count(volume: Volume) -> int:
    """Number of axial slices of ``volume``: the length of its voxel axis closest to superior-inferior."""
    order, _, _ = _radiological_axes(volume)
    return volume.shape[order[0]]


def _axial_slice(volume: Volume, index: int) -> tuple[np.ndarray, float]:
    """Slice ``index`` (the volume's own voxel index along its axial axis) as (rows=P, cols=L), and row/col aspect."""
    order, flips, spacings = _radiological_axes(volume)
    view = np.transpose(volume.array, order)
    if flips[0]:
        index = view.shape[0] - 1 - index
    image = view[index]
    if flips[1]:
        image = image[::-1]
    if flips[2]:
        image = image[:, ::-1]
    return np.ascontiguousarray(image, dtype=np.float32), spacings[1] / spacings[2]


def _square_pixels(image: np.ndarray, aspect: float) -> np.ndarray:
    """Stretch rows so that a pixel of the picture is as tall as it is wide in millimetres."""
    if abs(aspect - 1.0) <= 1e-3:
        return image
    picture = sitk.GetImageFromArray(image)
    picture.SetSpacing((1.0, aspect))
    size = (image.shape[1], max(1, int(round(image.shape[0] * aspect))))
    resampled = sitk.Resample(picture, size, sitk.Transform(), sitk.sitkLinear, (0.0, 0.0), (1.0, 1.0),
                              (1.0, 0.0, 0.0, 1.0), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


# -- drawing -----------------------------------------------------------------------------------
def _grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return (np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_label(label: str) -> None:
    unknown = sorted({c for c in label.upper() if c not in _FONT})
    if unknown:
        raise ValueError(f"label {label!r} has characters the built-in font lacks: {unknown}; "
                         f"use letters, digits, spaces and {''.join(c for c in _FONT if not c.isalnum() and c != ' ')}")


def _draw_label(rgb: np.ndarray, label: str) -> None:
    """White upper-case text on a black box in the top-left corner; left out when it does not fit."""
    height, width = rgb.shape[:2]
    scale = max(1, width // 256)
    pad = scale
    text_w = (6 * len(label) - 1) * scale
    box_w, box_h = text_w + 2 * pad, 7 * scale + 2 * pad
    margin = 2 * scale
    if not label or box_w + 2 * margin > width or box_h + 2 * margin > height:
        return
    rgb[margin:margin + box_h, margin:margin + box_w] = 0
    x = margin + pad
    for char in label.upper():
        ink = np.kron(_FONT[char], np.ones((scale, scale), bool))
        region = rgb[margin + pad:margin + pad + 7 * scale, x:x + 5 * scale]
        region[ink] = 255
        x += 6 * scale


def before_after_image(before: Volume, after: Volume, *, slice_index: int | None = None,
                       window: tuple[float, float] = (-160.0, 240.0),
                       labels: Sequence[str] | None = ("low dose", "denoised"),
                       difference: bool = False) -> np.ndarray:
    """The picture as an (h, w, 3) uint8 array: before | after [| after - before].

    ``slice_index`` is the volume's own voxel index along its axial axis (k for an axial
    scan; default the middle slice); ``window`` maps HU to black..white for both panels; the
    difference panel uses ±100 HU (black: the result is darker). ``labels=None`` draws none.
    Width is n·w + (n-1)·``SEPARATOR_PX`` for n panels of the slice's width w.
    """
    for name, volume in (("before", before), ("after", after)):
        if not isinstance(volume, Volume) or volume.array.ndim != 3:
            raise ValueError(f"{name} must be a 3D Volume, got {type(volume).__name__}")
    if before.shape != after.shape or not np.allclose(before.direction, after.direction, atol=1e-4):
        raise ValueError(f"before and after must share one grid: shapes {before.shape} and {after.shape}, "
                         f"directions {before.direction} and {after.direction}")
    lo, hi = (float(w) for w in window)
    if not np.isfinite([lo, hi]).all() or lo >= hi:
        raise ValueError(f"window must be (low, high) HU with low < high, got {window}")
    names = [] if labels is None else [str(label) for label in labels]
    if labels is not None and len(names) != 2:
        raise ValueError(f"labels must be two texts (before, after) or None, got {labels!r}")
    if names and difference:
        names.append("difference")
    for label in names:
        _check_label(label)
    count = axial_slice_count(before)
    index = count // 2 if slice_index is None else slice_index
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise ValueError(f"slice_index must be an integer in 0..{count - 1} (axial slices of the volume), "
                         f"got {slice_index!r}")

    slices = []
    for volume in (before, after):
        image, aspect = _axial_slice(volume, int(index))
        slices.append(_square_pixels(image, aspect))
    panels = [_grey(slices[0], (lo, hi)), _grey(slices[1], (lo, hi))]
    if difference:
        panels.append(_grey(slices[1] - slices[0], DIFFERENCE_WINDOW))
    panels = [np.repeat(p[..., None], 3, axis=2) for p in panels]
    for panel, label in zip(panels, names):
        _draw_label(panel, label)
    separator = np.full((panels[0].shape[0], SEPARATOR_PX, 3), 255, np.uint8)
    pieces = [panels[0]]
    for panel in panels[1:]:
        pieces += [separator, panel]
    return np.concatenate(pieces, axis=1)


def tile_image(rows: Sequence[Sequence[tuple[str, np.ndarray]]], window: tuple[float, float] = (-200.0, 800.0),
               zoom: int = 8) -> np.ndarray:
    """Rows of labelled 2D crops (HU, array order) as one (h, w, 3) uint8 picture.

    Every crop of a row must have one shape; each is mapped through ``window``, enlarged
    ``zoom`` times with square pixels (nearest neighbour, so single voxels stay visible) and
    labelled; ``SEPARATOR_PX`` white lines part the tiles and the rows.
    """
    lo, hi = (float(w) for w in window)
    if not np.isfinite([lo, hi]).all() or lo >= hi:
        raise ValueError(f"window must be (low, high) HU with low < high, got {window}")
    if isinstance(zoom, bool) or not isinstance(zoom, int) or zoom < 1:
        raise ValueError(f"zoom must be an integer >= 1, got {zoom!r}")
    if not rows or any(not row for row in rows):
        raise ValueError("tile_image needs at least one row, each with at least one (label, crop)")
    lines = []
    for row in rows:
        tiles = []
        for label, crop in row:
            crop = np.asarray(crop, float)
            if crop.ndim != 2 or crop.shape != np.shape(row[0][1]):
                raise ValueError(f"the crops of a row must be 2D and of one shape, got {crop.shape} and "
                                 f"{np.shape(row[0][1])}")
            _check_label(label)
            tile = np.repeat(_grey(np.kron(crop, np.ones((zoom, zoom))), (lo, hi))[..., None], 3, axis=2)
            _draw_label(tile, label)
            tiles += [tile, np.full((tile.shape[0], SEPARATOR_PX, 3), 255, np.uint8)]
        lines.append(np.concatenate(tiles[:-1], axis=1))
    width = max(line.shape[1] for line in lines)
    pieces = []
    for line in lines:
        pad = np.full((line.shape[0], width - line.shape[1], 3), 255, np.uint8)
        pieces += [np.concatenate([line, pad], axis=1), np.full((SEPARATOR_PX, width, 3), 255, np.uint8)]
    return np.concatenate(pieces[:-1], axis=0)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (h, w, 3) uint8 picture as PNG, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"picture path {path} must end in .png")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"picture must be an (h, w, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    picture = sitk.GetImageFromArray(rgb, isVector=True)
    return atomic_write(path, lambda tmp: sitk.WriteImage(picture, str(tmp)))


def before_after_png(path: str | Path, before: Volume, after: Volume, *, slice_index: int | None = None,
                     window: tuple[float, float] = (-160.0, 240.0),
                     labels: Sequence[str] | None = ("low dose", "denoised"), difference: bool = False) -> Path:
    """Write :func:`before_after_image` as a PNG at ``path`` (atomically) and return the path."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"picture path {path} must end in .png")
    return write_png(path, before_after_image(before, after, slice_index=slice_index, window=window,
                                              labels=labels, difference=difference))
