"""The Reader Study .ui and panel in PySide6 (offscreen) on a study made by the backend."""

from __future__ import annotations

import json
import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QPushButton

import mrml_fixtures
from meddiffusion.study import log
from ReaderStudyLib.logic import ReaderStudyLogic
from ReaderStudyLib.panel import ReaderStudyPanel
from standins import ctkCollapsibleButton, ctkPathLineEdit, qMRMLWidget

sys.path.insert(0, str(mrml_fixtures.REPO_ROOT / "Testing" / "slicer"))
from test_reader_study_logic import make_study  # noqa: E402 - the same tiny study as the logic tests


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path)


@pytest.fixture
def panel(load_ui, mrml, repo_root, qtbot):
    mrml_fixtures.add_slice_views(mrml)
    root = load_ui(repo_root / "ReaderStudy" / "Resources" / "UI" / "ReaderStudy.ui")
    errors = []
    logic = ReaderStudyLogic(mrml.scene)
    panel = ReaderStudyPanel(root, logic.parameters(), logic, on_error=errors.append)
    panel.errors = errors
    root.activateWindow()  # shortcuts act in the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is root, timeout=2000)
    yield panel
    panel.cleanup()


def open_study(panel, study) -> None:
    panel.ui.studyPathLineEdit.setProperty("currentPath", str(study))
    panel.ui.openStudyButton.click()


def buttons(panel) -> list[QPushButton]:
    return [widget for widget in panel.answer_widgets if isinstance(widget, QPushButton)]


