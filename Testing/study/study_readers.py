"""Names the reader-study test images carry (which must never reach a reader), and a scripted reader.

Run as a script (``python study_readers.py STUDY READER N``) it answers N questions and then
dies with ``os._exit``: no clean-up, no flush beyond what each answer did itself, as when
Slicer crashes or the power goes.
"""

from __future__ import annotations

import os
import sys

METHOD = "denoiserZeta"
STEMS = [f"anonpatient{i:02d}" for i in range(6)]


def answer_for(question, index: int):
    """A fixed answer per read and question, so a test can check every stored answer."""
    choices = question.choices()
    return choices[(index + len(question.id)) % len(choices)]


def read_through(session, limit: int | None = None) -> int:
    """Answer up to ``limit`` questions (all by default) in schedule order; returns how many."""
    count = 0
    while (current := session.current()) is not None and (limit is None or count < limit):
        question = current.questions[0]
        session.answer(question.id, answer_for(question, current.index), seconds=1.5 + current.index,
                       window_level=[[400, 40], [350, 50]])
        count += 1
    return count


if __name__ == "__main__":
    from meddiffusion.study.session import ReaderSession, Study

    folder, reader, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    read_through(ReaderSession(Study.open(folder), reader), limit)
    os._exit(0)
