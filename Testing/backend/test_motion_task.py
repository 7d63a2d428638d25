"""Motion correction on whole CTs: Slicer segmentation files, the region to correct, the tiling and
paste-back (checked exactly with an oracle network), Agatston before/after, table and layers.

Most tests run on the bundled samples (256×256×40 heart-centred chest CT, gated and non-gated).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiffusion.catalog import ModelEntry, register_user_model
from meddiffusion.diffusion.bridge import BrownianBridge
from meddiffusion.io import Volume, VolumeError, read_segmentation, read_volume, write_segmentation
from meddiffusion.metrics.agatston import agatston
from meddiffusion.nets import PRODM_CONFIGS, ProDMUNet
from meddiffusion.physics.calcium import bone_mask, detect_calcium
from meddiffusion import catalog
from meddiffusion.tasks.motion import model as motion_model
from meddiffusion.tasks.motion import region as motion_region
from meddiffusion.tasks.motion import scoring as motion_scoring
from meddiffusion.tasks.motion.correct import correct_volume, count_windows
from meddiffusion.tasks.motion.model import HU_HIGH, HU_LOW, MotionModel, build_model, load_model
from meddiffusion.tasks.motion.region import Box, check_roi, find_region
from meddiffusion.tasks.motion.scoring import (TABLE_FIELDS, largest_lesion_lps, score_before_after,
                                               segmentation_layers, table_rows, write_table)

DATA = Path(catalog.__file__).resolve().parent / "data"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small networks run fastest on one thread, and a shared machine does not stall it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gated():
    return read_volume(DATA / "sample_chest_ct.nrrd", modality="CT")


@pytest.fixture(scope="module")
def nongated():
    return read_volume(DATA / "sample_nongated_chest_ct.nrrd", modality="CT")


@pytest.fixture(scope="module")
def coronaries():
    return read_volume(DATA / "sample_chest_coronaries.nrrd").array > 0


@pytest.fixture(scope="module")
def gated_region(gated):
    return find_region(gated)


def oblique_grid(shape=(4, 5, 6)) -> Volume:
    c, s = np.cos(0.4), np.sin(0.4)
    return Volume(np.zeros(shape, np.float32), (0.7, 0.9, 2.5), (-10.0, 20.0, 30.0), (c, -s, 0, s, c, 0, 0, 0, 1),
                  modality="CT")


# -- Slicer segmentation files ---------------------------------------------------------------------
def test_segmentation_round_trip_two_layers_keeps_labels_segments_and_grid(tmp_path):
    reference = oblique_grid()
    before = np.zeros(reference.shape, np.uint8)
    before[1:3, 1:3, 2:5] = 1
    before[3, 4, 5] = 2
    after = np.zeros(reference.shape, np.uint8)
    after[0:2, 2:4, 1:4] = 1
    segments = [{"name": "before L1", "layer": 0, "label": 1, "color": (1, 0, 0)},
                {"name": "before L2", "layer": 0, "label": 2, "color": (1, 0.5, 0), "tags": {"Scan": "before"}},
                {"name": "after L1", "layer": 1, "label": 1, "color": (0, 0, 1)}]
    path = write_segmentation(tmp_path / "calcium.seg.nrrd", [before, after], segments, reference)
    layers, read, grid = read_segmentation(path)
    assert len(layers) == 2
    np.testing.assert_array_equal(layers[0], before)
    np.testing.assert_array_equal(layers[1], after)
    assert [(s["name"], s["layer"], s["label"]) for s in read] == [("before L1", 0, 1), ("before L2", 0, 2),
                                                                     ("after L1", 1, 1)]
    assert read[1]["tags"] == {"Scan": "before"} and read[2]["color"] == (0.0, 0.0, 1.0)
    assert grid.shape == reference.shape
    np.testing.assert_allclose(grid.spacing, reference.spacing)
    np.testing.assert_allclose(grid.origin, reference.origin)
    np.testing.assert_allclose(grid.direction, reference.direction, atol=1e-12)
    header = path.read_bytes().split(b"\n\n")[0].decode()
    for line in ("dimension: 4", "kinds: list domain domain domain", "space: left-posterior-superior",
                 "Segmentation_MasterRepresentation:=Binary labelmap",
                 "Segmentation_ContainedRepresentationNames:=Binary labelmap|",
                 "Segmentation_ReferenceImageExtentOffset:=0 0 0", "Segment1_Layer:=0", "Segment2_Layer:=1",
                 "Segment0_Extent:=2 5 1 4 1 3", "Segment2_Extent:=1 3 2 3 0 1"):
        assert line in header
    assert "space directions: none" in header


def test_segmentation_with_one_layer_is_3d_and_reads_back(tmp_path):
    reference = oblique_grid()
    layer = np.zeros(reference.shape, np.uint16)
    layer[2, 2, 2] = 300
    path = write_segmentation(tmp_path / "one.seg.nrrd", [layer], [{"name": "big", "layer": 0, "label": 300,
                                                                     "color": (0.2, 0.2, 0.2)}], reference)
    assert b"dimension: 3" in path.read_bytes()[:200]
    layers, segments, _ = read_segmentation(path)
    np.testing.assert_array_equal(layers[0], layer)
    assert segments[0]["label"] == 300


@pytest.mark.parametrize("change, message", [
    ({"layers": "shape"}, "reference grid"),
    ({"segment": {"name": "a", "layer": 2, "label": 1, "color": (1, 0, 0)}}, "layer must be"),
    ({"segment": {"name": "a", "layer": 0, "label": 0, "color": (1, 0, 0)}}, "label must be"),
    ({"segment": {"name": "a", "layer": 0, "label": 1, "color": (2, 0, 0)}}, "color must be"),
    ({"segment": {"name": "a|b", "layer": 0, "label": 1, "color": (1, 0, 0)}}, "without '|'"),
    ({"duplicate": True}, "unique"),
])
def test_segmentation_rejects_bad_layers_and_segments(tmp_path, change, message):
    reference = oblique_grid()
    layers = [np.zeros((2, 2, 2) if change.get("layers") else reference.shape, np.uint8)]
    segments = [change.get("segment", {"name": "a", "layer": 0, "label": 1, "color": (1, 0, 0)})]
    if change.get("duplicate"):
        segments.append({"name": "a", "layer": 0, "label": 2, "color": (1, 0, 0)})
    with pytest.raises(VolumeError, match=message):
        write_segmentation(tmp_path / "x.seg.nrrd", layers, segments, reference)
    assert not list(tmp_path.iterdir())


# -- region ------------------------------------------------------------------------------------------
def test_find_region_finds_the_plaques_and_keeps_bone_out(gated, gated_region, coronaries):
    region = gated_region
    expected = detect_calcium(gated)            # the full-resolution reference detector
    assert region.source == "auto" and expected.sum() >= 5
    np.testing.assert_array_equal(region.calcium, expected)
    assert (region.calcium & ~coronaries).sum() == 0          # every voxel found is coronary plaque
    inside = np.zeros(gated.shape, bool)
    for box in region.boxes:
        inside[box.slices] = True
        assert box.shape[1] >= motion_model.PATCH_SIZE and box.shape[2] >= motion_model.PATCH_SIZE
    assert inside[region.calcium].all()
    for a in range(len(region.boxes)):                          # merged: no two boxes overlap
        assert not any(region.boxes[a].overlaps(b) for b in region.boxes[a + 1:])
    bone = bone_mask(gated)
    assert bone.sum() > 1000 and not (region.scoring & bone).any()
    assert region.scoring[region.calcium].all()
    z = np.flatnonzero(region.calcium.any(axis=(1, 2)))
    assert region.slices[0] == z.min() - motion_region.SLICE_MARGIN and region.slices[1] == z.max() + 1 + motion_region.SLICE_MARGIN


def test_bone_near_is_bone_mask_inside_the_box(gated):
    box = Box(10, 30, 100, 220, 40, 200)
    np.testing.assert_array_equal(motion_region.bone_near(gated, box), bone_mask(gated)[box.slices])


def test_roi_is_checked_and_used_as_the_region(gated):
    region = find_region(gated, roi=[100, 180, 90, 170, 20, 33])
    assert region.source == "roi" and region.boxes == [Box(20, 33, 90, 170, 100, 180)]
    assert region.boxes[0].ijk() == [100, 180, 90, 170, 20, 33]
    box = np.zeros(gated.shape, bool)
    box[20:33, 90:170, 100:180] = True
    assert not (region.scoring & ~box).any()
    np.testing.assert_array_equal(region.scoring[box], ~bone_mask(gated)[box])
    with pytest.raises(ValueError, match="outside the volume"):
        check_roi([0, 300, 0, 10, 0, 5], gated.shape)
    with pytest.raises(ValueError, match="outside the volume"):
        check_roi([-1, 10, 0, 10, 0, 5], gated.shape)
    with pytest.raises(ValueError, match="empty along K"):
        check_roi([0, 10, 0, 10, 5, 5], gated.shape)
    with pytest.raises(ValueError, match="6 numbers"):
        check_roi([0, 10, 0, 10], gated.shape)


def test_ct_without_heart_asks_for_an_roi():
    air = Volume(np.full((4, 32, 32), -1000.0, np.float32), modality="CT")
    assert find_region(air).boxes == []
    yy, xx = np.mgrid[:32, :32]
    ring = np.abs(np.hypot(yy - 15.5, xx - 15.5) - 12) < 3           # a body wall 6 mm thick, nothing inside
    shell = air.with_array(np.repeat(np.where(ring, 40.0, -1000.0)[None], 4, axis=0).astype(np.float32))
    with pytest.raises(ValueError, match="--roi I0 I1 J0 J1 K0 K1"):
        find_region(shell)


def test_a_given_heart_mask_replaces_the_automatic_one(gated, gated_region):
    half = np.zeros(gated.shape, bool)
    first = gated_region.boxes[0]
    half[first.slices] = True                      # a "heart" holding only the first calcium box
    region = find_region(gated, heart=half)
    assert len(region.boxes) == 1 and region.boxes[0].ijk() == first.ijk()
    assert not region.scoring[~half].any()
    assert find_region(gated, heart=np.zeros(gated.shape, bool)).boxes == []
    with pytest.raises(ValueError, match="heart mask has shape"):
        find_region(gated, heart=np.ones((2, 2, 2), bool))


# -- correction --------------------------------------------------------------------------------------
def oracle(x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """g = x_t − f(condition) with a pixelwise f: the bridge then returns f exactly, whatever the window."""
    return x_t - target(condition)


def target(condition):
    return (0.6 * condition[:, 1:2] + 0.3 * condition[:, 0:1] - 0.2 * condition[:, 2:3] + 0.05).clamp(-1, 1)


def expected_output(volume: Volume, boxes) -> np.ndarray:
    """The oracle's output computed directly: out = input + (f(stack) in HU − clip(input))."""
    hu = volume.array.astype(np.float64)
    out = hu.copy()
    depth = hu.shape[0]
    for box in boxes:
        for z in range(box.z0, box.z1):
            stack = np.stack([hu[max(z - 1, 0)], hu[z], hu[min(z + 1, depth - 1)]])[:, box.slices[1], box.slices[2]]
            x = (np.clip(stack, HU_LOW, HU_HIGH) - HU_LOW) / (HU_HIGH - HU_LOW) * 2 - 1
            f = np.clip(0.6 * x[1] + 0.3 * x[0] - 0.2 * x[2] + 0.05, -1, 1)
            original = hu[z][box.slices[1], box.slices[2]]
            out[z][box.slices[1], box.slices[2]] = original + ((f + 1) / 2 * (HU_HIGH - HU_LOW) + HU_LOW
                                                               - np.clip(original, HU_LOW, HU_HIGH))
    return out


