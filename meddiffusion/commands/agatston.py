"""``meddiff agatston``: coronary calcium (Agatston) score of a non-contrast CT.

Lesions are 3D connected regions of voxels >= 130 HU; each axial slice of a lesion scores
area (mm²) × a weight of 1-4 from its peak HU, summed and normalised to 3 mm slices.
With ``--seg`` only voxels inside the label map count (e.g. coronary arteries, so bone and
valve calcium are left out).  The table has one row per lesion plus a totals row with the
volume score and the risk category (0 / 1-10 / 11-100 / 101-400 / >400).
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff agatston chest_ct.nrrd -o agatston.csv
  meddiff agatston chest_ct.nrrd -o agatston.csv --seg coronaries.nrrd --lesions lesions.nrrd
  meddiff agatston dicom_folder/ -o agatston.csv --slice-thickness 3"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("agatston", help="Agatston calcium score of a CT (table per lesion)",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", help="CT volume in HU: .nrrd, .nii(.gz), .mha or a DICOM series folder")
    p.add_argument("-o", "--output", required=True, help="table to write (.csv)")
    p.add_argument("--seg", help="label map on the CT's grid; only voxels with a label > 0 are scored")
    p.add_argument("--lesions", help="also write the lesion label map (lesion id per voxel) here")
    p.add_argument("--slice-thickness", type=float, default=None,
                   help="reconstructed slice thickness in mm (default: the slice spacing)")
    p.add_argument("--no-hu-check", action="store_true",
                   help="skip the check that the image looks like CT in HU (air near -1000)")


def run(args: argparse.Namespace, progress) -> dict:
    import numpy as np

    from pathlib import Path

    from meddiffusion.checks import AGATSTON_SLICE_MM
    from meddiffusion.commands.options import check_hu, check_same_grid
    from meddiffusion.commands.paths import check_distinct, check_output
    from meddiffusion.files import StagedOutputs
    from meddiffusion.io import Volume, read_volume, write_volume
    from meddiffusion.metrics.agatston import agatston

    check_output("-o", args.output, "table")
    if args.lesions:
        check_output("--lesions", args.lesions, "volume")
    check_distinct({"CT": args.ct, "--seg": args.seg}, {"-o": args.output, "--lesions": args.lesions})
    with progress.stage("read", total=1) as step:
        ct = read_volume(args.ct)
        check_hu(ct, skip=args.no_hu_check)
        thickness = ct.spacing[2] if args.slice_thickness is None else args.slice_thickness
        warnings = AGATSTON_SLICE_MM.check(ct.shape, (*ct.spacing[:2], thickness), name=Path(args.ct).name)
        for warning in warnings:
            progress.log(f"warning: {warning}")
        mask = None
        if args.seg:
            seg = read_volume(args.seg)
            check_same_grid(ct, seg, "--seg label map")
            mask = np.rint(seg.array).astype(np.int32)
        step()
    with progress.stage("score", total=1) as step:
        result = agatston(ct.array, ct.spacing, mask=mask, slice_thickness_mm=args.slice_thickness,
                          origin_xyz=ct.origin, direction=ct.direction)
        step()
    with progress.stage("write", total=1) as step, StagedOutputs() as staged:
        result.write_csv(staged.path(args.output))
        if args.lesions:
            write_volume(Volume(result.label_map.astype(np.float32), ct.spacing, ct.origin, ct.direction,
                                modality="SEG", units="label"), staged.path(args.lesions))
        step()
    return {"table": str(args.output), "lesions_file": args.lesions, "total": float(result.total),
            "volume_mm3": float(result.volume_mm3), "category": result.category,
            "num_lesions": len(result.lesions), "warnings": warnings,
            "summary": (f"Agatston {result.total:.1f} ({result.category}), volume score "
                        f"{result.volume_mm3:.1f} mm³, {len(result.lesions)} lesion(s) -> {args.output}"
                        + "".join(f"\nwarning: {w}" for w in warnings))}
