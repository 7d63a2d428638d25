"""The Reader Study panel: the reader's screen and the study lead's section of ReaderStudy.ui.

The reader enters their code and starts (or resumes); each question of the read on screen
appears as a row of large buttons, one per answer, with the design's keyboard shortcuts
(1-5 for a rating, the pairwise keys for a preference), so a reader can keep their eyes on
the images.  A skip needs a reason.  The lead opens or creates a study, follows each
reader's progress and runs the analysis; create and analyze are ``meddiff study`` child
processes driven from a Qt timer.  GUI code in the subset of Qt that PythonQt and PySide6
share, so the same panel runs in Slicer and in the PySide6 widget tests.
"""

from __future__ import annotations

from typing import Any, Callable

from MedDiffusionUtilsLib.binding import GuiBinding, required_widgets
from MedDiffusionUtilsLib.messages import PanelMessages
from MedDiffusionUtilsLib.qtdriver import QtTaskDriver
from MedDiffusionUtilsLib.runner import RunState, TaskProcess

from .logic import ReaderStudyLogic, ReaderStudyParameters

__all__ = ["ReaderStudyPanel", "answer_text"]

#: a continuous 0-100 confidence (a diagnostic question without a scale) is typed, then recorded
CONFIDENCE_KEY = "Return"
BUTTON_STYLE = "font-size: 13pt; padding: 8px;"


def answer_text(label: str, shortcut: str) -> str:
    """A button's text: its key first, so the reader learns the keys while clicking."""
    return f"{shortcut.upper()} · {label}" if shortcut else label


