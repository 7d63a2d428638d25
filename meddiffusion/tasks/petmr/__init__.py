"""MR-guided denoising of low-count PET with CSRD (arXiv 2410.00184): EDM residual diffusion in 3D.

The task's declaration (torch-free). Its code: ``model`` (CSRD's normalisation, the network and
sampler settings), ``infer`` (MR registration onto the PET, the Heun sampler over the whole
volume through sliding windows with global coordinate channels, units and total activity),
``data``, ``losses`` and ``recipe`` (training on simulated brain and thorax PET/MR subjects),
``bench`` (held-out subjects at the unseen DRF 10 against classical filters and a plain UNet).
The simulation is ``meddiffusion.physics.pet`` (``meddiff simulate-pet``).
"""

from meddiffusion.checks import Limits
from meddiffusion.tasks.registry import Option, Port, TaskSpec

SPEC = TaskSpec(
    name="petmr",
    title="MR-guided PET denoising",
    command="pet-denoise",
    summary="denoise a low-count PET, guided by the patient's MR (CSRD, 3D residual diffusion)",
    description="""Denoising of a low-count (reduced dose or short frame) FDG PET.

CSRD diffuses the residual between the full-count and the low-count image with EDM and a 3D
UNet that sees the low-count PET, the patient's MR and the position of each voxel in the
volume. With --mr the MR is resampled onto the PET grid; a rigid registration (mutual
information) measures how far it is off, and when that is more than 1 mm or 1° the MR is
registered first. The measured misalignment is reported. Without --mr the PET-only model runs.

The output is in the input's units (SUV or Bq/ml) on its exact grid; its total activity is
checked against the input's and kept within 1 %.""",
    example="""examples:
  meddiff pet-denoise low.nrrd --mr t1.nrrd -o denoised.nrrd
  meddiff pet-denoise low.nrrd -o denoised.nrrd                     # PET only
  meddiff pet-denoise pet_dicom/ --mr t1_dicom/ -o denoised.nrrd --steps 8 --overlap 0.5""",
    rule="emission",
    inputs=(
        Port("pet", "volume", "low-count PET (SUV or Bq/ml): .nrrd, .nii(.gz), .mha, a DICOM file or series folder",
             required=True, file="input.nrrd"),
        Port("mr", "volume", "the patient's anatomical MR (T1), on any grid overlapping the PET; registered rigidly "
                             "when not aligned", flags=("--mr",), rule="mr", file="mr.nrrd"),
    ),
    outputs=(
        Port("output", "volume", "denoised PET to write (.nrrd, .nii.gz, .mha or a DICOM folder)",
             flags=("-o", "--output"), required=True, suffix="denoised", file="output.nrrd"),
    ),
    options=(
        Option(("--batch-size",), {"type": int, "default": 1, "help": "sliding windows per network call "
                                                                     "(default: 1)"}),
        Option(("--overlap",), {"type": float, "default": 0.25, "help": "overlap of the sliding windows for volumes "
                                                                       "larger than the model's window, from 0 "
                                                                       "to below 1 (default: 0.25)"}),
        Option(("--seed",), {"type": int, "default": 0, "help": "seed of the sampler's starting noise; sample k "
                                                               "starts from seed + k (default: 0)"}),
        Option(("--samples",), {"type": int, "default": None, "help": "samples averaged, each from its own "
                                                                     "starting noise; their mean estimates the "
                                                                     "posterior mean (default: the model card's, "
                                                                     "3 on a CPU)"}),
    ),
    infer="meddiffusion.tasks.petmr.infer:run",
    check_arguments="meddiffusion.tasks.petmr.infer:check_arguments",
    load_model="meddiffusion.tasks.petmr.model:load_model",
    recipe="meddiffusion.tasks.petmr.recipe",
    bench="meddiffusion.tasks.petmr.bench",
    bench_summary="PET denoising at the unseen DRF 10 on held-out simulated brains and thoraces: PSNR/SSIM, lesion "
                  "SUVmax/SUVmean bias, contrast recovery, background CoV, s per volume; Gaussian, NLM, BM4D, UNet "
                  "and CSRD with and without MR",
    simulate_pair="meddiffusion.physics.pet:simulate_pet_subject",
    commands=("meddiffusion.commands.simulate_pet",),
    module="PETMRDenoise",
    limits=Limits(min_slices=8, slice_mm=(0.5, 12.0), slice_mm_usual=(1.0, 6.0), pixel_mm=(0.5, 12.0),
                  pixel_mm_usual=(1.0, 6.0), why="the models learned brain and body PET of 2-4 mm voxels and read "
                  "3D neighbourhoods"),
)
