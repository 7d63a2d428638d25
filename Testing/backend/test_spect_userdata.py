"""The SPECT task on the user's own studies: the three layouts with the optional CT or μ-map, the pair checks
(grid, counts, AC scale, alignment, the μ-map's body), the by-patient split, the variants that need μ, the items
the simulated cache gives and the fine-tune's parent. Small synthetic studies; no training here
(``Testing/cli/test_train_spect_userdata_cli.py`` trains through the command)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiffusion.io import Volume, read_volume, write_volume
from meddiffusion.progress import Progress
from meddiffusion.tasks.spect import userdata as spect_userdata
from meddiffusion.tasks.spect.data import SpectSlices
from meddiffusion.tasks.spect.userdata import build_user_data, list_studies, study_item
from meddiffusion.training import cache

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer"))
import spect_phantom  # noqa: E402

SHAPE = (12, 32, 32)
SPACING = (6.4, 6.4, 6.4)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def torso(shape=SHAPE) -> np.ndarray:
    """The body of :func:`spect_phantom.heart_array` (the same ellipse), as a mask."""
    _, j, i = np.indices(shape, dtype=float)
    return ((i - (shape[2] - 1) / 2) / (shape[2] * 0.48)) ** 2 + ((j - (shape[1] - 1) / 2) / (shape[1] * 0.4)) ** 2 < 1


def study(seed: int = 0, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(NAC, AC) counts: the synthetic heart, and the same times a smooth gain peaking at 4 in the body's centre
    (a Chang-like correction), each with its own small noise."""
    nac = spect_phantom.heart_array(shape, noise=1.0, seed=seed)
    _, j, i = np.indices(shape, dtype=float)
    depth = np.exp(-(((i - shape[2] / 2) / (0.35 * shape[2])) ** 2 + ((j - shape[1] / 2) / (0.3 * shape[1])) ** 2))
    noise = np.random.default_rng(seed + 100).normal(0.0, 1.0, shape)
    return nac, np.clip(nac * (1 + 3 * depth) + noise, 0, None).astype(np.float32)


def spect(array, spacing=SPACING) -> Volume:
    return Volume(array, spacing, modality="NM")


def ct_array(shape=SHAPE) -> np.ndarray:
    """HU: air outside the torso, soft tissue inside."""
    return np.where(torso(shape), 40.0, -1000.0).astype(np.float32)


def write_patients(root: Path, count: int = 4, mu: dict | None = None) -> Path:
    """``root/p<i>/nac.nrrd, ac.nrrd``; ``mu`` {index: "ct" | "mumap"} adds the patient's CT or μ-map."""
    for i in range(count):
        nac, ac = study(i)
        write_volume(spect(nac), root / f"p{i}" / "nac.nrrd")
        write_volume(spect(ac), root / f"p{i}" / "ac.nrrd")
        kind = (mu or {}).get(i)
        if kind == "ct":
            write_volume(Volume(ct_array(), SPACING, modality="CT"), root / f"p{i}" / "ct.nrrd")
        elif kind == "mumap":
            mu = np.where(torso(), 0.15, 0.0).astype(np.float32)
            write_volume(Volume(mu, SPACING), root / f"p{i}" / "mumap.nrrd")
    return root


def spect_args(tmp_path, data, **changes) -> argparse.Namespace:
    values = dict(source="paired-folder", data=None if data is None else str(data), out=str(tmp_path / "run"),
                  seed=0, val_patients=None, variant="student", at_weight=0.0)
    return argparse.Namespace(**{**values, **changes})


class Log(Progress):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def build(tmp_path, data, **changes):
    return build_user_data(spect_args(tmp_path, data, **changes), Log(), 6.4, 4)


