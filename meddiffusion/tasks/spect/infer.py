"""Whole-study inference of the SPECT task: NAC → AC slice by slice, then what a cardiologist reads.

1. the NAC is brought to the model's pixel size in-plane (clinical 64² studies already are);
2. it is scaled by its own robust maximum (``model.study_scale``), every transaxial slice is
   read with its two neighbours and translated by the bridge sampler (``--steps`` calls);
3. the AC is scaled back into the NAC's units and resampled onto the input's exact grid;
4. for the optional outputs, the LV is fitted on the AC (``reorient.fit_lv``) and the same
   axes sample the NAC and the AC, so the two polar maps compare segment by segment.

With ``--ct`` (HU → μ at 140 keV) or ``--mumap`` the attenuation map is resampled onto the
same grid and the teacher model attends to it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from meddiffusion.io import Volume, overlap_fraction, resample_inplane, resample_onto
from meddiffusion.tasks.job import Table
from meddiffusion.tasks.spect.model import (CONTEXT_SLICES, SpectModel, default_teacher, denormalize_ac, is_teacher,
                                            normalize_mu, normalize_nac, study_scale)

__all__ = ["check_arguments", "run", "correct_study", "context_stack", "model_grid", "attenuation_on_grid",
           "POLAR_FIELDS"]

#: a CT or μ-map must cover at least this share of the SPECT's field of view
MIN_OVERLAP = 0.5
#: resample the NAC when its pixels differ from the model's by more than this share
PIXEL_TOLERANCE = 0.05

POLAR_FIELDS = ("segment", "name", "territory", "nac_percent", "ac_percent", "nac_category", "ac_category",
                "changed")


def check_arguments(args, wanted) -> None:  # noqa: ARG001 - every output is fine with every model
    """--ct and --mumap exclusive; with either the teacher runs, without both a CT-free model."""
    if args.ct and args.mumap:
        raise ValueError("give either --ct or --mumap, not both: the teacher attends to one attenuation map")
    guided = bool(args.ct or args.mumap)
    if args.model is None:
        if guided:
            args.model = default_teacher()
        return
    teacher = is_teacher(args.model)
    if teacher and not guided:
        raise ValueError(f"model '{args.model}' is a teacher: it needs the patient's attenuation map (--ct CT or "
                         "--mumap MU); without one use a CT-free model (the default)")
    if guided and not teacher:
        raise ValueError(f"model '{args.model}' is CT-free and cannot use --ct/--mumap; leave --model out to run the "
                         "teacher, or drop --ct/--mumap")


def context_stack(array: np.ndarray, index: int) -> np.ndarray:
    """(3, H, W): slices index-1, index, index+1 of ``array`` (z, y, x), the edge slice repeated at either end."""
    last = array.shape[0] - 1
    return array[[max(index - 1, 0), index, min(index + 1, last)]]


def _attenuation_map(job, grid: Volume) -> Volume | None:
    """μ (1/cm) on ``grid`` from --ct or --mumap, checked to cover the SPECT."""
    source = job.inputs.get("ct") if job.inputs.get("ct") is not None else job.inputs.get("mumap")
    if source is None:
        return None
    flag = "--ct" if job.inputs.get("ct") is not None else "--mumap"
    return attenuation_on_grid(source, grid, flag == "--ct", f"{flag} volume")


def attenuation_on_grid(source: Volume, grid: Volume, is_ct: bool, what: str) -> Volume:
    """μ (1/cm) on ``grid`` from a CT in HU (``is_ct``) or a μ-map, which must cover at least half the SPECT."""
    from meddiffusion.physics.spect import hu_to_mu140

    covered = overlap_fraction(source, grid)
    if covered < MIN_OVERLAP:
        raise ValueError(f"the {what} covers only {covered:.0%} of the SPECT's field of view; expected the "
                         "same patient and position (at least 50 % overlap in world coordinates)")
    return hu_to_mu140(source, grid) if is_ct else resample_onto(source, grid)


def correct_study(model: SpectModel, nac: Volume, mu: Volume | None = None, *, steps: int | None = None,
                  batch_size: int = 16, seed: int = 0, device="cpu", callback=None) -> tuple[Volume, Volume]:
    """(AC, μ estimate) of a NAC study on the model's grid (its pixel size); ``mu`` on the same grid for a teacher."""
    scale = study_scale(nac.array)
    nac_norm = normalize_nac(nac.array.astype(np.float32), scale)
    mu_norm = normalize_mu(mu.array.astype(np.float32)) if mu is not None else None
    depth = nac.shape[0]
    out, mu_out = np.zeros(nac.shape, np.float32), np.zeros(nac.shape, np.float32)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    for start in range(0, depth, batch_size):
        index = range(start, min(start + batch_size, depth))
        stacks = torch.from_numpy(np.stack([context_stack(nac_norm, k) for k in index])).to(device)
        mus = (torch.from_numpy(np.stack([context_stack(mu_norm, k) for k in index])).to(device)
               if mu_norm is not None else None)
        x0, mu_est = model.predict(stacks, mus, steps, generator)
        out[index.start:index.stop] = denormalize_ac(x0[:, 0].cpu().numpy(), scale)
        mu_out[index.start:index.stop] = mu_est[:, 0].cpu().numpy()
        if callback is not None:
            callback(index.stop - start)
    ac = nac.with_array(out, modality=nac.modality or "NM", units=nac.units)
    return ac, nac.with_array(mu_out, modality="", units="1/cm")


