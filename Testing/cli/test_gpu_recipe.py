"""scripts/train_paper_models.py, the GPU recipe of the paper-size LDCT and motion networks, at test size on the CPU.

The real run needs a GPU; this runs the same pipeline (parallel simulation, speed probe, two
``meddiff train`` runs side by side with a time limit, registration, cards) on tiny networks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_paper_models.py"


def test_tiny_recipe_writes_registered_weights_and_cards(tmp_path):
    out = tmp_path / "models"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--tiny", "--workers", "2", "--minutes", "5"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "MEDDIFF_MODEL_DIR": str(tmp_path / "elsewhere")})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings"]["steps_per_second_alone"]) == {"ldct", "motion"}
    for model_id, task in (("ldct-corediff-tiny-gpu-recipe", "ldct"), ("motion-prodm-tiny-gpu-recipe", "motion")):
        card = json.loads((out / f"{model_id}.json").read_text())
        assert card["id"] == model_id and card["task"] == task
        assert card["training_command"].startswith(f"meddiff train {task} --config tiny")
        assert "--time-limit" in card["training_command"] and card["metrics"]["steps"] == 4
        with safe_open(out / card["weights"], "pt") as weights:
            assert len(list(weights.keys())) > 4
        text = (out / f"{model_id}.md").read_text()
        assert "4 of 4 planned" in text and f"meddiff bench {task} --model {model_id}" in text
    assert not (tmp_path / "elsewhere").exists()  # registered into OUT only, never the user's model folder