def same_grid(a: Volume, b: Volume) -> bool:
    return a.shape == b.shape and a.spacing == b.spacing and a.origin == b.origin and a.direction == b.direction


@pytest.mark.parametrize("objective", ["bridge", "regression"])
def test_oracle_tiling_blending_and_paste_back_are_exact(nongated, objective):
    model = MotionModel(oracle, BrownianBridge(), objective, steps=3, eta=0.0, patch_size=32)
    # boxes: not a multiple of the patch, one at the first slice (edge context), one narrower than a patch
    region = find_region(nongated, roi=[150, 229, 130, 185, 0, 3])
    region.boxes.append(Box(37, 40, 5, 25, 200, 256))
    calls = []
    result = correct_volume(nongated, model, region=region, batch_size=5, callback=lambda d, t: calls.append((d, t)))
    corrected = result.corrected
    assert same_grid(corrected, nongated)
    np.testing.assert_allclose(corrected.array, expected_output(nongated, region.boxes), atol=2e-3)
    outside = np.ones(nongated.shape, bool)
    for box in region.boxes:
        outside[box.slices] = False
    assert np.array_equal(corrected.array[outside], nongated.array[outside])      # bit for bit
    assert result.windows == count_windows(region, 32) == calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[0][0] == 0


def test_zero_networks_leave_the_ct_unchanged(nongated):
    torch.manual_seed(0)
    net = ProDMUNet(**PRODM_CONFIGS["tiny"])
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    region = find_region(nongated)
    assert region.boxes, "the non-gated sample has calcium in the heart"
    for objective in ("bridge", "regression"):
        model = MotionModel(net, BrownianBridge(), objective, steps=2, eta=0.0, patch_size=64)
        zero = torch.zeros(1, 1, 64, 64)
        assert torch.equal(net(zero, torch.zeros(1, dtype=torch.long), torch.zeros(1, 3, 64, 64)), zero)
        corrected = correct_volume(nongated, model, region=region, seed=3).corrected
        np.testing.assert_allclose(corrected.array, nongated.array, atol=1e-3)


