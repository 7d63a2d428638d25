"""``meddiff synth-cardiac``: one labelled cine of a request, or a dataset of them in nnU-Net's layout.

Every cine is checked on its own labels (``measure.check_sample``): an implausible draw is
redrawn with the next seed, up to ``--max-attempts``; if none passes, the run fails with the
reasons rather than returning a heart that is wrong. The clinical values measured on the
labels are reported next to the request, and requests outside the group's training range are
warned about (the model extrapolates there).
"""

from __future__ import annotations

import math
import numpy as np

from meddiffusion.tasks.job import FolderOutput, Job, Sequence, Table

__all__ = ["run", "check_arguments", "request_of", "draw_valid", "ImplausibleSample", "TABLE_FIELDS", "SEED_STRIDE"]

TABLE_FIELDS = ("frame", "time_ms", "phase", "lv_ml", "rv_ml", "myo_ml")
#: seeds of the redraws of one cine (and of the cines of a dataset) lie this far apart
SEED_STRIDE = 1_000_003
#: magnitude units of the written cine: [-1, 1] maps to [0, MAGNITUDE]
MAGNITUDE = 1000.0


class ImplausibleSample(ValueError):
    """No draw of a request passed the label checks: the request (or its seed) has to change."""


def check_arguments(args, wanted) -> None:
    """Refuse impossible requests and inconsistent outputs before any model loads."""
    dataset = not str(args.output).lower().endswith(".seq.nrrd")
    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if dataset and args.count == 1:
        raise ValueError(f"-o '{args.output}' is a folder, which holds a dataset: give --count N (N >= 2), or a "
                         "file name ending in .seq.nrrd for one cine")
    if not dataset and args.count > 1:
        raise ValueError(f"--count {args.count} writes a dataset into a folder; -o must be a new folder, not "
                         f"'{args.output}'")
    if dataset and ({"labels", "table"} & set(wanted)):
        raise ValueError("--labels and --table belong to one cine; a dataset folder holds its labels (labelsTr) and "
                         "its values (cases.csv)")
    if args.max_attempts < 1:
        raise ValueError(f"--max-attempts must be >= 1, got {args.max_attempts}")
    if not (math.isfinite(args.guidance) and 0 <= args.guidance <= 20):
        raise ValueError(f"--guidance must be 0-20 (1 = no guidance), got {args.guidance}")
    if not 20 <= args.heart_rate <= 250:
        raise ValueError(f"--heart-rate must be 20-250 bpm, got {args.heart_rate}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.anatomy is None:
        if args.edv is None:
            raise ValueError("--edv (LV end-diastolic volume, ml) is required unless --anatomy gives the heart")
        request_of(args, args.edv, args.slices)  # the clinical checks, before any work


def request_of(args, edv_ml: float, slices: int):
    from meddiffusion.tasks.cardiac4d.clinical import make_request

    if (args.esv is None) == (args.ef is None):
        raise ValueError("give exactly one of --esv (ml) and --ef (%) for the end-systolic state")
    return make_request(args.diagnosis, edv_ml, esv_ml=args.esv, ef_percent=args.ef, slices=slices,
                        frames=args.frames)


def _spread(request, rng: np.random.Generator):
    """A request near ``request``: EDV × 0.93-1.07 and EF ± 3 points, still within the clinical rules."""
    from meddiffusion.tasks.cardiac4d.clinical import make_request

    for _ in range(20):
        try:
            return make_request(request.diagnosis, request.edv_ml * rng.uniform(0.93, 1.07),
                                ef_percent=request.ef_percent + rng.uniform(-3, 3), slices=request.slices,
                                frames=request.frames)
        except ValueError:
            continue
    return request


def draw_valid(model, request, seed: int, steps: int, guidance: float, device, max_attempts: int, progress=None,
               anatomy=None, keep: bool = False):
    """The first draw whose labels pass ``check_sample``, with the attempts used; an ImplausibleSample after all
    fail, or with ``keep`` the last draw with its reasons in ``info["implausible"]``."""
    from meddiffusion.tasks.cardiac4d.measure import check_sample

    failures = []
    for attempt in range(max_attempts):
        generated = model.generate(request, seed=seed + attempt * SEED_STRIDE, steps=steps, guidance=guidance,
                                   device=device, anatomy=anatomy, progress=progress)
        validity = check_sample(generated.labels, model.spacing)
        if validity.valid:
            generated.info |= {"attempts": attempt + 1, "validity": validity.figures}
            return generated
        failures.append(f"draw {attempt + 1}: {'; '.join(validity.reasons)}")
        if progress is not None:
            progress.log(f"draw {attempt + 1} rejected: {'; '.join(validity.reasons)}")
        if keep and attempt + 1 == max_attempts:
            generated.info |= {"attempts": attempt + 1, "validity": validity.figures,
                               "implausible": validity.reasons}
            return generated
    raise ImplausibleSample(f"no plausible cine in {max_attempts} draws for {request.diagnosis} EDV {request.edv_ml:.0f} ml "
                       f"EF {request.ef_percent:.0f} %: " + " | ".join(failures)
                       + ". Try another --seed, more --steps, a request nearer the group's usual values, or raise "
                         "--max-attempts")


def _grid(model, slices: int, reference=None):
    """The output grid: the model's voxel size centred at the origin, or the given anatomy's centre, axes and slices
    with the model's pixel size."""
    from meddiffusion.phantoms import Grid

    matrix = int(model.grid["matrix"])
    size, spacing = (matrix, matrix, slices), model.spacing
    if reference is None:
        return Grid.centred(size, spacing)
    centre = reference.index_to_physical([(s - 1) / 2 for s in reference.shape])
    return Grid.centred(size, spacing[:2] + (reference.spacing[2],), tuple(centre), reference.direction)


def _anatomy(job: Job, model):
    """The given ED stack resampled onto the model's grid (its centre and axes), normalised, encoded."""
    from meddiffusion.io.resample import resample_onto
    from meddiffusion.tasks.cardiac4d.cine import normalize_cine

    volume = job.inputs["anatomy"]
    slices = volume.shape[0]
    if slices > model.depth:
        raise ValueError(f"--anatomy has {slices} slices; the model's stack holds at most {model.depth}")
    if abs(volume.spacing[2] - model.spacing[2]) > 0.25 * model.spacing[2]:
        job.progress.log(f"warning: --anatomy has {volume.spacing[2]:g} mm slices; the model learned "
                         f"{model.spacing[2]:g} mm")
    grid = _grid(model, slices, volume)
    target = grid.volume(np.zeros(grid.shape, np.float32))
    resampled = resample_onto(volume, target)
    images = normalize_cine(np.maximum(resampled.array, 0.0)[None])[0]
    return model.encode_anatomy(images, job.device), grid


def _measured_edv(model, z_ed, slices: int, spacing) -> float:
    from meddiffusion.tasks.cardiac4d.measure import volumes_ml

    _, labels, _ = model.read(z_ed / model.latent_scale, slices)
    return float(volumes_ml(labels, spacing)["lv"][0])


def _sequences(model, generated, grid, heart_rate: float):
    from meddiffusion.io import Volume

    rr_ms = 60_000.0 / heart_rate
    times = [round(k * rr_ms / len(generated.images), 3) for k in range(len(generated.images))]
    geometry = dict(spacing=grid.spacing, origin=grid.origin, direction=grid.direction)
    images = [Volume(((frame + 1.0) * 0.5 * MAGNITUDE).astype(np.float32), modality="MR", units="a.u.", **geometry)
              for frame in generated.images]
    labels = [Volume(frame.astype(np.uint8), units="label", **geometry) for frame in generated.labels]
    return Sequence(images, times), Sequence(labels, times, dtype="uint8"), times


def _table(generated, times, spacing) -> Table:
    from meddiffusion.tasks.cardiac4d.measure import volumes_ml

    v = volumes_ml(generated.labels, spacing)
    rows = [{"frame": k, "time_ms": times[k], "phase": round(float(generated.tau[k]), 2),
             "lv_ml": round(float(v["lv"][k]), 2), "rv_ml": round(float(v["rv"][k]), 2),
             "myo_ml": round(float(v["myo"][k]), 2)} for k in range(len(times))]
    return Table(TABLE_FIELDS, rows)


def _compare(request, measured: dict) -> dict:
    return {"requested": request.to_dict(),
            "measured": {key: round(float(measured[key]), 2) for key in
                         ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "rv_edv_ml", "rv_esv_ml", "rv_ef_percent",
                          "myo_volume_ml")}}