def test_ui_has_every_widget_the_panel_uses(panel, ui_widgets):
    widgets = ui_widgets(panel.root)
    assert isinstance(panel.root, qMRMLWidget)
    assert [name for name in ReaderStudyPanel.WIDGETS if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Study", "Reading", "Study lead", "Log"}
    assert isinstance(widgets["studyPathLineEdit"], ctkPathLineEdit)
    assert widgets["leadCollapsibleButton"].property("collapsed") is True
    assert widgets["readerNameLineEdit"].property("SlicerParameterName") == "readerName"


def test_start_is_enabled_only_with_a_study_and_a_reader(panel, study):
    ui = panel.ui
    assert not ui.openStudyButton.isEnabled() and not ui.startButton.isEnabled()
    ui.readerNameLineEdit.setText("R1")
    assert not ui.startButton.isEnabled()  # no study yet
    assert "study" in ui.startButton.toolTip()
    open_study(panel, study)
    assert "2 cases" in ui.studyInfoLabel.text() and "R1, R2" in ui.studyInfoLabel.text()
    assert ui.startButton.isEnabled()
    ui.readerNameLineEdit.setText("  ")
    assert not ui.startButton.isEnabled() and "reader code" in ui.startButton.toolTip()
    assert panel.parameters.readerName == "  "  # the field is bound to the parameter node
    ui.readerNameLineEdit.setText("R2")
    assert not ui.skipButton.isEnabled() and not ui.stopButton.isEnabled() and buttons(panel) == []
    ui.startButton.click()
    assert panel.logic.reading and buttons(panel) and all(b.isEnabled() for b in buttons(panel))
    assert not ui.readerNameLineEdit.isEnabled() and not ui.startButton.isEnabled()
    ui.stopButton.click()
    assert not panel.logic.reading and buttons(panel) == []
    assert ui.readerNameLineEdit.isEnabled() and ui.startButton.isEnabled()


def test_an_unknown_reader_is_told_so(panel, study):
    open_study(panel, study)
    panel.ui.readerNameLineEdit.setText("R7")
    panel.ui.startButton.click()
    assert not panel.logic.reading
    assert "not a reader of this study" in panel.errors[-1]
    assert "not a reader" in panel.ui.statusLabel.text()


def test_shortcut_keys_answer_and_progress_follows(panel, study, qtbot):
    ui = panel.ui
    open_study(panel, study)
    ui.readerNameLineEdit.setText("R1")
    ui.startButton.click()
    total = len(panel.logic.study.reads("R1"))
    assert (ui.progressBar.value(), ui.progressBar.maximum()) == (0, total)
    assert ui.readLabel.text().startswith(f"Case 1 of {total}")
    answered = 0
    while panel.logic.current() is not None:
        question = panel.logic.current().questions[0]
        labels = [b.text() for b in buttons(panel)]
        assert labels == [f"{key.upper()} · {text}" for key, text in zip(question.shortcuts, question.scale)]
        assert ui.questionLabel.text().startswith(question.text)
        key = question.shortcuts[-1]  # the last answer: 5 for a rating, the right side for a pair
        qtbot.keyClick(panel.root, key.upper() if not key.isdigit() else key)
        answered += 1  # a button's shortcut clicks it after a short flash
        qtbot.waitUntil(lambda: len(log.read(study / "logs" / "R1.jsonl")) == answered, timeout=2000)
        record = log.read(study / "logs" / "R1.jsonl")[-1]
        assert record["answer"] == question.choices()[-1]
        assert ui.progressBar.value() == panel.logic.progress()[0]
    assert ui.progressBar.value() == total
    assert "finished" in ui.questionLabel.text() and buttons(panel) == []


def test_typing_in_a_field_does_not_answer(panel, study, qtbot):
    open_study(panel, study)
    panel.ui.readerNameLineEdit.setText("R1")
    panel.ui.startButton.click()
    panel.ui.skipReasonLineEdit.setFocus()
    qtbot.keyClicks(panel.ui.skipReasonLineEdit, "13 slices missing")
    assert panel.ui.skipReasonLineEdit.text() == "13 slices missing"
    assert not (study / "logs" / "R1.jsonl").exists()


def test_skip_requires_a_reason(panel, study, qtbot):
    ui = panel.ui
    open_study(panel, study)
    ui.readerNameLineEdit.setText("R1")
    ui.startButton.click()
    first = panel.logic.current().index
    assert ui.skipReasonLineEdit.isEnabled() and not ui.skipButton.isEnabled()
    assert "reason" in ui.skipButton.toolTip() or "why" in ui.skipButton.toolTip().lower()
    ui.skipReasonLineEdit.setText("   ")
    assert not ui.skipButton.isEnabled()
    ui.skipReasonLineEdit.setText("image did not load")
    assert ui.skipButton.isEnabled()
    ui.skipButton.click()
    assert panel.logic.current().index == first + 1
    assert ui.skipReasonLineEdit.text() == "" and not ui.skipButton.isEnabled()
    assert ui.progressBar.value() == 1
    record = log.read(study / "logs" / "R1.jsonl")[-1]
    assert (record["type"], record["reason"]) == ("skip", "image did not load")


def test_resume_shows_the_next_case_after_a_restart(panel, study, load_ui, scene, repo_root):
    open_study(panel, study)
    panel.ui.readerNameLineEdit.setText("R2")
    panel.ui.startButton.click()
    buttons(panel)[2].click()
    expected = panel.logic.current().index
    panel.cleanup()
    root = load_ui(repo_root / "ReaderStudy" / "Resources" / "UI" / "ReaderStudy.ui")
    logic = ReaderStudyLogic(scene)
    again = ReaderStudyPanel(root, logic.parameters(), logic)  # the parameter node keeps study and reader
    assert again.ui.studyPathLineEdit.property("currentPath") == str(study)
    assert again.ui.readerNameLineEdit.text() == "R2"
    again.ui.openStudyButton.click()
    again.ui.startButton.click()
    assert again.logic.current().index == expected and again.ui.progressBar.value() == 1
    again.cleanup()


def test_lead_sees_progress_per_reader_and_create_waits_for_its_fields(panel, study):
    ui = panel.ui
    ui.leadCollapsibleButton.setProperty("collapsed", False)
    open_study(panel, study)
    table = ui.readersTable
    assert table.rowCount() == 2
    assert [table.item(0, c).text() for c in range(3)][:2] == ["R1", f"0 / {len(panel.logic.study.reads('R1'))}"]
    ui.readerNameLineEdit.setText("R2")
    ui.startButton.click()
    buttons(panel)[0].click()
    ui.refreshButton.click()
    assert table.item(1, 1).text().startswith("1 / ")
    assert not ui.createButton.isEnabled()
    for edit, value in ((ui.originalPathLineEdit, "ct"), (ui.methodPathLineEdit, "out"), (ui.newStudyPathLineEdit, "new")):
        edit.setProperty("currentPath", value)
    ui.methodNameLineEdit.setText("denoised")
    assert not ui.createButton.isEnabled()  # no readers named yet
    ui.readersLineEdit.setText("R1,R2")
    assert not ui.createButton.isEnabled()  # not while a reader reads
    ui.stopButton.click()
    assert ui.createButton.isEnabled()
    assert not ui.analyzeButton.isEnabled()
    ui.reportPathLineEdit.setProperty("currentPath", "report")
    assert ui.analyzeButton.isEnabled()


def test_create_runs_the_backend_and_opens_the_new_study(panel, tmp_path, qtbot):
    from meddiffusion.io import write_volume
    from test_reader_study_logic import METHOD, chest

    for folder, smooth in (("originals", False), (METHOD, True)):
        for seed in range(6):
            write_volume(chest(seed, smooth), tmp_path / "in" / folder / f"patient_{seed}.nrrd")
    ui = panel.ui
    ui.leadCollapsibleButton.setProperty("collapsed", False)
    ui.originalPathLineEdit.setProperty("currentPath", str(tmp_path / "in" / "originals"))
    ui.methodPathLineEdit.setProperty("currentPath", str(tmp_path / "in" / METHOD))
    ui.methodNameLineEdit.setText(METHOD)
    ui.readersLineEdit.setText("R1, R2, R3")
    ui.newStudyPathLineEdit.setProperty("currentPath", str(tmp_path / "made"))
    ui.createButton.click()
    assert panel.busy and not ui.createButton.isEnabled()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert panel.errors == []
    assert ui.studyPathLineEdit.property("currentPath") == str(tmp_path / "made")
    assert "6 cases" in ui.studyInfoLabel.text() and "R1, R2, R3" in ui.studyInfoLabel.text()
    assert "key" in ui.statusLabel.text() and (tmp_path / "made.key.json").exists()
    assert ui.readersTable.rowCount() == 3


def test_a_confidence_question_takes_a_typed_percentage(panel, study, qtbot):
    """A diagnostic question without a scale asks for 0-100 % (for ROC); Enter records it."""
    design = json.loads((study / "study.json").read_text())
    (likert,) = [q for q in design["questions"] if q["kind"] == "likert"]
    likert.update(kind="diagnostic", text="How confident are you that a nodule is present?", scale=[], shortcuts=[])
    (study / "study.json").write_text(json.dumps(design))
    open_study(panel, study)
    panel.ui.readerNameLineEdit.setText("R1")
    panel.ui.startButton.click()
    box, record = panel.answer_widgets
    assert panel.ui.questionLabel.text().startswith("How confident")
    assert (box.minimum(), box.maximum()) == (0, 100)
    box.setValue(85)
    qtbot.keyClick(panel.root, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: (study / "logs" / "R1.jsonl").exists(), timeout=2000)
    assert log.read(study / "logs" / "R1.jsonl")[-1]["answer"] == 85.0
