"""``meddiff phantom``: a 4D digital thorax phantom in CT, SPECT, PET or cine MR, with labels.

A random patient of the chosen group (ACDC-like presets) is drawn from the seed: body, lungs
with vessels, bones, liver, and a beating heart whose LV and RV follow volume curves, with
coronary arteries carrying calcified plaques.  One frame gives a 3D volume (.nrrd, .nii.gz,
.mha); several frames over one heartbeat give a Slicer sequence (.seq.nrrd, index in ms).
``--labels`` writes the label map(s) (0 background ... 21 infarct, plaques 100 + id; see
``meddiffusion.phantoms.LABELS``), ``--truth`` the clinical truth (EDV, ESV, EF, LV mass, RV
volumes, every plaque's position, size and peak HU) and all parameters as JSON.
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff phantom --modality ct --preset NOR --frames 20 --seed 7 -o ct.seq.nrrd --labels labels.seq.nrrd --truth truth.json
  meddiff phantom --modality ct --phase 0.7 --plaques 4 -o gated_ct.nrrd --labels labels.nrrd
  meddiff phantom --modality spect --preset MINF --size 64,64,64 --spacing 6.4,6.4,6.4 -o spect.nrrd --mu mu.nrrd
  meddiff phantom --modality mr --preset DCM --view short-axis --frames 25 -o cine.seq.nrrd --labels seg.seq.nrrd"""