def run(job: Job):
    from meddiffusion.tasks.cardiac4d.clinical import outside_training
    from meddiffusion.tasks.cardiac4d.measure import clinical_values

    args, model, progress = job.args, job.model.to(job.device), job.progress
    anatomy, grid = None, None
    if "anatomy" in job.inputs:
        anatomy, grid = _anatomy(job, model)
        slices = job.inputs["anatomy"].shape[0]
        edv = _measured_edv(model, anatomy, slices, grid.spacing)
        if args.edv is not None and abs(args.edv - edv) > 0.15 * edv:
            progress.log(f"warning: --edv {args.edv:g} ml differs from the {edv:.0f} ml measured on the given anatomy; "
                         "the anatomy's is used")
        request = request_of(args, edv, slices)
    else:
        request = request_of(args, args.edv, args.slices)
        grid = _grid(model, request.slices)
    warnings = outside_training(request)
    for warning in warnings:
        progress.log(f"warning: {warning}")
    if args.count > 1:
        return _dataset(job, model, request, warnings, anatomy, grid)
    generated = draw_valid(model, request, args.seed, job.steps, args.guidance, job.device, args.max_attempts,
                           progress, anatomy, args.keep_implausible)
    implausible = [f"implausible labels kept (--keep-implausible): {reason}"
                   for reason in generated.info.get("implausible", [])]
    cine, labels, times = _sequences(model, generated, grid, args.heart_rate)
    measured = clinical_values(generated.labels, grid.spacing)
    outputs = {"output": cine, "labels": labels, "table": _table(generated, times, grid.spacing)}
    comparison = _compare(request, measured)
    m = comparison["measured"]
    summary = (f"{request.diagnosis} cine, {request.slices} slices × {request.frames} frames: EDV {m['lv_edv_ml']:.0f} "
               f"ml (asked {request.edv_ml:.0f}), ESV {m['lv_esv_ml']:.0f} ml (asked {request.esv_ml:.0f}), EF "
               f"{m['lv_ef_percent']:.0f} % (asked {request.ef_percent:.0f}); {generated.info['attempts']} draw(s)"
               + (f" (end-diastolic anatomy of the kept one: draw {generated.info['anatomy_kept']} of "
                  f"{generated.info['anatomy_draws']})" if generated.info["anatomy_draws"] > 1 else "")
               + f", {job.steps} DDIM steps, model {model.id}")
    summary += "".join(f"\nwarning: {w}" for w in warnings + implausible)
    return outputs, {**comparison, "attempts": generated.info["attempts"],
                     "anatomy_draws": generated.info["anatomy_draws"], "model": model.id, "steps": job.steps,
                     "anatomy_given": anatomy is not None, "warnings_request": warnings + implausible,
                     "plausible": not implausible, "summary": summary}


