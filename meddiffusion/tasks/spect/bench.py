"""SPECT attenuation correction on held-out phantom studies: image fidelity, polar maps, false defects, speed.

**Held-out set.** Phantom patients drawn with ``HELDOUT_SEED`` (training uses dataset seed 0,
so every patient is new), designed around what attenuation does to a perfusion study: in turn
a woman with breast tissue and no defect, a patient with a raised left hemidiaphragm and
sub-diaphragmatic uptake and no defect, and true defects of the LAD, RCA and LCX territories
of several severities; rest or stress from the seed. ``--quick`` takes the first 5.

**Reference.** The OSEM reconstruction with the true μ-map (CT-based AC), same counts,
iterations, subsets and filter as the NAC.

**Rows.** NAC (no correction); Chang's first-order correction with a uniform water μ inside the
body outline found on the NAC (the classic CT-free method); a plain UNet regressor on the same
data; the Brownian bridge without the physics head; the PADM student (CT-free, the default);
the PADM teacher (given the true μ-map).

**Figures.** RMSE / SSIM / PSNR on the paper's [−1, 1] scale (min–max by the reference) inside a
160 mm cube around the LV, as the paper crops its region of interest; the 17-segment polar map
(on the LV axes fitted to the reference, so every row is read on the same segments): mean
absolute segment error against the reference in % points; false-positive defect segments
(non-normal where the reference is normal) in the patients without a defect or scar; true
defect segments kept (non-normal in the reference and the row); true defects kept, as a reader
reports them, by territory: a territory of the patient's perfusion defect or scar whose
segments the reference reads reduced counts as kept when the row reads at least one of those
segments reduced too (a segment count alone mixes in basal segments outside any defect that
the reference reads just under 70 % by partial volume at the valve plane); seconds per study.
"""

from __future__ import annotations

import numpy as np
import torch

from meddiffusion.benchmarks.harness import clocked, each_case, installed, markdown_table, result

OPTIONS = ("models",)
HELDOUT_SEED = 9001
STUDIES, QUICK_STUDIES = 20, 5
#: half the side of the cube the image metrics are computed in (mm)
ROI_HALF_MM = 80.0
#: (label, model id, needs the μ-map) — None: a method without a network
METHODS = (
    ("NAC (no correction)", None, False),
    ("Chang, uniform μ in the body outline", None, False),
    ("plain UNet regressor", "spect-unet-small", False),
    ("bridge without physics head", "spect-bbdm-small", False),
    ("PADM student (CT-free)", "spect-padm-student-small", False),
    ("PADM teacher (true μ-map)", "spect-padm-teacher-small", True),
)
#: the paper's Table 5 (real CardiAC studies, 128², GE scanners): RMSE, SSIM, PSNR
PAPER = {"PADM student": (0.0218, 0.9795, 34.75), "PADM teacher": (0.0217, 0.9796, 34.98),
         "BBDM (no VQGAN)": (0.0330, 0.9553, 30.76), "Pix2Pix": (0.0269, 0.9601, 32.59)}
#: the kinds of held-out patient, in turn
DESIGN = (
    {"sex": "female", "defect": None, "why": "breast attenuation"},
    {"sex": "male", "defect": None, "diaphragm": True, "why": "raised diaphragm, gut uptake"},
    {"defect": "LAD"},
    {"defect": "RCA"},
    {"defect": "LCX"},
)


def heldout_patient(index: int):
    """Patient ``index`` of the held-out set (``DESIGN`` in turn, the rest from the seed)."""
    from meddiffusion.physics.spect import sample_spect_patient
    from meddiffusion.tasks.spect.data import study_seed

    design = DESIGN[index % len(DESIGN)]
    seed = study_seed(HELDOUT_SEED, index)
    rng = np.random.default_rng(seed)
    kwargs = {"sex": design.get("sex")}
    if design.get("defect"):
        kwargs.update(defect=design["defect"], severity=float(rng.uniform(0.3, 0.7)))
    else:
        kwargs["scar"] = False
    if design.get("diaphragm"):
        kwargs.update(diaphragm_mm=float(rng.uniform(15, 30)), gut_uptake=float(rng.uniform(1.2, 2.0)))
    params = sample_spect_patient(seed, **kwargs)
    if not design.get("defect"):
        params.heart.defect = None  # a patient without ischaemia: whatever the NAC shows is attenuation
    return params, seed


