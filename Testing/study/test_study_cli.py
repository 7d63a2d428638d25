"""``meddiff study`` end to end: create from two folders, two readers (one crashes), status, records, analyze."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from meddiffusion.study.records import FIELDS, load_records
from meddiffusion.study.session import ReaderSession, Study
from study_readers import METHOD, STEMS, read_through

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_runner import meddiff  # noqa: E402 - the CLI suites' one child-process runner

SCRIPT = Path(__file__).with_name("study_readers.py")


@pytest.fixture
def created(tmp_path, image_folders):
    original, method = image_folders
    (original / "patients.csv").write_text("file,patient,truth\n" + "".join(
        f"{stem}.nrrd,P{i // 2},{i % 2}\n" for i, stem in enumerate(STEMS)))
    result = meddiff("study", "create", "--original", original, "--method", f"{METHOD}={method}",
                     "--questions", "likert:noise,pairwise:preference,diagnostic:nodule", "--readers", "R1,R2",
                     "--seed", 4, "-o", tmp_path / "study", "--repeats", 0.2, "--min-patient-gap", 1,
                     "--training", 1, "--events", "jsonl")
    assert result.returncode == 0, result.stderr + result.stdout
    return tmp_path / "study", tmp_path / "study.key.json", json.loads(result.stdout.splitlines()[-1])


def test_two_readers_complete_a_study_one_after_a_crash(created):
    folder, key, event = created
    assert event["cases"] == 6 and Path(event["key"]) == key
    study = Study.open(folder)
    read_through(ReaderSession(study, "R1"))
    completed = subprocess.run([sys.executable, str(SCRIPT), str(folder), "R2", "7"], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    status = meddiff("study", "status", folder)
    assert status.returncode == 0 and "R1: " in status.stdout and "finished" in status.stdout
    assert "R2: " in status.stdout and "problem" not in status.stdout
    read_through(ReaderSession(study, "R2"))

    records = load_records(folder, key)
    asked = sum(len(read.questions) for reads in study.schedule.values() for read in reads)
    assert len(records) == asked and all(set(r) == set(FIELDS) for r in records)
    by_kind = {kind: [r for r in records if r["kind"] == kind] for kind in ("likert", "pairwise", "diagnostic")}
    assert {r["method"] for r in by_kind["likert"]} == {"original", METHOD}
    assert all({r["left"], r["right"]} == {"original", METHOD} and r["method"] is None for r in by_kind["pairwise"])
    assert all(r["answer"] in ("left", "equal", "right") for r in by_kind["pairwise"])
    assert all(r["truth"] in (0, 1) for r in by_kind["diagnostic"] if not r["training"])
    assert {r["patient"] for r in records} == {"P0", "P1", "P2"}
    assert any(r["repeat"] for r in records) and any(r["training"] for r in records)
    assert {r["reader"] for r in records} == {"R1", "R2"}


def test_unblind_is_refused_without_a_reason_and_writes_the_answers_with_one(created, tmp_path):
    folder, key, _ = created
    refused = meddiff("study", "unblind", folder, "--key", key)
    assert refused.returncode == 2 and "reason" in refused.stderr + refused.stdout
    inside = meddiff("study", "unblind", folder, "--reason", "x", "-o", folder / "answers.csv")
    assert inside.returncode == 2 and "inside the study folder" in inside.stderr + inside.stdout
    read_through(ReaderSession(Study.open(folder), "R1"), 4)
    done = meddiff("study", "unblind", folder, "--reason", "interim check", "--who", "lead", "-o",
                   tmp_path / "answers.csv")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "answers.csv").read_text().splitlines()
    assert lines[0].split(",") == list(FIELDS) and len(lines) == 5
    audit = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    assert [(a["who"], a["why"]) for a in audit] == [("lead", "interim check")]


def test_analyze_hands_the_records_and_design_to_the_statistics(created, tmp_path, monkeypatch):
    from meddiffusion.cli import main

    folder, key, _ = created
    read_through(ReaderSession(Study.open(folder), "R1"), 6)
    seen = {}

    def analyze(records, design, out_dir):
        seen.update(records=records, design=design, out_dir=out_dir)
        return {"summary": "report written"}

    monkeypatch.setitem(sys.modules, "meddiffusion.study.analysis", types.SimpleNamespace(analyze=analyze))
    assert main(["study", "analyze", str(folder), "--key", str(key), "-o", str(tmp_path / "report"),
                 "--events", "none"]) == 0
    assert len(seen["records"]) == 6 and seen["design"].readers == ["R1", "R2"]
    assert seen["out_dir"] == tmp_path / "report"
    assert json.loads((folder / "audit.jsonl").read_text())["why"] == "statistical analysis"


def test_create_refuses_unpaired_folders_and_bad_options(tmp_path, image_folders):
    original, method = image_folders
    next(method.iterdir()).unlink()
    result = meddiff("study", "create", "--original", original, "--method", f"m={method}", "--readers", "R1",
                     "-o", tmp_path / "s")
    assert result.returncode == 2 and "has no image for 1 original" in result.stderr
    result = meddiff("study", "create", "--original", original, "--questions", "likert:noise,diagnostic:nodule",
                     "--readers", "R1", "-o", tmp_path / "s")
    assert result.returncode == 2 and "truth" in result.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.key.json").exists()


def test_a_completed_study_is_analysed_into_a_report(created, tmp_path):
    folder, key, _ = created
    study = Study.open(folder)
    for reader in ("R1", "R2"):
        read_through(ReaderSession(study, reader))
    result = meddiff("study", "analyze", folder, "--key", key, "-o", tmp_path / "report", "--events", "jsonl")
    assert result.returncode == 0, result.stderr + result.stdout
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    for table in ("likert_summary.csv", "comparisons.csv", "agreement.csv", "preference.csv", "roc.csv", "mrmc.csv"):
        assert (tmp_path / "report" / table).is_file()
    assert METHOD in report and "original" in report  # the report is unblinded; the study folder never was
    assert any(p.suffix == ".png" for p in (tmp_path / "report").iterdir())
    assert not any(METHOD in p.read_text(errors="ignore") for p in folder.rglob("*.json"))