def test_trained_shape_network_changes_only_the_boxes_and_is_seeded(nongated):
    torch.manual_seed(1)
    model = MotionModel(ProDMUNet(**PRODM_CONFIGS["tiny"]).eval(), BrownianBridge(), "bridge", 2, 1.0, 64)
    region = find_region(nongated)
    first = correct_volume(nongated, model, region=region, steps=2, seed=5).corrected.array
    again = correct_volume(nongated, model, region=region, steps=2, seed=5).corrected.array
    other = correct_volume(nongated, model, region=region, steps=2, seed=6).corrected.array
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    inside = np.zeros(nongated.shape, bool)
    for box in region.boxes:
        inside[box.slices] = True
    assert np.array_equal(first[~inside], nongated.array[~inside]) and not np.array_equal(first, nongated.array)
    with pytest.raises(ValueError, match="num_steps"):
        correct_volume(nongated, model, region=region, steps=1001)


# -- scores, table, layers ---------------------------------------------------------------------------
def test_scores_table_and_layers_match_agatston_computed_independently(gated, nongated, gated_region, tmp_path):
    region = gated_region
    before, after = score_before_after(nongated, gated, region)    # "after" = the motion-free CT
    mask = region.scoring.astype(np.uint8)
    for result, volume in ((before, nongated), (after, gated)):
        direct = agatston(volume.array, volume.spacing, mask=mask, origin_xyz=volume.origin,
                          direction=volume.direction)
        assert result.total == pytest.approx(direct.total) and result.category == direct.category
        assert result.volume_mm3 == pytest.approx(direct.volume_mm3)
        np.testing.assert_array_equal(result.label_map, direct.label_map)
        for mine, theirs in zip(result.lesions, direct.lesions, strict=True):
            assert (mine.slice_first, mine.slice_last, mine.peak_hu, mine.weight) == \
                (theirs.slice_first, theirs.slice_last, theirs.peak_hu, theirs.weight)
            assert mine.agatston == pytest.approx(theirs.agatston)
            np.testing.assert_allclose(mine.centroid_xyz_mm, theirs.centroid_xyz_mm, atol=1e-6)
            np.testing.assert_allclose(mine.centroid_zyx, theirs.centroid_zyx, atol=1e-9)
    assert after.total > before.total > 0 and len(after.lesions) == 2

    rows = table_rows(before, after)
    assert [r["scan"] for r in rows] == ["before"] * (len(before.lesions) + 1) + ["after"] * (len(after.lesions) + 1)
    totals = [r for r in rows if r["lesion"] == "total"]
    assert [t["agatston"] for t in totals] == [before.total, after.total]
    assert [t["category"] for t in totals] == [before.category, after.category] == ["minimal", "mild"]
    lesion_rows = [r for r in rows if r["scan"] == "after" and r["lesion"] != "total"]
    assert sum(r["agatston"] for r in lesion_rows) == pytest.approx(after.total)
    assert [r["first_slice"] for r in lesion_rows] == [les.slice_first for les in after.lesions]

    path = write_table(tmp_path / "agatston.csv", before, after)
    with open(path, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == TABLE_FIELDS and len(read) == len(rows)
    assert float(read[-1]["agatston"]) == pytest.approx(after.total) and read[-1]["category"] == "mild"

    layers, segments = segmentation_layers(before, after)
    seg = write_segmentation(tmp_path / "calcium.seg.nrrd", layers, segments, gated)
    read_layers, read_segments, grid = read_segmentation(seg)
    np.testing.assert_array_equal(read_layers[0], before.label_map)
    np.testing.assert_array_equal(read_layers[1], after.label_map)
    assert [s["name"] for s in read_segments] == ["before L1", "after L1", "after L2"]
    assert same_grid(grid, gated) or np.allclose(grid.origin, gated.origin)

    largest = max(before.lesions, key=lambda lesion: lesion.volume_mm3)
    assert largest_lesion_lps(before) == pytest.approx(list(largest.centroid_xyz_mm))
    assert largest_lesion_lps(score_before_after(gated, gated, np.zeros(gated.shape, bool))[0]) is None


def test_agatston_total_and_evaluate_for_benches(gated, nongated, gated_region):
    empty = np.zeros(gated.shape, bool)
    empty[0:3, 0:10, 0:10] = True
    assert motion_scoring.agatston_total(gated, empty) == 0.0
    static, moved = motion_scoring.agatston_total(gated, gated_region), motion_scoring.agatston_total(nongated, gated_region)
    report = motion_scoring.evaluate(nongated, gated, gated, gated_region)    # a perfect correction
    assert report["static"]["agatston"] == report["corrected"]["agatston"] == pytest.approx(static)
    assert report["corrupted"]["agatston"] == pytest.approx(moved)
    assert report["corrected_abs_error"] == 0 and report["corrected_category_match"]
    assert report["corrupted_abs_error"] == pytest.approx(abs(static - moved)) and static > moved > 0
    assert not report["corrupted_category_match"]                    # minimal vs mild


# -- models ------------------------------------------------------------------------------------------
def card(objective="bridge", **changes) -> dict:
    architecture = {"network": "ProDMUNet", "kwargs": {"context_slices": 3, "channels": [8, 8, 16],
                                                        "num_res_blocks": 1, "norm_num_groups": 4},
                    "objective": objective,
                    "diffusion": {"kind": "brownian_bridge", "num_timesteps": 1000, "schedule": "linear",
                                  "max_var": 1.0},
                    "sampler": {"steps": 4, "eta": 0.0}, "patch_size": 64,
                    "calcium_loss": {"lambda": 20.0, "tau_hu": 60.0}}
    architecture.update(changes)
    return architecture


def test_build_model_reads_the_card_and_rejects_others():
    model = build_model(card())
    assert model.objective == "bridge" and model.steps == 4 and model.eta == 0.0 and model.patch_size == 64
    assert isinstance(model.net, ProDMUNet) and model.bridge.num_timesteps == 1000
    assert build_model(card("regression")).check_steps(10) == 1
    with pytest.raises(ValueError, match="ProDMUNet"):
        build_model(card(network="CLEARNet"))
    with pytest.raises(ValueError, match="objective"):
        build_model(card("gan"))
    with pytest.raises(ValueError, match="multiple of 4"):
        build_model(card(patch_size=66))


def test_load_model_from_the_catalogue_and_its_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDDIFF_MODEL_DIR", str(tmp_path))
    net = ProDMUNet(**PRODM_CONFIGS["tiny"])
    entry = ModelEntry(id="tiny-motion-test", task="motion", version="1", architecture=card(),
                       normalization={"kind": "hu_window", "min_hu": -200, "max_hu": 800, "range": [-1, 1]})
    register_user_model(entry, net.state_dict())
    model = load_model("tiny-motion-test")
    assert model.id == "tiny-motion-test"
    for name, tensor in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[name], tensor)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model")
    with monkeypatch.context() as patched:
        patched.setattr(catalog, "list_models", lambda task=None: [])
        with pytest.raises(ValueError, match="meddiff train motion"):
            load_model()
    other = ModelEntry(id="wrong-task", task="ldct", version="1", architecture=card())
    register_user_model(other, net.state_dict())
    with pytest.raises(ValueError, match="not motion correction"):
        load_model("wrong-task")
