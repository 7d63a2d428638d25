"""``meddiff phantom`` through its command module: files, formats, truth, progress, errors.

The command is driven with the real argument parser and ``run(args, progress)``, on small
grids (a few seconds in all).
"""

import argparse
import json

import numpy as np
import pytest

from meddiffusion.commands import phantom as command
from meddiffusion.io import read_sequence, read_volume
from meddiffusion.phantoms import LABELS, Phantom, chest_grid
from meddiffusion.progress import Cancelled, Progress

SMALL = ["--size", "40,40,24", "--spacing", "9,9,12"]


class Events:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)

    def close(self):
        pass


def parse(*argv):
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    return parser.parse_args(["phantom", *map(str, argv)])


def test_ct_sequence_with_labels_and_truth(tmp_path):
    out, labels, truth = tmp_path / "ct.seq.nrrd", tmp_path / "labels.seq.nrrd", tmp_path / "truth.json"
    sink = Events()
    result = command.run(parse("--modality", "ct", "--preset", "NOR", "--frames", 3, "--seed", 7, "-o", out,
                               "--labels", labels, "--truth", truth, *SMALL), Progress(sink))
    frames, times = read_sequence(out)
    label_frames, label_times = read_sequence(labels)
    assert len(frames) == 3 and frames[0].shape == (24, 40, 40)
    assert frames[0].spacing == pytest.approx((9.0, 9.0, 12.0))
    phantom = Phantom.sample("NOR", seed=7)
    assert times == pytest.approx([1000 * t for t in phantom.frame_times(3)], abs=1e-3)
    assert label_times == times
    assert frames[0].array.min() < -990 and frames[0].array.max() > 200          # air and bone, in HU
    assert np.isin(label_frames[1].array, list(LABELS.values()) + [100 + i for i in range(1, 20)]).all()
    saved = json.loads(truth.read_text())
    assert saved["lv"]["edv_ml"] == pytest.approx(phantom.params.heart.edv_ml)
    assert saved["frames_ms"] == pytest.approx(times, abs=1e-3)
    assert result["frames"] == 3 and result["truth"]["preset"] == "NOR" and result["truth_file"] == str(truth)
    stages = {e["stage"] for e in sink.events if e["event"] == "progress"}
    assert stages == {"anatomy", "render", "write"}


def test_one_frame_at_a_phase_is_a_3d_volume_matching_the_library(tmp_path):
    out, labels = tmp_path / "ct.nrrd", tmp_path / "labels.nii.gz"
    command.run(parse("--phase", 0.35, "--seed", 3, "--plaques", 2, "-o", out, "--labels", labels, *SMALL),
                Progress())
    phantom = Phantom.sample("NOR", seed=3, plaques=2)
    expected = phantom.labels(chest_grid((40, 40, 24), (9.0, 9.0, 12.0)), 0.35 * phantom.rr_s).array
    assert np.array_equal(read_volume(labels).array, expected)
    assert read_volume(out).shape == (24, 40, 40)


@pytest.mark.parametrize("modality, units_check", [("spect", lambda a: a.max() > 10), ("pet", lambda a: a.max() > 4)])
def test_spect_and_pet_write_activity_and_mu_map(tmp_path, modality, units_check):
    out, mu = tmp_path / f"{modality}.nrrd", tmp_path / "mu.mha"
    result = command.run(parse("--modality", modality, "--preset", "MINF", "-o", out, "--mu", mu, *SMALL), Progress())
    activity, attenuation = read_volume(out).array, read_volume(mu).array
    assert units_check(activity)
    assert 0.0 <= attenuation.min() and attenuation.max() < 0.3                     # 1/cm
    assert result["mu"] == str(mu)


def test_short_axis_cine_mr(tmp_path):
    out, labels = tmp_path / "cine.seq.nrrd", tmp_path / "seg.seq.nrrd"
    command.run(parse("--modality", "mr", "--preset", "DCM", "--view", "short-axis", "--frames", 2,
                      "--size", "48,48,8", "--spacing", "4,4,10", "--noise", 0.02, "-o", out, "--labels", labels),
                Progress())
    frames, _ = read_sequence(out)
    segs, _ = read_sequence(labels)
    assert frames[0].shape == (8, 48, 48)
    assert (segs[0].array == LABELS["lv_blood"]).sum() > (segs[1].array == LABELS["lv_blood"]).sum()


@pytest.mark.parametrize("argv, message", [
    (["--frames", 3, "--phase", 0.2, "-o", "x.seq.nrrd"], "--phase"),
    (["--modality", "ct", "--mu", "mu.nrrd", "-o", "x.nrrd"], "--mu"),
    (["--frames", 4, "-o", "x.nii.gz"], ".seq.nrrd"),
    (["-o", "x.png"], "expected one of"),
    (["--size", "64,64", "-o", "x.nrrd"], "--size"),
    (["--no-calcium", "--plaques", 3, "-o", "x.nrrd"], "contradict"),
    (["--ef", 97, "-o", "x.nrrd"], "EF"),
])
def test_bad_options_raise_value_error(tmp_path, argv, message):
    argv = [str(tmp_path / a) if str(a).startswith(("x.", "mu.")) else a for a in argv]
    with pytest.raises(ValueError, match=message):
        command.run(parse(*argv), Progress())


def test_cancel_leaves_no_output(tmp_path):
    progress = Progress()
    progress.cancel()
    out = tmp_path / "ct.nrrd"
    with pytest.raises(Cancelled):
        command.run(parse("-o", out, *SMALL), progress)
    assert not out.exists()