class ReaderStudyPanel(PanelMessages):
    """Runs ReaderStudy.ui (``root``) for ``logic``, the reader field bound to ``parameters``.

    ``install`` is the dependency step run before a lead's child process (the statistics
    need scipy, statsmodels ...); ``on_error(message)`` shows a refused action.
    """

    WIDGETS = ("studyPathLineEdit", "openStudyButton", "studyInfoLabel", "readerNameLineEdit", "startButton",
               "readLabel", "progressBar", "questionLabel", "answersFrame", "shortcutsLabel",
               "skipReasonLineEdit", "skipButton", "stopButton", "originalPathLineEdit", "methodNameLineEdit",
               "methodPathLineEdit", "readersLineEdit", "seedSpinBox", "newStudyPathLineEdit", "createButton",
               "readersTable", "refreshButton", "reportPathLineEdit", "analyzeButton", "statusLabel", "logText")

    def __init__(self, root, parameters: ReaderStudyParameters, logic: ReaderStudyLogic, *,
                 install: Callable[[], Any] | None = None, on_error: Callable[[str], None] | None = None):
        self.root = root
        self.ui = required_widgets(root, self.WIDGETS, "ReaderStudy.ui")
        self.logic = logic
        self.install = install
        self.on_error = on_error
        self.binding: GuiBinding | None = None
        #: the answer buttons (or confidence box and its button) of the question on screen
        self.answer_widgets: list = []
        self.task: TaskProcess | None = None
        self.driver: QtTaskDriver | None = None
        for path_edit in (self.ui.studyPathLineEdit, self.ui.originalPathLineEdit, self.ui.methodPathLineEdit,
                          self.ui.newStudyPathLineEdit, self.ui.reportPathLineEdit):
            _folders_only(path_edit)
            path_edit.currentPathChanged.connect(self._on_edited)
        for line_edit in (self.ui.readerNameLineEdit, self.ui.skipReasonLineEdit, self.ui.methodNameLineEdit,
                          self.ui.readersLineEdit):
            line_edit.textChanged.connect(self._on_edited)
        self.ui.openStudyButton.clicked.connect(self.on_open_study)
        self.ui.startButton.clicked.connect(self.on_start)
        self.ui.readerNameLineEdit.returnPressed.connect(self.on_start)
        self.ui.skipButton.clicked.connect(self.on_skip)
        self.ui.stopButton.clicked.connect(self.on_stop)
        self.ui.createButton.clicked.connect(self.on_create)
        self.ui.refreshButton.clicked.connect(self.refresh_readers)
        self.ui.analyzeButton.clicked.connect(self.on_analyze)
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(0)
        self.set_parameters(parameters)

    # -- parameter node ----------------------------------------------------------------------
    def set_parameters(self, parameters: ReaderStudyParameters) -> None:
        """Bind the reader field to a (new) parameter node and show its study folder."""
        if self.binding is not None:
            self.binding.disconnect()
        self.parameters = parameters
        self.binding = GuiBinding(parameters, [self.ui.readerNameLineEdit], on_error=lambda e: self._status(str(e)))
        self.binding.connect()
        if parameters.studyFolder and not self.ui.studyPathLineEdit.property("currentPath"):
            self.ui.studyPathLineEdit.setProperty("currentPath", parameters.studyFolder)
        self.update_buttons()

    def set_scene(self, scene) -> None:
        """The panel shows no node selector; the scene is the logic's."""

    def refresh_models(self, models=None) -> None:
        """Nothing to refresh after an install: a study uses no model."""

    def cleanup(self) -> None:
        """Module closed or reloaded: reading stops (answers are on disk), a lead's run is stopped."""
        self.on_stop()
        if self.task is not None and self.task.active:
            self.task.cancel()
            self.task.wait(timeout=self.task.cancel_timeout_s + 5)
        if self.driver is not None:
            self.driver.stop()
        if self.binding is not None:
            self.binding.disconnect()
            self.binding = None

    # -- state of the buttons ----------------------------------------------------------------
    def update_buttons(self) -> None:
        ui, logic = self.ui, self.logic
        opened, reading, busy = logic.study is not None, logic.reading, self.busy
        reader = ui.readerNameLineEdit.property("text").strip()
        ui.openStudyButton.setEnabled(bool(_path(ui.studyPathLineEdit)) and not reading)
        ui.studyPathLineEdit.setEnabled(not reading)
        ui.readerNameLineEdit.setEnabled(not reading)
        ui.startButton.setEnabled(opened and bool(reader) and not reading)
        ui.startButton.setToolTip("Open a study first" if not opened else "Enter your reader code first"
                                  if not reader else "Show your next case; you continue where you stopped")
        on_screen = logic.shown is not None
        reason = ui.skipReasonLineEdit.property("text").strip()
        ui.skipReasonLineEdit.setEnabled(on_screen)
        ui.skipButton.setEnabled(on_screen and bool(reason))
        ui.skipButton.setToolTip("Say why the case is skipped first" if on_screen and not reason
                                 else "Leave this case unanswered and go on")
        ui.stopButton.setEnabled(reading)
        for widget in self.answer_widgets:
            widget.setEnabled(on_screen)
        creatable = all(_path(edit) for edit in (ui.originalPathLineEdit, ui.methodPathLineEdit, ui.newStudyPathLineEdit))
        creatable = creatable and all(edit.property("text").strip() for edit in (ui.methodNameLineEdit, ui.readersLineEdit))
        ui.createButton.setEnabled(creatable and not busy and not reading)
        ui.refreshButton.setEnabled(opened)
        ui.analyzeButton.setEnabled(opened and bool(_path(ui.reportPathLineEdit)) and not busy and not reading)

    def _on_edited(self, *_args) -> None:
        self.update_buttons()

    # -- the reader ----------------------------------------------------------------------------
    def on_open_study(self, *_args) -> None:
        if self._try(lambda: self.logic.open_study(_path(self.ui.studyPathLineEdit))) is None:
            return
        design = self.logic.study.design
        kinds = sorted({question.kind for question in design.questions})
        self.ui.studyInfoLabel.setText(
            f"{design.title or 'Untitled study'}: {_count(len(design.cases), 'case')}, "
            f"{_count(len(design.questions), 'question')} ({', '.join(kinds)}), readers {', '.join(design.readers)}")
        self._status("Study opened; readers enter their code and start")
        self.refresh_readers()
        self.show_read(None)

    def on_start(self, *_args) -> None:
        if not self.ui.startButton.isEnabled():
            return
        reader = self.ui.readerNameLineEdit.property("text")
        read = self._try(lambda: self.logic.start(reader))
        if self.logic.reading:
            self._status(f"Reading as {reader.strip()}; each answer is saved as you give it")
            self.show_read(read)

    def on_stop(self, *_args) -> None:
        if self.logic.reading:
            self.logic.stop()
            self._status("Reading stopped; every answer given is saved")
        self.show_read(None)

    def answer(self, question_id: str, value) -> None:
        """Record ``value`` for the question on screen, then show what comes next."""
        if self.logic.shown is None:
            return
        read = self._try(lambda: self.logic.answer(question_id, value))
        self.show_read(self.logic.current() if read is None else read)

    def on_skip(self, *_args) -> None:
        reason = self.ui.skipReasonLineEdit.property("text")
        read = self._try(lambda: self.logic.skip(reason))
        if read is not None or self.logic.current() is None:
            self.ui.skipReasonLineEdit.setText("")
        self.show_read(self.logic.current())

    def show_read(self, read) -> None:
        """The question of ``read`` (the logic's read on screen) as buttons, its place in the
        reader's schedule, or what keeps the reader from going on."""
        self._clear_answers()
        done, total = self.logic.progress()
        self.ui.progressBar.setRange(0, max(total, 1))
        self.ui.progressBar.setValue(done)
        self.ui.shortcutsLabel.setText("")
        if not self.logic.reading:
            self.ui.readLabel.setText("")
            self.ui.questionLabel.setText("Enter your reader code and press Start reading."
                                          if self.logic.study is not None else "Open a study to begin.")
        elif read is None:
            self.ui.readLabel.setText(f"All {total} cases read")
            self.ui.questionLabel.setText("You have finished this study. Thank you!")
        elif self.logic.opens_at(read):
            self.ui.readLabel.setText(f"Session {read.session - 1} is complete")
            self.ui.questionLabel.setText(f"Session {read.session} opens on {self.logic.opens_at(read)} "
                                          "(a washout, so that earlier cases are not remembered).")
        else:
            practice = " · practice case, not analysed" if read.training else ""
            self.ui.readLabel.setText(f"Case {done + 1} of {total} · session {read.session}{practice}")
            self._ask(read.questions[0], len(read.questions))
        self.update_buttons()

    def _ask(self, question, open_count: int) -> None:
        import qt

        more = f"   ({open_count - 1} more question(s) on this case)" if open_count > 1 else ""
        self.ui.questionLabel.setText(question.text + more)
        layout = self.ui.answersFrame.layout()
        choices = question.choices()
        if choices is None:  # a 0-100 confidence
            box = qt.QSpinBox(self.ui.answersFrame)
            box.setRange(0, 100)
            box.setValue(50)
            box.setSuffix(" %")
            box.setStyleSheet(BUTTON_STYLE)
            record = qt.QPushButton("Record confidence", self.ui.answersFrame)
            record.setStyleSheet(BUTTON_STYLE)
            record.setShortcut(qt.QKeySequence(CONFIDENCE_KEY))
            record.clicked.connect(lambda *_: self.answer(question.id, float(box.property("value"))))
            self.answer_widgets = [box, record]
            self.ui.shortcutsLabel.setText("Type the confidence, then Enter")
        else:
            labels = question.scale or [str(choice) for choice in choices]
            keys = question.shortcuts or [""] * len(choices)
            for value, text, key in zip(choices, labels, keys):
                button = qt.QPushButton(answer_text(text, key), self.ui.answersFrame)
                button.setObjectName(f"answer_{value}")
                button.setStyleSheet(BUTTON_STYLE)
                button.setMinimumHeight(48)
                if key:
                    button.setShortcut(qt.QKeySequence(key.upper() if len(key) == 1 else key))
                    button.setToolTip(f"Key {key.upper()}")
                button.clicked.connect(lambda *_, value=value: self.answer(question.id, value))
                self.answer_widgets.append(button)
            if any(keys):
                self.ui.shortcutsLabel.setText("Keys: " + ", ".join(k.upper() for k in keys if k))
        for widget in self.answer_widgets:
            layout.addWidget(widget)
            widget.show()  # at once: a hidden button's shortcut does not act

    def _clear_answers(self) -> None:
        for widget in self.answer_widgets:
            widget.hide()
            widget.setParent(None)
            widget.deleteLater()
        self.answer_widgets = []

    # -- the study lead --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.task is not None and self.task.active

    def refresh_readers(self, *_args) -> None:
        import qt

        rows = self._try(self.logic.reader_progress) or []
        table = self.ui.readersTable
        table.setRowCount(len(rows))
        for number, row in enumerate(rows):
            for column, text in enumerate((row.reader, f"{row.done} / {row.total}", row.state)):
                item = qt.QTableWidgetItem(text)
                if row.problems:
                    item.setToolTip("\n".join(row.problems))
                table.setItem(number, column, item)
        table.resizeColumnsToContents()

    def on_create(self, *_args) -> None:
        ui = self.ui
        readers = ui.readersLineEdit.property("text").split(",")
        methods = {ui.methodNameLineEdit.property("text").strip(): _path(ui.methodPathLineEdit)}
        self._run("Creating the study…", lambda: self.logic.create_task(
            _path(ui.originalPathLineEdit), methods, readers, _path(ui.newStudyPathLineEdit),
            seed=int(ui.seedSpinBox.property("value")), install=self.install, on_event=self._on_event),
            self._on_created)

    def _on_created(self, task: TaskProcess) -> None:
        result = task.result or {}
        self.ui.studyPathLineEdit.setProperty("currentPath", result.get("study", ""))
        self.on_open_study()
        self._log(result.get("summary", ""))
        self._status(f"Study created. Keep the key ({result.get('key', '')}) away from the readers.")

    def on_analyze(self, *_args) -> None:
        self._run("Analyzing…", lambda: self.logic.analyze_task(
            _path(self.ui.reportPathLineEdit), install=self.install, on_event=self._on_event), self._on_analyzed)

    def _on_analyzed(self, task: TaskProcess) -> None:
        tables = task.outputs or {}
        self._log((task.result or {}).get("summary", ""))
        self._status(f"Report written to {_path(self.ui.reportPathLineEdit)}; {len(tables)} table(s) loaded "
                     "in the scene")

    def _run(self, message: str, start: Callable[[], TaskProcess], on_done: Callable[[TaskProcess], None]) -> None:
        if self.busy:
            return
        self.ui.logText.clear()
        task = self._try(start)
        if task is None:
            return
        self.task = task
        self._status(message)

        def finished(task: TaskProcess) -> None:
            if task.state == RunState.DONE:
                on_done(task)
            else:
                self._fail(task.error or "the run was cancelled")
            self.update_buttons()

        self.driver = QtTaskDriver(task, on_finished=finished)
        self.update_buttons()

    def _on_event(self, event: dict) -> None:
        if event.get("event") in ("log", "error") and event.get("message"):
            self._log(event["message"])

    def _after_try(self) -> None:
        self.update_buttons()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _path(path_edit) -> str:
    return (path_edit.property("currentPath") or "").strip()


def _folders_only(path_edit) -> None:
    """Slicer's ctkPathLineEdit browses files by default; these fields take folders."""
    folders = getattr(type(path_edit), "Dirs", None)
    if folders is not None:
        path_edit.filters = folders