def _dataset(job: Job, model, request, warnings, anatomy, grid):
    """``--count`` cines (requests spread around the given one unless --exact) as an nnU-Net dataset; with
    ``--anatomy`` every cine keeps that anatomy (on ``grid``) and only the motion differs."""
    from meddiffusion.tasks.cardiac4d.measure import clinical_values
    from meddiffusion.tasks.cardiac4d.nnunet import write_nnunet_dataset

    args = job.args
    rng = np.random.default_rng([args.seed, 7])
    cases, rows = [], []
    with job.progress.stage("generate", total=args.count) as step:
        for i in range(args.count):
            wish = request if args.exact else _spread(request, rng)
            generated = draw_valid(model, wish, args.seed + (i + 1) * 7919, job.steps, args.guidance, job.device,
                                   args.max_attempts, anatomy=anatomy, keep=args.keep_implausible)
            cine, labels, _ = _sequences(model, generated, grid, args.heart_rate)
            measured = clinical_values(generated.labels, grid.spacing)
            values = {"case": f"synth{i + 1:04d}", **{f"requested_{k}": v for k, v in wish.to_dict().items()},
                      **{f"measured_{k}": v for k, v in _compare(wish, measured)["measured"].items()},
                      "attempts": generated.info["attempts"], "model": model.id,
                      "plausible": not generated.info.get("implausible")}
            cases.append({"name": values["case"], "images": cine.frames, "labels": labels.frames, "values": values})
            rows.append(values)
            step()
    edv = [r["measured_lv_edv_ml"] for r in rows]
    summary = (f"{args.count} {request.diagnosis} cines as an nnU-Net dataset (measured EDV {min(edv):.0f}-"
               f"{max(edv):.0f} ml); model {model.id}")
    return ({"output": FolderOutput(lambda folder: write_nnunet_dataset(folder, cases))},
            {"cases": rows, "model": model.id, "steps": job.steps, "warnings_request": warnings, "summary": summary})
