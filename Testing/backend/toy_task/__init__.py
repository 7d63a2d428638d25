"""A toy task registered at run time, to show that one package plus one registry line is a whole task.

It "denoises" a CT by blending each voxel with a model card's constant (its only weight), so
it runs in milliseconds yet goes through the real command path, catalogue and writers.
"""

from meddiffusion.tasks.registry import Option, Port, TaskSpec

SPEC = TaskSpec(
    name="toy",
    title="toy smoothing",
    command="toy-smooth",
    summary="blend a CT towards a constant (toy task for the registry tests)",
    description="Blend every voxel of a CT towards the model's constant by --strength.",
    rule="ct",
    inputs=(Port("ct", "volume", "a CT in HU", required=True, file="input.nrrd"),),
    outputs=(Port("output", "volume", "blended volume", flags=("-o", "--output"), required=True, suffix="toy",
                  file="output.nrrd"),
             Port("table", "table", "also write the mean before and after (.csv)", flags=("--table",),
                  suffix="toy table", file="toy.csv")),
    options=(Option(("--strength",), {"type": float, "default": 0.5, "help": "blend share 0..1 (default: 0.5)"}),),
    infer="toy_task.core:run",
    load_model="toy_task.core:load_model",
    recipe="toy_task.recipe",
    bench="toy_task.bench",
    bench_summary="toy bench: blend error on a few generated cases",
    module="",
)
