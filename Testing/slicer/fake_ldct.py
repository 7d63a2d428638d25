"""A stand-in for ``meddiff ldct-denoise`` that speaks the same protocol, without a model.

``python fake_ldct.py CT.nrrd -o OUT.nrrd [--model ID] [--steps N] [--device D] [--threads N]
--events jsonl`` reads the volume, "denoises" it slice by slice with a 3x3 in-plane mean
filter (edges repeated), reports one ``denoise`` progress event per slice and writes the
result atomically.  The final event carries ``output``, ``model``, ``steps``, ``seconds``
and ``slices`` like the real command.  Exit codes: 0 done, 2 bad input (an unknown
``--model``, or no voxel below -500 HU without ``--no-hu-check``, as the real command), 130
after SIGTERM/SIGINT, with no output file then.

``FAKE_LDCT_SLICE_S`` (environment) is the time spent per slice, so tests can cancel mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

KNOWN_MODELS = ("fake-ldct-25", "fake-ldct-10")
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
    parser.add_argument("--model", default=KNOWN_MODELS[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-hu-check", action="store_true")
    parser.add_argument("--events", choices=["jsonl", "bar", "none"], default="bar")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    slice_s = float(os.environ.get("FAKE_LDCT_SLICE_S", "0"))

    if args.model not in KNOWN_MODELS:
        emit({"event": "error", "kind": "input",
              "message": f"unknown model '{args.model}'; expected one of {', '.join(KNOWN_MODELS)}"})
        return 2

    start = time.monotonic()
    image = sitk.ReadImage(args.input)
    volume = sitk.GetArrayFromImage(image).astype(np.float32)  # (k, j, i)
    if not args.no_hu_check and volume.min() > -500:
        emit({"event": "error", "kind": "input",
              "message": "input does not look like CT in Hounsfield units: no air near -1000 HU"})
        return 2
    emit({"event": "log", "message": f"{args.model}, {args.steps} steps on {args.device}: "
                                     f"{volume.shape[0]} slices"})
    denoised = np.empty_like(volume)
    for index in range(volume.shape[0]):
        if cancel_requested:
            emit({"event": "cancelled", "message": "cancelled; no output was written"})
            return 130
        denoised[index] = ndimage.uniform_filter(volume[index], size=3, mode="nearest")
        time.sleep(slice_s)
        emit({"event": "progress", "stage": "denoise", "done": index + 1, "total": volume.shape[0]})
    if cancel_requested:
        emit({"event": "cancelled", "message": "cancelled; no output was written"})
        return 130

    result = sitk.GetImageFromArray(denoised)
    result.CopyInformation(image)
    folder, name = os.path.split(os.path.abspath(args.output))
    temporary = os.path.join(folder, ".partial-" + name)
    sitk.WriteImage(result, temporary)
    os.replace(temporary, args.output)
    emit({"event": "result", "output": args.output, "model": args.model, "steps": args.steps,
          "seconds": round(time.monotonic() - start, 3), "slices": int(volume.shape[0])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
