"""The motion task on the user's own data: the by-patient split, the pair checks, clean-folder pairs made by
ProDM's motion simulation, calcium patches from the region finder and their fallback, the fine-tune's parent
and score. Small synthetic CTs and two small phantom patients; no training here
(``Testing/cli/test_train_motion_userdata_cli.py`` trains through the command)."""

from __future__ import annotations

import argparse
import copy
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.progress import Progress
from meddiffusion.tasks.motion.cases import MAX_MOTION_MM, MotionDataOptions, make_case
from meddiffusion.tasks.motion.userdata import build_user_data, candidates, motion_draw, simulate_pair
from meddiffusion.training import cache
from meddiffusion.training.recipe import CLEAN_FOLDER, PAIRED_FOLDER

#: patches small enough for 48² synthetic slices
SMALL = MotionDataOptions(size=48, slices=4, patch=32, jitter=2, free_case_patches=4)
PHANTOM = MotionDataOptions(size=96, slices=12, pixel_mm=(1.3, 1.5), slice_mm=5.0, noise_views=120, plaques=(8, 12),
                            calcium_free=0.0, plaque_mm=(3.0, 10.0))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Simulation on one thread: on a shared, busy machine two threads mostly wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def chest(seed: int = 0, calcium: bool = True, shift: int = 0) -> np.ndarray:
    """(6, 48, 48) HU: air, a soft-tissue body with a lung, a 3-pixel calcium (600 HU) when asked, noise."""
    yy, xx = np.mgrid[:48, :48].astype(float) - 23.5
    xx = xx - shift
    image = np.full((48, 48), -1000.0)
    image[(yy / 20) ** 2 + (xx / 22) ** 2 < 1] = 40.0
    image[(yy + 5) ** 2 + (xx - 10) ** 2 < 25] = -850.0
    volume = np.repeat(image[None], 6, axis=0) + np.random.default_rng(seed).normal(0, 10, (6, 48, 48))
    if calcium:
        volume[2:4, 20:23, 14 + shift : 17 + shift] = 600.0
    return volume.astype(np.float32)


def ct(array: np.ndarray) -> Volume:
    return Volume(array, (0.7, 0.7, 3.0), modality="CT")


def motion_args(tmp_path, data, source=PAIRED_FOLDER, **overrides) -> argparse.Namespace:
    values = dict(source=source, data=str(data), out=str(tmp_path / "run"), seed=0, val_patients=None)
    return argparse.Namespace(**(values | overrides))


def write_pairs(root, count=3, calcium=(True, True, False)):
    for i in range(count):
        gated = chest(seed=i, calcium=calcium[i % len(calcium)])
        nongated = gated.copy()
        nongated[2:4, 18:25, 12:19] = ndimage.uniform_filter(gated[2:4, 18:25, 12:19], (1, 1, 3))  # a smear
        write_volume(ct(nongated), root / "input" / f"p{i}.nrrd")
        write_volume(ct(gated), root / "target" / f"p{i}.nrrd")
    return root


class Log(Progress):
    def __init__(self):
        super().__init__()
        self.lines = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_the_split_is_by_patient_and_never_leaks(tmp_path):
    root = write_pairs(tmp_path / "pairs", count=6)
    manifest = root / "list.csv"        # six scans of three patients: a patient's scans stay on one side
    manifest.write_text("input,target,patient\n" + "".join(f"input/p{i}.nrrd,target/p{i}.nrrd,P{i // 2}\n"
                                                          for i in range(6)), encoding="utf-8")
    sides = set()
    for seed in range(3):
        data = build_user_data(motion_args(tmp_path, manifest, seed=seed, out=str(tmp_path / f"run{seed}")), Log(),
                               SMALL)
        split, patients = data.info["provenance"]["split"], data.info["patients"]
        assert not set(split["train"]) & set(split["val"]) and sorted(split["train"] + split["val"]) == ["P0", "P1",
                                                                                                        "P2"]
        counts = {side: sum(info["patches"] for name, info in patients.items() if f"P{int(name[1:]) // 2}" in ids)
                  for side, ids in split.items()}
        assert (len(data.train), len(data.val)) == (counts["train"], counts["val"])   # every patch on its side
        sides.add(tuple(split["val"]))
        assert len(data.info["provenance"]["manifest_sha256"]) == 64
    assert len(sides) > 1                                    # the seed draws the validation patient
    manifest.write_text("input,target,patient\ninput/p0.nrrd,target/p0.nrrd,A\ninput/p1.nrrd,target/p1.nrrd,A\n",
                        encoding="utf-8")
    with pytest.raises(ValueError, match="needs at least 2 patients"):
        build_user_data(motion_args(tmp_path, manifest, out=str(tmp_path / "one")), Log(), SMALL)


