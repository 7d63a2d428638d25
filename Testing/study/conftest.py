"""Shared fixtures of the reader-study tests.

  image_folders  an originals' folder and one method's folder, six 8×16×16 volumes each,
                 with names and metadata that must never reach a reader
  make_study     builds a blinded study from them (``make_study(**design options)``)
                 and returns (study folder, key path)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddiffusion.io import Volume, write_volume
from study_readers import METHOD, STEMS


@pytest.fixture
def image_folders(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    original, method = tmp_path / "originals", tmp_path / "outputs"
    for stem in STEMS:
        noisy = rng.normal(40, 30, (8, 16, 16)).astype(np.float32)
        write_volume(Volume(noisy, (0.7, 0.7, 2.0), metadata={"SeriesDescription": "LOW DOSE originalSeries"}),
                     original / f"{stem}.nrrd")
        write_volume(Volume(noisy * 0.3 + 28, (0.7, 0.7, 2.0), metadata={"SeriesDescription": METHOD}),
                     method / f"{stem}.nii.gz")
    return original, method


@pytest.fixture
def make_study(tmp_path, image_folders):
    from meddiffusion.study.blinding import create_study
    from meddiffusion.study.design import Design, default_question
    from meddiffusion.study.sources import find_cases

    def make(questions=("likert:noise", "pairwise:preference"), readers=("R1", "R2"), **options):
        design = Design(title="test study", seed=options.pop("seed", 5),
                        questions=[default_question(*q.split(":")) for q in questions],
                        readers=list(readers), cases=[], **options)
        sources = find_cases(image_folders[0], {METHOD: image_folders[1]})
        _, key = create_study(sources, design, tmp_path / "study")
        return tmp_path / "study", key

    return make
