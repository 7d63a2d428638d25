"""A reader's session: answers durable at once, exact resume after a killed process, the rules on answers."""

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from meddiffusion.study import log
from meddiffusion.study.session import ReaderSession, Study
from study_readers import answer_for, read_through

SCRIPT = Path(__file__).with_name("study_readers.py")


def crash_after(folder, reader: str, answers: int) -> None:
    completed = subprocess.run([sys.executable, str(SCRIPT), str(folder), reader, str(answers)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_a_killed_reader_loses_nothing_and_resumes_at_the_first_open_question(make_study):
    folder, _ = make_study(questions=("likert:noise", "likert:sharpness", "pairwise:preference"))
    study = Study.open(folder)
    crash_after(folder, "R1", 5)  # two questions per single read: the crash falls inside read 2
    session = ReaderSession(study, "R1")
    assert session.problems == []
    records = log.read(study.log_path("R1"))
    assert len(records) == 5
    for record in records:
        assert record["answer"] == answer_for(study.design.question(record["question"]), record["read"])
    current = session.current()
    assert current.index == 2 and [q.id for q in current.questions] == ["sharpness"]
    assert session.progress() == (2, len(study.reads("R1")))
    crash_after(folder, "R1", 1)
    assert ReaderSession(study, "R1").current().index == 3
    read_through(session := ReaderSession(study, "R1"))
    assert session.finished and session.current() is None and log.verify(study.log_path("R1")) == []


def test_answers_are_final_and_only_the_current_read_is_answered(make_study):
    folder, _ = make_study(questions=("likert:noise", "likert:sharpness", "pairwise:preference"))
    session = ReaderSession(Study.open(folder), "R2")
    assert "single" in session.current().codes  # single reads open the schedule
    session.answer("noise", 2)
    with pytest.raises(ValueError, match="answers are final"):
        session.answer("noise", 3)
    with pytest.raises(ValueError, match="does not allow changing"):
        session.edit(0, "noise", 3, "second thoughts")
    with pytest.raises(ValueError, match="not asked"):
        session.answer("pairwise-preference", "left")
    with pytest.raises(ValueError, match="takes one of"):
        session.answer("sharpness", 9)
    with pytest.raises(ValueError, match="not a reader"):
        ReaderSession(Study.open(folder), "R9")


def test_edits_need_the_design_to_allow_them_and_a_reason(make_study):
    folder, _ = make_study(allow_edits=True)
    session = ReaderSession(Study.open(folder), "R1")
    first = session.answer("noise", 2)
    with pytest.raises(ValueError, match="reason"):
        session.edit(0, "noise", 4, "")
    edit = session.edit(0, "noise", 4, "misclicked")
    assert (edit["type"], edit["edit_of"], edit["reason"], edit["answer"]) == ("edit", first["seq"], "misclicked", 4)
    with pytest.raises(ValueError, match="no answer to change"):
        session.edit(1, "noise", 4, "never answered")


def test_a_skip_needs_a_reason_and_moves_on(make_study):
    folder, _ = make_study()
    session = ReaderSession(Study.open(folder), "R1")
    with pytest.raises(ValueError, match="reason"):
        session.skip(" ")
    record = session.skip("image did not load")
    assert (record["type"], record["read"], record["reason"]) == ("skip", 0, "image did not load")
    assert session.current().index == 1 and session.progress()[0] == 1


def test_the_next_session_opens_only_after_the_washout(make_study):
    folder, _ = make_study(questions=("likert:noise",), sessions=2, washout_days=14, min_patient_gap=1)
    now = [datetime(2025, 3, 1, 9, tzinfo=timezone.utc)]
    session = ReaderSession(Study.open(folder), "R1", clock=lambda: now[0])
    while session.current().session == 1:
        read_through(session, 1)
    assert session.current().available_from == "2025-03-15T09:00:00Z"
    with pytest.raises(ValueError, match="opens on 2025-03-15"):
        session.answer("noise", 3)
    now[0] += timedelta(days=14)
    session.answer("noise", 3)
