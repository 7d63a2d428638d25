"""``meddiff simulate-motion``: a non-gated (motion-corrupted) CT from a gated one, ProDM's engine.

The coronary calcium is inpainted out of the CT, moved along one of 21 motion profiles during a
half-scan of --views projections, and each projection records it where it is at that instant.
The slices are then reconstructed by filtered back-projection. The calcium comes from --mask, or
is detected as >= 130 HU lesions inside a heart region, bone excluded. The region is
--heart-region if given; otherwise it is found from the anatomy, which can also take in aortic or
cartilage calcium (see ``meddiffusion.physics.calcium``).

The output is in HU on the input's grid. --static writes the motion-free counterpart made by the
same pipeline: the pair for training differs by motion alone, and Agatston scores are best
compared between the two. The same --seed gives the same motion.
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff simulate-motion gated.nrrd -o moved.nrrd --profile 8 --views 360 --seed 1 --static static.nrrd
  meddiff simulate-motion gated.nrrd -o moved.nrrd --profile 3 --views 1080 --mask calcium.nrrd
  meddiff simulate-motion gated.nrrd -o moved.nrrd --profile 14 --views 180 --heart-region heart.nrrd \\
      --trajectory motion.csv"""
#: mirrors meddiffusion.physics.motion_profiles, which cannot be imported here (see _Help)
VIEWS, ROTATION_S = (180, 360, 540, 720, 1080), 0.35