def test_calcium_patches_come_from_the_region_finder_with_a_logged_fallback(tmp_path):
    root = write_pairs(tmp_path / "pairs")
    log = Log()
    data = build_user_data(motion_args(tmp_path, root), log, SMALL)
    patients = data.info["patients"]
    assert patients["p0"]["calcium_patches"] > 0 and patients["p1"]["calcium_patches"] > 0
    assert patients["p2"]["calcium_patches"] == 0 and patients["p2"]["patches"] == SMALL.free_case_patches
    assert {info["searched"] for info in patients.values()} == {"body"}   # 34 mm of chest: no heart to find
    assert any("p2: no calcium found; its 4 patches are random places of the body" in line for line in log.lines)
    assert any("the heart was not found" in line for line in log.lines)
    with np.load(tmp_path / "run" / "data" / "pair_0000.npz") as item:  # centred on the calcium (rows 20-22)
        centres = item["position"][item["calcium"]]
        assert np.all(np.abs(centres[:, 1] - 21) <= SMALL.jitter + 1) and item["corrupted"].dtype == np.int16
    calcium, heart, where = candidates(ct(chest()))
    assert where == "body" and calcium[2:4, 20:23, 14:17].all() and calcium.sum() == 18 and heart.any()


def test_bad_pairs_are_refused_with_the_reason(tmp_path):
    root = write_pairs(tmp_path / "pairs")
    target = read_volume(root / "target" / "p1.nrrd")
    write_volume(target.with_array(np.roll(target.array, 3, axis=2)), root / "target" / "p1.nrrd")
    with pytest.raises(ValueError, match=r"pair 'p1': input and target are not aligned: .* shifted by \(0, 3\)"):
        build_user_data(motion_args(tmp_path, root), Log(), SMALL)

    write_volume(Volume(chest()[:, :40], (0.7, 0.7, 3.0), modality="CT"), root / "target" / "p1.nrrd")
    with pytest.raises(ValueError, match="pair 'p1': input and target are on different grids: shape"):
        build_user_data(motion_args(tmp_path, root, out=str(tmp_path / "b")), Log(), SMALL)

    write_volume(Volume(chest(seed=1) + 1024.0, (0.7, 0.7, 3.0)), root / "target" / "p1.nrrd")   # no intercept
    with pytest.raises(ValueError, match=r"p1 \(target\)' does not look like CT in Hounsfield units"):
        build_user_data(motion_args(tmp_path, root, out=str(tmp_path / "c")), Log(), SMALL)

    write_volume(ct(chest()), root / "target" / "p1.nrrd")
    with pytest.raises(ValueError, match="'p0' has slices of 48×48 pixels, smaller than the 80-pixel"):
        build_user_data(motion_args(tmp_path, root, out=str(tmp_path / "d")), Log())
    with pytest.raises(ValueError, match="--source paired-folder needs --data"):
        build_user_data(argparse.Namespace(**{**vars(motion_args(tmp_path, "")), "data": None}), Log(), SMALL)


@pytest.fixture(scope="module")
def gated():
    """Two gated phantom CTs (96² × 12, 5 mm slices) with calcium in the heart."""
    return [make_case(3, i, PHANTOM).static for i in range(2)]


