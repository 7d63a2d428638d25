"""Low-dose CT denoising with CoreDiff (Gao et al., IEEE TMI 2024, arXiv 2304.01814).

The task's declaration (torch-free). Its code: ``model`` (CoreDiff's scale, CLEAR-Net and the
mean-preserving sampler), ``infer`` (whole volumes, slice by slice with context), ``physics``
(noise measurement and low-dose simulation), ``adapt`` (one-shot adaptation to a new dose),
``recipe`` (training on phantom pairs) and ``bench`` (held-out real CT against BM3D).
"""

from meddiffusion.checks import Limits
from meddiffusion.tasks.registry import Option, Port, TaskSpec

SPEC = TaskSpec(
    name="ldct",
    title="low-dose CT denoising",
    command="ldct-denoise",
    summary="denoise a low-dose CT (CoreDiff), output in HU on the same grid",
    description="""Denoise a low-dose CT volume with CoreDiff (CLEAR-Net, mean-preserving diffusion).

Each axial slice is restored from the low-dose image and its two neighbours (the first and
last slice replicate themselves; a single slice is its own context), starting the sampler at
the low-dose image itself, so a few steps suffice (T = 10; --steps runs any 1..T, fewer is
faster and smoother). Only the body's bounding box goes through the network; air outside it
is copied. The output is a new volume in HU on the input's exact grid (spacing, origin,
direction).

--png also writes a before/after picture of one axial slice (low dose | denoised, soft-tissue
window, radiological orientation); a failed or cancelled run leaves neither file.

The default model is the one the model cards rank first for the device (see meddiff info);
--model picks any shipped or user model by id, e.g. one adapted to another dose with
meddiff ldct-adapt.""",
    example="""examples:
  meddiff ldct-denoise low_dose.nrrd -o denoised.nrrd
  meddiff ldct-denoise meddiffusion/data/sample_ldct_chest.nrrd -o denoised.nrrd --png before_after.png
  meddiff ldct-denoise dicom_folder/ -o denoised.nrrd --steps 3 --threads 2
  meddiff ldct-denoise chest.nii.gz -o out.nii.gz --model ldct-corediff-paper --device cuda --events jsonl""",
    rule="ct",
    inputs=(Port("ct", "volume", "low-dose CT in HU: .nrrd, .nii(.gz), .mha, a DICOM file or a DICOM series folder",
                 required=True, file="input.nrrd"),),
    outputs=(
        Port("output", "volume", "denoised volume to write (.nrrd, .nii.gz, .mha or a folder for a DICOM series)",
             flags=("-o", "--output"), required=True, suffix="denoised", file="output.nrrd"),
        Port("png", "picture", "also write a before/after PNG of one axial slice (low dose | denoised)",
             flags=("--png",), file="before_after.png"),
    ),
    options=(
        Option(("--batch-size",), {"type": int, "default": 4, "help": "slices per network call (default: 4)"}),
        Option(("--png-slice",), {"type": int, "metavar": "K",
                                  "help": "axial slice for --png: voxel index k of the input (default: the middle "
                                          "slice)"}),
    ),
    infer="meddiffusion.tasks.ldct.infer:run",
    check_arguments="meddiffusion.tasks.ldct.infer:check_arguments",
    load_model="meddiffusion.tasks.ldct.model:load_model",
    recipe="meddiffusion.tasks.ldct.recipe",
    bench="meddiffusion.tasks.ldct.bench",
    bench_summary="LDCT denoising on held-out real CT slices: PSNR/SSIM/RMSE vs BM3D, s/slice",
    simulate_pair="meddiffusion.tasks.ldct.physics:simulate_pair",
    commands=("meddiffusion.commands.simulate_ldct", "meddiffusion.commands.ldct_adapt"),
    module="LDCTDenoise",
    limits=Limits(min_slices=1, pixel_mm=(0.1, 5.0), pixel_mm_usual=(0.25, 1.0),
                  why="the models learned the noise of 0.25-1.0 mm pixels"),
)
