"""Blinding: nothing a reader can open names a method or a source file; the key stays apart."""

import json

import pytest
import SimpleITK as sitk

from meddiffusion.study import log
from meddiffusion.study.blinding import unblind
from meddiffusion.study.session import ReaderSession, Study
from study_readers import METHOD, STEMS

REVEALING = [METHOD, "original", "SeriesDescription", "anonpatient", "originals", "outputs", ".nii"]


def test_no_reader_visible_name_or_content_reveals_a_method(make_study):
    folder, key = make_study(sessions=2, washout_days=0, repeats=0.2, min_patient_gap=1)
    session = ReaderSession(Study.open(folder), "R1")
    session.answer("noise", 3, window_level=[[400, 40]])  # the log is reader-visible too
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".jsonl", ".nrrd"}
    for path in files:
        text = path.read_bytes().decode("latin-1").lower()
        for word in REVEALING:
            assert word.lower() not in text, (path.name, word)
            assert word.lower() not in str(path.relative_to(folder.parent)).lower()
    for image in (folder / "images").iterdir():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image))
        reader.ReadImageInformation()
        assert not [k for k in reader.GetMetaDataKeys() if k.startswith("0008") or "Description" in k]
    sizes = {p.stat().st_size for p in (folder / "images").iterdir()}
    times = {p.stat().st_mtime for p in (folder / "images").iterdir()}
    assert len(sizes) == 1 and len(times) == 1  # neither compression nor writing order tells images apart


def test_the_key_lies_beside_the_study_and_names_everything(make_study):
    folder, key_path = make_study()
    assert key_path == folder.parent / "study.key.json" and not key_path.is_relative_to(folder)
    key = json.loads(key_path.read_text())
    assert sorted(key["methods"].values()) == sorted([METHOD, "original"])
    assert sorted(e["name"] for e in key["cases"].values()) == STEMS
    design = Study.open(folder).design
    assert key["study_id"] == design.study_id
    assert {i for c in design.cases for i in c.images} == set(key["images"])


def test_unblinding_needs_a_reason_and_is_logged(make_study):
    folder, key = make_study()
    with pytest.raises(ValueError, match="reason"):
        unblind(folder, key, "  ")
    assert not (folder / "audit.jsonl").exists()
    opened = unblind(folder, key, "interim safety review", who="lead")
    assert METHOD in opened["methods"].values()
    entries = log.read(folder / "audit.jsonl")
    assert [(e["who"], e["why"], e["action"]) for e in entries] == [("lead", "interim safety review", "unblind")]
    assert log.verify(folder / "audit.jsonl") == []


def test_a_key_inside_the_study_or_of_another_study_is_refused(tmp_path, make_study, image_folders):
    from meddiffusion.study.blinding import create_study
    from meddiffusion.study.design import Design, default_question
    from meddiffusion.study.sources import find_cases

    design = Design("t", 1, [default_question("likert", "noise")], ["R1"], [])
    with pytest.raises(ValueError, match="must not be inside the study folder"):
        create_study(find_cases(image_folders[0], {}), design, tmp_path / "s", tmp_path / "s" / "k.json")
    assert not (tmp_path / "s").exists()
    folder, key = make_study()
    other_folder, other_key = tmp_path / "other", tmp_path / "other.key.json"
    create_study(find_cases(image_folders[0], {}), design, other_folder)
    with pytest.raises(ValueError, match="belongs to another study"):
        unblind(folder, other_key, "check")
