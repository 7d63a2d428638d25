"""Pictures of a phantom: an axial slice beside the same slice with its labels overlaid.

PNG files are written through SimpleITK (no plotting library needed), in the radiological
convention: anterior at the top, the patient's left on the image's right.
``save_readme_pictures(folder)`` makes one picture per modality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from meddiffusion.phantoms.grid import Grid, chest_grid
from meddiffusion.phantoms.phantom import Phantom
from meddiffusion.phantoms.render import render
from meddiffusion.phantoms.tissues import LABELS, PLAQUE_LABEL_BASE

__all__ = ["overlay", "save_overview", "save_readme_pictures"]

#: RGB colour per label (labels not listed, e.g. body and fat, stay uncoloured)
COLOURS = {
    "lung": (40, 90, 200), "lung_vessel": (120, 170, 255), "airway": (0, 200, 220), "bone": (240, 240, 190),
    "liver": (160, 80, 40), "spleen": (200, 60, 120), "stomach": (230, 160, 60), "bowel": (170, 120, 60),
    "lv_blood": (230, 40, 40), "rv_blood": (40, 110, 255), "lv_myocardium": (250, 170, 30),
    "rv_myocardium": (170, 120, 240), "la": (240, 100, 100), "ra": (100, 150, 255), "aorta": (255, 60, 160),
    "pulmonary_artery": (60, 200, 255), "vena_cava": (80, 80, 220), "coronary_artery": (255, 255, 0),
    "infarct": (120, 60, 20),
}
_WINDOWS = {"ct": (-450.0, 550.0)}


def overlay(image: np.ndarray, labels: np.ndarray, window: tuple[float, float], alpha: float = 0.45) -> np.ndarray:
    """(h, w, 3) uint8: the windowed grey image with label colours blended in (plaques white)."""
    lo, hi = window
    grey = np.clip((image - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for name, colour in COLOURS.items():
        mask = labels == LABELS[name]
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, float)
    rgb[labels > PLAQUE_LABEL_BASE] = 255.0
    return rgb.astype(np.uint8)


def _window(modality: str, image: np.ndarray) -> tuple[float, float]:
    if modality in _WINDOWS:
        return _WINDOWS[modality]
    return 0.0, float(np.percentile(image, 99.7)) or 1.0


def save_overview(path: str | Path, phantom: Phantom, modality: str, grid: Grid | None = None,
                  t: float = 0.0) -> Path:
    """Write a PNG: the axial slice through the LV centre, plain and with labels overlaid."""
    grid = grid or chest_grid()
    image = render(phantom, grid, modality, t)["image"].array
    labels = np.rint(phantom.labels(grid, t).array).astype(np.int32)
    lv = np.argwhere(labels == LABELS["lv_blood"])
    k = int(np.median(lv[:, 0])) if len(lv) else grid.shape[0] // 2
    window = _window(modality, image[k])
    plain = overlay(image[k], np.zeros_like(labels[k]), window)
    both = np.concatenate([plain, np.full((plain.shape[0], 4, 3), 255, np.uint8),
                           overlay(image[k], labels[k], window)], axis=1)
    picture = sitk.GetImageFromArray(both, isVector=True)
    ratio = grid.spacing[1] / grid.spacing[0]
    if abs(ratio - 1) > 1e-3:                       # square pixels in the picture
        picture.SetSpacing((1.0, ratio))
        size = (both.shape[1], int(round(both.shape[0] * ratio)))
        picture = sitk.Resample(picture, size, sitk.Transform(), sitk.sitkLinear, (0.0, 0.0), (1.0, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(picture, str(path))
    return path


def save_readme_pictures(folder: str | Path, preset: str = "NOR", seed: int = 7) -> list[Path]:
    """One overview per modality (CT, SPECT, PET, MR) of one patient, as phantom_<modality>.png."""
    phantom = Phantom.sample(preset, seed=seed, plaques=4)
    return [save_overview(Path(folder) / f"phantom_{m}.png", phantom, m) for m in ("ct", "spect", "pet", "mr")]
