"""``python -m meddiffusion`` is ``meddiff``: how Slicer's Python runs the backend.

SIGINT/SIGTERM are caught from the first moment, before the command's modules load, so a
Cancel that comes early still ends with a ``cancelled`` event and exit status 130.
"""

import signal
import sys

EARLY_SIGNALS: list[int] = []


def _remember(signum, frame):  # noqa: ARG001 - signal handler signature
    EARLY_SIGNALS.append(signum)


def entry() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _remember)
    from meddiffusion.cli import main

    return main(early_signals=EARLY_SIGNALS)


if __name__ == "__main__":
    sys.exit(entry())
