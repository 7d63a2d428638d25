"""Coronary calcium motion correction with ProDM (arXiv 2512.24948) on whole non-gated chest CTs.

The task's declaration (torch-free). Its code: ``model`` (ProDM's HU window, the 2.5D UNet and
the Brownian bridge), ``region`` (where the calcium in the heart is), ``correct`` (windows
through the sampler), ``scoring`` (Agatston before and after), ``recipe`` (training on
motion-corrupted phantom cases) and ``bench`` (held-out phantom cases).
"""

from meddiffusion.checks import Limits
from meddiffusion.tasks.registry import Option, Port, TaskSpec

SPEC = TaskSpec(
    name="motion",
    title="motion correction",
    command="motion-correct",
    summary="correct coronary calcium motion in a non-gated CT (ProDM) and score Agatston before and after",
    description="""Coronary calcium motion correction (ProDM) on a whole non-gated chest CT.

The calcium in the heart is found automatically (>= 130 HU lesions inside a heart region,
bone excluded), or --roi gives the voxel box to correct. Only boxes around the calcium go
through the model: each axial slice with its two neighbours, in 64-pixel windows, each
sampled with the Brownian-bridge sampler of the model (--steps network calls). The output is
the CT in HU on the input's exact grid; outside the corrected boxes it equals the input bit for
bit.

Agatston scores of the input ("before") and of the corrected CT ("after") are computed inside
the same region: --table writes one row per lesion of each scan (slice range, area, peak HU,
weight, Agatston, volume) plus a total row per scan with the risk category, and --seg a Slicer
segmentation with two layers, "before L1, L2, ..." and "after L1, L2, ...".""",
    example="""examples:
  meddiff motion-correct nongated_chest.nrrd -o corrected.nrrd --seg calcium.seg.nrrd --table agatston.csv
  meddiff motion-correct dicom_folder/ -o corrected.nrrd --roi 180 300 160 280 60 110 --steps 5 --threads 2
  meddiff motion-correct chest.nii.gz -o out.nii.gz --model motion-unet-l1-small --events jsonl

--roi takes voxel index ranges I0 I1 J0 J1 K0 K1 (x, y, z; end exclusive), as Slicer shows IJK.""",
    rule="ct",
    inputs=(Port("ct", "volume", "non-gated chest CT in HU: .nrrd, .nii(.gz), .mha, a DICOM file or series folder",
                 required=True, file="input.nrrd"),),
    outputs=(
        Port("output", "volume", "corrected CT to write (.nrrd, .nii.gz, .mha or a folder for a DICOM series)",
             flags=("-o", "--output"), required=True, suffix="motion corrected", file="output.nrrd"),
        Port("seg", "segmentation", "also write the calcium lesions before and after as a Slicer segmentation "
                                    "(.seg.nrrd, two layers)", flags=("--seg",), suffix="calcium",
             file="calcium.seg.nrrd"),
        Port("table", "table", "also write the Agatston table, per lesion and total, before and after (.csv)",
             flags=("--table",), suffix="Agatston lesions", file="agatston.csv"),
    ),
    options=(
        Option(("--roi",), {"type": int, "nargs": 6, "metavar": ("I0", "I1", "J0", "J1", "K0", "K1"),
                            "help": "voxel box to correct and score (x, y, z index ranges, end exclusive); "
                                    "default: found from the calcium in the heart"}),
        Option(("--seed",), {"type": int, "default": 0, "help": "seed of the sampler's noise (default: 0)"}),
        Option(("--batch-size",), {"type": int, "default": 16, "help": "windows per network call (default: 16)"}),
    ),
    infer="meddiffusion.tasks.motion.correct:run",
    load_model="meddiffusion.tasks.motion.model:load_model",
    recipe="meddiffusion.tasks.motion.recipe",
    bench="meddiffusion.tasks.motion.bench",
    bench_summary="calcium motion correction on held-out phantom cases: Agatston MAE, risk class, r",
    simulate_pair="meddiffusion.tasks.motion.cases:make_case",
    commands=("meddiffusion.commands.simulate_motion",),
    module="MotionCorrect",
    limits=Limits(min_slices=3, slice_mm=(0.5, 6.0), slice_mm_usual=(2.5, 3.5), pixel_mm=(0.2, 2.0),
                  pixel_mm_usual=(0.4, 1.0), why="calcium is told from bone in 3D, every slice is read with its "
                  "neighbours, and the Agatston score is defined for 3 mm slices"),
)
