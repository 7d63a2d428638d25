"""Benchmarks behind ``meddiff bench``: the general ones (``precision``, ``phantom``) and the shared
:mod:`~meddiffusion.benchmarks.harness`; each task's own bench lives in its package (``tasks/<name>/bench.py``)."""

from meddiffusion.benchmarks.harness import machine, timed

__all__ = ["machine", "timed"]