def test_patient_folders_paired_folders_and_manifests_with_optional_attenuation(tmp_path):
    root = write_patients(tmp_path / "studies", 3, {0: "ct", 2: "mumap"})
    entries = list_studies(spect_args(tmp_path, root))
    assert [(e.name, e.input.name, e.target.name, [r for r, _ in e.extras]) for e in entries] == \
        [("p0", "nac.nrrd", "ac.nrrd", ["ct"]), ("p1", "nac.nrrd", "ac.nrrd", []),
         ("p2", "nac.nrrd", "ac.nrrd", ["mumap"])]

    paired = tmp_path / "paired"
    for i in range(3):
        for role, name in (("input", "nac"), ("target", "ac")):
            write_volume(read_volume(root / f"p{i}" / f"{name}.nrrd"), paired / role / f"s{i}.nrrd")
    write_volume(read_volume(root / "p0" / "ct.nrrd"), paired / "ct" / "s0.nrrd")
    entries = list_studies(spect_args(tmp_path, paired))
    assert [e.extra("ct") is not None for e in entries] == [True, False, False]

    manifest = tmp_path / "studies.csv"
    manifest.write_text("input,target,patient,mumap\n"
                        f"{root}/p0/nac.nrrd,{root}/p0/ac.nrrd,A,\n"
                        f"{root}/p2/nac.nrrd,{root}/p2/ac.nrrd,A,{root}/p2/mumap.nrrd\n", encoding="utf-8")
    entries = list_studies(spect_args(tmp_path, manifest))
    assert [e.patient for e in entries] == ["A", "A"] and entries[1].extra("mumap") == root / "p2" / "mumap.nrrd"
    assert entries[0].extras == ()

    write_volume(spect(study()[0]), root / "p1" / "attenuation.nrrd")
    with pytest.raises(ValueError, match=r"holds 'attenuation.nrrd'; .* nac and ac \(and optionally ct or mumap\)"):
        list_studies(spect_args(tmp_path, root))
    (root / "p1" / "attenuation.nrrd").unlink()
    (root / "p1" / "ac.nrrd").unlink()
    with pytest.raises(ValueError, match="patient folder .*p1 lacks its ac volume"):
        list_studies(spect_args(tmp_path, root))
    write_volume(spect(study(1)[1]), root / "p1" / "ac.nrrd")
    write_volume(read_volume(root / "p2" / "mumap.nrrd"), root / "p2" / "ct.nrrd")
    with pytest.raises(ValueError, match="p2: both a CT and a μ-map given"):
        list_studies(spect_args(tmp_path, root))
    with pytest.raises(ValueError, match="--source paired-folder needs --data"):
        list_studies(spect_args(tmp_path, None))


def test_the_checks_refuse_a_misaligned_pair_a_ct_as_ac_mismatched_grids_and_a_swapped_pair():
    nac, ac = study(0)
    facts = spect_userdata.check_study(spect(nac), spect(ac), "p0")
    assert facts["correlation"] > 0.9 and 1 < facts["ac_ratio"] < 6 and facts["warnings"] == []

    with pytest.raises(ValueError, match=r"pair 'p0': NAC and AC are not aligned: .* shifted by \(0, 3\)"):
        spect_userdata.check_study(spect(nac), spect(np.roll(ac, 3, axis=2)), "p0")
    with pytest.raises(ValueError, match=r"'p0 \(AC\)' has negative values .* looks like CT in HU"):
        spect_userdata.check_study(spect(nac), Volume(ct_array(), SPACING), "p0")
    with pytest.raises(ValueError, match=r"'p0 \(AC\)' is a CT image; expected a PET or SPECT volume"):
        spect_userdata.check_study(spect(nac), Volume(ac, SPACING, modality="CT"), "p0")
    with pytest.raises(ValueError, match=r"NAC and AC are on different grids: spacing .*resample the AC onto the "
                                         r"NAC's grid"):
        spect_userdata.check_study(spect(nac), spect(ac, (4.8, 4.8, 6.4)), "p0")
    with pytest.raises(ValueError, match="NAC and AC are on different grids: shape"):
        spect_userdata.check_study(spect(nac), spect(ac[:, :28]), "p0")
    with pytest.raises(ValueError, match="AC's 99.9th percentile is 0.2. times the NAC's.*look swapped"):
        spect_userdata.check_study(spect(ac), spect(nac), "p0")
    with pytest.raises(ValueError, match="times the NAC's, expected 1 to 12.*looks rescaled"):
        spect_userdata.check_study(spect(nac), spect(ac * 100), "p0")
    mu_as_ac = np.where(torso(), 3 * np.percentile(nac, 99.9), 0.0).astype(np.float32)   # a μ-map in counts' scale
    with pytest.raises(ValueError, match="NAC and AC are not aligned: correlation"):
        spect_userdata.check_study(spect(nac), spect(mu_as_ac), "p0")
    with pytest.raises(ValueError, match="'p0' has 2 axial slice"):
        spect_userdata.check_study(spect(nac[:2]), spect(ac[:2]), "p0")