def model_grid(nac: Volume, pixel_mm: float, multiple: int = 1) -> Volume:
    """The NAC at a model's pixel size (and a matrix its network can pool), or as it is when it already fits."""
    pixel = float(min(nac.spacing[:2]))
    height, width = nac.shape[1:]
    if abs(pixel / pixel_mm - 1) <= PIXEL_TOLERANCE and height % multiple == 0 and width % multiple == 0:
        return nac
    return resample_inplane(nac, pixel_mm, multiple=multiple)


def run(job) -> tuple[dict, dict]:
    """The task's ``infer``: AC on the input's grid, plus the polar maps, picture, short axis and μ on request."""
    model: SpectModel = job.model
    steps = model.check_steps(job.steps)
    nac = job.inputs["nac"]
    started = time.perf_counter()
    with job.progress.stage("prepare", total=1) as step:
        grid = model_grid(nac, model.pixel_mm, model.multiple)
        mu = _attenuation_map(job, grid) if model.teacher else None
        step()
    with job.progress.stage("correct", total=nac.shape[0]) as step:
        ac_grid, mu_grid = correct_study(model, grid, mu, steps=steps, batch_size=job.args.batch_size,
                                         seed=job.args.seed, device=job.device, callback=step)
    ac = ac_grid if grid is nac else resample_onto(ac_grid, nac)
    outputs: dict = {"output": ac}
    if "mu_estimate" in job.wanted:
        outputs["mu_estimate"] = mu_grid if grid is nac else resample_onto(mu_grid, nac)
    info = {"model": model.id, "steps": steps, "teacher": model.teacher, "scale": float(study_scale(nac.array)),
            "seconds": round(time.perf_counter() - started, 2)}
    if job.wanted & {"table", "png", "short_axis"}:
        with job.progress.stage("polar map", total=1) as step:
            outputs.update(_reading(nac, ac, job.wanted, info))
            step()
    changed = info.get("changed_segments")
    info["summary"] = (f"attenuation-corrected {nac.shape[0]} slices with {model.id} ({steps} steps"
                       f"{', guided by the attenuation map' if model.teacher else ', CT-free'}) in {info['seconds']:.1f} s"
                       + (f"; {len(changed)} of 17 segments change category after correction"
                          f" ({', '.join(map(str, changed)) or 'none'})" if changed is not None else ""))
    return outputs, info


def _reading(nac: Volume, ac: Volume, wanted, info: dict) -> dict:
    """Polar maps of NAC and AC on the axes fitted to the AC, the picture and the short axis, as asked."""
    from meddiffusion.tasks.spect.bullseye import bullseye_picture
    from meddiffusion.tasks.spect.polarmap import compare, polar_map
    from meddiffusion.tasks.spect.reorient import fit_lv, short_axis_volume

    frame = fit_lv(ac)
    maps = {"NAC": polar_map(nac, frame), "AC": polar_map(ac, frame)}
    rows = compare(maps["NAC"], maps["AC"])
    info["lv_frame"] = frame.to_dict()
    info["changed_segments"] = [row["segment"] for row in rows if row["changed"]]
    info["polar_map"] = {name: [round(float(v), 1) for v in m.percent] for name, m in maps.items()}
    outputs: dict = {}
    if "table" in wanted:
        outputs["table"] = Table(POLAR_FIELDS, [{key: _csv(row.get(_ROW_KEYS[key])) for key in POLAR_FIELDS}
                                                for row in rows])
    if "png" in wanted:
        outputs["png"] = bullseye_picture(maps, title="17-segment polar map, % of peak")
    if "short_axis" in wanted:
        outputs["short_axis"] = short_axis_volume(ac, frame)
    return outputs


#: the polar-map table's columns and the keys of ``polarmap.compare``'s rows
_ROW_KEYS = {"segment": "segment", "name": "name", "territory": "territory", "nac_percent": "NAC %",
             "ac_percent": "AC %", "nac_category": "NAC category", "ac_category": "AC category", "changed": "changed"}


def _csv(value):
    if isinstance(value, (float, np.floating)):
        return round(float(value), 1)
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return value
