"""What the ReaderStudy module calls: open a study, then show a reader one read after another.

::

    study = Study.open("/data/ldct-study")
    session = ReaderSession(study, "R1")
    while (read := session.current()) is not None:
        ...show read.images (position -> file), ask read.questions...
        session.answer("noise", 4, window_level=[[400, 40]])

State lives only in the reader's log (``meddiffusion.study.log``): every answer is on disk
before :meth:`ReaderSession.answer` returns, and a session opened after a crash or a closed
Slicer continues at the first read with a question still unanswered.  Readers go forward
only; a given answer is final unless the design allows edits, and an edit needs a reason.
No torch here: Slicer's own Python imports this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from meddiffusion.study import log
from meddiffusion.study.design import Design, Question, load_design
from meddiffusion.study.schedule import Read, load_schedule

__all__ = ["Study", "ReaderSession", "Current"]


class Study:
    """A study folder: ``study.json``, ``schedule.json``, ``images/<code>.nrrd``, ``logs/<reader>.jsonl``."""

    def __init__(self, folder: Path, design: Design, schedule: dict[str, list[Read]]) -> None:
        self.folder, self.design, self.schedule = folder, design, schedule

    @classmethod
    def open(cls, folder: str | Path) -> "Study":
        folder = Path(folder)
        design = load_design(folder / "study.json")
        schedule = load_schedule(folder / "schedule.json")
        if set(schedule) != set(design.readers):
            raise ValueError(f"{folder}: schedule.json has readers {sorted(schedule)} but study.json "
                             f"{sorted(design.readers)}; the study folder is damaged")
        return cls(folder, design, schedule)

    def image_path(self, code: str) -> Path:
        return self.folder / "images" / f"{code}.nrrd"

    def log_path(self, reader: str) -> Path:
        return self.folder / "logs" / f"{reader}.jsonl"

    def reads(self, reader: str) -> list[Read]:
        if reader not in self.schedule:
            raise ValueError(f"'{reader}' is not a reader of this study; its readers are {self.design.readers}")
        return self.schedule[reader]


@dataclass
class Current:
    """The read to show now.  ``questions`` are those still unanswered; while the washout before
    this read's session runs, ``available_from`` (ISO UTC) says when it may be read."""

    index: int
    case: str
    session: int
    images: dict[str, Path]
    codes: dict[str, str]
    questions: list[Question]
    training: bool = False
    available_from: str | None = None


@dataclass
class _ReadState:
    answered: dict[str, int] = field(default_factory=dict)  # question id -> seq of its latest record
    skipped: bool = False


