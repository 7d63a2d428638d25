"""Fine-tuning the SPECT models on the user's own studies: NAC and AC of the same acquisition, with the
patient's CT or μ-map where the teacher needs one.

``meddiff train spect --source paired-folder --data DIR`` reads the studies with
:mod:`meddiffusion.training.userdata` in one of three layouts:

- one folder per patient, ``DIR/<patient>/`` holding ``nac`` and ``ac`` and optionally ``ct``
  (HU) or ``mumap`` (1/cm), each a volume file so named (``nac.nrrd``) or a DICOM series
  folder (``nac/``), as studies are exported from a SPECT/CT console;
- ``DIR/input/`` (NAC) and ``DIR/target/`` (AC) matched by name, with ``DIR/ct/`` or
  ``DIR/mumap/`` beside them for the patients that have one;
- a CSV manifest with columns ``input,target[,patient][,ct][,mumap]``.

Every study is checked before training, each failure a ValueError that names the study:

- both emission counts (``checks.EMISSION``: not negative, so not a CT in HU);
- NAC and AC on one grid (shape, spacing, origin, direction): two reconstructions of one
  acquisition; on other grids, voxels the network pairs would be different places; with the
  slices and voxel sizes the task reads (``SPEC.limits``);
- the AC's scale (its 99.9th percentile) between 1 and :data:`MAX_AC_RATIO` times the NAC's:
  attenuation correction raises counts, by 3-5 times in simulated thoraxes; outside that range
  the pair is swapped or one of them was rescaled on export, and it would teach a wrong scale
  (above the model's ``ACF_SCALE`` K, the most its output reaches, the log warns);
- aligned: each scaled by its own 99.9th percentile, they correlate at least
  :data:`MIN_CORRELATION` and no in-plane shift correlates better
  (``userdata.check_alignment``): attenuation changes the contrast, not where things are;
- a CT (CT rule) or μ-map (attenuation rule) must cover the SPECT (``infer.attenuation_on_grid``,
  as ``spect-ac --ct`` reads it) and hold the AC's counts inside its body.

Each study becomes one cache item holding what a simulated study holds (``data.make_study``):
NAC, AC and μ on the grid the model reads, in-plane at its pixel size as ``spect-ac`` resamples
(``infer.model_grid``), so ``data.SpectSlices``, the losses, validation and the gate read both
alike. Without a CT or μ-map the item's μ is zero; the variants that read μ (the teacher, and the
student's attention transfer, which runs the teacher) refuse such studies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddiffusion.checks import check_values, rule_for
from meddiffusion.io import Volume
from meddiffusion.training import cache, userdata
from meddiffusion.tasks.spect.recipe import check_extras, mu_needed
from meddiffusion.training.recipe import PAIRED_FOLDER, TrainingData

__all__ = ["STEM", "NAMES", "EXTRAS", "MIN_CORRELATION", "MIN_BODY_SHARE", "MAX_AC_RATIO", "list_studies",
           "check_study", "study_item", "mu_needed", "build_user_data"]

STEM = "pair"
#: the file names of a patient folder's volumes, by role
NAMES = {"input": "nac", "target": "ac", "ct": "ct", "mumap": "mumap"}
EXTRAS = ("ct", "mumap")
#: NAC and AC of simulated studies correlate 0.88-0.95 (each over its 99.9th percentile); a μ-map
#: given as AC about 0.55; one voxel of shift costs 0.01-0.06 and the shift test catches it
MIN_CORRELATION = 0.7
#: the AC's 99.9th percentile over the NAC's: 3.3-5.0 in simulated studies, 8 in coarse 16-slice ones
MAX_AC_RATIO = 12.0
#: share of the AC's counts inside the μ-map's body (μ above ``BODY_MU``): simulated studies 0.93-0.97
MIN_BODY_SHARE = 0.7
BODY_MU = 0.05
ROLES = ("NAC", "AC")


def list_studies(args) -> list[userdata.Entry]:
    """The studies of ``--data``, refused up front when the run reads μ and some study has neither CT nor μ-map."""
    if not args.data:
        raise ValueError(f"--source {args.source} needs --data: one folder per patient (nac, ac and optionally ct "
                         "or mumap volumes), input/ and target/ folders, or a CSV manifest")
    entries = userdata.list_entries(args.data, PAIRED_FOLDER, EXTRAS, NAMES)
    problems = check_extras([(entry.name, {c for c in EXTRAS if entry.extra(c)}) for entry in entries], args)
    if problems:
        raise ValueError("; ".join(problems))
    return entries


def check_study(nac: Volume, ac: Volume, name: str) -> dict:
    """Grid, counts, limits, AC scale and alignment of one study (module docstring); what was measured."""
    from meddiffusion.tasks.spect import SPEC
    from meddiffusion.tasks.spect.model import ACF_SCALE, study_scale

    for role, volume in zip(ROLES, (nac, ac)):
        check_values(volume.array, rule_for("emission"), name=f"{name} ({role})", modality=volume.modality)
    userdata.check_grid(nac, ac, name, ROLES)
    warnings = SPEC.limits.check(nac.shape, nac.spacing, name=name)
    scales = [study_scale(volume.array) for volume in (nac, ac)]
    ratio = scales[1] / scales[0]
    if not 1.0 <= ratio <= MAX_AC_RATIO:
        why = ("attenuation correction raises counts, so NAC and AC look swapped or rescaled" if ratio < 1 else
               "far beyond a thorax's attenuation, so one of them looks rescaled")
        raise ValueError(f"pair '{name}': the AC's 99.9th percentile is {ratio:.2f} times the NAC's, expected 1 to "
                         f"{MAX_AC_RATIO:g} ({why}); export both in counts of the same reconstruction")
    if ratio > ACF_SCALE:
        warnings.append(f"'{name}': the AC's 99.9th percentile is {ratio:.2f} times the NAC's, above the K = "
                        f"{ACF_SCALE:g} the model's output reaches; its hottest voxels cannot be matched")
    correlation = userdata.check_alignment(nac.array / scales[0], ac.array / scales[1], name, MIN_CORRELATION,
                                           window=(0.0, 1.0), units="of each one's 99.9th percentile", roles=ROLES)
    return {"correlation": round(correlation, 4), "ac_ratio": round(ratio, 3), "shape": list(nac.shape),
            "spacing": [round(s, 3) for s in nac.spacing], "warnings": warnings}


def _attenuation(entry: userdata.Entry, grid: Volume, ac: Volume) -> tuple[Volume | None, dict]:
    """μ (1/cm) on ``grid`` from the entry's CT or μ-map, checked (values, cover, body), or None."""
    from meddiffusion.io import read_volume
    from meddiffusion.tasks.spect.infer import attenuation_on_grid

    role = "ct" if entry.extra("ct") else "mumap" if entry.extra("mumap") else None
    if role is None:
        return None, {"mu": None}
    volume = read_volume(entry.extra(role))
    what = "CT" if role == "ct" else "μ-map"
    check_values(volume.array, rule_for("ct" if role == "ct" else "attenuation"), name=f"{entry.name} ({what})",
                 modality=volume.modality)
    mu = attenuation_on_grid(volume, grid, role == "ct", f"{what} of '{entry.name}'")
    counts = ac.array.clip(min=0)
    share = float(counts[mu.array > BODY_MU].sum() / max(counts.sum(), 1e-12))
    if share < MIN_BODY_SHARE:
        raise ValueError(f"'{entry.name}': only {share:.0%} of the AC's counts lie inside the body of its {what} "
                         f"(at least {MIN_BODY_SHARE:.0%} expected); the {what} is of another patient or position: "
                         "register it to the SPECT first")
    return mu, {"mu": role, "body_share": round(share, 3)}


