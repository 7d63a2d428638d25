"""The README pictures of SPECTAttenuation, made from the bundled sample with the shipped models.

The sample (``meddiffusion/data/sample_spect_nac.nrrd``: a woman with large breasts, stress,
no perfusion defect) is corrected by the default CT-free student and by the teacher with the
sample's μ-map, as ``meddiff spect-ac`` does; the reference is the OSEM reconstruction with
the true μ-map. Every polar map is read on the LV axes fitted to the reference::

    python Resources/Screenshots/make_spect_figures.py

Writes ``spect_slices.png`` (transaxial and short-axis slices: NAC | student | teacher |
reference) and ``spect_bullseye.png`` (their 17-segment polar maps) beside this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from meddiffusion.figures import write_png  # noqa: E402
from meddiffusion.io import read_volume  # noqa: E402
from meddiffusion.tasks.spect.bullseye import bullseye_picture  # noqa: E402
from meddiffusion.tasks.spect.infer import correct_study  # noqa: E402
from meddiffusion.tasks.spect.model import default_teacher, load_model  # noqa: E402
from meddiffusion.tasks.spect.polarmap import polar_map  # noqa: E402
from meddiffusion.tasks.spect.reorient import fit_lv, short_axis_volume  # noqa: E402


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = REPO / "meddiffusion" / "data"
    nac, reference, mu = (read_volume(data / f"sample_spect_{name}.nrrd") for name in ("nac", "ac_reference", "mumap"))
    student = load_model()
    teacher = load_model(default_teacher())
    volumes = {"NAC": nac, f"student ({student.id})": correct_study(student, nac)[0],
               f"teacher ({teacher.id})": correct_study(teacher, nac, mu)[0], "reference AC": reference}
    frame = fit_lv(reference)
    maps = {name.split(" (")[0]: polar_map(volume, frame) for name, volume in volumes.items()}
    write_png(HERE / "spect_bullseye.png", bullseye_picture(maps, title="17-segment polar maps, % of peak"))

    centre = np.linalg.solve(np.asarray(nac.direction).reshape(3, 3) * np.asarray(nac.spacing),
                             np.asarray(frame.centre) - np.asarray(nac.origin))
    k = int(round(centre[2]))
    figure, axes = plt.subplots(2, len(volumes), figsize=(3.2 * len(volumes), 6.4))
    for column, (name, volume) in enumerate(volumes.items()):
        sa = short_axis_volume(volume, frame)
        for row, image in enumerate((volume.array[k], sa.array[sa.shape[0] // 2])):
            axis = axes[row, column]
            axis.imshow(image, cmap="hot", vmin=0, vmax=float(np.percentile(volume.array, 99.9)))
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
        axes[0, 0].set_ylabel("transaxial")
        axes[1, 0].set_ylabel("short axis (mid)")
    figure.suptitle("SPECT sample: NAC, PADM student (CT-free), teacher (μ-map) and the reference, each to its "
                    "own 99.9th percentile", fontsize=9)
    figure.tight_layout()
    figure.savefig(HERE / "spect_slices.png", dpi=100)


if __name__ == "__main__":
    main()
