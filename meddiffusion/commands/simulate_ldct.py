"""``meddiff simulate-ldct``: a low-dose version of a CT, by noise insertion in the projection domain.

Each axial slice is forward-projected (parallel beam, 720 views), the noise that a scan at
``--dose`` of the original dose would add is drawn (Poisson photon noise plus electronic
noise, Yu et al. JCAT 2012; Zeng et al. IEEE TNS 2015) and its filtered back-projection is
added to the slice. A clinical scan already carries full-dose noise, so only the missing part
is added; the full-dose photon count I0 is calibrated so that simulated full-dose noise
matches the noise measured in the input's flattest soft-tissue regions (or given with
``--i0``). ``--noise-free`` is for phantoms: all of the low-dose noise is drawn. The output is
in HU on the input's grid; the same seed gives the same noise.
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff simulate-ldct chest.nrrd -o chest_quarter.nrrd --dose 0.25 --seed 1
  meddiff simulate-ldct dicom_folder/ -o tenth.nrrd --dose 0.1
  meddiff simulate-ldct phantom_ct.nrrd -o phantom_ld.nrrd --dose 0.25 --noise-free --i0 3e5"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("simulate-ldct", help="simulate a low-dose CT from a normal-dose one (projection noise)",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", help="normal-dose CT in HU: .nrrd, .nii(.gz), .mha, a DICOM file or series folder")
    p.add_argument("-o", "--output", required=True, help="low-dose volume to write")
    p.add_argument("--dose", type=float, default=0.25, help="dose fraction in (0, 1] (default: 0.25)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--i0", type=float, help="full-dose photons per ray and view (default: calibrated on the input)")
    p.add_argument("--noise-free", action="store_true", help="the input has no noise (a phantom); needs --i0")
    p.add_argument("--no-hu-check", action="store_true",
                   help="skip the check that the image looks like CT in HU (air near -1000)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


#: the lowest dose fraction simulated: below it a ray sees a handful of photons and the log transform breaks
MIN_DOSE = 0.01


def run(args: argparse.Namespace, progress) -> dict:
    from meddiffusion.commands.options import check_hu
    from pathlib import Path

    from meddiffusion.commands.paths import check_distinct, check_output
    from meddiffusion.files import StagedOutputs
    from meddiffusion.devices import set_threads
    from meddiffusion.io import read_volume, write_volume
    from meddiffusion.tasks.ldct.physics import simulate_volume

    if not MIN_DOSE <= args.dose <= 1:
        raise ValueError(f"--dose must be a fraction in [{MIN_DOSE:g}, 1] (e.g. 0.25 for quarter dose), got {args.dose}; "
                         "below 1 % of the full dose most rays count no photon and the image is no CT")
    if args.i0 is not None and not args.i0 > 0:
        raise ValueError(f"--i0 must be a positive photon count, got {args.i0}")
    check_output("-o", args.output, "volume")
    check_distinct({"CT": args.ct}, {"-o": args.output})
    set_threads(args.threads)
    with progress.stage("read", total=1) as step:
        ct = read_volume(args.ct)
        check_hu(ct, skip=args.no_hu_check)
        step()
    low, i0 = simulate_volume(ct, args.dose, i0=args.i0, noise_free=args.noise_free, seed=args.seed,
                              callback=progress.callback("simulate", ct.shape[0]))
    low.metadata["SeriesDescription"] = f"simulated {args.dose:g} dose (I0 {i0:.3g}, seed {args.seed})"
    with progress.stage("write", total=1) as step, StagedOutputs() as staged:
        write_volume(low, staged.path(args.output))
        step()  # a Cancel seen here discards the staged file: no output, as the event says
    written = Path(args.output)
    return {"output": str(written), "dose": args.dose, "i0": i0, "seed": args.seed, "slices": ct.shape[0],
            "summary": (f"simulated {args.dose:g} dose (I0 {i0:.3g} photons/ray) for {ct.shape[0]} slice(s) "
                        f"-> {written}")}
