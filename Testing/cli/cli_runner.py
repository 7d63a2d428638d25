"""The one way the CLI suites run ``meddiff`` in a child process and read its JSON-line events."""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["meddiff", "jsonl", "run_events"]


def meddiff(*args, env=None, timeout=300, cwd=None):
    """``python -m meddiffusion ARGS`` as a child process (text output, UTF-8)."""
    return subprocess.run([sys.executable, "-m", "meddiffusion", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout, env=env, cwd=cwd)


def jsonl(stdout: str) -> list[dict]:
    """The JSON events among the lines of ``stdout``."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run_events(*args, env=None, timeout=300, cwd=None) -> tuple[int, list[dict], str]:
    """(exit code, JSON events, stderr) of ``python -m meddiffusion ARGS`` in a child process."""
    result = meddiff(*args, env=env, timeout=timeout, cwd=cwd)
    return result.returncode, jsonl(result.stdout), result.stderr
