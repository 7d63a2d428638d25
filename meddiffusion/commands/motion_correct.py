"""``meddiff motion-correct``: coronary calcium motion correction (ProDM) on a whole non-gated chest CT.

The calcium in the heart is found automatically (>= 130 HU lesions inside a heart region,
bone excluded), or --roi gives the voxel box to correct. Only boxes around the calcium go
through the model: each axial slice with its two neighbours, in 64-pixel windows, each
sampled with the Brownian-bridge sampler of the model (--steps network calls). The output is
the CT in HU on the input's exact grid; outside the corrected boxes it equals the input bit for
bit.

Agatston scores of the input ("before") and of the corrected CT ("after") are computed inside
the same region: --table writes one row per lesion of each scan (slice range, area, peak HU,
weight, Agatston, volume) plus a total row per scan with the risk category, and --seg a Slicer
segmentation with two layers, "before L1, L2, ..." and "after L1, L2, ...".
"""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  meddiff motion-correct nongated_chest.nrrd -o corrected.nrrd --seg calcium.seg.nrrd --table agatston.csv
  meddiff motion-correct dicom_folder/ -o corrected.nrrd --roi 180 300 160 280 60 110 --steps 5 --threads 2
  meddiff motion-correct chest.nii.gz -o out.nii.gz --model motion-unet-l1-small --events jsonl

