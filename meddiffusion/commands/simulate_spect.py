"""``meddiff simulate-spect``: a cardiac SPECT perfusion study of a phantom patient, NAC and AC.

A patient referred for myocardial perfusion imaging is drawn from the seed (sex, breasts,
habitus, diaphragm, gut tracer, perfusion defect, scar; see
``meddiffusion.physics.spect.sample_spect_patient``); the options fix any of them.  The
Tc-99m sestamibi acquisition (64 views over 180° from RAO 45° to LPO 45°, LEHR collimator,
Poisson noise) is reconstructed with OSEM without attenuation correction (nac.nrrd) and with
the true μ-map (ac.nrrd).  The folder also gets the μ-map at 140 keV (mumap.nrrd, 1/cm), the
CT on a finer grid (ct.nrrd, HU), the true activity (activity.nrrd) and study.json (protocol,
counts, the patient's parameters, seeds).  A stress study shows the defect and the scar,
``--rest`` only the scar.
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff simulate-spect -o study_001/ --seed 1
  meddiff simulate-spect -o anterior/ --sex female --breast-mm 70 --defect LAD --severity 0.6
  meddiff simulate-spect -o rest/ --seed 1 --rest --counts 2e6 --orbit 360"""

#: the files a study folder holds
FILES = {"nac": "nac.nrrd", "ac": "ac.nrrd", "mu": "mumap.nrrd", "ct": "ct.nrrd", "activity": "activity.nrrd"}
INFO_FILE = "study.json"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("simulate-spect", help="simulate a cardiac SPECT perfusion study (NAC, AC, μ-map, CT)",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, help="study folder to write (new or empty)")
    p.add_argument("--preset", type=str.upper, choices=("NOR", "MINF"),
                   help="NOR: no scar; MINF: a scar (default: drawn, 15 %% have a scar)")
    p.add_argument("--seed", type=int, default=0, help="patient and noise seed (default: 0)")
    patient = p.add_argument_group("patient (overrides the random values)")
    patient.add_argument("--sex", choices=("female", "male"))
    patient.add_argument("--breast-mm", type=float, help="women: breast projection from the chest wall, mm (0-120)")
    patient.add_argument("--diaphragm-mm", type=float, help="raise of the diaphragm and upper abdomen, mm (0-40)")
    patient.add_argument("--obese", action="store_true", help="an obese patient (wide, deep chest, thick fat)")
    patient.add_argument("--gut-uptake", type=float, help="liver and bowel tracer × the standard (0-5)")
    patient.add_argument("--defect", choices=("LAD", "LCX", "RCA"), help="reversible perfusion defect territory")
    patient.add_argument("--severity", type=float, help="defect severity: fraction of uptake lost (0-1]")
    patient.add_argument("--no-defect", action="store_true", help="no perfusion defect")
    study = p.add_argument_group("acquisition")
    study.add_argument("--rest", action="store_true", help="a rest study (default: stress)")
    study.add_argument("--counts", type=float, help="total counts in the projections (default: 5e6)")
    study.add_argument("--views", type=int, help="projections over the orbit (default: 64)")
    study.add_argument("--orbit", type=int, choices=(180, 360), help="orbit in degrees (default: 180)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _validate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from meddiffusion.commands.paths import check_writable

    folder = Path(args.output)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"-o '{folder}': the study folder must be new or empty")
    check_writable("-o", folder / INFO_FILE)
    if args.severity is not None and args.defect is None:
        raise ValueError("--severity needs --defect LAD|LCX|RCA")
    if args.no_defect and args.defect:
        raise ValueError("--defect and --no-defect contradict each other; give one")
    if args.breast_mm and args.sex == "male":
        raise ValueError("--breast-mm is for women: use --sex female")


def run(args: argparse.Namespace, progress) -> dict:
    import json
    from dataclasses import replace
    from pathlib import Path

    from meddiffusion.devices import set_threads
    from meddiffusion.files import StagedOutputs
    from meddiffusion.io import write_volume
    from meddiffusion.physics.spect import SpectProtocol, sample_spect_patient, simulate_study

    _validate(args)
    set_threads(args.threads)
    protocol = SpectProtocol()
    changes = {"counts": args.counts, "views": args.views,
               "orbit_deg": None if args.orbit is None else float(args.orbit)}
    protocol = replace(protocol, **{k: v for k, v in changes.items() if v is not None})
    with progress.stage("patient", total=1) as step:
        sex = "female" if args.breast_mm else args.sex
        params = sample_spect_patient(
            args.seed, sex=sex, breast_mm=args.breast_mm, diaphragm_mm=args.diaphragm_mm, defect=args.defect,
            severity=args.severity, scar=None if args.preset is None else args.preset == "MINF",
            obese=True if args.obese else None, gut_uptake=args.gut_uptake)
        if args.no_defect:
            params.heart.defect = None
        step()
    study = simulate_study(params, protocol, stress=not args.rest, seed=args.seed, progress=progress)
    folder = Path(args.output)
    volumes = {"nac": study.nac, "ac": study.ac, "mu": study.mu, "ct": study.ct, "activity": study.activity}
    with progress.stage("write", total=1) as step, StagedOutputs() as staged:
        for key, volume in volumes.items():
            write_volume(volume, staged.path(folder / FILES[key]))
        staged.path(folder / INFO_FILE).write_text(json.dumps(study.info, indent=2), encoding="utf-8")
        step()  # a Cancel seen here discards every staged file
    patient = study.info["patient"]
    defect = (f"{patient['defect']} defect {patient['defect_severity']:.2f}" if patient["defect"] else "no defect")
    summary = (f"{study.info['condition']} study, seed {args.seed}: {patient['sex']}, {defect}"
               f"{', scar ' + patient['scar'] if patient['scar'] else ''}; {study.info['counts']:.3g} counts, "
               f"{protocol.views} views over {protocol.orbit_deg:g}° -> {folder}")
    return {"output": str(folder), "files": {k: str(folder / v) for k, v in FILES.items()},
            "info_file": str(folder / INFO_FILE), "info": study.info, "summary": summary}
