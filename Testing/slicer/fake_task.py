"""A tiny stand-in for ``python -m meddiffusion <task>`` that speaks the same protocol.

``python fake_task.py IN.nrrd -o OUT.nrrd --events jsonl [options]`` reads a volume, reports
``--steps`` progress events ``--step-s`` apart and writes IN + 1 (same geometry) atomically.
Like the backend it prints one JSON event per line on stdout, exits 0 on success, 2 on bad
input (``--fail``) and 130 after SIGTERM/SIGINT, leaving no output file when it did not
succeed.  Test knobs: ``--ignore-term`` (must be killed), ``--spawn-child PIDFILE`` (starts
a grandchild in the same process group), ``--crash`` (dies with a traceback, no event),
``--no-result`` (exits 0 without a result event).

Kept free of the runner and of Slicer so it tests them from the outside.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import SimpleITK as sitk

cancel_requested = False


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    global cancel_requested
    cancel_requested = True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--events", choices=["jsonl", "bar"], default="bar")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-s", type=float, default=0.02)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--spawn-child")
    parser.add_argument("--crash", action="store_true")
    parser.add_argument("--no-result", action="store_true")
    args = parser.parse_args()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else on_signal)

    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(args.spawn_child, "w") as handle:
            handle.write(str(child.pid))

    if args.fail:
        emit({"event": "error", "message": f"'{os.path.basename(args.input)}' is not a CT "
              "volume; expected Hounsfield units", "kind": "bad_input"})
        return 2
    if args.crash:
        print("about to crash", file=sys.stderr, flush=True)
        raise RuntimeError("simulated crash")

    image = sitk.ReadImage(args.input, sitk.sitkFloat32)
    emit({"event": "log", "message": f"read {image.GetSize()} voxels"})
    print("fake_task: working", file=sys.stderr, flush=True)

    start = time.monotonic()
    for done in range(args.steps + 1):
        if cancel_requested:
            emit({"event": "cancelled", "message": "cancelled; no output was written"})
            return 130
        eta = (time.monotonic() - start) / done * (args.steps - done) if done else None
        emit({"event": "progress", "stage": "add-one", "done": done, "total": args.steps,
              "eta_s": eta, "message": f"step {done}"})
        if done < args.steps:
            time.sleep(args.step_s)

    if args.no_result:
        return 0
    result = image + 1.0
    folder, name = os.path.split(os.path.abspath(args.output))
    temporary = os.path.join(folder, ".partial-" + name)
    sitk.WriteImage(result, temporary)
    os.replace(temporary, args.output)
    emit({"event": "result", "output": args.output,
          "mean": float(sitk.GetArrayViewFromImage(result).mean())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
