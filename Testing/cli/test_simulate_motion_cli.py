"""``meddiff simulate-motion`` end to end through its ``run(args, progress)`` on the bundled gated sample.

The sample is cropped to the slices that hold its two scored lesions, so each run takes a few
seconds; the reference lesions come from the Agatston score inside the sample's coronary region.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest

import meddiffusion
from meddiffusion.commands import simulate_motion as command
from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.metrics.agatston import agatston
from meddiffusion.physics.motion_profiles import ALLOWED_VIEWS, DEFAULT_ROTATION_S, PROFILES
from meddiffusion.progress import Progress

DATA = Path(meddiffusion.__file__).parent / "data"


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meddiff")
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate-motion", *map(str, argv)])


def same_grid(a: Volume, b: Volume) -> bool:
    return (a.shape == b.shape and np.allclose(a.spacing, b.spacing) and np.allclose(a.origin, b.origin)
            and np.allclose(a.direction, b.direction))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The sample's slices 24-33 (both lesions and their neighbours) as CT and coronary region files."""
    folder = tmp_path_factory.mktemp("motion")
    ct, region = read_volume(DATA / "sample_chest_ct.nrrd"), read_volume(DATA / "sample_chest_coronaries.nrrd")
    origin = ct.index_to_physical((24, 0, 0))
    crop = Volume(ct.array[24:34], ct.spacing, tuple(origin), ct.direction, modality="CT")
    write_volume(crop, folder / "ct.nrrd")
    write_volume(crop.with_array(region.array[24:34]), folder / "region.nrrd")
    lesions = agatston(crop.array, crop.spacing, mask=region.array[24:34]).label_map > 0
    write_volume(crop.with_array(lesions.astype(np.float32)), folder / "calcium.nrrd")
    return folder, crop, lesions


def test_writes_the_corrupted_and_static_ct_and_the_trajectory_on_the_input_grid(files, tmp_path):
    folder, crop, lesions = files
    out, static, trajectory = tmp_path / "moved.nrrd", tmp_path / "static.nrrd", tmp_path / "motion.csv"
    args = parse(folder / "ct.nrrd", "-o", out, "--profile", 8, "--views", 180, "--seed", 3,
                 "--heart-region", folder / "region.nrrd", "--static", static, "--trajectory", trajectory)
    result = command.run(args, Progress())
    moved, still = read_volume(out), read_volume(static)
    assert same_grid(moved, crop) and same_grid(still, crop)
    assert result["calcium_voxels"] == int(lesions.sum()) and result["family"] == "translational"
    assert 0 < result["max_displacement_mm"] <= PROFILES[8].magnitude_mm + 1e-9
    assert not np.allclose(moved.array, still.array)
    far = np.ones(crop.shape[0], bool)                                # slices the in-plane motion never reaches
    for z in np.flatnonzero(lesions.any(axis=(1, 2))):
        far[max(z - 1, 0):z + 2] = False                              # the lesion and its one-voxel rim
    assert far.any() and np.array_equal(moved.array[far], crop.array[far])
    with open(trajectory, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 180 and float(rows[0]["time_s"]) == 0.0
    assert float(rows[-1]["angle_deg"]) == pytest.approx(179.0)
    speeds = np.linalg.norm(np.diff([[float(r[k]) for k in ("dx_mm", "dy_mm", "dz_mm")] for r in rows], axis=0), axis=1)
    assert speeds.max() / (DEFAULT_ROTATION_S / 2 / 180) == pytest.approx(PROFILES[8].velocity_mm_s, rel=1e-6)


def test_detects_the_calcium_itself_and_reports_progress(files, tmp_path):
    folder, crop, lesions = files
    events = []

    class Sink:
        def emit(self, event):
            events.append(event)

        def close(self):
            pass

    args = parse(folder / "ct.nrrd", "-o", tmp_path / "moved.nrrd", "--profile", 14, "--views", 180)
    result = command.run(args, Progress(Sink(), min_interval_s=0.0))
    assert result["calcium_voxels"] == int(lesions.sum())
    simulate = [e for e in events if e["event"] == "progress" and e["stage"] == "simulate"]
    assert simulate and simulate[-1]["done"] == simulate[-1]["total"] == result["slices_with_motion"]


@pytest.mark.parametrize("extra, message", [
    (["--profile", 21], "motion profile must be an id 0-20"),
    (["--profile", 3, "--views", 200], "--views must be one of 180, 360, 540, 720, 1080"),
    (["--profile", 3, "--filter", "sharp"], "unknown filter"),
])
def test_bad_options_are_refused_with_a_clear_message(files, tmp_path, extra, message):
    folder, _, _ = files
    with pytest.raises(ValueError, match=message):
        command.run(parse(folder / "ct.nrrd", "-o", tmp_path / "out.nrrd", *extra), Progress())


def test_a_mask_on_another_grid_or_without_calcium_is_refused(files, tmp_path):
    folder, crop, _ = files
    shifted = Volume(np.ones(crop.shape, np.float32), crop.spacing, (0.0, 0.0, 0.0), crop.direction)
    write_volume(shifted, tmp_path / "shifted.nrrd")
    with pytest.raises(ValueError, match="--mask calcium mask origin"):
        command.run(parse(folder / "ct.nrrd", "-o", tmp_path / "out.nrrd", "--profile", 3,
                          "--mask", tmp_path / "shifted.nrrd"), Progress())
    write_volume(crop.with_array(np.zeros(crop.shape, np.float32)), tmp_path / "empty.nrrd")
    with pytest.raises(ValueError, match="no calcium"):
        command.run(parse(folder / "ct.nrrd", "-o", tmp_path / "out.nrrd", "--profile", 3,
                          "--mask", tmp_path / "empty.nrrd"), Progress())
    with pytest.raises(ValueError, match="must not overwrite the input"):
        command.run(parse(folder / "ct.nrrd", "-o", folder / "ct.nrrd", "--profile", 3), Progress())
    assert not (tmp_path / "out.nrrd").exists()


def test_help_lists_every_profile_and_the_allowed_views():
    parser = argparse.ArgumentParser(prog="meddiff")
    subparsers = parser.add_subparsers()
    command.add_parser(subparsers)
    text = subparsers.choices["simulate-motion"].format_help()
    assert all(profile.name in text for profile in PROFILES)
    assert command.VIEWS == ALLOWED_VIEWS and command.ROTATION_S == DEFAULT_ROTATION_S
    assert "meddiff simulate-motion" in text
