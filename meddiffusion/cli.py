"""``meddiff <command>``: every capability of the backend as one command-line tool.

The same commands serve a researcher in a terminal (progress bar, readable summary) and the
Slicer modules, which run them as child processes with ``--events jsonl`` and read one JSON
event per line.  Exit status: 0 done, 2 bad input (the message says what was wrong and what
is expected), 1 internal error, 130 cancelled (SIGINT/SIGTERM; no output written).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

# OpenMP threads that wait actively for work spin on their core; on a machine whose cores are
# shared with other jobs a 2-thread run then crawls (30x slower measured). Passive waiting costs
# nothing on an idle machine. It must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from meddiffusion import __version__
from meddiffusion.commands import AFTER_TASKS, BEFORE_TASKS
from meddiffusion.commands import task_command
from meddiffusion.progress import (EXIT_CANCELLED, BarSink, Cancelled, JsonlSink, NullSink,
                                   Progress, cancellation_signals)
from meddiffusion.tasks.registry import TaskSpec, all_tasks

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meddiff",
        description="SlicerMedDiffusion backend: diffusion models for cardiac and thoracic imaging.",
        epilog="Run 'meddiff <command> --help' for a command's options and an example.")
    parser.add_argument("--version", action="version", version=f"meddiffusion {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module in _command_modules():
        before = set(subparsers.choices)
        if isinstance(module, TaskSpec):
            task_command.add_task_parser(subparsers, module)
            module = task_command
        else:
            module.add_parser(subparsers)
        for added in set(subparsers.choices) - before:
            sub = subparsers.choices[added]
            _add_common_options(sub)
            sub.set_defaults(_module=module)
    return parser


def _command_modules() -> list:
    """General commands, then each registered task's inference command (a spec) and further commands."""
    load = importlib.import_module
    modules = [load(f"meddiffusion.commands.{name}") for name in BEFORE_TASKS]
    for spec in all_tasks():
        modules += [spec, *(load(name) for name in spec.commands)]
    return modules + [load(f"meddiffusion.commands.{name}") for name in AFTER_TASKS]


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reporting")
    group.add_argument("--events", choices=("bar", "jsonl", "none"), default="bar",
                       help="progress as a terminal bar (default), JSON lines on stdout "
                            "(for Slicer and scripts), or nothing")


def main(argv: list[str] | None = None, early_signals: list[int] | None = None) -> int:
    """Run one command; ``early_signals`` are SIGINT/SIGTERM that arrived before the handlers were in place."""
    for stream in (sys.stdout, sys.stderr):  # help texts use °, ×, ≥: never fail on an ASCII locale
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    sink = {"jsonl": JsonlSink, "bar": BarSink, "none": NullSink}[args.events]()
    progress = Progress(sink)
    with cancellation_signals(progress):
        if early_signals:
            progress.cancel()
        try:
            result = args._module.run(args, progress) or {}
        except Cancelled as exc:
            # a command that keeps something on Cancel (a training checkpoint) says so in its Cancelled
            kept = str(exc) if exc.args and not str(exc).startswith("cancelled by the user") else ""
            progress.cancelled_event(kept or "cancelled; no output was written")
            return EXIT_CANCELLED
        except ValueError as exc:  # bad input: VolumeError and friends are ValueErrors
            progress.error(str(exc), kind="input")
            _print_if_terminal(args, f"meddiff {args.command}: error: {exc}")
            return EXIT_BAD_INPUT
        except OSError as exc:  # a disk that filled up or a folder that vanished while writing
            where = f": {exc.filename}" if exc.filename else ""
            message = f"{exc.strerror or exc}{where}"
            progress.error(message, kind="input")
            _print_if_terminal(args, f"meddiff {args.command}: error: {message}")
            return EXIT_BAD_INPUT
        except Exception as exc:  # noqa: BLE001 - the last line of defence: report, don't crash
            progress.error(f"{type(exc).__name__}: {exc}", kind="internal")
            traceback.print_exc(file=sys.stderr)
            return EXIT_INTERNAL
        finally:
            sink.close()
    progress.result(**result)
    if args.events != "jsonl":
        summary = result.get("summary")
        print(summary if summary else json.dumps(result, indent=2, default=str))
    return EXIT_OK


def _print_if_terminal(args: argparse.Namespace, message: str) -> None:
    if args.events == "none":
        print(message, file=sys.stderr)
