"""The Training .ui and panel in PySide6 (offscreen): inputs enable Start, the task drives the model
list and the sources, a run folder's events drive the progress line, Register reaches another module."""

from __future__ import annotations

import json
import sys

import pytest

import mrml_fixtures
from LDCTDenoiseLib.logic import LDCTDenoiseLogic
from LDCTDenoiseLib.panel import LDCTDenoisePanel
from standins import ctkCollapsibleButton, ctkPathLineEdit, qMRMLWidget
from TrainingLib.logic import TrainingLogic
from TrainingLib.panel import FROM_SCRATCH, TrainingPanel

sys.path.insert(0, str(mrml_fixtures.REPO_ROOT / "Testing" / "slicer"))
import tiny_models  # noqa: E402 - the same tiny cards as the logic tests


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A user model folder holding one tiny LDCT model to fine-tune."""
    from meddiffusion import catalog

    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path / "models"))
    catalog.register_user_model(*tiny_models.ldct_model("tiny-ldct"))
    return tmp_path / "models"


@pytest.fixture
def panel(load_ui, mrml, repo_root, tmp_path, models):
    root = load_ui(repo_root / "Training" / "Resources" / "UI" / "Training.ui")
    logic = TrainingLogic(mrml.scene)
    logic.parameters().runsFolder = str(tmp_path / "runs")
    errors, registered = [], []
    panel = TrainingPanel(root, logic.parameters(), logic, on_error=errors.append, on_registered=registered.append)
    panel.set_scene(mrml.scene)
    panel.errors, panel.registered = errors, registered
    yield panel
    panel.cleanup()


def items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_ui_has_every_widget_the_panel_uses(panel, ui_widgets):
    widgets = ui_widgets(panel.root)
    assert isinstance(panel.root, qMRMLWidget)
    assert [name for name in TrainingPanel.WIDGETS if name not in widgets] == []
    sections = {w.property("text") for w in widgets.values() if isinstance(w, ctkCollapsibleButton)}
    assert sections == {"Task and model", "Data", "Training settings", "Run", "Log"}
    assert isinstance(widgets["runsFolderLineEdit"], ctkPathLineEdit)
    assert widgets["stepsSpinBox"].property("SlicerParameterName") == "steps"


def test_the_task_refreshes_models_sizes_and_sources(panel):
    ui = panel.ui
    assert items(ui.taskComboBox)[:2] == ["low-dose CT denoising (ldct)", "motion correction (motion)"]
    assert items(ui.baseModelComboBox)[0] == FROM_SCRATCH and "Fine-tune tiny-ldct" in items(ui.baseModelComboBox)
    assert len(items(ui.sourceComboBox)) == 4 and items(ui.configComboBox) == ["paper", "medium", "small", "tiny"]
    ui.baseModelComboBox.setCurrentIndex(ui.baseModelComboBox.findText("Fine-tune tiny-ldct"))
    assert panel.parameters.baseModel == "tiny-ldct"
    ui.taskComboBox.setCurrentIndex(1)
    assert panel.parameters.task == "motion" and panel.parameters.baseModel == ""
    assert items(ui.sourceComboBox)[0] == "Built-in phantom (simulated pairs)" and len(items(ui.sourceComboBox)) == 3
    assert items(ui.configComboBox) == ["large", "gpu", "small", "tiny"] and ui.configComboBox.currentText() == "small"
    assert ui.stepsSpinBox.value() == 6000 and ui.batchSizeSpinBox.value() == 8
    assert not ui.dataFromComboBox.isEnabled() and not ui.volumesTable.isEnabled()
    assert "tiny-ldct" not in " ".join(items(ui.baseModelComboBox))


def test_start_is_enabled_only_when_the_data_is_complete(panel, mrml):
    ui = panel.ui
    assert ui.startButton.isEnabled()  # the phantom needs nothing more
    ui.sourceComboBox.setCurrentIndex(ui.sourceComboBox.findData("paired-folder"))
    assert panel.parameters.source == "paired-folder" and panel.parameters.dataFrom == "scene"
    assert not ui.startButton.isEnabled() and "scene volumes" in ui.startButton.toolTip()
    assert not ui.volumesTable.isColumnHidden(1)
    volumes = []
    for patient, seed in (("Alice", 1), ("Bob", 2)):
        for dose in ("low", "normal"):
            node = mrml_fixtures.add_volume(mrml.scene, mrml_fixtures.chest_array((2, 8, 8), seed=seed),
                                            name=f"{patient} {dose}")
            mrml_fixtures.put_in_study(mrml.scene, node, patient=patient)
            volumes.append(node)
    ui.addRowButton.click()
    ui.addRowButton.click()
    assert ui.volumesTable.rowCount() == 2 and not ui.startButton.isEnabled()
    for row in range(2):
        for column in range(2):
            combo = ui.volumesTable.cellWidget(row, column)
            combo.setCurrentIndex(combo.findText(volumes[2 * row + column].GetName()))
            assert ui.startButton.isEnabled() == (row == 1 and column == 1)
    assert panel.logic.scene_volumes() == [(volumes[0], volumes[1]), (volumes[2], volumes[3])]
    ui.sourceComboBox.setCurrentIndex(ui.sourceComboBox.findData("clean-folder"))
    assert ui.volumesTable.isColumnHidden(1) and ui.startButton.isEnabled()
    ui.dataFromComboBox.setCurrentIndex(2)  # a CSV manifest
    assert not ui.startButton.isEnabled() and ui.dataPathLineEdit.isEnabled()
    ui.dataPathLineEdit.setProperty("currentPath", "/data/volumes.csv")
    assert panel.parameters.dataPath == "/data/volumes.csv" and ui.startButton.isEnabled()


def form_rows(container) -> dict:
    """{label: field widget} of a QFormLayout container."""
    from PySide6.QtWidgets import QFormLayout

    layout, rows = container.layout(), {}
    for row in range(layout.rowCount()):
        label = layout.itemAt(row, QFormLayout.LabelRole).widget().text()
        rows[label] = layout.itemAt(row, QFormLayout.FieldRole).widget()
    return rows


def test_the_tasks_own_options_are_offered_and_make_a_command_the_cli_takes(panel, tmp_path):
    from meddiffusion.cli import build_parser

    ui = panel.ui
    ui.settingsCollapsibleButton.setProperty("collapsed", False)  # a folded section disables its widgets here
    ui.taskComboBox.setCurrentIndex(ui.taskComboBox.findData("cardiac4d"))
    choices, numbers = form_rows(ui.taskOptionsWidget), form_rows(ui.taskSettingsWidget)
    assert list(choices) == ["Variant:", "Vae model:", "Anatomy model:", "Prediction:", "Decoder only:"]
    assert items(choices["Variant:"]) == ["vae", "anatomy", "motion"]
    assert items(choices["Vae model:"])[0] == "(default)" and "cardiac4d-vae-small" in items(choices["Vae model:"])
    assert "tiny-ldct" not in items(choices["Vae model:"])  # only the task's own models
    assert numbers["Studies:"].value() == 360 and numbers["Kl weight:"].decimals() == 9
    assert numbers["Kl weight:"].value() == pytest.approx(1e-7) and "KL weight" in numbers["Kl weight:"].toolTip()
    assert not choices["Vae model:"].isEnabled() and numbers["Kl weight:"].isEnabled()  # a VAE run
    assert choices["Decoder only:"].isEnabled() and not numbers["Affine copies:"].isEnabled()
    choices["Variant:"].setCurrentIndex(2)
    assert choices["Vae model:"].isEnabled() and choices["Anatomy model:"].isEnabled()
    assert not numbers["Kl weight:"].isEnabled() and numbers["Timesteps:"].isEnabled()
    assert not choices["Decoder only:"].isEnabled() and not numbers["Affine copies:"].isEnabled()
    choices["Vae model:"].setCurrentIndex(choices["Vae model:"].findText("cardiac4d-vae-small"))
    numbers["Studies:"].setValue(8)
    assert panel.parameters.taskOptions == '{"--variant": "motion", "--vae": "cardiac4d-vae-small", "--studies": 8}'
    assert ui.startButton.isEnabled()
    arguments = panel.logic.train_arguments(tmp_path / "run")
    args = build_parser().parse_args(["train", *arguments])
    assert (args.task, args.variant, args.vae, args.anatomy, args.studies) == (
        "cardiac4d", "motion", "cardiac4d-vae-small", None, 8)
    numbers["Studies:"].setValue(360)  # back at the default: not written
    assert "--studies" not in panel.logic.task_options()
    ui.taskComboBox.setCurrentIndex(ui.taskComboBox.findData("spect"))
    choices = form_rows(ui.taskOptionsWidget)
    assert list(choices) == ["Variant:", "Teacher model:"] and panel.parameters.taskOptions == ""
    assert choices["Variant:"].currentText() == "student" and choices["Teacher model:"].isEnabled()
    choices["Variant:"].setCurrentIndex(choices["Variant:"].findText("teacher"))
    assert not choices["Teacher model:"].isEnabled() and not form_rows(ui.taskSettingsWidget)["At weight:"].isEnabled()


def test_a_spect_pair_table_has_a_ct_and_a_mumap_column(panel, mrml):
    ui, table = panel.ui, panel.ui.volumesTable
    ui.taskComboBox.setCurrentIndex(ui.taskComboBox.findData("spect"))
    assert table.columnCount() == 2  # the phantom
    ui.sourceComboBox.setCurrentIndex(ui.sourceComboBox.findData("paired-folder"))
    headers = [table.horizontalHeaderItem(column).text() for column in range(table.columnCount())]
    assert headers == ["Input", "Target", "CT (HU)", "μ-map (1/cm)"]
    volumes = {}
    for patient, seed in (("Alice", 1), ("Bob", 2)):
        for kind in ("NAC", "AC", "CT"):
            volumes[patient, kind] = mrml_fixtures.add_volume(
                mrml.scene, mrml_fixtures.chest_array((2, 8, 8), seed=seed), name=f"{patient} {kind}")
            mrml_fixtures.put_in_study(mrml.scene, volumes[patient, kind], patient=patient)
    ui.addRowButton.click()
    ui.addRowButton.click()
    for row, (patient, extra) in enumerate((("Alice", 2), ("Bob", 3))):
        for column, kind in ((0, "NAC"), (1, "AC"), (extra, "CT")):
            combo = table.cellWidget(row, column)
            combo.setCurrentIndex(combo.findText(f"{patient} {kind}"))
    assert panel.logic.scene_volumes() == [
        (volumes["Alice", "NAC"], volumes["Alice", "AC"], volumes["Alice", "CT"], None),
        (volumes["Bob", "NAC"], volumes["Bob", "AC"], None, volumes["Bob", "CT"])]
    assert ui.startButton.isEnabled()  # the further volumes are optional per row
    ui.removeRowButton.click()
    assert panel.logic.scene_volumes() == [(volumes["Alice", "NAC"], volumes["Alice", "AC"], volumes["Alice", "CT"],
                                            None)]
    ui.sourceComboBox.setCurrentIndex(ui.sourceComboBox.findData("phantom"))
    assert table.columnCount() == 2


def write_run(folder, state="running", events=(), metrics=()):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"task": "ldct", "state": state, "pid": None,
                                                 "started": "2026-01-01T00:00:00+00:00", "command": []}))
    with open(folder / "events.jsonl", "a") as handle:
        handle.writelines(json.dumps(event) + "\n" for event in events)
    with open(folder / "metrics.jsonl", "a") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in metrics)


def test_progress_and_eta_follow_the_run_folder_and_a_finished_run_offers_register(panel, tmp_path):
    ui, folder = panel.ui, tmp_path / "runs" / "ldct-20260101-000000"
    write_run(folder, events=[{"event": "log", "message": "training 6 steps"},
                              {"event": "progress", "stage": "train", "done": 3, "total": 6, "eta_s": 90.0}],
              metrics=[{"split": "val", "step": 0, "loss": 0.5}])
    panel.refresh_runs()
    assert ui.runsComboBox.count() == 1 and "running" in ui.runsComboBox.currentText()
    ui.followButton.click()
    assert panel.timer.isActive() and ui.progressBar.value() == 50
    assert ui.progressLabel.text().startswith("train 3/6 · about ") and "s left" in ui.progressLabel.text()
    assert "training 6 steps" in ui.logText.toPlainText()
    assert not ui.registerButton.isEnabled() and not ui.resumeButton.isEnabled()
    write_run(folder, events=[{"event": "progress", "stage": "train", "done": 6, "total": 6, "eta_s": 0.0}],
              metrics=[{"split": "val", "step": 6, "loss": 0.25}])
    panel.tick()
    assert ui.progressBar.value() == 100 and ui.progressLabel.text().startswith("train 6/6")
    assert panel.logic.monitor.curves.row_count == 2
    entry, weights = tiny_models.ldct_model("ldct-run")
    from meddiffusion import catalog

    catalog.save_model(weights, folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps({"schema_version": 1, **entry.to_dict()}))
    write_run(folder, state="done")
    panel.tick()
    assert not panel.timer.isActive() and "finished" in ui.statusLabel.text()
    assert ui.gateLabel.text() == "Gate passed: no parent to compare with (trained from scratch)"
    assert panel.parameters.registerId == folder.name and ui.registerButton.isEnabled()
    ui.registerIdLineEdit.setText("my-ldct")
    assert panel.parameters.registerId == "my-ldct"


def test_register_puts_the_model_in_another_modules_selector(panel, tmp_path, load_ui, repo_root, mrml, qtbot):
    """The LDCT module's model list shows the new model once told (the Training widget tells every module)."""
    from meddiffusion import catalog

    folder = tmp_path / "runs" / "ldct-done"
    entry, weights = tiny_models.ldct_model("ldct-run")
    write_run(folder, state="done")
    catalog.save_model(weights, folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps({"schema_version": 1, **entry.to_dict()}))
    ldct_logic = LDCTDenoiseLogic(mrml.scene)
    ldct = LDCTDenoisePanel(load_ui(repo_root / "LDCTDenoise" / "Resources" / "UI" / "LDCTDenoise.ui"),
                            ldct_logic.parameters(), ldct_logic)
    panel.on_registered = lambda model_id: (panel.registered.append(model_id), ldct.refresh_models())
    assert "my-ldct" not in items(ldct.ui.modelComboBox)
    panel.follow(folder)
    panel.parameters.registerId = "my-ldct"
    panel.ui.registerButton.click()
    qtbot.waitUntil(lambda: panel.registered == ["my-ldct"], timeout=60000)
    assert "my-ldct" in items(ldct.ui.modelComboBox) and "Fine-tune my-ldct" in items(panel.ui.baseModelComboBox)
    assert "Registered as 'my-ldct'" in panel.ui.statusLabel.text()
    ldct.cleanup()
