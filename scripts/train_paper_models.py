"""Train the paper-size LDCT (CoreDiff CLEAR-Net) and motion (ProDM UNet) networks on one GPU within a time budget.

    python scripts/train_paper_models.py OUT [--minutes 9] [--workers N]
    python scripts/train_paper_models.py OUT --tiny          # the same pipeline at test size on the CPU

What it does, with a wall-clock budget (default 9 minutes) for everything:

1. **data**: the LDCT slabs (phantom and dead leaves, scanner noise of every kernel, doses
   0.07-0.4) and the motion cases (phantom patients, ProDM's motion simulation) are
   simulated in parallel on every CPU core, into the caches ``meddiff train`` reads;
2. **speed probe**: a few optimizer steps of each network on the GPU give the steps that fit;
3. **training**: ``meddiff train ldct --config paper`` and ``meddiff train motion --config
   gpu`` (the widest ProDM UNet whose weights fit 25 MB) run side by side on the GPU, each
   with the step count from the probe and a ``--time-limit`` guard so the budget holds, and
   register into ``OUT``;
4. **cards**: ``OUT`` then holds ``<id>.safetensors`` and ``<id>.json`` (the user-catalogue
   layout: ``MEDDIFF_MODEL_DIR=OUT meddiff bench ldct --model ldct-corediff-paper`` scores
   them) and a Markdown card ``<id>.md`` per model, with the GPU, steps, time and validation
   loss; ``summary.json`` holds the timings. Every weights file is checked to be <= 25 MB.

The recorded ``training_command`` in each card is the exact ``meddiff train`` call, so a
model can be retrained without this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import import_module
from pathlib import Path

MAX_WEIGHTS_MB = 25.0
#: seconds kept at the end for export, cards and copying
EXPORT_MARGIN_S = 40.0


def _plans(tiny: bool) -> dict[str, dict]:
    """Per task: the ``meddiff train`` arguments and how many data items to simulate."""
    if tiny:
        return {
            "ldct": {"id": "ldct-corediff-tiny-gpu-recipe", "items": 4,
                     "args": ["--config", "tiny", "--slabs", "3", "--val-slabs", "1", "--size", "48", "--slices", "2",
                              "--pixel-range", "4", "5", "--crop", "32", "--batch-size", "2", "--lr", "1e-3",
                              "--dose-range", "0.07", "0.4", "--procedural", "0.5"]},
            "motion": {"id": "motion-prodm-tiny-gpu-recipe", "items": 3,
                       "args": ["--config", "tiny", "--cases", "2", "--val-cases", "1", "--size", "96", "--slices", "8",
                                "--crop", "32", "--batch-size", "2", "--lr", "1e-3"]},
        }
    return {
        "ldct": {"id": "ldct-corediff-paper", "items": 96 + 8,
                 "args": ["--config", "paper", "--slabs", "96", "--val-slabs", "8", "--size", "512", "--slices", "4",
                          "--pixel-range", "0.3", "1.0", "--noise-range", "2", "40", "--dose-range", "0.07", "0.4",
                          "--procedural", "0.5", "--crop", "128", "--batch-size", "16", "--lr", "5e-4"]},
        "motion": {"id": "motion-prodm-gpu", "items": 160 + 40,
                   "args": ["--config", "gpu", "--cases", "160", "--val-cases", "40", "--crop", "64",
                            "--batch-size", "32", "--lr", "2e-4"]},
    }


def _parse_train_args(task: str, extra: list[str], out: Path):
    """The ``meddiff train <task>`` namespace of a plan, to build its data exactly as the command will."""
    from meddiffusion.cli import build_parser

    return build_parser().parse_args(["train", task, "--out", str(out), *extra])


def _simulate_item(job: tuple[str, list[str], str, int]) -> float:
    """One LDCT slab or motion case into its cache (a worker process, one thread); returns seconds."""
    import torch

    torch.set_num_threads(1)
    task, extra, out, index = job
    args = _parse_train_args(task, extra, Path(out))
    start = time.monotonic()
    data, recipe = (import_module(f"meddiffusion.tasks.{task}.{part}") for part in ("data", "recipe"))
    data.build_cache(Path(out) / "data", 1, args.seed, recipe.data_options(args), first=index)
    return time.monotonic() - start


def simulate(plans: dict, work: Path, workers: int) -> float:
    """Every task's data, all items of all tasks spread over ``workers`` processes; returns seconds."""
    start = time.monotonic()
    jobs = [(task, plan["args"], str(work / task), index) for task, plan in plans.items()
            for index in range(plan["items"])]
    jobs.sort(key=lambda job: job[0] != "ldct")  # the slower slabs first, so the pool ends evenly
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_simulate_item, jobs, chunksize=1))
    return time.monotonic() - start


def probe_steps_per_second(task: str, extra: list[str], out: Path, device: str, steps: int = 12) -> float:
    """Optimizer steps per second of the task's network and loss on its cached data (after 3 warm-up steps)."""
    import torch

    from meddiffusion.tasks.registry import get_task
    from meddiffusion.training.loop import train_config
    from meddiffusion.training.recipe import recipe_of
    from meddiffusion.training.trainer import Trainer

    recipe = recipe_of(get_task(task))
    args = _parse_train_args(task, [*extra, "--device", device], out)
    data = recipe.build_data(args, _quiet())
    config = train_config(args)
    config.out_dir, config.val_every, config.ckpt_every = None, 0, 0
    trainer = Trainer(recipe.make_model(args), recipe.make_loss(args, lambda: 0), config, data.train,
                      device=device, progress=_quiet())
    batches = iter(trainer._train_loader(0))
    for _ in range(3):
        trainer._train_step(next(batches))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.monotonic()
    for _ in range(steps):
        trainer._train_step(next(batches))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.monotonic() - start)


