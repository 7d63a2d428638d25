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

``make_nongated_sample()`` (``python -m meddiffusion.data.make_samples nongated``) derives one
more file from ``sample_chest_ct.nrrd`` alone, so it can be remade without the others:

- ``sample_nongated_chest_ct.nrrd``: the same CT as a non-gated scan would show it, its
  plaques (Agatston lesions inside the coronary region) moved during a 720-view half-scan by
  motion profile 12 (sway-y, 2 mm at up to 40 mm/s, seed 1) with ProDM's simulation engine
  (:func:`meddiffusion.physics.simulate_motion`), int16 HU.
- ``sample_nongated_chest_truth.json``: the motion and the Agatston scores, inside the coronary
  region, of the motion-free reconstruction from the same pipeline and of the non-gated one.

``make_spect_sample()`` (``python -m meddiffusion.data.make_samples spect``) writes a stress
myocardial perfusion study of a woman with large breasts and no perfusion defect (seed 424242,
outside every training and bench seed), the classic anterior-wall attenuation artefact:

- ``sample_spect_nac.nrrd``: the NAC (64×64×40, 6.4 mm, counts), SPECTAttenuation's sample;
- ``sample_spect_ac_reference.nrrd``: the AC with the true μ-map (the reference);
- ``sample_spect_mumap.nrrd``: the μ-map at 140 keV (1/cm), for the teacher (``--mumap``);
- ``sample_spect_truth.json``: the study's record (protocol, counts, the patient).

