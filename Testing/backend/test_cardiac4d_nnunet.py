"""cardiac4d's nnU-Net v2 export: layout, dataset.json, NIfTI geometry and labels, CSV, refusals."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from meddiffusion.io import Volume, read_volume
from meddiffusion.tasks.cardiac4d.nnunet import read_dataset_json, write_nnunet_dataset

SPACING = (1.5, 1.5, 10.0)
ORIGIN = (-20.0, 15.5, 3.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)      # rotated, so a lost direction shows
FRAMES, SLICES, SIZE = 5, 4, 24
ES_FRAME = 2


def cine_labels(frames=FRAMES):
    """(F, S, H, W) labels: an LV disc shrinking to ES_FRAME and back, a myocardial ring, an RV beside it."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d = np.hypot(yy - 12, xx - 10)
    labels = np.zeros((frames, SLICES, SIZE, SIZE), np.uint8)
    for f in range(frames):
        r = 6.0 - 2.0 * (1 - abs(f - ES_FRAME) / ES_FRAME) if f <= 2 * ES_FRAME else 6.0
        for s in range(1, SLICES):
            labels[f, s][(np.abs(yy - 12) < 5) & (xx > 16)] = 1
            labels[f, s][d <= r + 2.5] = 2
            labels[f, s][d <= r] = 3
    return labels


