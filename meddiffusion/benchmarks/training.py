"""Fine-tuning on one user's CT volume pair, as the Training module runs it: time, curves, gain.

One site's scan: a 512² × 50 phantom chest (0.7 × 0.7 × 1.0 mm) with noise at full dose, and a
25 % dose scan made from it. The default LDCT model is fine-tuned on the pair for 200 steps by
``meddiff train ldct --source paired-folder --from-model ... --detach``, the command the module
starts; the run folder is then read as the module reads it, every 0.25 s. Figures: the wall time
from the launch to the end (checks, data cache, steps, gate), the longest wait between two
updates of the training curves, and the validation PSNR of the parent and the fine-tune (the
gate's, on the held-out slices of this single patient).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from meddiffusion.benchmarks.harness import markdown_table, meddiff_result, result

__all__ = ["run"]

#: (in-plane size, slices, steps) of the measured case and of ``--quick``
FULL, QUICK = (512, 50, 200), (128, 16, 20)
POLL_S = 0.25


def make_pair(folder: Path, size: int, slices: int) -> Path:
    """A normal-dose and a 25 % dose CT of one phantom patient, as ``input/`` and ``target/``."""
    phantom, target, low = folder / "phantom.nrrd", folder / "pair" / "target" / "patient.nrrd", \
        folder / "pair" / "input" / "patient.nrrd"
    meddiff_result("phantom", "--modality", "ct", "--preset", "NOR", "--seed", "11", "--frames", "1",
             "--size", f"{size},{size},{slices}", "--spacing", "0.7,0.7,1.0", "-o", str(phantom))
    meddiff_result("simulate-ldct", str(phantom), "-o", str(target), "--dose", "1.0", "--noise-free", "--i0", "200000",
             "--seed", "1")
    meddiff_result("simulate-ldct", str(target), "-o", str(low), "--dose", "0.25", "--seed", "2")
    return folder / "pair"


def watch(run: Path, poll_s: float = POLL_S, timeout_s: float = 3600) -> dict:
    """Poll a detached run until it ends; when each training-curve point became visible."""
    from meddiffusion.training import runs

    started, seen, arrivals = time.monotonic(), 0, []
    metrics = run / "metrics.jsonl"
    while True:
        status = runs.read_run(run)
        lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
        train = sum(1 for line in lines if '"split": "train"' in line)
        if train > seen:
            arrivals.append(time.monotonic() - started)
            seen = train
        if status.state != "running":
            break
        if time.monotonic() - started > timeout_s:
            runs.cancel_run(run)
            raise TimeoutError(f"the fine-tune in {run} did not end within {timeout_s:.0f} s")
        time.sleep(poll_s)
    if status.state != "done":
        raise RuntimeError(f"the fine-tune ended '{status.state}': {status.message}")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return {"seconds": time.monotonic() - started, "first_curve_s": arrivals[0] if arrivals else None,
            "curve_updates": len(arrivals), "longest_curve_gap_s": max(gaps, default=None), "result": status.result}


def run(device: torch.device, quick: bool = False, progress=None) -> dict:
    from meddiffusion.catalog import default_model

    size, slices, steps = QUICK if quick else FULL
    parent = default_model("ldct", device.type).id
    threads = str(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="meddiff-bench-training-") as tmp:
        folder = Path(tmp)
        if progress is not None:
            progress.log(f"simulating one CT pair ({size}² × {slices}) ...")
        pair = make_pair(folder, size, slices)
        argv = ["train", "ldct", "--source", "paired-folder", "--data", str(pair), "--from-model", parent,
                "--steps", str(steps), "--out", str(folder / "run"), "--device", device.type,
                "--threads", threads, "--detach"]
        if progress is not None:
            progress.log("meddiff " + " ".join(argv))
        meddiff_result(*argv)
        watched = watch(folder / "run")
    gate = watched["result"]["gate"]
    metric = gate["metric"]
    scores = (gate["parent"][metric], gate["model"][metric])
    figures = {"parent": parent, "size": size, "slices": slices, "steps": steps, "threads": int(threads),
               "wall_s": round(watched["seconds"], 1), "train_s": watched["result"].get("train_seconds"),
               "first_curve_s": round(watched["first_curve_s"], 1),
               "longest_curve_gap_s": round(watched["longest_curve_gap_s"] or 0.0, 2),
               "curve_updates": watched["curve_updates"], "gate": gate,
               "improves": scores[1] > scores[0] if gate["higher_is_better"] else scores[1] < scores[0]}
    table = markdown_table(
        ("case", "steps", "wall time (launch to gate)", "first curve point", "longest wait between curve updates",
         f"validation {metric.upper()} parent → fine-tuned", "gate"),
        [(f"one CT pair {size}² × {slices}, 25 % dose, from {parent}", steps, f"{figures['wall_s']:.0f} s",
          f"{figures['first_curve_s']:.1f} s", f"{figures['longest_curve_gap_s']:.1f} s",
          f"{scores[0]:.2f} → {scores[1]:.2f}", "passed" if gate["passed"] else "refused")])
    return result(table, device, **figures)