def heldout_study(index: int, protocol=None):
    from meddiffusion.phantoms import Phantom
    from meddiffusion.physics.spect import SpectProtocol, simulate_study

    params, seed = heldout_patient(index)
    stress = params.heart.defect is not None or bool(np.random.default_rng(seed + 1).uniform() < 0.5)
    return simulate_study(Phantom(params), protocol or SpectProtocol(), stress=stress, seed=seed)


def roi(volume, frame) -> tuple[slice, slice, slice]:
    """The (z, y, x) slices of a cube of ``ROI_HALF_MM`` around the LV centre."""
    direction = np.asarray(volume.direction).reshape(3, 3)
    ijk = np.linalg.solve(direction * np.asarray(volume.spacing), np.asarray(frame.centre) - np.asarray(volume.origin))
    half = ROI_HALF_MM / np.asarray(volume.spacing)
    bounds = []
    for axis, size in zip(range(3), volume.shape[::-1]):
        lo, hi = int(np.floor(ijk[axis] - half[axis])), int(np.ceil(ijk[axis] + half[axis])) + 1
        bounds.append(slice(max(lo, 0), min(hi, size)))
    return bounds[2], bounds[1], bounds[0]


def image_figures(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """RMSE, SSIM, PSNR on the [−1, 1] scale (min–max of the reference), per-slice means."""
    from meddiffusion.metrics.image import psnr_minmax, ssim_minmax

    lo, hi = float(reference.min()), float(reference.max())
    mse01 = float(np.mean(((output - lo) / (hi - lo) - (reference - lo) / (hi - lo)) ** 2))
    return {"rmse": 2 * float(np.sqrt(mse01)), "ssim": ssim_minmax(output, reference),
            "psnr": psnr_minmax(output, reference)}


def polar_figures(output, reference_map, frame, defect: bool, territories=()) -> dict[str, float]:
    """The polar-map figures of ``output`` read on ``frame`` (see :func:`segment_figures`)."""
    from meddiffusion.tasks.spect.polarmap import polar_map

    mine = polar_map(output, frame)
    return segment_figures(mine.percent, reference_map.percent, defect, territories)


def segment_figures(percent, reference_percent, defect: bool, territories=()) -> dict:
    """Segment error, false defect segments (no defect), true defect segments and defects (``territories``: the
    coronary territories of the patient's defect or scar) kept, from the 17 segment % of a row and the reference."""
    from meddiffusion.tasks.spect.polarmap import TERRITORY, categories

    percent, reference_percent = np.asarray(percent, float), np.asarray(reference_percent, float)
    abnormal_ref = np.array([c != "normal" for c in categories(reference_percent)])
    abnormal_me = np.array([c != "normal" for c in categories(percent)])
    shown = [np.array([TERRITORY[k + 1] == t for k in range(17)]) & abnormal_ref for t in sorted(set(territories))]
    shown = [segments for segments in shown if segments.any()]
    return {"segment_mae": float(np.mean(np.abs(percent - reference_percent))),
            "false_defects": int((abnormal_me & ~abnormal_ref).sum()) if not defect else None,
            "defect_segments": int(abnormal_ref.sum()) if defect else None,
            "defect_kept": int((abnormal_me & abnormal_ref).sum()) if defect else None,
            "defects": len(shown) if defect else None,
            "defects_kept": sum(bool((abnormal_me & segments).any()) for segments in shown) if defect else None,
            "percent": [round(float(v), 1) for v in percent]}


def _method_fn(label: str, model_id, guided: bool, device):
    """``fn(study) -> AC volume`` of one row."""
    from meddiffusion.physics.spect import chang_correction
    from meddiffusion.tasks.spect.infer import correct_study
    from meddiffusion.tasks.spect.model import load_model

    if model_id is None:
        return (lambda study: study.nac) if label.startswith("NAC") else (lambda study: chang_correction(study.nac))
    model = load_model(model_id, device)
    return lambda study: correct_study(model, study.nac, study.mu if guided else None, device=device)[0]


def run(device: torch.device, quick: bool = False, progress=None, models: list[str] | None = None) -> dict:
    from meddiffusion.tasks.spect.model import is_teacher
    from meddiffusion.tasks.spect.polarmap import polar_map
    from meddiffusion.tasks.spect.reorient import fit_lv

    methods = list(METHODS) + [(m, m, is_teacher(m)) for m in (models or [])]
    missing = [m for _, m, _ in methods if m is not None and not installed("spect", m)]
    methods = [row for row in methods if row[1] not in missing]
    fns = [(label, _method_fn(label, model_id, guided, device)) for label, model_id, guided in methods]
    count = QUICK_STUDIES if quick else STUDIES
    per_method: dict[str, list[dict]] = {label: [] for label, _ in fns}
    studies = []
    for index in each_case(progress, "studies", range(count)):
        study = heldout_study(index)
        frame = fit_lv(study.ac)
        box = roi(study.ac, frame)
        reference_map = polar_map(study.ac, frame)
        info = study.info
        patient = info.get("patient", {})
        defect = bool(patient.get("defect_shown") or patient.get("scar"))
        territories = {t for t in (patient.get("defect") if patient.get("defect_shown") else None,
                                   patient.get("scar")) if t}
        studies.append({"index": index, "defect": defect, "patient": patient, "condition": info.get("condition"),
                        "reference_percent": [round(float(v), 1) for v in reference_map.percent]})
        for label, fn in fns:
            output, seconds = clocked(fn, study)
            figures = image_figures(output.array[box], study.ac.array[box])
            figures.update(polar_figures(output, reference_map, frame, defect, territories), seconds=seconds)
            per_method[label].append(figures)
    rows = {label: _summary(values) for label, values in per_method.items()}
    lines = _table(rows, count, missing)
    return result(lines, device, rows=rows, studies=studies, per_study=per_method, paper=PAPER, missing=missing)


def _summary(values: list[dict]) -> dict:
    def mean(key):
        found = [v[key] for v in values if v.get(key) is not None]
        return float(np.mean(found)) if found else None

    def total(key):
        found = [v[key] for v in values if v.get(key) is not None]
        return int(sum(found)) if found else None

    return {"rmse": mean("rmse"), "ssim": mean("ssim"), "psnr": mean("psnr"), "segment_mae": mean("segment_mae"),
            "false_defects": total("false_defects"), "defect_segments": total("defect_segments"),
            "defect_kept": total("defect_kept"), "defects": total("defects"), "defects_kept": total("defects_kept"),
            "seconds": mean("seconds")}


def _table(rows: dict, count: int, missing: list[str]) -> list[str]:
    def cell(value, fmt):
        return "–" if value is None else format(value, fmt)

    lines = [f"SPECT attenuation correction, {count} held-out phantom studies (seed {HELDOUT_SEED}); reference: OSEM "
             "with the true μ-map", ""]
    lines += markdown_table(
        ("method", "RMSE ↓", "SSIM ↑", "PSNR dB ↑", "polar-map error, % pts ↓", "false defect segments ↓",
         "true defect segments kept", "true defects kept (territories)", "s / study"),
        [(label, cell(r["rmse"], ".4f"), cell(r["ssim"], ".4f"), cell(r["psnr"], ".2f"), cell(r["segment_mae"], ".1f"),
          cell(r["false_defects"], "d"),
          "–" if r["defect_segments"] is None else f"{r['defect_kept']}/{r['defect_segments']}",
          "–" if r.get("defects") is None else f"{r['defects_kept']}/{r['defects']}",
          cell(r["seconds"], ".1f")) for label, r in rows.items()])
    lines += ["", "Paper, Table 5 (real CardiAC studies, not comparable with phantom figures): "
              + "; ".join(f"{name} RMSE {v[0]}, SSIM {v[1]}, PSNR {v[2]} dB" for name, v in PAPER.items())]
    if missing:
        lines += ["", f"not installed, rows left out: {', '.join(missing)}"]
    return lines
