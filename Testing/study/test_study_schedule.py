"""Reading orders: reproducible per seed, counterbalanced across readers, patients kept apart."""

from collections import Counter

import pytest

from meddiffusion.study.design import Case, Design, default_question
from meddiffusion.study.schedule import build_schedule

METHODS = ("orig", "a", "b")


def study(num_cases=8, readers=4, seed=11, **options):
    """Cases of three images (one per method); patient i owns cases 2i and 2i+1."""
    cases = [Case(f"C{c}", [f"I{c}{m}" for m in METHODS]) for c in range(num_cases)]
    design = Design("t", seed, [default_question("likert", "noise"), default_question("pairwise", "preference")],
                    [f"R{r}" for r in range(readers)], cases, **options)
    patients = {f"C{c}": f"P{c // 2}" for c in range(num_cases)}
    order = {case.code: list(case.images) for case in cases}
    return design, patients, order


def method(image: str) -> str:
    return next(m for m in METHODS if image.endswith(m))


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    first = build_schedule(*study(seed=11))
    assert first == build_schedule(*study(seed=11))
    assert first != build_schedule(*study(seed=12))


def test_adding_a_reader_changes_no_other_readers_schedule():
    three, four = build_schedule(*study(readers=3)), build_schedule(*study(readers=4))
    assert all(three[r] == four[r] for r in three)


def test_the_method_read_first_rotates_over_readers_and_cases():
    schedule = build_schedule(*study(num_cases=6, readers=3))
    for reader, reads in schedule.items():
        first = {}
        for read in reads:
            if "single" in read.images and not read.repeat:
                first.setdefault(read.case, method(read.images["single"]))
        assert Counter(first.values()) == {m: 2 for m in METHODS}, reader  # 6 cases, 3 methods
    for case in (f"C{c}" for c in range(6)):  # each case: every reader starts with another method
        starts = [next(method(r.images["single"]) for r in reads if r.case == case and "single" in r.images)
                  for reads in schedule.values()]
        assert sorted(starts) == sorted(METHODS)


def test_left_and_right_are_balanced_for_every_method():
    schedule = build_schedule(*study(num_cases=8, readers=4))
    overall = Counter()
    for reads in schedule.values():
        pairs = [r for r in reads if "left" in r.images and not r.repeat]
        left = Counter(method(r.images["left"]) for r in pairs)
        right = Counter(method(r.images["right"]) for r in pairs)
        assert all(abs(left[m] - right[m]) <= 2 for m in METHODS), (left, right)
        overall.update({(method(r.images["left"]), method(r.images["right"])): 1 for r in pairs})
    for first, second in (("orig", "a"), ("orig", "b"), ("a", "b")):  # over readers: exactly even
        assert overall[(first, second)] == overall[(second, first)]


@pytest.mark.parametrize("gap", [0, 2, 3])
def test_reads_of_one_patient_are_at_least_k_other_reads_apart(gap):
    design, patients, order = study(num_cases=12, readers=2, min_patient_gap=gap, repeats=0.1)
    for reads in build_schedule(design, patients, order).values():
        last = {}
        for read in reads:
            patient = patients[read.case]
            if patient in last:
                assert read.index - last[patient] > gap
            last[patient] = read.index


def test_sessions_split_a_patients_images_and_repeats_come_late():
    design, patients, order = study(num_cases=8, readers=2, sessions=2, washout_days=14, repeats=0.25,
                                    min_patient_gap=1)
    for reads in build_schedule(design, patients, order).values():
        assert [r.session for r in reads] == sorted(r.session for r in reads)
        repeats = [r for r in reads if r.repeat]
        assert repeats and all(r.session == 2 for r in repeats)
        assert len({r.case for r in repeats}) == 2  # 25% of 8 cases, each read again in full
        for repeat in repeats:
            first = next(r for r in reads if not r.repeat and (r.case, r.images) == (repeat.case, repeat.images))
            assert first.index < repeat.index
        for case in order:
            singles = [r.session for r in reads if r.case == case and "single" in r.images and not r.repeat]
            assert set(singles) == {1, 2}  # three images over two sessions
        pairs = Counter(r.session for r in reads if "left" in r.images and not r.repeat)
        assert pairs[2] > pairs[1]  # pairs lean to the last session, after the single reads


def test_training_cases_open_the_first_session():
    design, patients, order = study(num_cases=6, readers=2)
    design.cases[0].training = True
    for reads in build_schedule(design, patients, order).values():
        training = [r.index for r in reads if r.training]
        assert training == list(range(len(training))) and training


def test_an_impossible_patient_gap_is_refused_clearly():
    design, patients, order = study(num_cases=2, readers=1, min_patient_gap=5)
    with pytest.raises(ValueError, match="lower --min-patient-gap"):
        build_schedule(design, patients, order)