--roi takes voxel index ranges I0 I1 J0 J1 K0 K1 (x, y, z; end exclusive), as Slicer shows IJK."""


def add_parser(subparsers) -> None:
    from meddiffusion.commands.options import add_device_options

    p = subparsers.add_parser("motion-correct", help="correct coronary calcium motion in a non-gated CT (ProDM) "
                                                     "and score Agatston before and after",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", help="non-gated chest CT in HU: .nrrd, .nii(.gz), .mha, a DICOM file or series folder")
    p.add_argument("-o", "--output", required=True,
                   help="corrected CT to write (.nrrd, .nii.gz, .mha or a folder for a DICOM series)")
    p.add_argument("--seg", help="also write the calcium lesions before and after as a Slicer segmentation "
                                 "(.seg.nrrd, two layers)")
    p.add_argument("--table", help="also write the Agatston table, per lesion and total, before and after (.csv)")
    p.add_argument("--roi", type=int, nargs=6, metavar=("I0", "I1", "J0", "J1", "K0", "K1"),
                   help="voxel box to correct and score (x, y, z index ranges, end exclusive); "
                        "default: found from the calcium in the heart")
    p.add_argument("--steps", type=int, help="sampling steps 1..1000 (default: the model card's, 10)")
    p.add_argument("--model", help="motion model id from the catalogue (default: motion-prodm-small)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: 0)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per network call (default: 16)")
    p.add_argument("--no-hu-check", action="store_true",
                   help="skip the check that the image looks like CT in HU (air near -1000)")
    add_device_options(p)


def run(args: argparse.Namespace, progress) -> dict:
    import time

    import numpy as np

    from meddiffusion.commands.options import check_hu, setup_device
    from meddiffusion.io import read_volume, write_segmentation, write_volume
    from meddiffusion.tasks.motion.correct import correct_volume, count_windows
    from meddiffusion.tasks.motion.model import load_model
    from meddiffusion.tasks.motion.region import check_roi, find_region
    from meddiffusion.tasks.motion.scoring import (largest_lesion_lps, score_before_after, segmentation_layers,
                                                   summary_of, write_table)

    outputs = _check_paths(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = setup_device(args)
    with progress.stage("read", total=1) as step:
        ct = read_volume(args.ct)
        check_hu(ct, skip=args.no_hu_check)
        if args.roi is not None:
            check_roi(args.roi, ct.shape)
        model = load_model(args.model, device)
        steps = model.steps if args.steps is None else args.steps
        if model.check_steps(steps) == 1 and model.objective == "regression":
            steps = 1  # the regression baseline is one network call, whatever --steps says
        step()
    start = time.monotonic()
    with progress.stage("region", total=1) as step:
        region = find_region(ct, args.roi, patch_size=model.patch_size)
        step()
    seconds_region = time.monotonic() - start
    slices = region.slices
    where = (f"slices {slices[0]}-{slices[1] - 1} in {len(region.boxes)} box(es)" if slices
             else "nothing: no calcium found in the heart")
    progress.log(f"model {model.id} ({model.objective}), {steps} step(s) on {device}; correcting {where}")

    total = count_windows(region, model.patch_size)
    result = correct_volume(ct, model, region=region, steps=steps, batch_size=args.batch_size, seed=args.seed,
                            precision=args.precision, callback=progress.callback("correct", total))
    corrected = result.corrected
    integral = _integral(ct)
    if integral:  # integer HU in, integer HU out: the corrected boxes are rounded, the rest is the input
        for box in region.boxes:
            corrected.array[box.slices] = np.clip(np.rint(corrected.array[box.slices]), -32768, 32767)
    corrected.metadata["SeriesDescription"] = f"motion corrected ({model.id}, {steps} steps)"

    with progress.stage("score", total=2) as step:
        before, after = score_before_after(ct, corrected, region)
        step(2)

    staged = _Staged(outputs)
    with progress.stage("write", total=len(outputs)) as step:
        try:
            written = staged.write("output", lambda path: write_volume(
                corrected, path, dtype="int16" if integral else None))
            step()
            if args.seg:
                layers, segments = segmentation_layers(before, after)
                staged.write("seg", lambda path: write_segmentation(path, layers, segments, ct))
                step()
            if args.table:
                staged.write("table", lambda path: write_table(path, before, after))
                step()
        except BaseException:
            staged.discard()
            raise
    staged.commit()

    b, a = summary_of(before), summary_of(after)
    seconds = seconds_region + result.seconds_correct
    return {
        "output": str(outputs["output"]), "seg": str(outputs["seg"]) if args.seg else None,
        "table": str(outputs["table"]) if args.table else None, "model": model.id, "objective": model.objective,
        "steps": steps, "region": region.source, "boxes": [box.ijk() for box in region.boxes],
        "corrected_slices": list(slices) if slices else None, "windows": result.windows,
        "seconds": round(seconds, 2), "seconds_region": round(seconds_region, 2),
        "before": b, "after": a, "largest_lesion_lps": largest_lesion_lps(before),
        "summary": (f"Agatston {b['agatston']:.1f} ({b['category']}, {b['lesions']} lesion(s)) before, "
                    f"{a['agatston']:.1f} ({a['category']}, {a['lesions']} lesion(s)) after; corrected {where} "
                    f"with {model.id} ({steps} steps) in {seconds:.1f} s -> {written}"),
    }


def _integral(volume) -> bool:
    """Whole numbers within int16 (CT stored as integers), checked slice by slice to spare memory."""
    import numpy as np

    array = volume.array
    return bool(array.min() >= -32768 and array.max() <= 32767
                and all(np.array_equal(plane, np.rint(plane)) for plane in array))


def _check_paths(args) -> dict:
    from pathlib import Path

    from meddiffusion.io import VOLUME_SUFFIXES

    outputs = {"output": Path(args.output)}
    if args.seg:
        if not str(args.seg).lower().endswith(".nrrd"):
            raise ValueError(f"--seg must be a Slicer segmentation file ending in .seg.nrrd, got '{args.seg}'")
        outputs["seg"] = Path(args.seg)
    if args.table:
        if not str(args.table).lower().endswith(".csv"):
            raise ValueError(f"--table must end in .csv, got '{args.table}'")
        outputs["table"] = Path(args.table)
    resolved = [p.resolve() for p in outputs.values()]
    if Path(args.ct).resolve() in resolved:
        raise ValueError("an output must not overwrite the input; choose another path")
    if len(set(resolved)) != len(resolved):
        raise ValueError("-o, --seg and --table must be different files")
    out = outputs["output"]
    if not any(out.name.lower().endswith(s) for s in VOLUME_SUFFIXES) and out.exists() and (
            not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"DICOM output folder {out} exists and is not empty; choose a new folder")
    return outputs


class _Staged:
    """Outputs written under hidden names first and renamed together at the end.

    Cancel or an error during writing removes what was staged, so either every output appears
    or none does, and files the user already had stay as they were.
    """

    def __init__(self, outputs: dict):
        self.outputs = outputs
        self.staged: dict = {}

    def write(self, key: str, writer):
        import uuid

        final = self.outputs[key]
        name = final.name
        suffix = next((s for s in (".seg.nrrd", ".nii.gz") if name.lower().endswith(s)), final.suffix)
        stem = name[: len(name) - len(suffix)] if suffix else name
        tmp = final.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
        self.staged[key] = tmp
        writer(tmp)
        return final

    def discard(self) -> None:
        import shutil

        for tmp in self.staged.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()

    def commit(self) -> None:
        import os

        for key, tmp in self.staged.items():
            final = self.outputs[key]
            if tmp.is_dir() and final.is_dir():
                final.rmdir()  # checked empty before the run
            os.replace(tmp, final)
