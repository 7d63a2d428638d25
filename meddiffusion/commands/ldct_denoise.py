"""``meddiff ldct-denoise``: denoise a low-dose CT volume with CoreDiff (CLEAR-Net, mean-preserving diffusion).

Each axial slice is restored from the low-dose image and its two neighbours (the first and
last slice replicate themselves), starting the sampler at the low-dose image itself, so a
few steps suffice (T = 10; ``--steps`` runs any 1..T, fewer is faster and smoother). Only the
body's bounding box goes through the network; air outside it is copied. The output is a new
volume in HU on the input's exact grid (spacing, origin, direction).

``--png`` also writes a before/after picture of one axial slice (low dose | denoised, soft-tissue
window, radiological orientation) once the volume is written; a failed or cancelled run leaves
neither file.

The default model comes from the catalogue (task ``ldct``): the paper-size network on a GPU
where installed, else the CPU-sized one; ``--model`` picks any shipped or user model by id
(see ``meddiff info``), e.g. one adapted to another dose with ``meddiff ldct-adapt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """examples:
  meddiff ldct-denoise low_dose.nrrd -o denoised.nrrd
  meddiff ldct-denoise meddiffusion/data/sample_ldct_chest.nrrd -o denoised.nrrd --png before_after.png
  meddiff ldct-denoise dicom_folder/ -o denoised.nrrd --steps 3 --threads 2
  meddiff ldct-denoise chest.nii.gz -o out.nii.gz --model ldct-corediff-paper --device cuda --events jsonl"""


def add_parser(subparsers) -> None:
    from meddiffusion.commands.options import add_device_options

    p = subparsers.add_parser("ldct-denoise", help="denoise a low-dose CT (CoreDiff), output in HU on the same grid",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", help="low-dose CT in HU: .nrrd, .nii(.gz), .mha, a DICOM file or a DICOM series folder")
    p.add_argument("-o", "--output", required=True, help="denoised volume to write (.nrrd, .nii.gz, .mha or a folder "
                                                         "for a DICOM series)")
    p.add_argument("--model", help="model id from the catalogue (default: the best installed for the device)")
    p.add_argument("--steps", type=int, help="sampling steps 1..T (default: the model card's, for the device)")
    p.add_argument("--batch-size", type=int, default=4, help="slices per network call (default: 4)")
    p.add_argument("--png", help="also write a before/after PNG of one axial slice (low dose | denoised)")
    p.add_argument("--png-slice", type=int, metavar="K",
                   help="axial slice for --png: voxel index k of the input (default: the middle slice)")
    p.add_argument("--no-hu-check", action="store_true",
                   help="skip the check that the image looks like CT in HU (air near -1000)")
    add_device_options(p)


def run(args: argparse.Namespace, progress) -> dict:
    import time

    from meddiffusion.commands.options import check_hu
    from meddiffusion.commands.options import setup_device
    from meddiffusion.figures import axial_slice_count, before_after_image
    from meddiffusion.io import read_volume
    from meddiffusion.tasks.ldct.infer import denoise_volume
    from meddiffusion.tasks.ldct.model import load_model

    if Path(args.output).resolve() == Path(args.ct).resolve():
        raise ValueError("the output must not overwrite the input; choose another -o path")
    png, png_slice = getattr(args, "png", None), getattr(args, "png_slice", None)  # library callers may omit them
    _check_png_arguments(args.ct, args.output, png, png_slice)
    device = setup_device(args)
    with progress.stage("read", total=1) as step:
        ct = read_volume(args.ct)
        check_hu(ct, skip=args.no_hu_check)
        if png_slice is not None and not 0 <= png_slice < axial_slice_count(ct):
            raise ValueError(f"--png-slice {png_slice} is outside the input's axial slices "
                             f"0..{axial_slice_count(ct) - 1}")
        model = load_model(args.model, device)
        steps = model.default_steps(device) if args.steps is None else args.steps
        step()
    progress.log(f"model {model.entry.id}, {steps} step(s), {ct.shape[0]} slice(s) of "
                 f"{ct.shape[1]}×{ct.shape[2]} on {device}")
    start = time.monotonic()
    denoised = denoise_volume(ct, model, steps=steps, batch_size=args.batch_size, device=device,
                              precision=args.precision,
                              callback=progress.callback("denoise", ct.shape[0] * steps))
    seconds = time.monotonic() - start
    denoised.metadata["SeriesDescription"] = f"LDCT denoised ({model.entry.id}, {steps} steps)"
    picture = None if png is None else before_after_image(ct, denoised, slice_index=png_slice)
    with progress.stage("write", total=1) as step:
        written = _write_outputs(denoised, args.output, picture, png)
        step()
    result = {"output": str(written), "model": model.entry.id, "steps": steps, "slices": ct.shape[0],
              "seconds": round(seconds, 2), "seconds_per_slice": round(seconds / ct.shape[0], 3),
              "summary": (f"denoised {ct.shape[0]} slice(s) with {model.entry.id} ({steps} steps) in {seconds:.1f} s "
                          f"-> {written}" + (f" (before/after picture {png})" if png else ""))}
    if png:
        result["png"] = str(Path(png))
    return result


def _check_png_arguments(ct: str, output: str, png: str | None, png_slice: int | None) -> None:
    if png is None:
        if png_slice is not None:
            raise ValueError("--png-slice needs --png (the picture to write)")
        return
    if Path(png).suffix.lower() != ".png":
        raise ValueError(f"--png {png} must end in .png")
    if Path(png).resolve() in (Path(ct).resolve(), Path(output).resolve()):
        raise ValueError("--png must not be the input or the output volume; choose another path")


def _write_outputs(volume, output: str, picture, png: str | None):
    """Write the volume, and the picture when asked, so that a failure leaves neither.

    The picture goes to a hidden temporary file first; only once the volume is written is it
    renamed into place.
    """
    from meddiffusion.figures import write_png
    from meddiffusion.files import atomic_write
    from meddiffusion.io import write_volume

    if picture is None:
        return write_volume(volume, output)
    written = []

    def write_both(tmp):
        write_png(tmp, picture)
        written.append(write_volume(volume, output))

    atomic_write(png, write_both)
    return written[0]