class _Help(argparse.RawDescriptionHelpFormatter):
    """Adds the list of motion profiles after the examples, and only when the help is shown.

    Importing ``meddiffusion.physics`` loads torch, and building the parser must stay instant.
    """

    def add_text(self, text):
        if text == EXAMPLE:
            from meddiffusion.physics.motion_profiles import PROFILES

            lines = "\n".join("  " + p.summary() for p in PROFILES)
            text = f"{text}\n\nmotion profiles (magnitude: largest displacement; velocity: largest speed):\n{lines}"
        super().add_text(text)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("simulate-motion",
                              help="simulate coronary calcium motion artefacts in a gated CT (ProDM)",
                              description=__doc__, epilog=EXAMPLE, formatter_class=_Help)
    p.add_argument("ct", help="gated CT in HU: .nrrd, .nii(.gz), .mha, a DICOM file or series folder")
    p.add_argument("-o", "--output", required=True, help="motion-corrupted volume to write")
    p.add_argument("--profile", type=int, required=True, help="motion profile id, 0-20 (listed below)")
    p.add_argument("--views", type=int, default=360,
                   help=f"projections per half-scan, one of {', '.join(map(str, VIEWS))} (default: 360)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parts of the motion (default: 0)")
    p.add_argument("--mask", help="calcium mask on the CT's grid (voxels > 0); default: detect it")
    p.add_argument("--heart-region", help="region to detect calcium in (label map on the CT's grid, voxels > 0)")
    p.add_argument("--static", help="also write the motion-free reconstruction (same pipeline) here")
    p.add_argument("--trajectory", help="also write the displacement at every view (.csv) here")
    p.add_argument("--rotation", type=float, default=ROTATION_S,
                   help=f"gantry rotation time in s; the half-scan lasts half of it (default: {ROTATION_S})")
    p.add_argument("--filter", default="ram-lak",
                   help="FBP ramp filter window: ram-lak (default), shepp-logan, cosine or hann")
    p.add_argument("--full-fbp", action="store_true",
                   help="reconstruct the whole slices too, not only the calcium (slower; sparse-view streaks and "
                        "FBP blur everywhere)")
    p.add_argument("--no-hu-check", action="store_true",
                   help="skip the check that the image looks like CT in HU (air near -1000)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def run(args: argparse.Namespace, progress) -> dict:
    from pathlib import Path

    import numpy as np

    from meddiffusion.commands.options import check_hu
    from meddiffusion.commands.paths import check_distinct, check_output
    from meddiffusion.files import StagedOutputs
    from meddiffusion.devices import resolve_device, set_threads
    from meddiffusion.io import read_volume, write_volume
    from meddiffusion.physics.motion import ALLOWED_VIEWS, simulate_motion
    from meddiffusion.physics.motion_profiles import get_profile
    from meddiffusion.physics.radon import FILTERS

    profile = get_profile(args.profile)
    if args.views not in ALLOWED_VIEWS:
        raise ValueError(f"--views must be one of {', '.join(map(str, ALLOWED_VIEWS))}, got {args.views}")
    if args.filter not in FILTERS:
        raise ValueError(f"unknown filter '{args.filter}'; expected one of {', '.join(FILTERS)}")
    if not args.rotation > 0:
        raise ValueError(f"--rotation must be a gantry rotation time > 0 s (e.g. 0.35), got {args.rotation}")
    for label, path, kind in (("-o", args.output, "volume"), ("--static", args.static, "volume"),
                              ("--trajectory", args.trajectory, "table")):
        if path:
            check_output(label, path, kind)
    check_distinct({"CT": args.ct, "--mask": args.mask, "--heart-region": args.heart_region},
                   {"-o": args.output, "--static": args.static, "--trajectory": args.trajectory})
    set_threads(args.threads)
    device = resolve_device(args.device)

    with progress.stage("read", total=1) as step:
        ct = read_volume(args.ct)
        check_hu(ct, skip=args.no_hu_check)
        mask = _read_mask(args.mask, ct, "--mask calcium mask")
        region = _read_mask(args.heart_region, ct, "--heart-region label map")
        step()
    with progress.stage("find calcium", total=1) as step:
        if mask is None:
            from meddiffusion.physics.calcium import detect_calcium

            mask = detect_calcium(ct, region)
        if not mask.any():
            raise ValueError("no calcium (>= 130 HU lesion) was found" + ("" if args.mask else
                             " inside the heart region") + "; nothing would move. Pass --mask or --heart-region")
        step()
    result = simulate_motion(ct, mask, profile, args.views, seed=args.seed, rotation_s=args.rotation,
                             filter=args.filter, full_fbp=args.full_fbp, device=device,
                             callback=progress.callback("simulate", ct.shape[0]))
    description = f"simulated motion: profile {profile.id} {profile.name}, {args.views} views, seed {args.seed}"
    result.corrupted.metadata["SeriesDescription"] = description
    result.static.metadata["SeriesDescription"] = f"motion-free reference: {args.views} views"
    with progress.stage("write", total=1) as step, StagedOutputs() as staged:
        write_volume(result.corrupted, staged.path(args.output))
        if args.static:
            write_volume(result.static, staged.path(args.static))
        if args.trajectory:
            result.write_trajectory_csv(staged.path(args.trajectory))
        step()
    written = Path(args.output)
    peak = float(np.linalg.norm(result.displacement_mm, axis=1).max())
    return {"output": str(written), "static": args.static, "trajectory": args.trajectory,
            "profile": profile.id, "profile_name": profile.name, "family": profile.family, "views": args.views,
            "seed": args.seed, "calcium_voxels": int(result.calcium_mask.sum()),
            "slices_with_motion": len(result.slices_with_motion), "max_displacement_mm": peak,
            "summary": (f"profile {profile.id} ({profile.family}, {profile.name}), {args.views} views: "
                        f"{int(result.calcium_mask.sum())} calcium voxels moved up to {peak:.2f} mm over "
                        f"{len(result.slices_with_motion)} slice(s) -> {written}")}


def _read_mask(path, ct, name: str):
    """A mask file as a boolean array on the CT's grid (voxels > 0), or None without a path."""
    if not path:
        return None
    from meddiffusion.commands.options import check_same_grid
    from meddiffusion.io import read_volume

    volume = read_volume(path)
    check_same_grid(ct, volume, name)
    return volume.array > 0