PRESET_NAMES = ("NOR", "DCM", "HCM", "MINF", "RV")
_DEFAULT_GRID = {"axial": ((256, 256, 128), (1.5, 1.5, 2.5)), "short-axis": ((192, 192, 16), (1.25, 1.25, 8.0))}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("phantom", help="4D thorax phantom (CT, SPECT, PET, cine MR) with labels and truth",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modality", choices=("ct", "spect", "pet", "mr"), default="ct",
                   help="ct: HU; spect: Tc-99m sestamibi activity (+ --mu 140 keV); pet: FDG SUV (+ --mu "
                        "511 keV); mr: cine bSSFP magnitude (default: ct)")
    p.add_argument("--preset", type=str.upper, choices=PRESET_NAMES, default="NOR",
                   help="patient group: NOR normal, DCM dilated, HCM hypertrophic, MINF infarction, "
                        "RV dilated right ventricle (default: NOR)")
    p.add_argument("--frames", type=int, default=1, help="frames over one heartbeat, the first at end-diastole "
                                                         "(default: 1, a 3D volume)")
    p.add_argument("--phase", type=float, default=None,
                   help="for one frame: cardiac phase as a fraction of the cycle (0 = end-diastole)")
    p.add_argument("--seed", type=int, default=0, help="random patient and texture (default: 0)")
    p.add_argument("-o", "--output", required=True, help="image: .nrrd/.nii.gz/.mha (one frame) or .seq.nrrd")
    p.add_argument("--labels", help="write the label map(s) here (same format rules as -o)")
    p.add_argument("--truth", help="write the clinical truth and parameters here (.json)")
    p.add_argument("--mu", help="spect/pet: write the attenuation map (1/cm) here")
    grid = p.add_argument_group("grid")
    grid.add_argument("--view", choices=("axial", "short-axis"), default="axial",
                      help="axial chest grid, or a cardiac short-axis stack (default: axial)")
    grid.add_argument("--size", help="voxels x,y,z (default: 256,256,128 axial; 192,192,16 short-axis)")
    grid.add_argument("--spacing", help="mm x,y,z (default: 1.5,1.5,2.5 axial; 1.25,1.25,8 short-axis)")
    patient = p.add_argument_group("patient (overrides the preset's random values)")
    patient.add_argument("--heart-rate", type=float, help="beats per minute")
    patient.add_argument("--edv", type=float, help="LV end-diastolic volume, ml")
    patient.add_argument("--ef", type=float, help="LV ejection fraction, percent")
    patient.add_argument("--rv-edv", type=float, help="RV end-diastolic volume, ml")
    patient.add_argument("--rv-ef", type=float, help="RV ejection fraction, percent")
    patient.add_argument("--plaques", type=int, help="number of calcified coronary plaques")
    patient.add_argument("--no-calcium", action="store_true", help="a calcium-free patient")
    patient.add_argument("--breathing", type=float, default=0.0,
                         help="diaphragm excursion in mm for free breathing (default: 0, breath-hold)")
    patient.add_argument("--defect", choices=("LAD", "LCX", "RCA"),
                         help="spect/pet: a reversible perfusion defect in this coronary territory")
    p.add_argument("--noise", type=float, default=0.0, help="mr: Rician noise, relative to blood signal")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _triple(text: str | None, name: str, cast, default):
    if text is None:
        return default
    try:
        values = tuple(cast(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--{name} must be three numbers x,y,z, got '{text}'") from None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise ValueError(f"--{name} must be three positive numbers x,y,z, got '{text}'")
    return values


def _check_output(path: str, flag: str, frames: int) -> None:
    from meddiffusion.commands.paths import check_writable
    from meddiffusion.io import VOLUME_SUFFIXES

    check_writable(flag, path)
    lower = str(path).lower()
    if frames > 1 and not lower.endswith(".nrrd"):
        raise ValueError(f"{flag} '{path}': several frames are written as a Slicer sequence, use .seq.nrrd")
    if frames == 1 and not any(lower.endswith(s) for s in VOLUME_SUFFIXES):
        raise ValueError(f"{flag} '{path}': expected one of {', '.join(VOLUME_SUFFIXES)}")


def _validate(args: argparse.Namespace) -> None:
    if args.frames < 1 or args.frames > 200:
        raise ValueError(f"--frames must be 1-200, got {args.frames}")
    if args.phase is not None:
        if args.frames != 1:
            raise ValueError("--phase selects the instant of a single frame; use it with --frames 1")
        if not 0 <= args.phase < 1:
            raise ValueError(f"--phase is a fraction of the cardiac cycle in [0, 1), got {args.phase}")
    if args.mu and args.modality not in ("spect", "pet"):
        raise ValueError(f"--mu (attenuation map) applies to spect and pet, not {args.modality}")
    if args.noise and args.modality != "mr":
        raise ValueError("--noise applies to --modality mr")
    if args.no_calcium and args.plaques:
        raise ValueError("--no-calcium and --plaques contradict each other; give one")
    if args.truth and not str(args.truth).lower().endswith(".json"):
        raise ValueError(f"--truth '{args.truth}': the truth is written as .json")
    for flag, path in (("-o", args.output), ("--labels", args.labels), ("--mu", args.mu)):
        if path:
            _check_output(path, flag, args.frames)
    from meddiffusion.commands.paths import check_distinct

    check_distinct({}, {"-o": args.output, "--labels": args.labels, "--mu": args.mu, "--truth": args.truth})


def _write(frames, path, times_ms: list[float]) -> None:
    from meddiffusion.io import write_sequence, write_volume

    if len(frames) == 1:
        write_volume(frames[0], path)
    else:
        write_sequence(frames, path, index_name="time", index_unit="ms", index_values=times_ms)


def run(args: argparse.Namespace, progress) -> dict:
    import json

    from meddiffusion.devices import set_threads
    from pathlib import Path

    from meddiffusion.files import StagedOutputs
    from meddiffusion.phantoms import Phantom, chest_grid, render, short_axis_grid

    _validate(args)
    set_threads(args.threads)
    size, spacing = _DEFAULT_GRID[args.view]
    size = _triple(args.size, "size", int, size)
    spacing = _triple(args.spacing, "spacing", float, spacing)
    with progress.stage("anatomy", total=1) as step:
        phantom = Phantom.sample(
            args.preset, args.seed, edv_ml=args.edv, ef=None if args.ef is None else args.ef / 100.0,
            heart_rate_bpm=args.heart_rate, rv_edv_ml=args.rv_edv,
            rv_ef=None if args.rv_ef is None else args.rv_ef / 100.0, plaques=args.plaques,
            calcium=not args.no_calcium, breathing_mm=args.breathing, defect=args.defect)
        grid = chest_grid(size, spacing) if args.view == "axial" else short_axis_grid(phantom, size, spacing)
        step()
    if args.frames == 1:
        times = [(args.phase or 0.0) * phantom.rr_s]
    else:
        times = phantom.frame_times(args.frames)
    options = {"noise": args.noise} if args.modality == "mr" else {}
    images, labels, mus = [], [], []
    with progress.stage("render", total=len(times)) as step:
        for t in times:
            frame = render(phantom, grid, args.modality, t, **options)
            images.append(frame["image"])
            if args.mu:
                mus.append(frame["mu"])
            if args.labels:
                labels.append(phantom.labels(grid, t))
            step()
    times_ms = [round(1000.0 * t, 3) for t in times]
    truth = phantom.truth()
    truth["frames_ms"] = times_ms
    truth["frames"] = [{"time_ms": ms, "lv_ml": phantom.lv_volume(t), "rv_ml": phantom.rv_volume(t)}
                       for ms, t in zip(times_ms, times)]
    written = {"output": str(Path(args.output))}
    with progress.stage("write", total=1) as step, StagedOutputs() as staged:
        _write(images, staged.path(args.output), times_ms)
        for key, frames, path in (("labels", labels, args.labels), ("mu", mus, args.mu)):
            if path:
                _write(frames, staged.path(path), times_ms)
                written[key] = str(Path(path))
        if args.truth:
            staged.path(args.truth).write_text(json.dumps(truth, indent=2), encoding="utf-8")
            written["truth_file"] = str(Path(args.truth))
        step()
    lv = truth["lv"]
    summary = (f"{args.preset} seed {args.seed}: {args.modality.upper()} {len(times)} frame(s) on "
               f"{'x'.join(map(str, size))} voxels -> {written['output']}; LV EDV {lv['edv_ml']:.0f} ml, "
               f"EF {lv['ef_percent']:.0f} %, {len(truth['plaques'])} plaque(s)")
    return {**written, "frames": len(times), "modality": args.modality, "truth": truth, "summary": summary}