def make_case(name, seed, frames=FRAMES, values=None):
    rng = np.random.default_rng(seed)
    labels = cine_labels(frames)
    images = rng.uniform(-1, 1, labels.shape).astype(np.float32)
    geometry = dict(spacing=SPACING, origin=ORIGIN, direction=DIRECTION)
    return {"name": name,
            "images": [Volume(images[f], modality="MR", **geometry) for f in range(frames)],
            "labels": [Volume(labels[f].astype(np.float32), **geometry) for f in range(frames)],
            "values": values if values is not None else {"diagnosis": "NOR", "edv_ml": 140.0, "ef_percent": 60.0}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "Dataset501_Cardiac4DSynth"
    cases = [make_case("cine000", 0, values={"diagnosis": "NOR", "edv_ml": 140.0, "measured_edv_ml": 138.2}),
             SimpleNamespace(**make_case("cine001", 1, values={"diagnosis": "DCM", "edv_ml": 230.0,
                                                               "valid": True, "attempts": 2}))]
    return write_nnunet_dataset(folder, iter(cases)), cases


def test_layout_has_one_case_per_frame(dataset):
    folder, _ = dataset
    assert sorted(p.name for p in folder.iterdir()) == ["cases.csv", "dataset.json", "imagesTr", "labelsTr"]
    images = sorted(p.name for p in (folder / "imagesTr").iterdir())
    labels = sorted(p.name for p in (folder / "labelsTr").iterdir())
    assert images == [f"cine00{c}_{f:02d}_0000.nii.gz" for c in range(2) for f in range(FRAMES)]
    assert labels == [f"cine00{c}_{f:02d}.nii.gz" for c in range(2) for f in range(FRAMES)]


def test_dataset_json_has_nnunet_v2_keys(dataset):
    folder, _ = dataset
    meta = read_dataset_json(folder)
    assert meta == json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "cineMRI"}
    assert meta["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert meta["numTraining"] == 2 * FRAMES
    assert meta["file_ending"] == ".nii.gz"
    assert meta["name"] == "Cardiac4DSynth"
    for key in ("description", "reference", "licence"):
        assert "synthetic" in meta[key].lower()


def test_nifti_keeps_geometry_and_values(dataset):
    folder, cases = dataset
    source = cases[1]
    for f in (0, ES_FRAME, FRAMES - 1):
        image = read_volume(folder / "imagesTr" / f"cine001_{f:02d}_0000.nii.gz")
        label = read_volume(folder / "labelsTr" / f"cine001_{f:02d}.nii.gz")
        for volume in (image, label):
            assert volume.shape == (SLICES, SIZE, SIZE)
            np.testing.assert_allclose(volume.spacing, SPACING, atol=1e-5)
            np.testing.assert_allclose(volume.origin, ORIGIN, atol=1e-4)
            np.testing.assert_allclose(volume.direction, DIRECTION, atol=1e-6)
        np.testing.assert_array_equal(image.array, source.images[f].array)
        np.testing.assert_array_equal(label.array, source.labels[f].array)
        assert set(np.unique(label.array)) == {0, 1, 2, 3}


def test_labels_are_stored_as_uint8_and_images_as_float32(dataset):
    import SimpleITK as sitk

    folder, _ = dataset
    label = sitk.ReadImage(str(folder / "labelsTr" / "cine000_00.nii.gz"))
    image = sitk.ReadImage(str(folder / "imagesTr" / "cine000_00_0000.nii.gz"))
    assert label.GetPixelID() == sitk.sitkUInt8
    assert image.GetPixelID() == sitk.sitkFloat32


def test_cases_csv_unions_the_value_columns(dataset):
    folder, _ = dataset
    with open(folder / "cases.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["case", "diagnosis", "edv_ml", "measured_edv_ml", "valid", "attempts"]
    assert rows[0] == {"case": "cine000", "diagnosis": "NOR", "edv_ml": "140.0", "measured_edv_ml": "138.2",
                       "valid": "", "attempts": ""}
    assert rows[1]["case"] == "cine001" and rows[1]["valid"] == "True" and rows[1]["measured_edv_ml"] == ""


def test_ed_es_writes_the_two_phases(tmp_path):
    folder = write_nnunet_dataset(tmp_path / "edes", [make_case("p7", 3)], frames="ed-es")
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["p7_ED_0000.nii.gz", "p7_ES_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["p7_ED.nii.gz", "p7_ES.nii.gz"]
    labels = cine_labels()
    np.testing.assert_array_equal(read_volume(folder / "labelsTr" / "p7_ES.nii.gz").array, labels[ES_FRAME])
    np.testing.assert_array_equal(read_volume(folder / "labelsTr" / "p7_ED.nii.gz").array, labels[0])
    meta = read_dataset_json(folder)
    assert meta["numTraining"] == 2 and meta["frames"] == "ed-es"


def test_an_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert write_nnunet_dataset(tmp_path / "empty", [make_case("a", 0, frames=2)]) == tmp_path / "empty"


def test_refuses_a_non_empty_folder(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an empty folder"):
        write_nnunet_dataset(folder, [make_case("a", 0)])
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def shifted(case):
    moved = dict(case)
    moved["labels"] = [Volume(v.array, spacing=(1.0, 1.0, 10.0), origin=ORIGIN, direction=DIRECTION)
                       for v in case["labels"]]
    return moved


def bad_labels(case):
    broken = dict(case)
    broken["labels"] = [Volume(np.full(v.shape, 7.0, np.float32), spacing=SPACING, origin=ORIGIN,
                               direction=DIRECTION) for v in case["labels"]]
    return broken


@pytest.mark.parametrize("cases, kwargs, words", [
    ([], {}, ["no cases"]),
    ([make_case("a", 0)], {"frames": "es"}, ["frames must be one of", "all", "ed-es"]),
    ([make_case("a b", 0)], {}, ["case name 'a b'", "letters, digits"]),
    ([make_case("../x", 0)], {}, ["case name '../x'"]),
    ([make_case("a", 0), make_case("a", 1)], {}, ["'a' is used twice"]),
    ([{"name": "a", "images": [], "labels": []}], {}, ["lacks 'values'"]),
    ([dict(make_case("a", 0), labels=make_case("a", 0)["labels"][:2])], {}, ["5 image frames and 2 label frames"]),
    ([shifted(make_case("a", 0))], {}, ["frame 0", "grid", "differs from the image's"]),
    ([bad_labels(make_case("a", 0))], {}, ["labels contain 7", "0 background, 1 RV, 2 MYO, 3 LV"]),
    ([make_case("a", 0, frames=1)], {"frames": "ed-es"}, ["ED and ES are the same frame"]),
])
def test_refusals_name_the_problem(tmp_path, cases, kwargs, words):
    with pytest.raises(ValueError) as caught:
        write_nnunet_dataset(tmp_path / "out", cases, **kwargs)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_no_cases_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_nnunet_dataset(tmp_path / "out", iter([]))
    assert not (tmp_path / "out").exists()
