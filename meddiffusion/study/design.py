"""The study design, ``study.json``: what readers are asked, about which images, in how many sessions.

The file sits in the study folder the readers see, so it names nothing that reveals a method:
cases and images carry opaque codes, and which method made an image, which patient a case
belongs to and a diagnostic case's truth live only in the key (``meddiffusion.study.blinding``).
Every check raises a ``ValueError`` that says which field is wrong and what is expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["FORMAT", "KINDS", "PAIRWISE_CHOICES", "Question", "Case", "Design", "load_design", "save_design", "write_json",
           "default_question"]

FORMAT = "meddiff-study/1"
KINDS = ("likert", "pairwise", "diagnostic")
#: the answers of a pairwise question, in button order
PAIRWISE_CHOICES = ("left", "equal", "right")
#: reader ids become log file names; codes become image file names
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEFAULT_SCALES = {
    "likert": ["very poor", "poor", "acceptable", "good", "excellent"],
    "pairwise": ["left better", "equal", "right better"],
    "diagnostic": ["definitely absent", "probably absent", "uncertain", "probably present", "definitely present"],
}
_DEFAULT_TEXTS = {
    "likert": "Rate the image for {criterion} (1 = very poor, 5 = excellent)",
    "pairwise": "Which image is better for {criterion}?",
    "diagnostic": "How confident are you that {criterion} is present?",
}


@dataclass
class Question:
    """One question.  ``scale`` labels the answer buttons and ``shortcuts`` are their keys, in
    the order of :meth:`choices`; a diagnostic question with an empty scale takes a 0-100 confidence."""

    id: str
    kind: str
    text: str
    criterion: str = ""
    scale: list[str] = field(default_factory=list)
    shortcuts: list[str] = field(default_factory=list)

    def choices(self) -> list | None:
        """The allowed answers in button order, or None for a continuous 0-100 confidence."""
        if self.kind == "pairwise":
            return list(PAIRWISE_CHOICES)
        if self.kind == "diagnostic" and not self.scale:
            return None
        return list(range(1, len(self.scale) + 1))

    def check_answer(self, value):
        """The answer as stored (int rating, side, or float confidence); ValueError if not allowed."""
        choices = self.choices()
        if choices is None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise ValueError(f"question '{self.id}' takes a confidence from 0 to 100, got {value!r}")
            return float(value)
        if self.kind != "pairwise" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or value not in choices:
            raise ValueError(f"question '{self.id}' takes one of {choices}, got {value!r}")
        return value


@dataclass
class Case:
    """A case: one patient's images (opaque codes, in random order); training cases are not analysed."""

    code: str
    images: list[str]
    training: bool = False


@dataclass
class Design:
    """Everything a reader's screen needs; ``sessions`` reads are at least ``washout_days`` apart,
    ``repeats`` is the fraction of cases read twice, ``min_patient_gap`` the number of other reads
    at least between two reads of one patient."""

    title: str
    seed: int
    questions: list[Question]
    readers: list[str]
    cases: list[Case]
    study_id: str = ""
    sessions: int = 1
    washout_days: float = 0.0
    repeats: float = 0.0
    min_patient_gap: int = 0
    allow_edits: bool = False
    display: dict = field(default_factory=dict)
    format: str = FORMAT

    def question(self, question_id: str) -> Question:
        for question in self.questions:
            if question.id == question_id:
                return question
        raise ValueError(f"no question '{question_id}' in this study; its questions are "
                         f"{[q.id for q in self.questions]}")

    def validate(self) -> "Design":
        if self.format != FORMAT:
            raise ValueError(f"study design format '{self.format}' is not {FORMAT}; this meddiffusion cannot read it")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if not self.questions:
            raise ValueError("a study needs at least one question")
        _unique("question id", [q.id for q in self.questions])
        for question in self.questions:
            _check_question(question)
        if not self.readers:
            raise ValueError("a study needs at least one reader")
        _unique("reader", self.readers)
        for reader in self.readers:
            _check_name("reader", reader)
        if not self.cases:
            raise ValueError("a study needs at least one case")
        _unique("case code", [c.code for c in self.cases])
        _unique("image code", [i for c in self.cases for i in c.images])
        for case in self.cases:
            _check_name("case code", case.code)
            if not case.images:
                raise ValueError(f"case {case.code} has no image")
            for image in case.images:
                _check_name("image code", image)
        if all(case.training for case in self.cases):
            raise ValueError("every case is a training case; at least one case must be analysed")
        if not isinstance(self.sessions, int) or self.sessions < 1:
            raise ValueError(f"sessions must be a whole number >= 1, got {self.sessions!r}")
        if not 0 <= self.washout_days <= 365:
            raise ValueError(f"washout_days must be 0 to 365, got {self.washout_days!r}")
        if not 0 <= self.repeats <= 1:
            raise ValueError(f"repeats is the fraction of cases read twice: 0 to 1, got {self.repeats!r}")
        if not isinstance(self.min_patient_gap, int) or self.min_patient_gap < 0:
            raise ValueError(f"min_patient_gap must be a whole number >= 0, got {self.min_patient_gap!r}")
        if any(q.kind == "pairwise" for q in self.questions) and not any(len(c.images) > 1 for c in self.cases):
            raise ValueError("a pairwise question needs cases with at least two images (an original and a method)")
        return self

    def to_json(self) -> dict:
        return asdict(self)


