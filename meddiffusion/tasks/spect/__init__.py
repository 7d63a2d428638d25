"""CT-free attenuation correction of cardiac SPECT with PADM (arXiv 2511.06948).

The task's declaration (torch-free). Its code: ``model`` (normalisation, the PADM student or
teacher with its Brownian bridge), ``infer`` (whole studies, transaxial slices with context),
``reorient`` and ``polarmap`` (LV axes, the 17-segment AHA polar map), ``bullseye`` (its
picture), ``data`` and ``recipe`` (training on simulated phantom studies), ``bench``
(held-out phantom studies against NAC, Chang, a UNet and the bridge without physics).
The acquisition and reconstruction are in ``meddiffusion.physics.spect``.
"""

from meddiffusion.checks import Limits
from meddiffusion.tasks.registry import Option, Port, TaskSpec

SPEC = TaskSpec(
    name="spect",
    title="SPECT attenuation correction",
    command="spect-ac",
    summary="attenuation-correct a cardiac SPECT without CT (PADM); polar maps before and after",
    description="""Attenuation correction of a myocardial perfusion SPECT (Tc-99m) reconstructed without it (NAC).

PADM translates each transaxial slice of the NAC, read with its two neighbours, into the
attenuation-corrected image (AC) through a Brownian bridge whose network predicts, per voxel,
the attenuation coefficient and 16 per-angle path lengths, i.e. Chang's correction factor
(its physics head). The default model (the student) needs no CT. With --ct (resampled onto the
SPECT grid and converted from HU to μ at 140 keV) or --mumap (μ in 1/cm) the teacher model
runs, which attends to the attenuation map.

The output is in the input's units on its exact grid: counts are scaled back, not a [-1, 1]
picture. The LV is found and reoriented automatically (short axis, vertical and horizontal
long axis); --table writes the 17-segment AHA polar map (% of peak) of the NAC and the AC side
by side with the segments that change category (normal / mildly / severely reduced), --png
the two bull's-eyes, --short-axis the AC resampled into short-axis slices (apex to base) and
--mu-estimate the physics head's attenuation map.""",
    example="""examples:
  meddiff spect-ac nac.nrrd -o ac.nrrd --table polar.csv --png bullseye.png
  meddiff spect-ac meddiffusion/data/sample_spect_nac.nrrd -o ac.nrrd --short-axis sa.nrrd
  meddiff spect-ac nac.nrrd -o ac_ct.nrrd --ct ct.nrrd            # the teacher, guided by the CT
  meddiff spect-ac nac_dicom/ -o ac.nrrd --mumap mu.nrrd --steps 20 --events jsonl""",
    rule="emission",
    inputs=(
        Port("nac", "volume", "SPECT reconstructed without attenuation correction (counts): .nrrd, .nii(.gz), .mha, "
                              "a DICOM file or series folder", required=True, file="input.nrrd"),
        Port("ct", "volume", "CT of the same patient in HU (any grid overlapping the SPECT); runs the teacher",
             flags=("--ct",), rule="ct", file="ct.nrrd"),
        Port("mumap", "volume", "attenuation map at 140 keV in 1/cm (any grid overlapping the SPECT); runs the teacher",
             flags=("--mumap",), rule="attenuation", file="mumap.nrrd"),
    ),
    outputs=(
        Port("output", "volume", "attenuation-corrected volume to write (.nrrd, .nii.gz, .mha or a DICOM folder)",
             flags=("-o", "--output"), required=True, suffix="AC", file="output.nrrd"),
        Port("table", "table", "also write the 17-segment polar maps of NAC and AC and the category changes (.csv)",
             flags=("--table",), suffix="polar map", file="polar_map.csv"),
        Port("png", "picture", "also write the NAC and AC bull's-eyes as a PNG", flags=("--png",),
             file="bullseye.png"),
        Port("short_axis", "volume", "also write the AC reoriented into short-axis slices, apex to base",
             flags=("--short-axis",), suffix="AC short axis", file="short_axis.nrrd"),
        Port("mu_estimate", "volume", "also write the attenuation map (1/cm) the physics head estimated",
             flags=("--mu-estimate",), suffix="estimated attenuation map", file="mu_estimate.nrrd"),
    ),
    options=(
        Option(("--batch-size",), {"type": int, "default": 16, "help": "slices per network call (default: 16)"}),
        Option(("--seed",), {"type": int, "default": 0, "help": "seed of the sampler's noise (default: 0)"}),
    ),
    infer="meddiffusion.tasks.spect.infer:run",
    check_arguments="meddiffusion.tasks.spect.infer:check_arguments",
    load_model="meddiffusion.tasks.spect.model:load_model",
    recipe="meddiffusion.tasks.spect.recipe",
    bench="meddiffusion.tasks.spect.bench",
    bench_summary="SPECT attenuation correction on held-out phantom studies: PSNR/SSIM/RMSE, polar-map error, "
                  "false defects, s/study",
    simulate_pair="meddiffusion.physics.spect:simulate_study",
    commands=("meddiffusion.commands.simulate_spect",),
    module="SPECTAttenuation",
    limits=Limits(min_slices=3, slice_mm=(1.0, 15.0), slice_mm_usual=(3.0, 7.0), pixel_mm=(1.0, 15.0),
                  pixel_mm_usual=(3.0, 7.0), why="the models learned cardiac SPECT of 3-7 mm voxels, and each slice "
                  "is read with its neighbours"),
)
