"""PET denoising at the unseen dose-reduction factor 10 on held-out subjects: image fidelity, lesions, noise, speed.

**Held-out set.** Subjects of dataset ``HELDOUT_SEED`` (training uses dataset seed 0), brains
(MNI152 anatomy warped per subject) and phantom thoraces in turn, simulated at DRF 10 only:
the factor no model saw in training (CSRD's protocol). ``--quick`` takes the first 2.

**Reference.** The full-count reconstruction of the same acquisition (same OSEM, same filter).

**Rows.** The low-count input; the classical filters, each with its one strength parameter
chosen by PSNR on training subjects (dataset seed 0, at DRF 10; ``tune_classical``): a Gaussian
post-filter (the clinical habit), 3D non-local means (scikit-image) and BM4D (the ``bm4d``
package); a plain 3D UNet (MONAI BasicUNet, regression on the same data with the MR); CSRD
without MR; CSRD with MR. The full-count reference appears for its lesion and noise figures.

**Figures.** PSNR and SSIM after min–max normalisation by the reference (CSRD's evaluation);
per lesion, SUVmax (hypermetabolic lesions) and SUVmean bias in % against the full-count
reconstruction, and the contrast recovery (lesion-to-surrounding contrast over the true
contrast, NEMA-style, in %); the coefficient of variation in the subject's uniform background
sphere (white matter or liver); seconds per volume. A separate line times the MR-guided CSRD
on a 128³ volume at its default steps (the speed target).
"""

from __future__ import annotations

import numpy as np
import torch

from meddiffusion.benchmarks.harness import clocked, each_case, installed, markdown_table, result

OPTIONS = ("models",)
HELDOUT_SEED = 9002
SUBJECTS, QUICK_SUBJECTS = 4, 2
DRF = 10
#: training subjects (dataset seed 0) the classical filters are tuned on, and their strengths
TUNE_SUBJECTS = (0, 1)
GAUSSIAN_FWHM_MM = (2.0, 3.0, 4.0, 6.0, 8.0)
#: NLM's h and BM4D's σ as fractions of the image's 99th percentile (scale-free)
NLM_H = (0.02, 0.04, 0.08, 0.16)
BM4D_SIGMA = (0.02, 0.04, 0.08)
#: (Heun steps, samples averaged) compared on the tuning subjects (the CPU defaults are chosen
#: from this sweep): steps at one sample, then samples at one step
SWEEP = ((1, 1), (2, 1), (4, 1), (8, 1), (1, 2), (1, 3), (1, 4))
SWEEP_CROP = 64
#: the model the sampler sweep and the 128³ timing use
GUIDED = "petmr-csrd-small"
#: (label, model id) of the network rows
NETWORKS = (
    ("plain 3D UNet (PET + MR)", "petmr-unet-small"),
    ("CSRD without MR", "petmr-csrd-nomr-small"),
    ("CSRD with MR", GUIDED),
)
#: the paper's setting, beside ours in the table
PAPER_SETTING = ("CSRD (MICCAI 2024): real 7T brain PET/MR, 160³ volumes, trained at DRF 4/6/8, tested at DRF 10, "
                 "100 Heun steps on a GPU; its PSNR/SSIM are on real data and not comparable with these simulated "
                 "figures")


# -- subjects ------------------------------------------------------------------------------
def kind_of(index: int) -> str:
    return ("brain", "thorax")[index % 2]


def heldout_subject(index: int, dataset_seed: int = HELDOUT_SEED):
    """Subject ``index`` of ``dataset_seed`` at DRF 10 only (brain, thorax in turn)."""
    from meddiffusion.physics.pet import PetProtocol, simulate_pet_subject
    from meddiffusion.tasks.petmr.data import subject_seed

    kind = kind_of(index)
    return simulate_pet_subject(kind, subject_seed(dataset_seed, index), PetProtocol.for_kind(kind), drfs=(DRF,))