class ReaderSession:
    """One reader working through their schedule; ``clock`` (UTC datetimes) is for tests of the washout."""

    def __init__(self, study: Study, reader: str, clock: Callable[[], datetime] | None = None) -> None:
        self.study, self.reader = study, reader
        self.reads = study.reads(reader)
        self.path = study.log_path(reader)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        records = log.read(self.path)
        #: what is wrong with the log as found (tampering, a foreign record); empty when intact
        self.problems = log.verify(self.path)
        self.state = {read.index: _ReadState() for read in self.reads}
        self.last_time: dict[int, str] = {}  # read index -> time of its latest record
        for record in records:
            self._apply(record)
        self._shown: tuple[int, float] | None = None  # read index, monotonic time it was first shown

    # -- where the reader is -------------------------------------------------------------
    def current(self) -> Current | None:
        """The first read with a question unanswered (None when the reader is done)."""
        read = next((r for r in self.reads if self._open_questions(r)), None)
        if read is None:
            return None
        if self._shown is None or self._shown[0] != read.index:
            self._shown = (read.index, time.monotonic())
        design = self.study.design
        return Current(index=read.index, case=read.case, session=read.session,
                       images={pos: self.study.image_path(code) for pos, code in read.images.items()},
                       codes=dict(read.images), questions=[design.question(q) for q in self._open_questions(read)],
                       training=read.training, available_from=self._available_from(read))

    def progress(self) -> tuple[int, int]:
        return sum(not self._open_questions(r) for r in self.reads), len(self.reads)

    @property
    def finished(self) -> bool:
        return all(not self._open_questions(r) for r in self.reads)

    # -- recording ---------------------------------------------------------------------
    def answer(self, question_id: str, value, seconds: float | None = None,
               window_level: list | None = None) -> dict:
        """Record the answer to one of the current read's open questions; durable when this returns."""
        read, current = self._current_read()
        if question_id not in read.questions:
            raise ValueError(f"question '{question_id}' is not asked for this read; it asks {read.questions}")
        if question_id in self.state[read.index].answered:
            raise ValueError(f"question '{question_id}' of read {read.index} is answered already; answers are final")
        value = self.study.design.question(question_id).check_answer(value)
        return self._write(read, "answer", question_id, value, seconds, window_level)

    def skip(self, reason: str, seconds: float | None = None, window_level: list | None = None) -> dict:
        """Leave the current read's open questions unanswered, for a reason (e.g. 'image not loaded')."""
        read, _ = self._current_read()
        return self._write(read, "skip", None, None, seconds, window_level, reason=_reason(reason, "skip"))

    def edit(self, read_index: int, question_id: str, value, reason: str, seconds: float | None = None) -> dict:
        """Replace an earlier answer (a new record; the old one stays) where the design allows edits."""
        if not self.study.design.allow_edits:
            raise ValueError("this study does not allow changing an answer once given")
        if not 0 <= read_index < len(self.reads):
            raise ValueError(f"read {read_index} does not exist; this reader has reads 0 to {len(self.reads) - 1}")
        read = self.reads[read_index]
        if question_id not in self.state[read_index].answered:
            raise ValueError(f"question '{question_id}' of read {read_index} has no answer to change")
        value = self.study.design.question(question_id).check_answer(value)
        return self._write(read, "edit", question_id, value, seconds, None, reason=_reason(reason, "edit"),
                           edit_of=self.state[read_index].answered[question_id])

    # -- internals -----------------------------------------------------------------------
    def _current_read(self) -> tuple[Read, Current]:
        current = self.current()
        if current is None:
            raise ValueError(f"reader {self.reader} has finished every read")
        if current.available_from and self.clock() < _parse(current.available_from):
            raise ValueError(f"session {current.session} opens on {current.available_from} "
                             f"(washout of {self.study.design.washout_days:g} days after the previous session)")
        return self.reads[current.index], current

    def _open_questions(self, read: Read) -> list[str]:
        state = self.state[read.index]
        return [] if state.skipped else [q for q in read.questions if q not in state.answered]

    def _available_from(self, read: Read) -> str | None:
        earlier = [self.last_time[r.index] for r in self.reads if r.session < read.session and r.index in self.last_time]
        if not earlier or self.study.design.washout_days <= 0:
            return None
        opens = max(_parse(t) for t in earlier) + timedelta(days=self.study.design.washout_days)
        return opens.isoformat(timespec="seconds").replace("+00:00", "Z")

    def _write(self, read: Read, kind: str, question_id, value, seconds, window_level, reason=None,
               edit_of=None) -> dict:
        if seconds is None:
            seconds = time.monotonic() - self._shown[1] if self._shown and self._shown[0] == read.index else 0.0
        fields = {"reader": self.reader, "type": kind, "read": read.index, "case": read.case,
                  "images": dict(read.images), "session": read.session, "question": question_id, "answer": value,
                  "seconds": round(float(seconds), 3), "window_level": _window_level(window_level),
                  "edit_of": edit_of, "reason": reason}
        now = self.clock().astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = log.append(self.path, fields, time=now)
        self._apply(record)
        return record

    def _apply(self, record: dict) -> None:
        index = record.get("read")
        if record.get("reader") != self.reader or index not in self.state or \
                record.get("case") != self.reads[index].case:
            self.problems.append(f"record {record.get('seq')}: not a read of {self.reader}'s schedule")
            return
        if record.get("type") == "skip":
            self.state[index].skipped = True
        elif record.get("type") in ("answer", "edit"):
            self.state[index].answered[record.get("question")] = record["seq"]
        self.last_time[index] = record["time"]


def _reason(reason, what: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"a {what} needs a reason")
    return reason.strip()


def _window_level(changes) -> list:
    """The [window, level] pairs the reader set, validated so the log holds plain numbers."""
    pairs = []
    for change in changes or []:
        try:
            window, level = (float(v) for v in change)
        except (TypeError, ValueError):
            raise ValueError(f"window_level holds [window, level] pairs, got {change!r}") from None
        pairs.append([window, level])
    return pairs


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
