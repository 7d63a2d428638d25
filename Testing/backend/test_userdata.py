"""The user's own training data: folders and manifests, pair checks, the by-patient split, the gate's rule,
and the self-supervised low-dose pairs of the LDCT task. Small synthetic volumes; no training here
(``Testing/cli/test_train_userdata_cli.py`` trains through the command)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from meddiffusion.io import Volume, write_volume
from meddiffusion.progress import Progress
from meddiffusion.training import userdata
from meddiffusion.training.finetune import gate_words
from meddiffusion.training.recipe import CLEAN_FOLDER, LOWDOSE_FOLDER, PAIRED_FOLDER, Score


def body(shape=(4, 48, 48), seed=0, shift=(0, 0)) -> np.ndarray:
    """A CT-like volume in HU: an air background, a soft-tissue ellipse with a bone disk and a lung, noise."""
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(float)
    yy, xx = yy - h / 2 - shift[0], xx - w / 2 - shift[1]
    image = np.full((h, w), -1000.0)
    image[(yy / (0.4 * h)) ** 2 + (xx / (0.45 * w)) ** 2 < 1] = 40.0
    image[(yy + 0.1 * h) ** 2 + (xx - 0.2 * w) ** 2 < (0.1 * w) ** 2] = -850.0
    image[(yy - 0.15 * h) ** 2 + (xx + 0.15 * w) ** 2 < (0.06 * w) ** 2] = 900.0
    noise = np.random.default_rng(seed).normal(0, 20, shape)
    return (image[None] + noise).astype(np.float32)


def ct(array, spacing=(1.0, 1.0, 2.0)) -> Volume:
    return Volume(array, spacing, modality="CT")


def write_pairs(root, names=("a", "b", "c")):
    for i, name in enumerate(names):
        write_volume(ct(body(seed=i)), root / "input" / f"{name}.nrrd")
        write_volume(ct(body(seed=10 + i)), root / "target" / f"{name}.nii.gz")
    return root


def test_paired_folder_and_manifest_are_read_with_patients(tmp_path):
    root = write_pairs(tmp_path / "pairs")
    entries = userdata.list_entries(root, PAIRED_FOLDER)
    assert [(e.name, e.patient, e.input.name, e.target.name) for e in entries] == \
        [(n, n, f"{n}.nrrd", f"{n}.nii.gz") for n in "abc"]
    manifest = tmp_path / "pairs" / "list.csv"
    manifest.write_text("input,target,patient\ninput/a.nrrd,target/a.nii.gz,P1\n"
                        f"{root / 'input/b.nrrd'},target/b.nii.gz,P1\ninput/c.nrrd,target/c.nii.gz,\n")
    entries = userdata.list_entries(manifest, PAIRED_FOLDER)
    assert [e.patient for e in entries] == ["P1", "P1", "c"] and entries[1].input == root / "input/b.nrrd"
    write_volume(ct(body()), root / "loose.nrrd")
    assert [e.name for e in userdata.list_entries(root / "input", LOWDOSE_FOLDER)] == ["a", "b", "c"]
    clean = userdata.list_entries(root / "target", CLEAN_FOLDER)
    assert clean[0].input is None and clean[0].target.name == "a.nii.gz"

    (root / "target" / "b.nii.gz").unlink()
    with pytest.raises(ValueError, match="without a partner in .*: b; every input/ volume needs a target/"):
        userdata.list_entries(root, PAIRED_FOLDER)
    (root / "target").rename(root / "targets")
    with pytest.raises(ValueError, match="lacks target/ \\(or pass a CSV manifest"):
        userdata.list_entries(root, PAIRED_FOLDER)
    manifest.write_text("low,high\nx,y\n")
    with pytest.raises(ValueError, match="lacks the column\\(s\\) input, target"):
        userdata.list_entries(manifest, PAIRED_FOLDER)
    manifest.write_text("input,target\ninput/a.nrrd,target/missing.nrrd\n")
    with pytest.raises(ValueError, match="line 2: target 'target/missing.nrrd' does not exist"):
        userdata.list_entries(manifest, PAIRED_FOLDER)


def test_the_split_is_by_patient_seeded_and_never_leaks():
    patients = [f"p{i // 3}" for i in range(30)]          # 10 patients, 3 volumes each
    for seed in range(20):
        for val in (None, 0.3, 1, 4):
            train, val_ids = userdata.split_patients(patients, val, seed)
            assert not set(train) & set(val_ids) and sorted(train + val_ids) == sorted(set(patients))
            assert len(val_ids) == {None: 2, 0.3: 3, 1: 1, 4: 4}[val]
    assert userdata.split_patients(patients, 2, 5) == userdata.split_patients(patients, 2, 5)
    assert len({tuple(userdata.split_patients(patients, 2, s)[1]) for s in range(10)}) > 1
    with pytest.raises(ValueError, match="needs at least 2 patients, got 1 \\(p0\\)"):
        userdata.split_patients(["p0", "p0"], None, 0)
    with pytest.raises(ValueError, match="leaves no training patient"):
        userdata.split_patients(patients, 10, 0)
    with pytest.raises(ValueError, match="a count >= 1 or a fraction"):
        userdata.split_patients(patients, 1.5, 0)


def test_pair_checks_refuse_another_grid_a_shift_and_an_mr_target():
    low, normal = ct(body(seed=1)), ct(body(seed=2))
    assert userdata.check_pair(low, normal, "ok", "ct") > userdata.MIN_CORRELATION
    with pytest.raises(ValueError, match="pair 'g': input and target are on different grids: spacing"):
        userdata.check_pair(low, ct(normal.array, spacing=(1.2, 1.2, 2.0)), "g", "ct")
    moved = Volume(normal.array, normal.spacing, origin=(5.0, 0.0, 0.0), modality="CT")
    with pytest.raises(ValueError, match="different grids: origin"):
        userdata.check_pair(low, moved, "o", "ct")
    with pytest.raises(ValueError, match="different grids: shape"):
        userdata.check_pair(low, ct(normal.array[:3]), "s", "ct")
    shifted = ct(body(seed=2, shift=(0, 2)))
    with pytest.raises(ValueError, match=r"pair 'm': input and target are not aligned: .* shifted by \(0, 2\) voxels"):
        userdata.check_pair(low, shifted, "m", "ct")
    mr_like = Volume(np.abs(normal.array + 1000.0) / 4, normal.spacing)
    with pytest.raises(ValueError, match="'r \\(target\\)' does not look like CT in Hounsfield units"):
        userdata.check_pair(low, mr_like, "r", "ct")


def test_file_and_manifest_hashes_follow_the_contents(tmp_path):
    root = write_pairs(tmp_path / "pairs", names=("a", "b"))
    entries = userdata.list_entries(root, PAIRED_FOLDER)
    hashes = {p: userdata.file_sha256(p) for e in entries for p in e.files}
    first = userdata.manifest_hash(entries, hashes)
    assert first == userdata.manifest_hash(entries[::-1], hashes)
    write_volume(ct(body(seed=99)), root / "target" / "b.nii.gz")
    hashes = {p: userdata.file_sha256(p) for e in entries for p in e.files}
    assert userdata.manifest_hash(entries, hashes) != first
    (root / "dicom").mkdir()
    (root / "dicom" / "1.dcm").write_bytes(b"x")
    assert userdata.file_sha256(root / "dicom") != userdata.file_sha256(root / "dicom" / "1.dcm")


def test_the_gate_rule_and_its_words():
    better, worse = Score({"psnr": 31.0}, "psnr"), Score({"psnr": 30.0}, "psnr")
    assert better.at_least(worse) and better.at_least(better) and not worse.at_least(better)
    assert Score({"rmse": 5.0}, "rmse", False).at_least(Score({"rmse": 6.0}, "rmse", False))
    result = {"metric": "psnr", "model": {"psnr": 30.0}, "parent": {"psnr": 31.0}, "passed": False}
    assert "worse: not registered; pass --register-anyway" in gate_words(result, True, False)
    assert "registered anyway" in gate_words(result, True, True)
    assert gate_words({**result, "passed": True}, True, False).endswith("(at least as good)")
    proxy = {**result, "conclusive": False}
    assert "cannot vouch for the model; not registered: pass --register-anyway" in gate_words(proxy, True, False)


def ldct_args(tmp_path, data, source, **changes):
    values = dict(data=str(data), source=source, val_patients=None, seed=0, dose=0.25, out=str(tmp_path / "run"),
                  crop=32, timesteps=10, config="tiny", cpu_steps=None)
    return argparse.Namespace(**{**values, **changes})


def test_lowdose_volumes_make_neighbour_pairs_whose_target_the_network_never_sees(tmp_path):
    from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
    from meddiffusion.tasks.ldct.finetune import build_user_data, make_self_supervised_loss

    folder = tmp_path / "low"
    for i in range(3):
        write_volume(ct(body((5, 48, 48), seed=i)), folder / f"v{i}.nrrd")
    data = build_user_data(ldct_args(tmp_path, folder, LOWDOSE_FOLDER, val_patients=1), Progress())
    assert len(data.train) == 2 * 3 and len(data.val) == 3          # slices 1..3 of 5 are centres
    ld = data.train.slabs[0][1].astype(np.float32)
    item = data.train[0]                                            # centre 1: context 1, 1, 3
    assert torch.equal(item["ld"], torch.from_numpy(ld[[1, 1, 3]]))
    assert torch.allclose(item["nd"][0], torch.from_numpy((ld[0] + ld[2]) / 2))
    assert torch.equal(data.train[1]["ld"], torch.from_numpy(ld[[0, 2, 4]]))

    seen = []

    def model(x, t, emm):
        seen.append(x.detach().clone())
        return x[:, 1:2] * (1 + 0 * emm.sum()) if emm is not None else x[:, 1:2] * 1.0

    loss_fn = make_self_supervised_loss(MeanPreservingDiffusion(10), 32)
    batch = {k: torch.stack([data.train[i][k] for i in range(2)]) for k in ("ld", "nd", "box")}
    loss_fn(model, batch, torch.Generator().manual_seed(3))
    inputs = [x for x in seen]
    seen.clear()
    changed = {**batch, "nd": batch["nd"] + 200.0}                 # another target noise draw
    loss_fn(model, changed, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(inputs, seen))     # the inputs never depend on the target


def test_a_patient_column_keeps_a_patients_volumes_on_one_side(tmp_path):
    from meddiffusion.tasks.ldct.finetune import build_user_data

    root = write_pairs(tmp_path / "pairs", names=("a", "b", "c", "d"))
    manifest = root / "m.csv"
    manifest.write_text("input,target,patient\n" + "".join(f"input/{n}.nrrd,target/{n}.nii.gz,{p}\n"
                                                           for n, p in zip("abcd", ("X", "Y", "X", "Z"))))
    for seed in range(4):
        data = build_user_data(ldct_args(tmp_path, manifest, PAIRED_FOLDER, seed=seed, val_patients=1,
                                         out=str(tmp_path / f"run{seed}")), Progress())
        split = data.info["provenance"]["split"]
        assert sorted(split["train"] + split["val"]) == ["X", "Y", "Z"] and len(split["val"]) == 1
        assert len(data.val) == (8 if split["val"] == ["X"] else 4)     # both of X's volumes on one side
