"""``meddiff simulate-pet``: one PET/MR subject, FDG PET at full count and at reduced doses.

A brain (the MNI152 template warped by a random affine and elastic deformation, see
``meddiffusion.physics.brain``) or a thorax (the phantom) is drawn from the seed, with hyper-
and hypometabolic lesions.  Its FDG activity is projected through the 511 keV μ-map with the
scanner's blur, scatter and randoms, drawn as Poisson prompts, thinned binomially to 1/DRF of
the counts for each dose-reduction factor, and every data set is reconstructed with the same
OSEM and post-filter (``meddiffusion.physics.pet``).  The folder gets full.nrrd and
low_drf{N}.nrrd (SUV, g/ml), mr.nrrd (a.u., same grid), mumap.nrrd (1/cm), activity.nrrd (the
true SUV), lesions.nrrd (lesion i = i, the background reference region = 100) and subject.json
(protocol, counts, seeds, the lesions' true SUV).  DRF 4, 6 and 8 are for training; 10 is held
out, as in CSRD.
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff simulate-pet -o brain_001/ --kind brain --seed 1
  meddiff simulate-pet -o thorax_007/ --kind thorax --seed 7 --drf 4 10"""

#: the fixed files of a subject folder (low-count images are low_drf{N}.nrrd)
FILES = {"full": "full.nrrd", "mr": "mr.nrrd", "mu": "mumap.nrrd", "activity": "activity.nrrd",
         "lesions": "lesions.nrrd"}
INFO_FILE = "subject.json"


def low_file(drf: int) -> str:
    return f"low_drf{int(drf)}.nrrd"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("simulate-pet", help="simulate a PET/MR subject: full- and low-count FDG PET, MR, μ-map",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, help="subject folder to write (new or empty)")
    p.add_argument("--kind", choices=("brain", "thorax"), default="brain", help="anatomy (default: brain)")
    p.add_argument("--seed", type=int, default=0, help="anatomy, lesion and noise seed (default: 0)")
    p.add_argument("--drf", type=int, nargs="+", metavar="N",
                   help="dose-reduction factors, integers > 1 (default: 4 6 8 and the held-out 10)")
    p.add_argument("--counts", type=float, help="expected true coincidences at full dose "
                                                "(default: 2e8 brain, 5e7 thorax)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _validate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from meddiffusion.commands.paths import check_writable

    folder = Path(args.output)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"-o '{folder}': the subject folder must be new or empty")
    check_writable("-o", folder / INFO_FILE)
    if args.drf is not None:
        if any(d <= 1 for d in args.drf):
            raise ValueError(f"--drf: dose-reduction factors must be integers > 1, got {' '.join(map(str, args.drf))}")
        if len(set(args.drf)) != len(args.drf):
            raise ValueError("--drf: each factor once")
    if args.counts is not None and not 1e3 <= args.counts <= 1e11:
        raise ValueError(f"--counts must be 1e3-1e11, got {args.counts:g}")


def _check(subject) -> None:
    """Every image finite, on the activity's grid, in its stated units: a wrong file is never written."""
    import numpy as np

    images = {"full": subject.full, "mr": subject.mr, "mu": subject.mu, "lesions": subject.lesions,
              **{f"DRF {d}": v for d, v in subject.low.items()}}
    for name, volume in images.items():
        if volume.shape != subject.activity.shape or volume.spacing != subject.activity.spacing:
            raise RuntimeError(f"the {name} image is not on the PET grid")
        if not np.all(np.isfinite(volume.array)):
            raise RuntimeError(f"the {name} image has non-finite values")
    for volume in (subject.full, *subject.low.values()):
        if volume.units != "SUV" or volume.modality != "PT":
            raise RuntimeError("PET images must be PT in SUV")


def run(args: argparse.Namespace, progress) -> dict:
    import json
    from dataclasses import replace
    from pathlib import Path

    from meddiffusion.devices import set_threads
    from meddiffusion.files import StagedOutputs
    from meddiffusion.io import write_volume
    from meddiffusion.physics.pet import PetProtocol, simulate_pet_subject

    _validate(args)
    set_threads(args.threads)
    protocol = PetProtocol.for_kind(args.kind)
    if args.counts is not None:
        protocol = replace(protocol, counts=float(args.counts))
    drfs = tuple(args.drf) if args.drf else protocol.drfs
    subject = simulate_pet_subject(args.kind, args.seed, protocol, drfs, progress=progress)
    _check(subject)
    folder = Path(args.output)
    volumes = {"full": subject.full, "mr": subject.mr, "mu": subject.mu, "activity": subject.activity,
               "lesions": subject.lesions}
    files = {key: folder / name for key, name in FILES.items()}
    files.update({f"low_drf{d}": folder / low_file(d) for d in drfs})
    with progress.stage("write", total=1) as step, StagedOutputs() as staged:
        for key, volume in volumes.items():
            write_volume(volume, staged.path(files[key]), dtype="uint8" if key == "lesions" else None)
        for d, volume in subject.low.items():
            write_volume(volume, staged.path(files[f"low_drf{d}"]))
        staged.path(folder / INFO_FILE).write_text(json.dumps(subject.info, indent=2), encoding="utf-8")
        step()  # a Cancel seen here discards every staged file
    lesions = subject.info["lesions"]
    kinds = ", ".join(f"{r['type']} {r['diameter_mm']:.0f} mm" for r in lesions) or "none"
    summary = (f"{args.kind} subject, seed {args.seed}: {subject.info['prompts']:.3g} prompts at full dose, "
               f"DRF {' '.join(map(str, drfs))}; lesions: {kinds} -> {folder}")
    return {"output": str(folder), "files": {k: str(v) for k, v in files.items()},
            "info_file": str(folder / INFO_FILE), "info": subject.info, "summary": summary}
