"""The README picture of PETMRDenoise, made from the bundled sample with the shipped models.

The sample (``meddiffusion/data/sample_petmr_brain_pet_drf10.nrrd``: a simulated brain FDG PET
at 1/10 of the counts, its T1 MR and the full-count reference) is denoised as ``meddiff
pet-denoise`` does, by the PET-only and the MR-guided CSRD at their default steps::

    python Resources/Screenshots/make_petmr_figures.py

Writes ``petmr_slices.png`` beside this script: the axial slice through the sample's
hypermetabolic lesion (top) and a 48 mm box around it (bottom), MR | DRF 10 | CSRD without MR |
CSRD with MR | full count, the PETs in one SUV window, each lesion's SUVmax written under it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from meddiffusion.io import read_volume  # noqa: E402
from meddiffusion.tasks.petmr.infer import denoise, register_mr  # noqa: E402
from meddiffusion.tasks.petmr.model import default_model_for, load_model  # noqa: E402

BOX_MM = 48.0


def lesion_index(volume, centre_lps) -> np.ndarray:
    """(i, j, k) of an LPS point on ``volume``'s grid."""
    matrix = np.asarray(volume.direction).reshape(3, 3) * np.asarray(volume.spacing)
    return np.rint(np.linalg.solve(matrix, np.asarray(centre_lps) - np.asarray(volume.origin))).astype(int)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = REPO / "meddiffusion" / "data"
    low = read_volume(data / "sample_petmr_brain_pet_drf10.nrrd")
    mr = read_volume(data / "sample_petmr_brain_mr.nrrd")
    full = read_volume(data / "sample_petmr_brain_pet_full.nrrd")
    truth = json.loads((data / "sample_petmr_brain_truth.json").read_text())
    guided, pet_only = load_model(default_model_for(True)), load_model(default_model_for(False))
    mr_on_pet = register_mr(low, mr)[0]
    images = {"T1 MR": mr_on_pet.array, "DRF 10 (input)": low.array,
              f"CSRD without MR\n({pet_only.id})": denoise(pet_only, low, steps=pet_only.default_steps())[0].array,
              f"CSRD with MR\n({guided.id})": denoise(guided, low, mr_on_pet, steps=guided.default_steps())[0].array,
              "full count (reference)": full.array}
    hot = max((lesion for lesion in truth["lesions"] if lesion["type"] == "hyper"), key=lambda x: x["volume_ml"])
    i, j, k = lesion_index(low, hot["centre_lps_mm"])
    half = [int(round(BOX_MM / 2 / s)) for s in low.spacing[:2]]
    box = (slice(max(j - half[1], 0), j + half[1]), slice(max(i - half[0], 0), i + half[0]))
    vmax = float(np.percentile(full.array, 99.9))
    radius = 2
    figure, axes = plt.subplots(2, len(images), figsize=(3.0 * len(images), 6.6))
    for column, (name, image) in enumerate(images.items()):
        is_mr = name.startswith("T1")
        style = {"cmap": "gray"} if is_mr else {"cmap": "hot", "vmin": 0, "vmax": vmax}
        for row, view in enumerate((image[k], image[k][box])):
            axis = axes[row, column]
            axis.imshow(view, **style)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, column].set_title(name, fontsize=9)
        if not is_mr:
            peak = image[k - radius:k + radius + 1, j - radius:j + radius + 1, i - radius:i + radius + 1].max()
            axes[1, column].set_xlabel(f"lesion SUVmax {peak:.1f} (true {hot['suv']:.1f})", fontsize=8)
    figure.suptitle("Simulated brain FDG PET at 1/10 of the counts (sample, never trained on)", fontsize=10)
    figure.tight_layout()
    figure.savefig(HERE / "petmr_slices.png", dpi=90)
    print(f"wrote {HERE / 'petmr_slices.png'}")


if __name__ == "__main__":
    main()
