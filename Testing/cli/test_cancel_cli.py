"""Cancel tells the truth: at any moment, exit 130 with a 'cancelled' event and no output at all.

(Only the interpreter's own start, a few tens of milliseconds before any project code runs,
cannot catch the signal; the Slicer runner treats a child it asked to stop as cancelled.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "meddiffusion" / "data" / "sample_ldct_chest.nrrd"


@pytest.mark.parametrize("delay_s", [0.15, 0.5, 3.0])
def test_sigterm_at_any_moment_leaves_nothing_and_says_so(tmp_path, delay_s):
    child = subprocess.Popen([sys.executable, "-m", "meddiffusion", "ldct-denoise", str(SAMPLE), "-o",
                              str(tmp_path / "out.nrrd"), "--png", str(tmp_path / "out.png"), "--events", "jsonl",
                              "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=120)
    if child.returncode == 0:  # the run finished before the signal: then everything must be there
        assert (tmp_path / "out.nrrd").exists() and (tmp_path / "out.png").exists()
        return
    assert child.returncode == 130
    assert json.loads(out.strip().splitlines()[-1])["event"] == "cancelled"
    assert list(tmp_path.iterdir()) == []