def test_clean_pairs_are_reproducible_and_differ_only_near_the_moving_calcium(gated, tmp_path):
    volume = gated[0]
    calcium, _, _ = candidates(volume)
    assert calcium.any()
    first, static, facts = simulate_pair(volume, calcium, 0, 1)
    again, static_again, _ = simulate_pair(volume, calcium, 0, 1)
    np.testing.assert_array_equal(first.array, again.array)
    np.testing.assert_array_equal(static.array, static_again.array)
    assert facts["profile"] == motion_draw(0, 1)["profile"] and facts["views"] == motion_draw(0, 1)["views"]
    assert motion_draw(0, 1) != motion_draw(1, 1) and motion_draw(0, 1) != motion_draw(0, 2)

    difference = np.abs(first.array - volume.array)
    still = [z for z in range(volume.shape[0]) if z not in facts["slices_with_motion"]]
    assert all(difference[z].max() == 0 for z in still)     # slices the calcium never reaches: the input itself
    reach = [math.ceil(MAX_MOTION_MM / s) for s in volume.spacing[::-1]]          # z, y, x voxels
    near = ndimage.binary_dilation(calcium, np.ones((3, 3, 3), bool))
    near = ndimage.maximum_filter(near, size=tuple(2 * r + 1 for r in reach))
    assert difference[near].max() > 50                     # the calcium moved
    assert np.median(difference[~near]) < 1.0 and np.percentile(difference[~near], 99) < 0.1 * difference[near].max()
    # what remains far away is the sparse-view streaks of the moving calcium, rare and faint
    assert np.percentile(np.abs(first.array - static.array)[~near], 99) < 0.1 * difference[near].max()

    for i, g in enumerate(gated):
        write_volume(g, tmp_path / "clean" / f"g{i}.nrrd")
    runs = []
    for name in ("a", "b"):
        data = build_user_data(motion_args(tmp_path, tmp_path / "clean", CLEAN_FOLDER, out=str(tmp_path / name)),
                               Log())
        runs.append(cache.read_item(tmp_path / name / "data" / "clean_0001.npz", "corrupted", "static"))
        assert data.info["patients"]["g1"]["profile"] == motion_draw(0, 1)["profile"]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)                  # the same command makes the same pairs
    assert not np.array_equal(runs[0][0][:, 1:2], runs[0][1])   # and they are pairs: motion in the input


def test_from_card_keeps_the_parents_schedule_and_the_score_ranks_models(gated, tmp_path):
    from meddiffusion.catalog import get_model
    from meddiffusion.nets.prodm import PRODM_CONFIGS, ProDMUNet
    from meddiffusion.tasks.motion.recipe import from_card, score

    args = argparse.Namespace(objective="bridge", timesteps=1000, seed=0, config="tiny", calcium_weight=None,
                              calcium_warmup=None, steps=100, focus=None)
    net = from_card(args, get_model("motion-prodm-small"))
    assert args.start_architecture["kwargs"]["channels"] == [16, 32, 64] and net.training
    with pytest.raises(ValueError, match="trained with the bridge objective, not --objective regression"):
        from_card(argparse.Namespace(**{**vars(args), "objective": "regression"}), get_model("motion-prodm-small"))
    with pytest.raises(ValueError, match="T=1000 bridge timesteps, not --timesteps 50"):
        from_card(argparse.Namespace(**{**vars(args), "timesteps": 50}), get_model("motion-prodm-small"))

    for i, g in enumerate(gated):
        write_volume(g, tmp_path / "clean" / f"g{i}.nrrd")
    data = build_user_data(motion_args(tmp_path, tmp_path / "clean", CLEAN_FOLDER), Log())
    torch.manual_seed(0)
    identity = ProDMUNet(3, **PRODM_CONFIGS["tiny"])          # its output starts at zero: x0_hat is the input
    same = score(args, identity, data, "cpu")
    assert same.metric == "calcium_hu_mae" and not same.higher_is_better
    assert same.values["calcium_hu_mae"] == pytest.approx(same.values["input_calcium_hu_mae"], abs=0.01)
    assert same.values["input_calcium_hu_mae"] > 1                     # the validation patches hold motion
    noisy = copy.deepcopy(identity)
    for p in noisy.parameters():                                       # a network that changes the image
        torch.nn.init.normal_(p, 0, 0.05)
    worse = score(args, noisy, data, "cpu")
    assert same.at_least(worse) and not worse.at_least(same)
    assert score(args, identity, data, "cpu").values == same.values   # seeded: the same figures again
