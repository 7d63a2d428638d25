"""The study design file: what validation refuses, and that it round-trips."""

import pytest

from meddiffusion.study.design import Case, Design, Question, default_question, load_design, save_design


def design(**changes) -> Design:
    fields = dict(title="t", seed=1, questions=[default_question("likert", "noise"),
                                                default_question("pairwise", "preference")],
                  readers=["R1", "R2"], cases=[Case("C1", ["I1", "I2"]), Case("C2", ["I3", "I4"])])
    return Design(**{**fields, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"readers": ["R1", "R1"]}, "appears twice"),
    ({"readers": ["../evil"]}, "reader"),
    ({"readers": []}, "at least one reader"),
    ({"questions": []}, "at least one question"),
    ({"questions": [Question("q", "essay", "Why?")]}, "not one of"),
    ({"questions": [Question("q", "likert", "Rate", scale=["bad"])]}, "2 to 10"),
    ({"questions": [Question("q", "likert", "Rate", scale=["a", "b"], shortcuts=["1"])]}, "shortcuts"),
    ({"cases": [Case("C1", ["I1", "I2"]), Case("C2", ["I2"])]}, "image code 'I2' appears twice"),
    ({"cases": [Case("C1", ["I1"], training=True)]}, "every case is a training case"),
    ({"cases": [Case("C1", ["I1"]), Case("C2", ["I2"])]}, "pairwise question needs cases with at least two"),
    ({"repeats": 1.5}, "fraction"),
    ({"sessions": 0}, "sessions"),
    ({"min_patient_gap": -1}, "min_patient_gap"),
    ({"seed": -3}, "seed"),
])
def test_validation_names_the_wrong_field(changes, message):
    with pytest.raises(ValueError, match=message):
        design(**changes).validate()


def test_design_round_trips_through_study_json(tmp_path):
    original = design(sessions=2, washout_days=14, repeats=0.25, min_patient_gap=2, allow_edits=True,
                      display={"window": 400, "level": 40})
    save_design(original, tmp_path / "study.json")
    assert load_design(tmp_path) == original


def test_a_damaged_or_foreign_file_is_refused_clearly(tmp_path):
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_design(tmp_path)
    (tmp_path / "study.json").write_text('{"title": "t", "colour": "red"}')
    with pytest.raises(ValueError, match="unexpected or missing field"):
        load_design(tmp_path)
    with pytest.raises(ValueError, match="not a study folder"):
        load_design(tmp_path / "elsewhere")


def test_answers_are_checked_against_each_kind():
    likert, pairwise = default_question("likert", "noise"), default_question("pairwise", "preference")
    diagnostic = default_question("diagnostic", "lesion")
    assert likert.check_answer(4) == 4 and likert.check_answer(4.0) == 4
    assert pairwise.check_answer("equal") == "equal"
    assert diagnostic.choices() == [1, 2, 3, 4, 5]
    slider = Question("conf", "diagnostic", "Lesion?", criterion="lesion")
    assert slider.choices() is None and slider.check_answer(72) == 72.0
    for question, bad in ((likert, 6), (likert, True), (pairwise, "up"), (slider, 101)):
        with pytest.raises(ValueError, match=question.id):
            question.check_answer(bad)
