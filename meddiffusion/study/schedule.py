"""Each reader's reading order, drawn once from the study seed and saved as ``schedule.json``.

Why each rule: a reader who saw a patient's original just before its denoised version judges
the second by memory, so the method a patient is first read with rotates over readers and
cases (a cyclic Latin square), and two reads of one patient are at least ``min_patient_gap``
other reads apart.  Sides in a pair alternate the same way, so no method sits on the left for
most readers.  With several sessions a patient's images are spread over them (the washout
between sessions lets memory fade); pairwise reads lean to the later sessions.  Repeated reads (intra-reader
agreement) go at the end of the last session, as far from the first read as possible.
Training reads open the first session, in any order.  Reader ``i`` draws from ``numpy.random.default_rng
([seed, i])``: the same seed gives the same schedule, and adding a reader changes no other's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from meddiffusion.study.design import Design, write_json

__all__ = ["Read", "build_schedule", "save_schedule", "load_schedule"]

_TRIES = 200
#: how much less likely a repeated read is drawn than a first one, so repeats drift to the end
_LATE = 0.05


@dataclass
class Read:
    """One read: the images shown (position ``left``/``right``, or ``single``) and the questions asked."""

    index: int
    case: str
    images: dict[str, str]
    questions: list[str]
    session: int
    repeat: bool = False
    training: bool = False


def build_schedule(design: Design, patients: dict[str, str], image_order: dict[str, list[str]]) -> dict[str, list[Read]]:
    """Every reader's reads.  ``patients`` maps case code -> patient, ``image_order`` case code -> its
    image codes in one fixed method order (the same for every case), both from the key."""
    design.validate()
    missing = [c.code for c in design.cases if c.code not in patients or c.code not in image_order]
    if missing:
        raise ValueError(f"the key has no patient or image order for case(s) {missing[:5]}")
    return {reader: _reader_schedule(design, patients, image_order, number)
            for number, reader in enumerate(design.readers)}


def _reader_schedule(design: Design, patients, image_order, number: int) -> list[Read]:
    rng = np.random.default_rng([design.seed, number])
    single = [q.id for q in design.questions if q.kind != "pairwise"]
    pairwise = [q.id for q in design.questions if q.kind == "pairwise"]
    cases = sorted(design.cases, key=lambda c: c.code)
    analysed = [c for c in cases if not c.training]
    sessions = design.sessions
    phases: dict[int, list[list[Read]]] = {s: [] for s in range(1, sessions + 1)}
    training = [r for position, case in enumerate(c for c in cases if c.training)
                for r in _case_reads(case, image_order[case.code], number + position, single, pairwise)]
    for read in training:
        read.training, read.session = True, 1
    phases[1].append(training)
    main = {s: [] for s in phases}
    for position, case in enumerate(analysed):
        reads = _case_reads(case, image_order[case.code], number + position, single, pairwise)
        for group in ([r for r in reads if "single" in r.images], [r for r in reads if "single" not in r.images]):
            for j, read in enumerate(group):
                step = j * sessions // len(group)
                read.session = 1 + (step if "single" in read.images else sessions - 1 - step)
                main[read.session].append(read)
    for session in phases:
        phases[session].append(main[session])
    count = round(design.repeats * len(analysed)) or (1 if design.repeats > 0 else 0)
    chosen = sorted(rng.choice(len(analysed), size=min(count, len(analysed)), replace=False).tolist())
    repeats = [Read(-1, r.case, dict(r.images), list(r.questions), sessions, repeat=True)
               for position in chosen for r in _case_reads(analysed[position], image_order[analysed[position].code],
                                                            number + position, single, pairwise)]
    phases[sessions][-1] += repeats  # spread with the session's reads, each after its patient's others
    ordered: list[Read] = []
    for session, groups in phases.items():
        last_seen: dict[str, int] = {}
        for group in groups:
            gap = 0 if group is training else design.min_patient_gap  # practice reads: memory does not matter
            ordered += _spread(group, patients, gap, rng, last_seen, len(ordered), session)
    for index, read in enumerate(ordered):
        read.index = index
    return ordered


def _case_reads(case, images: list[str], rotation: int, single: list[str], pairwise: list[str]) -> list[Read]:
    """A case's single reads in Latin-square order, then its pairs with alternating sides."""
    shift = rotation % len(images)
    reads = [Read(-1, case.code, {"single": code}, list(single), 1) for code in images[shift:] + images[:shift]
             if single]
    for number, (first, second) in enumerate(combinations(images, 2)):
        left, right = (first, second) if (rotation + number) % 2 == 0 else (second, first)
        if pairwise:
            reads.append(Read(-1, case.code, {"left": left, "right": right}, list(pairwise), 1))
    return reads


def _spread(reads: list[Read], patients, gap: int, rng, last_seen: dict, start: int, session: int) -> list[Read]:
    """Random order keeping each patient's reads in their given order and ``gap`` other reads apart."""
    for _ in range(_TRIES):
        queues: dict[str, list[Read]] = {}
        for read in reads:
            queues.setdefault(patients[read.case], []).append(read)
        seen = dict(last_seen)
        placed: list[Read] = []
        while len(placed) < len(reads):
            position = start + len(placed)
            ready = sorted(p for p, q in queues.items() if q and position - seen.get(p, -gap - 1) > gap)
            if not ready:
                break
            busiest = max(queues, key=lambda p: (len(queues[p]), p))
            if busiest in ready and (len(queues[busiest]) - 1) * (gap + 1) >= len(reads) - len(placed) - 1 - gap:
                patient = busiest  # any other choice now would leave it too few places
            else:
                weights = np.array([len(queues[p]) ** 2 * (_LATE if queues[p][0].repeat else 1.0) for p in ready])
                patient = ready[rng.choice(len(ready), p=weights / weights.sum())]
            placed.append(queues[patient].pop(0))
            seen[patient] = position
        else:
            last_seen.update(seen)
            return placed
    raise ValueError(f"cannot keep the reads of one patient {gap} other reads apart in session {session} "
                     f"({len(reads)} reads of {len({patients[r.case] for r in reads})} patients); lower "
                     "--min-patient-gap, add cases or use more sessions")


def save_schedule(schedule: dict[str, list[Read]], path: str | Path) -> Path:
    return write_json(path, {"readers": {r: [asdict(read) for read in reads] for r, reads in schedule.items()}})


def load_schedule(path: str | Path) -> dict[str, list[Read]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {reader: [Read(**read) for read in reads] for reader, reads in data["readers"].items()}
    except FileNotFoundError:
        raise ValueError(f"{path} not found: the study has no schedule (meddiff study create writes it)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is damaged: {exc}") from None