def default_question(kind: str, criterion: str) -> Question:
    """The question ``meddiff study create --questions kind:criterion`` asks."""
    if kind not in KINDS:
        raise ValueError(f"question kind '{kind}' is not one of {', '.join(KINDS)}")
    scale = list(_DEFAULT_SCALES[kind])
    shortcuts = ["a", "s", "d"] if kind == "pairwise" else [str(i + 1) for i in range(len(scale))]
    return Question(id=f"{kind}-{criterion}" if kind != "likert" else criterion, kind=kind,
                    text=_DEFAULT_TEXTS[kind].format(criterion=criterion), criterion=criterion,
                    scale=scale, shortcuts=shortcuts)


def load_design(path: str | Path) -> Design:
    """Read and validate ``study.json`` (a file or the study folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "study.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} not found: not a study folder (meddiff study create makes one)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    try:
        questions = [Question(**q) for q in data.pop("questions", [])]
        cases = [Case(**c) for c in data.pop("cases", [])]
        design = Design(questions=questions, cases=cases, **data)
    except TypeError as exc:
        raise ValueError(f"{path}: unexpected or missing field ({exc})") from None
    try:
        return design.validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def save_design(design: Design, path: str | Path) -> Path:
    return write_json(path, design.validate().to_json())


def write_json(path: str | Path, data) -> Path:
    """Write a study file atomically: a crash leaves the old file or the new one."""
    from meddiffusion.files import atomic_write

    text = json.dumps(data, indent=1, ensure_ascii=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _check_question(question: Question) -> None:
    _check_name("question id", question.id)
    if question.kind not in KINDS:
        raise ValueError(f"question '{question.id}': kind '{question.kind}' is not one of {', '.join(KINDS)}")
    if not question.text.strip():
        raise ValueError(f"question '{question.id}' has no text")
    if question.kind == "likert" and not 2 <= len(question.scale) <= 10:
        raise ValueError(f"likert question '{question.id}' needs 2 to 10 scale labels, got {len(question.scale)}")
    if question.kind == "pairwise" and question.scale and len(question.scale) != len(PAIRWISE_CHOICES):
        raise ValueError(f"pairwise question '{question.id}' needs 3 labels (left, equal, right), "
                         f"got {len(question.scale)}")
    choices = question.choices()
    if question.shortcuts and (choices is None or len(question.shortcuts) != len(choices)):
        raise ValueError(f"question '{question.id}' has {len(question.shortcuts)} shortcuts for "
                         f"{'no' if choices is None else len(choices)} buttons")
    _unique(f"shortcut of question '{question.id}'", question.shortcuts)


def _check_name(what: str, name) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must be 1-64 letters, digits, '-', '_' or '.', starting with a "
                         "letter or digit")


def _unique(what: str, names: list) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} '{name}' appears twice; each must be unique")
        seen.add(name)