``make_petmr_sample()`` (``python -m meddiffusion.data.make_samples petmr``) writes a brain FDG
PET/MR study for PETMRDenoise (:func:`meddiffusion.physics.pet.simulate_pet_subject`, the brain
protocol's defaults: 2 mm voxels, 4 × 16 OSEM, 3 mm post-filter) at dose-reduction factor 10,
the factor held out of training.  Its seed, 7 777 777, is none of the subjects' seeds the models
are trained and validated on (``dataset_seed × 100 003 + index``: dataset seed 0 gives 0 to
99 999) nor of the bench's (dataset seed 9002).
The volumes are cropped to the head (``PETMR_MARGIN_MM`` around it) and rounded to
``PETMR_STEP`` (0.005 SUV, MR 0.001 of its white matter's ~0.9), far below the noise, so that
gzip packs them into about 4 MB together:

- ``sample_petmr_brain_pet_drf10.nrrd``: the low-count PET (1/10 of the counts), SUV, float32;
- ``sample_petmr_brain_mr.nrrd``: the T1 MR on the same grid;
- ``sample_petmr_brain_pet_full.nrrd``: the full-count PET (the reference);
- ``sample_petmr_brain_truth.json``: the protocol, counts and each lesion's true SUV and centre
  (LPS and RAS mm, voxel index in the cropped files).
"""

from __future__ import annotations

import json
import sys
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


NONGATED_PROFILE, NONGATED_VIEWS, NONGATED_SEED = 12, 720, 1


def make_nongated_sample() -> None:
    """Write ``sample_nongated_chest_ct.nrrd`` and its truth from the bundled gated sample."""
    from meddiffusion.io import read_volume
    from meddiffusion.metrics.agatston import agatston
    from meddiffusion.physics.motion import simulate_motion
    from meddiffusion.physics.calcium import detect_calcium

    gated = read_volume(HERE / "sample_chest_ct.nrrd", modality="CT")
    coronaries = read_volume(HERE / "sample_chest_coronaries.nrrd").array > 0
    plaques = detect_calcium(gated, coronaries)
    result = simulate_motion(gated, plaques, NONGATED_PROFILE, NONGATED_VIEWS, seed=NONGATED_SEED)
    nongated = result.corrupted.with_array(np.rint(result.corrupted.array), modality="CT")
    nongated.metadata["SeriesDescription"] = (f"non-gated: profile {result.profile.id} {result.profile.name}, "
                                              f"{NONGATED_VIEWS} views, seed {NONGATED_SEED}")
    write_volume(nongated, HERE / "sample_nongated_chest_ct.nrrd", dtype="int16")

    def score(volume) -> dict:
        scored = agatston(np.rint(volume.array), volume.spacing, mask=coronaries.astype(np.uint8))
        return {"agatston": scored.total, "volume_mm3": scored.volume_mm3, "lesions": len(scored.lesions),
                "category": scored.category}

    truth = {"source": "sample_chest_ct.nrrd", "profile": result.profile.id, "profile_name": result.profile.name,
             "family": result.profile.family, "views": NONGATED_VIEWS, "seed": NONGATED_SEED,
             "rotation_s": result.rotation_s, "calcium_voxels": int(plaques.sum()),
             "max_displacement_mm": float(np.linalg.norm(result.displacement_mm, axis=1).max()),
             "slices_with_motion": result.slices_with_motion, "scored_in": "sample_chest_coronaries.nrrd",
             "static": score(result.static), "nongated": score(nongated), "gated_input": score(gated)}
    (HERE / "sample_nongated_chest_truth.json").write_text(json.dumps(truth, indent=1, default=float) + "\n")


def _ellipsoid(radius_zyx) -> np.ndarray:
    rz, ry, rx = (int(r) for r in radius_zyx)
    z, y, x = np.ogrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]
    return (z / max(rz, 1)) ** 2 + (y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2 <= 1


def make_spect_sample() -> None:
    """Write the SPECT sample study (see the module docstring)."""
    from meddiffusion.physics.spect import SpectProtocol, sample_spect_patient, simulate_study

    seed = 424242
    params = sample_spect_patient(seed, sex="female", breast_mm=65.0, scar=False)
    params.heart.defect = None
    study = simulate_study(params, SpectProtocol(), stress=True, seed=seed)
    for name, volume in (("nac", study.nac), ("ac_reference", study.ac), ("mumap", study.mu)):
        write_volume(volume, HERE / f"sample_spect_{name}.nrrd")
    (HERE / "sample_spect_truth.json").write_text(json.dumps(study.info, indent=2, default=float) + "\n",
                                                  encoding="utf-8")


PETMR_SEED, PETMR_DRF, PETMR_MARGIN_MM = 7_777_777, 10, 6.0
#: the values' rounding step: the PET's noise at DRF 10 is ~0.3 SUV in white matter, the MR's ~0.01
PETMR_STEP = {"pet": 0.005, "mr": 0.001}


def _head_box(mask: np.ndarray, margin_voxels: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` (z, y, x) grown by ``margin_voxels``, clipped to the array."""
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin_voxels, 0)
    high = np.minimum(where.max(axis=0) + margin_voxels + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _cropped(volume, box: tuple[slice, ...]):
    """``volume`` cut to ``box`` with its origin moved so every voxel keeps its place."""
    from dataclasses import replace

    start = [s.start for s in box]
    return replace(volume, array=np.ascontiguousarray(volume.array[box]),
                   origin=tuple(float(c) for c in volume.index_to_physical(start)), metadata=dict(volume.metadata))


def make_petmr_sample() -> None:
    """Write the brain PET/MR sample (see the module docstring)."""
    from meddiffusion.physics.pet import PetProtocol, simulate_pet_subject

    protocol = PetProtocol.for_kind("brain")
    subject = simulate_pet_subject("brain", PETMR_SEED, protocol, drfs=(PETMR_DRF,))
    head = ndimage.binary_fill_holes(subject.mu.array > 0)
    box = _head_box(head, int(np.ceil(PETMR_MARGIN_MM / protocol.voxel_mm)))
    low, full, mr = (_cropped(v, box) for v in (subject.low[PETMR_DRF], subject.full, subject.mr))
    for name, volume, step in (("pet_drf10", low, PETMR_STEP["pet"]), ("pet_full", full, PETMR_STEP["pet"]),
                               ("mr", mr, PETMR_STEP["mr"])):
        rounded = (np.round(volume.array / step) * step).astype(np.float32)
        write_volume(volume.with_array(rounded), HERE / f"sample_petmr_brain_{name}.nrrd")
    start = np.array([s.start for s in box])
    lesions = []
    for record in subject.info["lesions"]:
        lps = np.asarray(record["centre_mm"], dtype=float)
        lesions.append({**record, "centre_index_zyx": (np.asarray(record["centre_index_zyx"]) - start).tolist(),
                        "centre_lps_mm": lps.round(2).tolist(),
                        "centre_ras_mm": (lps * np.array([-1.0, -1.0, 1.0])).round(2).tolist()})
    info = {key: value for key, value in subject.info.items() if key != "lesions"}
    background = dict(info.get("background_region", {}))
    if "centre_index_zyx" in background:
        background["centre_index_zyx"] = (np.asarray(background["centre_index_zyx"]) - start).tolist()
    truth = {**info, "background_region": background, "lesions": lesions, "sample": {
        "files": {"pet": "sample_petmr_brain_pet_drf10.nrrd", "mr": "sample_petmr_brain_mr.nrrd",
                  "reference": "sample_petmr_brain_pet_full.nrrd"},
        "dose_reduction_factor": PETMR_DRF, "crop_start_zyx": start.tolist(), "shape_zyx": list(low.shape),
        "rounding_step": PETMR_STEP,
        "note": "centre_mm is LPS (the files' frame); Slicer shows RAS: centre_ras_mm"}}
    (HERE / "sample_petmr_brain_truth.json").write_text(json.dumps(truth, indent=1, default=float) + "\n",
                                                        encoding="utf-8")


if __name__ == "__main__":
    {"nongated": make_nongated_sample, "spect": make_spect_sample, "petmr": make_petmr_sample}.get(" ".join(sys.argv[1:]), main)()
