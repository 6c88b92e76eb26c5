"""maskdepth.data.localcopy: a dataset on Drive made ready on local disk (copied once, indexed once).

    pytest tests/test_localcopy.py
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from maskdepth.data import load_manifest
from maskdepth.data.localcopy import copy_once, dataset_files, find_kinds, kind_of, prepare_dataset
from maskdepth.data.manifest import build_manifest
from maskdepth.errors import DataError

from data_helpers import s15_folder


@pytest.mark.parametrize("text, kind", [
    ("bg_192", "bg"), ("bg", "bg"), ("fg_bg", "fg_bg"), ("fg-bg_192", "fg_bg"), ("mask", "mask"),
    ("masks_192", "mask"), ("fg_bg_depth_full", "depth"), ("depth", "depth"), ("s15_part1", None), ("background", None),
])
def test_kind_of_a_name(text: str, kind: str | None) -> None:
    assert kind_of(text) == kind


def test_kinds_come_from_the_zip_names_or_else_from_their_top_folders(tiny_data: Path, tmp_path: Path) -> None:
    named = s15_folder(tiny_data, tmp_path / "named")
    assert {role: p.name for role, p in find_kinds(named).items()} == {
        "bg": "bg_192.zip", "fg_bg": "fg_bg.zip", "mask": "mask.zip", "depth": "fg_bg_depth_full.zip"}
    anonymous = s15_folder(tiny_data, tmp_path / "anonymous",
                           names={"bg": "part1.zip", "fg_bg": "part2.zip", "mask": "part3.zip", "depth": "part4.zip"})
    assert {role: p.name for role, p in find_kinds(anonymous).items()} == {
        "bg": "part1.zip", "fg_bg": "part2.zip", "mask": "part3.zip", "depth": "part4.zip"}


def test_a_double_or_missing_kind_is_one_line_naming_the_zips(tiny_data: Path, tmp_path: Path) -> None:
    folder = s15_folder(tiny_data, tmp_path / "s15")
    shutil.copy(folder / "mask.zip", folder / "mask_old.zip")
    with pytest.raises(DataError, match=r"more than one zip of a kind \(mask: mask.zip and mask_old.zip\)") as err:
        find_kinds(folder)
    assert "\n" not in str(err.value)
    (folder / "mask_old.zip").unlink()
    (folder / "fg_bg_depth_full.zip").unlink()
    with pytest.raises(DataError,
                       match=r"no depth zip; .* it has bg_192.zip \(bg\), fg_bg.zip \(fg_bg\), mask.zip \(mask\)$"):
        find_kinds(folder)
    with pytest.raises(DataError, match="is not a folder"):
        find_kinds(folder / "nothing")


def test_a_folder_is_copied_and_indexed_once_and_unpaired_entries_are_listed(tiny_data: Path, tmp_path: Path) -> None:
    folder = s15_folder(tiny_data, tmp_path / "drive" / "s15")
    with zipfile.ZipFile(folder / "fg_bg.zip", "a") as z:  # a composite without mask and depth
        z.writestr("fg_bg/bg000_fg009_0_00.jpg", (folder / "bg_192.zip").read_bytes()[:10])
    lines: list[str] = []
    manifest = prepare_dataset(folder, tmp_path / "local", progress=False, log=lines.append)
    assert manifest == tmp_path / "local" / "s15" / "manifest.csv"
    assert sorted(p.name for p in manifest.parent.glob("*.zip")) == sorted(p.name for p in folder.glob("*.zip"))
    report = "\n".join(lines)
    assert "paired 60 samples" in report and "bg000_fg009_0_00.jpg" in report
    assert len(load_manifest(manifest)) == 60

    stamp = manifest.stat().st_mtime_ns
    lines.clear()
    assert prepare_dataset(folder, tmp_path / "local", progress=False, log=lines.append) == manifest
    assert manifest.stat().st_mtime_ns == stamp and lines == [f"{manifest}: indexed before, reused"]
    assert dataset_files(manifest) == [manifest, *(manifest.parent / n for n in
                                                   ("fg_bg.zip", "bg_192.zip", "mask.zip", "fg_bg_depth_full.zip"))]


def test_a_folder_with_nothing_to_pair_is_one_clear_line(tiny_data: Path, tmp_path: Path) -> None:
    folder = s15_folder(tiny_data, tmp_path / "s15")
    with zipfile.ZipFile(folder / "mask.zip", "w") as z:  # masks of other samples
        z.writestr("mask/zzz.png", b"")
    with pytest.raises(DataError, match=r"s15: no sample could be paired; index: found") as err:
        prepare_dataset(folder, tmp_path / "local", progress=False, log=lambda line: None)
    assert "\n" not in str(err.value)


def test_a_manifest_csv_is_copied_with_its_archives(tiny_data: Path, tmp_path: Path) -> None:
    folder = s15_folder(tiny_data, tmp_path / "drive" / "s15")
    build_manifest(bg=folder / "bg_192.zip", fg_bg=folder / "fg_bg.zip", mask=folder / "mask.zip",
                   depth=folder / "fg_bg_depth_full.zip", out=folder / "manifest.csv")
    copied = prepare_dataset(folder / "manifest.csv", tmp_path / "local", progress=False)
    assert copied == tmp_path / "local" / "s15" / "manifest.csv"
    assert len(load_manifest(copied)) == 60 and (copied.parent / "mask.zip").is_file()
    # The folder form with a manifest inside takes the same road.
    assert prepare_dataset(folder, tmp_path / "local2", progress=False) == tmp_path / "local2" / "s15" / "manifest.csv"
    zip_copy = prepare_dataset(tiny_data, tmp_path / "local3", progress=False)
    assert zip_copy.read_bytes() == tiny_data.read_bytes() and dataset_files(zip_copy) == [zip_copy]
    with pytest.raises(DataError, match="DATASET .*missing.zip not found"):
        prepare_dataset(tmp_path / "missing.zip", tmp_path / "local", progress=False)


def test_an_interrupted_copy_continues_and_a_stale_one_restarts(tmp_path: Path) -> None:
    src = tmp_path / "drive" / "big.zip"
    src.parent.mkdir()
    src.write_bytes(bytes(range(256)) * 1000)
    partial = tmp_path / "local" / "big.zip.partial"
    partial.parent.mkdir()
    partial.write_bytes(b"\xff" * 1000)  # what an interrupted copy left (marked, to see that it is kept)
    copy = copy_once(src, tmp_path / "local", progress=False)
    assert copy.read_bytes() == b"\xff" * 1000 + src.read_bytes()[1000:] and not partial.exists()

    copy.unlink()
    partial.write_bytes(b"\xff" * 1000)
    os.utime(partial, (1, 1))  # older than the source: from an earlier version of the file
    assert copy_once(src, tmp_path / "local", progress=False).read_bytes() == src.read_bytes()
