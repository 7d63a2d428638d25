"""Output paths are checked against every input and every other output before any work."""

from __future__ import annotations

import os

import numpy as np
import pytest

from meddiffusion import cli
from meddiffusion.commands.paths import check_distinct, check_output, same_file_key
from meddiffusion.io import Volume, read_volume, write_volume


def test_the_same_file_is_recognised_through_dots_symlinks_and_hard_links(tmp_path):
    original = tmp_path / "ct.nrrd"
    original.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "soft.nrrd").symlink_to(original)
    os.link(original, tmp_path / "hard.nrrd")
    keys = {same_file_key(p) for p in (original, tmp_path / "sub" / ".." / "ct.nrrd", tmp_path / "soft.nrrd",
                                       tmp_path / "hard.nrrd")}
    assert len(keys) == 1
    assert same_file_key(tmp_path / "new.nrrd") != same_file_key(original)


def test_check_distinct_names_both_sides(tmp_path):
    ct = tmp_path / "ct.nrrd"
    ct.write_bytes(b"x")
    with pytest.raises(ValueError, match="--lesions .* same file as the input CT; an output must not overwrite the input"):
        check_distinct({"CT": ct, "--seg": None}, {"-o": tmp_path / "t.csv", "--lesions": ct})
    with pytest.raises(ValueError, match="--mu .* same file as -o; an output must not overwrite another output"):
        check_distinct({}, {"-o": tmp_path / "a.nrrd", "--mu": tmp_path / "." / "a.nrrd"})
    check_distinct({"CT": ct}, {"-o": tmp_path / "b.nrrd", "--table": None})


def test_check_output_by_kind(tmp_path):
    check_output("--seg", "a.seg.nrrd", "segmentation")
    with pytest.raises(ValueError, match=r"--seg must end in \.seg\.nrrd"):
        check_output("--seg", "a.nrrd", "segmentation")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.dcm").write_bytes(b"x")
    with pytest.raises(ValueError, match="exists and is not empty"):
        check_output("-o", tmp_path / "full", "volume")
    check_output("-o", tmp_path / "new_folder", "volume")


def test_agatston_refuses_to_write_its_lesions_over_the_ct(tmp_path):
    array = np.full((2, 16, 16), -1000.0, np.float32)
    array[:, 4:12, 4:12] = 300.0
    ct = tmp_path / "ct.nrrd"
    write_volume(Volume(array, modality="CT"), ct)
    before = ct.read_bytes()
    code = cli.main(["agatston", str(ct), "-o", str(tmp_path / "t.csv"), "--lesions", str(ct), "--events", "none"])
    assert code == 2 and ct.read_bytes() == before and not (tmp_path / "t.csv").exists()
    assert read_volume(ct).array.max() == 300.0
