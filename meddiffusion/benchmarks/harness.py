"""What every ``meddiff bench`` does the same way, so a bench holds only its cases and its figures.

A bench is a module with ``run(device, quick=False, progress=None, **options) -> dict``, built
from these pieces: :func:`each_case` (the case loop, reporting progress and stopping when the user
cancels), :func:`clocked` and :func:`timed` (wall time), :func:`markdown_table` and
:func:`result` (the table with the :func:`machine` it ran on, and the JSON-able figures).
``meddiff bench -o FILE`` then writes the result with :func:`write`. Bootstrap intervals and
agreement statistics are in :mod:`meddiffusion.metrics.agreement`.

A bench that can also score other catalogue models or case sets says so with
``OPTIONS = ("models", "split")``: the keywords of ``run`` that ``--model`` and ``--split`` fill.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch

__all__ = ["machine", "timed", "clocked", "each_case", "installed", "meddiff_result", "markdown_table", "result",
           "write"]

Case = TypeVar("Case")


def machine(device: torch.device) -> str:
    """Where a figure was measured (device, CPU model, torch version): printed with every table."""
    from meddiffusion.devices import describe_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{describe_device(device)}; {cpu}; torch {torch.__version__}"


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` calls (synchronising CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def clocked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds it took)``: one timed run, for per-case times."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def installed(task: str, model_id: str) -> bool:
    """Whether the catalogue holds ``model_id`` for ``task`` (a bench leaves out the rows it lacks)."""
    from meddiffusion.catalog import list_models

    return any(m.id == model_id for m in list_models(task))


def meddiff_result(*argv: str) -> dict:
    """Run one ``meddiff`` command in this process (JSON-lines events) and return its result event; a
    RuntimeError with its last event when it fails. Benches use the real commands, as a user runs them."""
    import contextlib
    import io

    from meddiffusion import cli

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        code = cli.main([*argv, "--events", "jsonl"])
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    if code != 0:
        raise RuntimeError(f"meddiff {' '.join(argv)} failed: {events[-1] if events else code}")
    return events[-1]


def each_case(progress, stage: str, items: Iterable[Case]) -> Iterator[Case]:
    """Yield ``items`` one by one, counting each done one as progress of ``stage``.

    The count is checked for cancellation, so a cancelled bench stops after the case in hand
    (``progress`` may be None when a bench is called as a library function).
    """
    from meddiffusion.progress import Progress

    items = list(items)
    with (progress or Progress()).stage(stage, total=len(items)) as step:
        for item in items:
            yield item
            step()


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table; cells are written as given (format numbers before)."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [line(columns), "|" + "---|" * len(columns)] + [line(row) for row in rows]


def result(lines: Sequence[str], device: torch.device, *, machine_line: bool = True, **figures: Any) -> dict:
    """A bench's result: ``table`` (Markdown), ``machine`` and the bench's figures.

    The machine line closes the table unless the bench already put it in (``machine_line=False``).
    ``pictures`` among the figures, ``{name: (h, w, 3) uint8}``, are written as PNGs, not JSON.
    """
    where = machine(device)
    table = "\n".join(list(lines) + (["", where] if machine_line else []))
    return {"table": table, "machine": where, **figures}


def write(result: dict, path: str | Path, pictures: dict | None = None) -> list[Path]:
    """Write ``-o FILE``: the table to FILE, the result as JSON beside it, pictures as ``<stem>_<name>.png``."""
    from meddiffusion.figures import write_png

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result["table"] + "\n", encoding="utf-8")
    written = [out, out.with_suffix(".json")]
    written[1].write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    for name, rgb in (pictures or {}).items():
        written.append(write_png(out.with_name(f"{out.stem}_{name}.png"), rgb))
    return written
