"""Append-only, hash-chained JSON-lines logs: a reader's answers (``logs/<reader>.jsonl``) and the
unblinding audit (``audit.jsonl``).

Each record is written, flushed and fsync'd before :func:`append` returns, so an answer the
reader saw accepted survives a crash or a closed Slicer.  Every record carries ``seq`` (0, 1,
...), ``time`` (ISO 8601 UTC), ``prev`` (the previous record's hash, 64 zeros for the first)
and ``hash`` = sha256(prev + canonical JSON of the record without ``hash``), so changing,
inserting or deleting a line anywhere but at the end shows in :func:`verify`.

A reader-log record also has ``reader``, ``type`` (``answer``, ``edit`` or ``skip``), ``read``
(index in the reader's schedule), ``case``, ``images`` (position -> image code shown:
``left``/``right`` or ``single``), ``session``, ``question`` (None for a skip), ``answer``,
``seconds`` on the case, ``window_level`` (the [window, level] pairs the reader set, in order),
``edit_of`` (the ``seq`` an edit replaces) and ``reason`` (required for edits and skips).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["GENESIS", "append", "read", "verify", "record_hash", "utc_now"]

GENESIS = "0" * 64


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_hash(prev: str, record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest()


def read(path: str | Path) -> list[dict]:
    """The complete records; a last line cut short by a crash (never confirmed) is left out."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # the part after the last newline was never completed
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path} line {number} is not JSON: the log was damaged or edited") from None
    return records


def append(path: str | Path, fields: dict, time: str | None = None) -> dict:
    """Add one record after the last and make it durable; returns the record as written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    _drop_torn_tail(path)
    records = read(path)
    last = records[-1] if records else None
    record = {"seq": 0 if last is None else last["seq"] + 1, "time": time or utc_now(), **fields,
              "prev": GENESIS if last is None else last["hash"]}
    record["hash"] = record_hash(record["prev"], record)
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    with open(path, "ab") as handle:
        handle.write(line.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    if new:  # the new file's name must survive a crash too
        _fsync_folder(path.parent)
    return record


def verify(path_or_records) -> list[str]:
    """Problems found in a log (empty when intact): broken chain, edited or missing records."""
    problems = []
    if isinstance(path_or_records, (str, Path)):
        path = Path(path_or_records)
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            problems.append("the last line is incomplete (a write was interrupted); it is not counted")
        try:
            records = read(path)
        except ValueError as exc:
            return problems + [str(exc)]
    else:
        records = list(path_or_records)
    prev = GENESIS
    for position, record in enumerate(records):
        if record.get("seq") != position:
            problems.append(f"record {position}: seq is {record.get('seq')!r}, expected {position} "
                            "(a record was removed, inserted or reordered)")
        if record.get("prev") != prev:
            problems.append(f"record {position}: does not follow the previous record (chain broken)")
        if record.get("hash") != record_hash(record.get("prev", ""), record):
            problems.append(f"record {position}: its content does not match its hash (edited after writing)")
        prev = record.get("hash", "")
    return problems


def _drop_torn_tail(path: Path) -> None:
    """Cut off a last line a crash left unfinished, so the next record starts on its own line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its rename and append are durable enough
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
