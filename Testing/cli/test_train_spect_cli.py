"""``meddiff train spect`` end to end in a child process: simulated studies, the teacher, then its student.

Three phantom studies are simulated into the run's cache (two train, one validates); a tiny
teacher trains and registers, and a tiny student is distilled from it with the
attention-transfer term. Both must lower their validation loss, and the student's card must
name its teacher.
"""

from __future__ import annotations

import json
import os

from cli_runner import meddiff  # Testing/cli's one child-process runner


def _train(env, out, *extra):
    done = meddiff("train", "spect", "--config", "tiny", "--studies", "2", "--val-studies", "1", "--steps", "15",
                   "--batch-size", "8", "--lr", "1e-3", "--val-every", "15", "--events", "jsonl", "--threads", "1",
                   "--out", out, *extra, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_teacher_then_distilled_student_lower_their_validation_loss(tmp_path):
    env = {**os.environ, "MEDDIFF_MODEL_DIR": str(tmp_path / "models"), "MEDDIFF_THREADS": "1"}
    data = tmp_path / "data"
    teacher = _train(env, tmp_path / "teacher", "--variant", "teacher", "--data", str(data), "--register",
                     "tiny-teacher")
    assert teacher["registered"] and teacher["val_loss_end"] < teacher["val_loss_start"]
    assert len(list(data.glob("study_*.npz"))) == 3
    student = _train(env, tmp_path / "student", "--variant", "student", "--teacher", "tiny-teacher", "--data",
                     str(data))
    assert student["val_loss_end"] < student["val_loss_start"]
    card = json.loads((tmp_path / "student" / "model.json").read_text(encoding="utf-8"))
    assert "tiny-teacher" in card["description"] and card["architecture"]["kwargs"]["teacher"] is False
    assert card["metrics"]["val_at_end"] >= 0 and "3 simulated" not in card["training_data"]