def test_the_split_never_puts_a_patient_on_both_sides(tmp_path):
    root = write_patients(tmp_path / "studies", 6)
    manifest = tmp_path / "studies.csv"   # rest and stress of three patients
    manifest.write_text("input,target,patient\n" + "".join(f"{root}/p{i}/nac.nrrd,{root}/p{i}/ac.nrrd,P{i // 2}\n"
                                                           for i in range(6)), encoding="utf-8")
    sides = set()
    for seed in range(4):
        data = build(tmp_path, manifest, seed=seed, out=str(tmp_path / f"run{seed}"))
        split = data.info["provenance"]["split"]
        assert not set(split["train"]) & set(split["val"]) and sorted(split["train"] + split["val"]) == ["P0", "P1",
                                                                                                        "P2"]
        names = sorted(data.info["patients"])
        of = {side: [names[i] for i in range(6) if f"P{i // 2}" in split[side]] for side in ("train", "val")}
        slices = {name: len(SpectSlices([tmp_path / f"run{seed}" / "data" / f"pair_{i:04d}.npz"]))
                  for i, name in enumerate(names)}
        assert len(data.train) == sum(slices[n] for n in of["train"]) and len(data.val) == sum(slices[n]
                                                                                               for n in of["val"])
        sides.add(tuple(split["val"]))
    assert len(sides) > 1                                    # the seed draws the validation patient
    data = build(tmp_path, manifest, val_patients=2, out=str(tmp_path / "two"))
    assert len(data.info["provenance"]["split"]["val"]) == 2
    manifest.write_text("input,target,patient\n" + "".join(f"{root}/p{i}/nac.nrrd,{root}/p{i}/ac.nrrd,A\n"
                                                           for i in range(2)), encoding="utf-8")
    with pytest.raises(ValueError, match="needs at least 2 patients"):
        build(tmp_path, manifest, out=str(tmp_path / "one"))


def test_variants_that_read_mu_need_every_patients_ct_or_mumap(tmp_path):
    root = write_patients(tmp_path / "studies", 3, {0: "ct", 2: "mumap"})
    with pytest.raises(ValueError, match=r"the teacher variant attends .* 1 of 3 studies have no CT or μ-map "
                                         r"\(p1\)"):
        build(tmp_path, root, variant="teacher")
    with pytest.raises(ValueError, match=r"attention transfer runs the teacher.*pass --at-weight 0.*\(p1\)"):
        build(tmp_path, root, variant="student", at_weight=0.1)
    data = build(tmp_path, root, variant="bridge")
    assert {name: info["mu"] for name, info in data.info["patients"].items()} == {"p0": "ct", "p1": None,
                                                                                 "p2": "mumap"}
    write_volume(Volume(ct_array(), SPACING, modality="CT"), root / "p1" / "ct.nrrd")
    data = build(tmp_path, root, variant="teacher", out=str(tmp_path / "teacher"))
    assert data.info["patients"]["p1"]["body_share"] > 0.9


