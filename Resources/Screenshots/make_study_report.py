"""The README's reader-study report pictures, from a simulated study with known effects.

Run from the repository root: ``python Resources/Screenshots/make_study_report.py``. Four
simulated readers rate 60 cases of three methods ("original", "B" one Likert point better and
preferred, "C" equal to the original; Testing/study/simulated_readers.py), and
``meddiffusion.study.analysis.analyze`` writes its report; the pictures are copied here.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Testing" / "study"))

from meddiffusion.study.analysis import analyze  # noqa: E402
from simulated_readers import simulate  # noqa: E402

DESIGN = {"title": "simulated study: B one Likert point better, C as the original",
          "questions": [{"id": "noise", "kind": "likert", "text": "Image noise", "criterion": "noise"},
                        {"id": "overall", "kind": "pairwise", "text": "Which image is better?", "criterion": "overall"},
                        {"id": "lesion", "kind": "diagnostic", "text": "Lesion present?", "criterion": "lesion"}]}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = analyze(simulate(seed=0), DESIGN, Path(folder))
        for picture in sorted(Path(folder).glob("*.png")):
            shutil.copyfile(picture, ROOT / "Resources" / "Screenshots" / f"study_{picture.name}")
            print(f"study_{picture.name}")
        print(result["summary"])


if __name__ == "__main__":
    main()
