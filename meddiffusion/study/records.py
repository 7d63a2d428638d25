"""The study's answers, unblinded and tidy: what the statistics (``meddiffusion.study.analysis``) read.

``load_records(study_folder, key_path)`` returns one dict per answered question, every key
always present (None where it does not apply)::

    reader     str    reader id
    case       str    case code
    patient    str    patient id (from the key)
    session    int    session number, 1-based
    read       int    index of the read in the reader's schedule
    question   str    question id
    kind       str    "likert" | "pairwise" | "diagnostic"
    criterion  str    the question's criterion ("noise", "preference", ...)
    method     str    likert/diagnostic: method name of the image shown ("original" for the
                      original); pairwise: None
    left       str    pairwise: method name of the image on the left; else None
    right      str    pairwise: method name of the image on the right; else None
    answer            likert: int 1..len(scale) (higher is better); pairwise: "left" | "right"
                      | "equal"; diagnostic: int 1..len(scale) confidence that the finding is
                      present, or a float 0..100 where the question has no scale
    truth      int    diagnostic: 0 or 1 from the key's case truth (None if not given); else None
    repeat     bool   a repeated read (intra-reader agreement): the same case, images and
                      sides as an earlier read of the same reader
    training   bool   a training case: leave it out of every analysis
    seconds    float  seconds the reader spent on the read when answering
    time       str    ISO 8601 UTC time of the (latest) answer

An edited answer appears once, with the latest value; questions skipped (with a reason) or not
yet reached have no record.  Records are ordered by reader, then read, then question.
"""

from __future__ import annotations

from pathlib import Path

from meddiffusion.study import log
from meddiffusion.study.blinding import load_key
from meddiffusion.study.session import Study

__all__ = ["FIELDS", "load_records"]

FIELDS = ("reader", "case", "patient", "session", "read", "question", "kind", "criterion", "method", "left",
          "right", "answer", "truth", "repeat", "training", "seconds", "time")


def load_records(study_folder: str | Path, key_path: str | Path) -> list[dict]:
    """The tidy answers of every reader; a log whose hash chain is broken is refused."""
    study = Study.open(study_folder)
    key = load_key(key_path, study.design)
    method_of = {image: key["methods"][entry["method"]] for image, entry in key["images"].items()}
    records = []
    for reader in study.design.readers:
        path = study.log_path(reader)
        entries = log.read(path)
        problems = log.verify(entries)
        if problems:
            raise ValueError(f"the log of reader {reader} ({path}) fails verification: {'; '.join(problems[:3])}")
        latest: dict[tuple[int, str], dict] = {}
        for entry in entries:
            if entry.get("type") in ("answer", "edit"):
                latest[(entry["read"], entry["question"])] = entry
        reads = study.reads(reader)
        order = {question.id: position for position, question in enumerate(study.design.questions)}
        for (index, question_id), entry in sorted(latest.items(), key=lambda item: (item[0][0], order[item[0][1]])):
            records.append(_record(study, key, method_of, reads[index], entry))
    return records


def _record(study: Study, key: dict, method_of: dict, read, entry: dict) -> dict:
    question = study.design.question(entry["question"])
    case = key["cases"][read.case]
    images = read.images
    return {"reader": entry["reader"], "case": read.case, "patient": case["patient"], "session": read.session,
            "read": read.index, "question": question.id, "kind": question.kind, "criterion": question.criterion,
            "method": method_of[images["single"]] if "single" in images else None,
            "left": method_of.get(images.get("left")), "right": method_of.get(images.get("right")),
            "answer": entry["answer"], "truth": case.get("truth") if question.kind == "diagnostic" else None,
            "repeat": read.repeat, "training": read.training, "seconds": entry["seconds"], "time": entry["time"]}