# -- classical filters ---------------------------------------------------------------------
def gaussian(array: np.ndarray, spacing_zyx, fwhm_mm: float) -> np.ndarray:
    """Gaussian post-filter of ``fwhm_mm`` (the clinical habit)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(array.astype(np.float32), [fwhm_mm / 2.3548 / float(s) for s in spacing_zyx])


def nlm(array: np.ndarray, spacing_zyx, strength: float) -> np.ndarray:  # noqa: ARG001 - in voxels
    """3D non-local means (3³ patches, 7³ search), h = ``strength`` × p99 of the image."""
    from skimage.restoration import denoise_nl_means

    h = strength * float(np.percentile(array, 99))
    return denoise_nl_means(array.astype(np.float32), h=h, patch_size=3, patch_distance=3, fast_mode=True)


def bm4d_filter(array: np.ndarray, spacing_zyx, strength: float) -> np.ndarray:  # noqa: ARG001 - in voxels
    """BM4D (both stages; the package's profile with a reference-block step of 4 instead of 3),
    noise σ = ``strength`` × p99 of the image.

    It runs on the box around the body (voxels above 1 % of the maximum, 4 voxels of margin):
    the air outside holds no counts, and BM4D costs minutes per brain volume on a CPU (the
    larger step makes it 2.4 times cheaper).
    """
    import bm4d

    profile = bm4d.BM4DProfile()
    profile.step_ht, profile.step_wiener = (4, 4, 4), (4, 4, 4)
    sigma = strength * float(np.percentile(array, 99))
    inside = np.argwhere(array > 0.01 * float(array.max()))
    lo, hi = np.maximum(inside.min(0) - 4, 0), np.minimum(inside.max(0) + 5, array.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = array.astype(np.float32).copy()
    out[box] = np.asarray(bm4d.bm4d(out[box], sigma, profile=profile), np.float32).reshape(out[box].shape)
    return out


#: name → (filter, strengths tried, tuned on the central 48³ only: BM4D costs minutes per volume)
CLASSICAL = {"gaussian_fwhm_mm": (gaussian, GAUSSIAN_FWHM_MM, False), "nlm_h": (nlm, NLM_H, False),
             "bm4d_sigma": (bm4d_filter, BM4D_SIGMA, True)}


def tune_classical(subjects: list, progress=None) -> dict:
    """Each classical filter's strength with the best mean PSNR on ``subjects`` (training subjects)."""
    from meddiffusion.metrics.image import psnr_minmax

    tuned, scores = {}, {}
    for name, (fn, grid, cropped) in CLASSICAL.items():
        view = _crop if cropped else (lambda a: a)
        means = [float(np.mean([psnr_minmax(fn(view(s.low[DRF].array), s.full.spacing[::-1], value),
                                            view(s.full.array)) for s in subjects])) for value in grid]
        tuned[name], scores[name] = float(grid[int(np.argmax(means))]), dict(zip(map(str, grid),
                                                                                 np.round(means, 2).tolist()))
        if progress is not None:
            progress.log(f"tuned {name} = {tuned[name]:g} (PSNR by value: {scores[name]})")
    return {**tuned, "scores": scores}


def _crop(array: np.ndarray, size: int = 48) -> np.ndarray:
    starts = [max((s - size) // 2, 0) for s in array.shape]
    return array[tuple(slice(a, a + size) for a in starts)]


# -- figures -------------------------------------------------------------------------------
def lesion_figures(output: np.ndarray, reference: np.ndarray, labels: np.ndarray, records: list[dict]) -> list[dict]:
    """Per lesion: SUVmax / SUVmean bias (%) against the reference and the contrast recovery (%)."""
    from scipy.ndimage import binary_dilation

    rows = []
    for record in records:
        mask = labels == record["label"]
        if not mask.any():
            continue
        near = binary_dilation(mask, iterations=3) & ~binary_dilation(mask, iterations=1) & (labels == 0)
        true_contrast = record["suv"] / record["background_suv"] - 1.0
        contrast = float(output[mask].mean() / max(float(output[near].mean()), 1e-9) - 1.0) if near.any() else None
        hyper = record["suv"] > record["background_suv"]
        rows.append({
            "label": int(record["label"]), "hyper": bool(hyper), "diameter_mm": record.get("diameter_mm"),
            "suvmax_bias": 100.0 * (output[mask].max() / reference[mask].max() - 1.0) if hyper else None,
            "suvmean_bias": 100.0 * (output[mask].mean() / reference[mask].mean() - 1.0),
            "contrast_recovery": None if contrast is None or abs(true_contrast) < 1e-6
            else 100.0 * contrast / true_contrast})
    return rows


def background_cov(output: np.ndarray, labels: np.ndarray, background_label: int) -> float | None:
    region = labels == background_label
    if region.sum() < 10:
        return None
    values = output[region]
    return float(100.0 * values.std() / max(float(values.mean()), 1e-9))


def volume_figures(output: np.ndarray, subject) -> dict:
    from meddiffusion.metrics.image import psnr_minmax, ssim_minmax

    reference = subject.full.array
    labels = subject.lesions.array
    return {"psnr": psnr_minmax(output, reference), "ssim": ssim_minmax(output, reference),
            "lesions": lesion_figures(output, reference, labels, subject.info.get("lesions", [])),
            "cov": background_cov(output, labels, subject.info["background_label"])}


# -- rows ----------------------------------------------------------------------------------
def _mr_for(model, low, mr):
    """The MR on the PET grid as ``pet-denoise`` brings it (registered), or None for a PET-only model."""
    from meddiffusion.tasks.petmr.infer import register_mr

    return register_mr(low, mr)[0] if model.use_mr else None


def _network_fn(model_id: str, device):
    from meddiffusion.tasks.petmr.infer import denoise
    from meddiffusion.tasks.petmr.model import load_model

    model = load_model(model_id, device)

    def fn(subject):
        low = subject.low[DRF]
        return denoise(model, low, _mr_for(model, low, subject.mr), steps=model.default_steps(device),
                       device=device)[0].array

    return fn


def speed_128(model_id: str, device) -> float | None:
    """Seconds for the MR-guided model on a 128³ brain-like volume at its default steps and samples
    (registration included)."""
    from meddiffusion.io import Volume
    from meddiffusion.tasks.petmr.infer import denoise
    from meddiffusion.tasks.petmr.model import load_model

    if not installed("petmr", model_id):
        return None
    subject = heldout_subject(0)
    pad = lambda a: np.pad(a, ((12, 12), (0, 0), (0, 0)), mode="edge")[:128]  # noqa: E731 - 104 → 128 slices
    low = Volume(pad(subject.low[DRF].array), subject.full.spacing, subject.full.origin, subject.full.direction)
    mr = Volume(pad(subject.mr.array), subject.full.spacing, subject.full.origin, subject.full.direction)
    model = load_model(model_id, device)

    def run():
        return denoise(model, low, _mr_for(model, low, mr), steps=model.default_steps(device), device=device)

    return clocked(run)[1]


def sampler_sweep(model_id: str, subjects: list, device, settings=SWEEP) -> dict[str, dict[str, float]]:
    """PSNR/SSIM and seconds of ``model_id`` by ``"<steps>×<samples>"`` on the central 64³ of ``subjects``
    (training subjects: the default is chosen off the held-out set; the crop keeps the sweep to
    minutes)."""
    from meddiffusion.io import Volume
    from meddiffusion.metrics.image import psnr_minmax, ssim_minmax
    from meddiffusion.tasks.petmr.infer import denoise
    from meddiffusion.tasks.petmr.model import load_model

    model = load_model(model_id, device)
    cases = []
    for subject in subjects:
        low = subject.low[DRF]
        mr = _mr_for(model, low, subject.mr)
        crop = lambda volume: Volume(_crop(volume.array, SWEEP_CROP), low.spacing, low.origin,  # noqa: E731
                                     low.direction, modality=volume.modality, units=volume.units)
        cases.append((crop(low), None if mr is None else crop(mr), _crop(subject.full.array, SWEEP_CROP)))
    sweep = {}
    for steps, samples in settings:
        figures = []
        for low, mr, full in cases:
            (out, _), seconds = clocked(denoise, model, low, mr, steps=steps, samples=samples, device=device)
            figures.append((psnr_minmax(out.array, full), ssim_minmax(out.array, full), seconds))
        sweep[f"{steps}×{samples}"] = dict(zip(("psnr", "ssim", "seconds"), np.mean(figures, axis=0).tolist()))
    return sweep


def run(device: torch.device, quick: bool = False, progress=None, models: list[str] | None = None) -> dict:
    networks = list(NETWORKS) + [(m, m) for m in (models or [])]
    missing = [m for _, m in networks if not installed("petmr", m)]
    networks = [(label, m) for label, m in networks if m not in missing]
    tune = [heldout_subject(i, dataset_seed=0) for i in TUNE_SUBJECTS]
    tuned = tune_classical(tune, progress)
    sweep = None if quick or not installed("petmr", GUIDED) else sampler_sweep(GUIDED, tune, device)
    del tune

    def classical(name):
        fn = CLASSICAL[name][0]
        return lambda s: fn(s.low[DRF].array, s.full.spacing[::-1], tuned[name])

    methods = [
        ("low-count input (DRF 10)", lambda s: s.low[DRF].array),
        (f"Gaussian post-filter ({tuned['gaussian_fwhm_mm']:g} mm FWHM)", classical("gaussian_fwhm_mm")),
        (f"3D NLM (h = {tuned['nlm_h']:g} × p99)", classical("nlm_h")),
        (f"BM4D (σ = {tuned['bm4d_sigma']:g} × p99, step 4)", classical("bm4d_sigma")),
        *[(label, _network_fn(m, device)) for label, m in networks],
        ("full-count reference", lambda s: s.full.array),
    ]
    count = QUICK_SUBJECTS if quick else SUBJECTS
    per_method: dict[str, list[dict]] = {label: [] for label, _ in methods}
    subjects = []
    for index in each_case(progress, "subjects", range(count)):
        subject = heldout_subject(index)
        subjects.append({"index": index, "kind": subject.info["kind"], "seed": subject.info["seed"],
                         "lesions": len(subject.info.get("lesions", [])), "shape": list(subject.full.shape)})
        for label, fn in methods:
            output, seconds = clocked(fn, subject)
            per_method[label].append({**volume_figures(np.asarray(output, np.float32), subject),
                                      "seconds": seconds, "kind": subject.info["kind"]})
    rows = {label: _summary(values) for label, values in per_method.items()}
    seconds_128 = None if quick else speed_128(GUIDED, device)
    lines = _table(rows, count, missing, tuned, seconds_128)
    if sweep:
        lines += ["", f"{GUIDED} by Heun steps × samples averaged on the central {SWEEP_CROP}³ of the tuning subjects: "
                  + "; ".join(f"{n}: {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f}, {v['seconds']:.0f} s"
                              for n, v in sweep.items())]
    return result(lines, device, rows=rows, subjects=subjects, per_subject=per_method, tuned=tuned,
                  seconds_128=seconds_128, sampler_sweep=sweep, missing=missing, paper=PAPER_SETTING)


def _summary(values: list[dict]) -> dict:
    lesions = [lesion for v in values for lesion in v["lesions"]]

    def mean(items, key):
        found = [x[key] for x in items if x.get(key) is not None]
        return float(np.mean(found)) if found else None

    return {"psnr": mean(values, "psnr"), "ssim": mean(values, "ssim"), "cov": mean(values, "cov"),
            "suvmax_bias": mean(lesions, "suvmax_bias"), "suvmean_bias": mean(lesions, "suvmean_bias"),
            "suvmax_bias_abs": float(np.mean([abs(x["suvmax_bias"]) for x in lesions if x["suvmax_bias"] is not None]))
            if any(x["suvmax_bias"] is not None for x in lesions) else None,
            "contrast_recovery": mean(lesions, "contrast_recovery"), "seconds": mean(values, "seconds"),
            "lesions": len(lesions)}


def _table(rows: dict, count: int, missing: list[str], tuned: dict, seconds_128) -> list[str]:
    def cell(value, fmt):
        return "–" if value is None else format(value, fmt)

    lesions = next(iter(rows.values()))["lesions"]
    lines = [f"PET denoising at the unseen DRF 10, {count} held-out simulated subjects (brain and thorax, dataset "
             f"seed {HELDOUT_SEED}, {lesions} lesions); reference: the full-count reconstruction", ""]
    lines += markdown_table(
        ("method", "PSNR dB ↑", "SSIM ↑", "SUVmax bias % (hyper)", "mean absolute SUVmax bias %", "SUVmean bias %",
         "contrast recovery %", "background CoV % ↓", "s / volume"),
        [(label, "–" if label.startswith("full") else cell(r["psnr"], ".2f"),
          "–" if label.startswith("full") else cell(r["ssim"], ".4f"),
          cell(r["suvmax_bias"], "+.1f"), cell(r["suvmax_bias_abs"], ".1f"), cell(r["suvmean_bias"], "+.1f"),
          cell(r["contrast_recovery"], ".0f"), cell(r["cov"], ".1f"), cell(r["seconds"], ".1f"))
         for label, r in rows.items()])
    lines += ["", "Classical filters tuned by PSNR on training subjects at DRF 10 (strength: dB): " + "; ".join(
        f"{name} {', '.join(f'{value}: {psnr:.2f}' for value, psnr in scores.items())}"
        for name, scores in tuned["scores"].items())]
    if seconds_128 is not None:
        lines += [f"{GUIDED} on a 128³ volume at its default steps and samples (MR registration included): "
                  f"{seconds_128:.0f} s"]
    lines += ["", PAPER_SETTING]
    if missing:
        lines += ["", f"not installed, rows left out: {', '.join(missing)}"]
    return lines
