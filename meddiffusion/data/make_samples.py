"""Regenerate the bundled sample data from the thorax phantom (deterministic).

    python -m meddiffusion.data.make_samples

Both samples are one patient (NOR preset, seed 11, five calcified coronary plaques) imaged in
diastole (70% of the cycle) with quantum noise inserted in the projection domain
(:func:`meddiffusion.physics.simulate_low_dose`).  Written next to this file:

- ``sample_chest_ct.nrrd``: a gated calcium-scoring CT, heart-centred 180 mm field of view,
  256×256×40 voxels of 0.7×0.7×3 mm, int16 HU, full-dose noise.
- ``sample_chest_coronaries.nrrd``: the coronary region on that grid (arteries and plaques
  dilated by 3 mm): what a reader marks before Agatston scoring so bone, aorta and valves are
  not counted.
- ``sample_chest_truth.json``: the phantom's truth (plaques with position, size, peak HU).
- ``sample_ldct_chest.nrrd`` and ``sample_ldct_chest_reference.nrrd``: a full-chest field of
  view, 512×512×12 voxels of 0.75×0.75×3 mm through the heart, at 25% dose and at full dose
  (the reference for LDCTDenoise's before/after figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from meddiffusion.io import write_volume
from meddiffusion.phantoms import LABELS, PLAQUE_LABEL_BASE, Grid, Phantom, render_ct
from meddiffusion.physics import simulate_low_dose

HERE = Path(__file__).parent
SEED, PLAQUES, PHASE = 11, 5, 0.7
I0 = 3e5   # photons per ray and view at full dose: soft-tissue noise of a routine scan


def main() -> None:
    phantom = Phantom.sample("NOR", seed=SEED, plaques=PLAQUES)
    t = PHASE * phantom.rr_s
    heart = phantom.heart
    centre = heart.state(0.0).apex + 0.5 * heart.base_height * heart.e_h
    generator = torch.Generator().manual_seed(SEED)

    # calcium-scoring sample: heart-centred field of view
    grid = Grid.centred((256, 256, 40), (0.7, 0.7, 3.0), centre_xyz=tuple(float(c) for c in centre))
    clean = render_ct(phantom, grid, t, seed=SEED)
    full = simulate_low_dose(torch.from_numpy(clean.array), 1.0, pixel_size_mm=0.7, i0=I0, generator=generator)
    write_volume(clean.with_array(full.numpy(), modality="CT"), HERE / "sample_chest_ct.nrrd", dtype="int16")
    labels = phantom.labels(grid, t).array
    coronary = (labels == LABELS["coronary_artery"]) | (labels >= PLAQUE_LABEL_BASE)
    region = ndimage.binary_dilation(coronary, structure=_ellipsoid(np.ceil(3.0 / np.array([3.0, 0.7, 0.7]))))
    write_volume(clean.with_array(region.astype(np.float32), modality="", units="label"),
                 HERE / "sample_chest_coronaries.nrrd", dtype="uint8")

    # low-dose sample: whole chest, a slab through the heart
    grid = Grid.centred((512, 512, 12), (0.75, 0.75, 3.0), centre_xyz=(0.0, 0.0, float(centre[2])))
    clean = render_ct(phantom, grid, t, seed=SEED)
    full = simulate_low_dose(torch.from_numpy(clean.array), 1.0, pixel_size_mm=0.75, i0=I0, generator=generator)
    low = simulate_low_dose(full, 0.25, pixel_size_mm=0.75, i0=I0, input_is_noisy=True, generator=generator)
    write_volume(clean.with_array(full.numpy(), modality="CT"), HERE / "sample_ldct_chest_reference.nrrd", dtype="int16")
    write_volume(clean.with_array(low.numpy(), modality="CT"), HERE / "sample_ldct_chest.nrrd", dtype="int16")

    truth = phantom.truth()
    truth["sample"] = {"phase_of_cycle": PHASE, "time_s": t, "i0": I0, "low_dose_fraction": 0.25}
    (HERE / "sample_chest_truth.json").write_text(json.dumps(truth, indent=1, default=float))


def _ellipsoid(radius_zyx) -> np.ndarray:
    rz, ry, rx = (int(r) for r in radius_zyx)
    z, y, x = np.ogrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]
    return (z / max(rz, 1)) ** 2 + (y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2 <= 1


if __name__ == "__main__":
    main()
