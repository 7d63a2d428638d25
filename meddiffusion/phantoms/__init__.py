"""A 4D digital thorax phantom: beating heart, breathing, coronary calcium; CT, SPECT, PET, MR.

Quick start::

    from meddiffusion.phantoms import Phantom, chest_grid, render_ct, acdc_labels

    phantom = Phantom.sample("NOR", seed=7)          # a random normal patient
    grid = chest_grid()                              # 256×256×128 axial chest CT grid
    ct = render_ct(phantom, grid, t=0.0)             # Volume in HU at end-diastole
    labels = phantom.labels(grid, t=0.0)             # label map (see LABELS)
    es = phantom.truth()["es_time_ms"] / 1000        # end-systole
    acdc = acdc_labels(phantom.labels(grid, es).array)  # 0 BG, 1 RV, 2 MYO, 3 LV

Anatomy is built from smooth parametric shapes in LPS millimetres, so any grid (size,
spacing, orientation — e.g. :func:`short_axis_grid`) samples it, with partial volume in the
images and crisp labels.  Time t is in seconds from end-diastole; ``phantom.frame_times(n)``
spans one heartbeat.  The static anatomy is cached per grid, so a sequence only redraws the
heart.
"""

from meddiffusion.phantoms.coronaries import Plaque
from meddiffusion.phantoms.grid import Grid, chest_grid, short_axis_grid
from meddiffusion.phantoms.heart import TERRITORIES, HeartParams
from meddiffusion.phantoms.phantom import Phantom
from meddiffusion.phantoms.presets import PRESETS, PhantomParams, sample_params
from meddiffusion.phantoms.render import (MODALITIES, render, render_calcium, render_ct, render_mr, render_pet,
                                          render_sequence, render_spect, view_times)
from meddiffusion.phantoms.thorax import ThoraxParams
from meddiffusion.phantoms.tissues import (ACDC_LABELS, LABELS, PLAQUE_LABEL_BASE, TISSUES, acdc_labels,
                                           bssfp_signal, calcium_mask, label_name, mu_from_hu)

__all__ = [
    "Phantom", "PhantomParams", "HeartParams", "ThoraxParams", "Plaque", "sample_params", "PRESETS",
    "TERRITORIES", "Grid", "chest_grid", "short_axis_grid", "render", "render_ct", "render_spect", "render_pet",
    "render_mr", "render_calcium", "render_sequence", "view_times", "MODALITIES", "LABELS", "ACDC_LABELS",
    "PLAQUE_LABEL_BASE", "TISSUES", "acdc_labels", "label_name", "bssfp_signal", "mu_from_hu", "calcium_mask",
]