def test_user_items_are_what_the_simulated_cache_holds_on_the_models_grid(tmp_path):
    nac, ac = study(0, (12, 64, 64))
    root = tmp_path / "studies"
    for i in range(2):   # 64² of 3.2 mm: the model reads 6.4 mm pixels
        write_volume(spect(nac, (3.2, 3.2, 6.4)), root / f"p{i}" / "nac.nrrd")
        write_volume(spect(ac, (3.2, 3.2, 6.4)), root / f"p{i}" / "ac.nrrd")
        write_volume(Volume(ct_array((12, 64, 64)), (3.2, 3.2, 6.4), modality="CT"), root / f"p{i}" / "ct.nrrd")
    entry = list_studies(spect_args(tmp_path, root))[0]
    arrays, info = study_item(entry, 6.4, 8)
    assert set(arrays) == {"nac", "ac", "mu", "spacing", "origin", "direction"}   # as data.make_study stores
    assert arrays["nac"].shape == arrays["mu"].shape == (12, 32, 32) and tuple(arrays["spacing"]) == (6.4, 6.4, 6.4)
    assert info["mu"] == "ct" and info["grid"] == [12, 32, 32]
    inside = torso((12, 32, 32))
    assert np.median(arrays["mu"][inside]) == pytest.approx(0.153, abs=0.01) and arrays["mu"][~inside].mean() < 0.03
    assert arrays["ac"].sum() > 2 * arrays["nac"].sum()

    data = build(tmp_path, root, variant="teacher")
    first = data.train[0]
    assert first["nac"].shape == (3, 32, 32) and first["ac"].shape == (1, 32, 32) and first["mu"].max() > -0.5
    assert float(first["nac"].min()) >= -1 and float(first["ac"].max()) <= 1
    meta, _ = cache.read_meta(tmp_path / "run" / "data" / "pair_0000.npz")
    assert meta["kind"] == "spect-user" and meta["pixel_mm"] == 6.4 and meta["roles"] == ["input", "target", "ct"]
    assert len(data.info["provenance"]["manifest_sha256"]) == 64

    shifted = read_volume(root / "p1" / "ct.nrrd")   # the CT of another position: the AC's counts outside its body
    shifted.origin = (shifted.origin[0] + 80.0, shifted.origin[1], shifted.origin[2])
    write_volume(shifted.with_array(np.where(torso((12, 64, 64)) & (np.indices((12, 64, 64))[2] > 40), 40.0,
                                             -1000.0).astype(np.float32)), root / "p1" / "ct.nrrd")
    with pytest.raises(ValueError, match="'p1': only .* of the AC's counts lie inside the body of its CT"):
        build(tmp_path, root, variant="teacher", out=str(tmp_path / "moved"))


def test_padding_lets_studies_of_other_matrices_share_a_batch(tmp_path):
    paths = []
    for i, size in enumerate((32, 40)):
        nac, ac = study(i, (12, size, size))
        arrays = {"nac": nac, "ac": ac, "mu": np.zeros_like(nac)}
        paths.append(cache.item_path(tmp_path, "pair", i))
        cache._save(paths[-1], arrays, {"index": i}, {})
    slices = SpectSlices(paths)
    assert slices.nac.shape[-2:] == (40, 40)
    small = slices.study == 0
    assert torch.all(slices.nac[small][..., 32:, :] == -1) and torch.all(slices.ac[small][..., :, 32:] == -1)


def test_a_fine_tune_keeps_its_parents_kind():
    from meddiffusion.catalog import get_model
    from meddiffusion.tasks.spect.recipe import from_card, variant_of

    assert [variant_of(get_model(i).architecture) for i in ("spect-padm-teacher-small", "spect-padm-student-small",
                                                            "spect-bbdm-small", "spect-unet-small")] == \
        ["teacher", "student", "bridge", "unet"]
    args = argparse.Namespace(variant="bridge", timesteps=500)
    with pytest.raises(ValueError, match="'spect-padm-student-small' is a student model, not --variant bridge; .* "
                                         "pass --variant student"):
        from_card(args, get_model("spect-padm-student-small"))
    with pytest.raises(ValueError, match="T=500 bridge timesteps, not --timesteps 50"):
        from_card(argparse.Namespace(variant="unet", timesteps=50), get_model("spect-unet-small"))