def _quiet():
    from meddiffusion.progress import Progress

    return Progress()


def train(plans: dict, work: Path, out: Path, device: str, rates: dict[str, float], seconds_left: float,
          tiny: bool) -> dict[str, dict]:
    """Both ``meddiff train`` runs side by side, registered into ``out``; returns each command's result."""
    budget = max(seconds_left - EXPORT_MARGIN_S, 10.0)
    share = 1.0 if tiny else 0.6  # two runs share the GPU: each gets about 60 % of its solo speed
    children = {}
    for task, plan in plans.items():
        steps = 4 if tiny else max(200, int(rates[task] * share * budget))
        command = [sys.executable, "-m", "meddiffusion", "train", task, *plan["args"], "--steps", str(steps),
                   "--out", str(work / task), "--device", device, "--register", plan["id"], "--overwrite",
                   "--val-every", str(max(steps // 4, 1)), "--ckpt-every", str(max(steps // 4, 1)),
                   "--time-limit", f"{budget / 60:.2f}", "--events", "jsonl"]
        log = open(work / f"{task}.log", "w")
        children[task] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                                           env={**os.environ, "MEDDIFF_MODEL_DIR": str(out)}), log, steps)
    results = {}
    for task, (child, log, steps) in children.items():
        code = child.wait()
        log.close()
        text = (work / f"{task}.log").read_text()
        if code != 0:
            raise RuntimeError(f"meddiff train {task} failed ({code}); see {work / f'{task}.log'}:\n{text[-2000:]}")
        results[task] = _last_result(text) | {"planned_steps": steps}
    return results


def _last_result(jsonl: str) -> dict:
    for line in reversed(jsonl.splitlines()):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "result":
            return {k: v for k, v in event.items() if k != "event"}
    raise RuntimeError("the training command reported no result")


def write_cards(plans: dict, out: Path, results: dict, gpu: str, timings: dict) -> None:
    """``<id>.md`` beside each registered ``<id>.json``; refuses weights over the size limit."""
    for task, plan in plans.items():
        card = json.loads((out / f"{plan['id']}.json").read_text())
        weights = out / card["weights"]
        megabytes = weights.stat().st_size / 2**20
        if megabytes > MAX_WEIGHTS_MB:
            raise RuntimeError(f"{weights} is {megabytes:.1f} MB, over the {MAX_WEIGHTS_MB:g} MB limit of "
                               "shipped weights")
        metrics = card.get("metrics", {})
        lines = [f"# {plan['id']}: {card.get('description', '')}", "",
                 f"- **Trained on**: {gpu}, by `scripts/train_paper_models.py` within a "
                 f"{timings['budget_minutes']:g}-minute budget (data {timings['simulate_s']:.0f} s on "
                 f"{timings['workers']} CPU workers, training side by side with the other network).",
                 f"- **Command**: `{card.get('training_command', '')}`",
                 f"- **Steps**: {metrics.get('steps')} of {results[task]['planned_steps']} planned"
                 + (f" ({metrics['stopped_by_time_limit']})" if metrics.get("stopped_by_time_limit") else "")
                 + f", {metrics.get('train_seconds')} s of training.",
                 f"- **Training data**: {card.get('training_data', '')}",
                 f"- **Validation loss**: {metrics.get('val_loss_start')} at the start -> "
                 f"{metrics.get('val_loss_end')}.",
                 f"- **Weights**: {card['weights']}, {megabytes:.1f} MB, sha256 {card.get('sha256', '')[:16]}...",
                 "- **Quality**: score it before use: "
                 f"`MEDDIFF_MODEL_DIR={out} meddiff bench {task} --model {plan['id']}`."]
        (out / f"{plan['id']}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the weights and cards (created)")
    parser.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget for everything (default: 9)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data simulation processes")
    parser.add_argument("--tiny", action="store_true", help="test size on the CPU: the pipeline, not a model")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    device = args.device or ("cpu" if args.tiny else "cuda")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible; this script trains the paper-size networks on a GPU "
                         "(use --tiny to test the pipeline on the CPU)")
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    out, work = args.out.resolve(), args.out.resolve() / "work"
    work.mkdir(parents=True, exist_ok=True)
    plans = _plans(args.tiny)

    simulate_s = simulate(plans, work, args.workers)
    print(f"data simulated in {simulate_s:.0f} s", flush=True)
    rates = {task: probe_steps_per_second(task, plan["args"], work / task, device) for task, plan in plans.items()}
    print("steps per second alone: " + ", ".join(f"{t} {r:.2f}" for t, r in rates.items()), flush=True)
    results = train(plans, work, out, device, rates, deadline - time.monotonic(), args.tiny)
    timings = {"budget_minutes": args.minutes, "simulate_s": simulate_s, "workers": args.workers,
               "steps_per_second_alone": rates, "total_s": time.monotonic() - start, "device": gpu}
    write_cards(plans, out, results, gpu, timings)
    (out / "summary.json").write_text(json.dumps({"timings": timings, "results": results}, indent=2, default=str))
    print(f"done in {timings['total_s']:.0f} s: " + ", ".join(p["id"] for p in plans.values()) + f" in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