def study_item(entry: userdata.Entry, pixel_mm: float, multiple: int) -> tuple[dict[str, np.ndarray], dict]:
    """The cache item of one study: NAC, AC, μ and the grid, as ``data.make_study`` stores a simulated one."""
    from meddiffusion.io import read_volume, resample_onto
    from meddiffusion.tasks.spect.infer import model_grid

    nac, ac = read_volume(entry.input), read_volume(entry.target)
    info = check_study(nac, ac, entry.name)
    grid = model_grid(nac, pixel_mm, multiple)
    if grid is not nac:
        ac = resample_onto(ac, grid)
    mu, facts = _attenuation(entry, grid, ac)
    arrays = {"nac": grid.array.astype(np.float32), "ac": ac.array.astype(np.float32),
              "mu": np.zeros(grid.shape, np.float32) if mu is None else mu.array.astype(np.float32),
              "spacing": np.asarray(grid.spacing, np.float64), "origin": np.asarray(grid.origin, np.float64),
              "direction": np.asarray(grid.direction, np.float64)}
    return arrays, {**info, **facts, "grid": list(grid.shape)}


def build_user_data(args, progress, pixel_mm: float, multiple: int) -> TrainingData:
    """The cached studies of ``--data`` on the model's grid (``pixel_mm``, a matrix divisible by ``multiple``),
    split by patient; provenance and per-study facts in ``info``."""
    from meddiffusion.tasks.spect.data import SpectSlices

    entries = list_studies(args)
    patients = sorted({entry.patient for entry in entries})
    train_ids, val_ids = userdata.split_patients(patients, args.val_patients, args.seed)
    hashes = {path: userdata.file_sha256(path) for entry in entries for path in entry.files}

    def describe(index: int) -> dict:
        entry = entries[index]
        return {"kind": "spect-user", "version": 1, "source": args.source, "name": entry.name,
                "patient": entry.patient, "sha256": [hashes[path] for path in entry.files],
                "roles": ["input", "target", *(role for role, _ in entry.extras)], "pixel_mm": float(pixel_mm),
                "multiple": int(multiple)}

    folder = Path(args.out) / "data"
    paths = cache.build_cache(folder, STEM, range(len(entries)), describe,
                              lambda index: study_item(entries[index], pixel_mm, multiple),
                              progress.callback("read", len(entries)))
    infos = [cache.read_meta(path)[1] for path in paths]
    for info in infos:
        for warning in info["warnings"]:
            progress.log(f"warning: {warning}")

    data = TrainingData(SpectSlices(userdata.by_patient(paths, entries, train_ids)),
                        SpectSlices(userdata.by_patient(paths, entries, val_ids)))
    data.info["provenance"] = userdata.provenance(args, entries, hashes, {"train": train_ids, "val": val_ids})
    data.info["patients"] = {entry.name: info for entry, info in zip(entries, infos)}
    progress.log(f"{len(data.train)} training slices of {len(train_ids)} patients and {len(data.val)} validation "
                 f"slices of {len(val_ids)} ({', '.join(val_ids)}) from {args.data} in {folder}")
    return data
