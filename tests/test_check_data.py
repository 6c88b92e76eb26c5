"""`check-data`: statistics of a clean dataset, every problem of a broken one named, CLI exit codes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from maskdepth.cli import main
from maskdepth.data import check_data

from data_helpers import jpeg_bytes, scene, write_dataset_zip


def test_clean_dataset_statistics(tmp_path):
    path = tmp_path / "d.zip"
    write_dataset_zip(path, num_bg=3, per_bg=2)
    report = check_data([path], progress=False)
    assert report.ok and report.problems == []
    stats = report.stats[str(path)]
    assert (stats["samples"], stats["checked"], stats["backgrounds"], stats["foregrounds"]) == (6, 6, 3, 2)
    assert stats["image_size"] == [32, 32]
    # the squares of scene k=0 and k=1 are 10x10 of 32x32 (hand-computed: 100 / 1024)
    cov = stats["mask_coverage"]
    assert cov["min"] == cov["max"] == pytest.approx(100 / 1024) and cov["empty"] == 0
    # depth: the ramp 40 + 200 y / 32 and the square at 30, over 255, JPEG within a few levels
    assert stats["depth"]["min"] == pytest.approx(30 / 255, abs=4 / 255)
    assert stats["depth"]["max"] == pytest.approx(234 / 255, abs=4 / 255)
    assert stats["depth"]["zero_fraction"] == 0
    # blue channel of the backgrounds is constant 60 + 30 b: mean (60 + 90 + 120) / 3 / 255
    assert stats["bg_mean"][2] == pytest.approx(90 / 255, abs=2 / 255)
    assert stats["bg_std"][2] == pytest.approx(np.std([60, 90, 120]) / 255, abs=2 / 255)
    # fg_bg+bg weighs the two equally, as each training sample holds one of each
    expected = (np.array(stats["fg_bg_mean"]) + np.array(stats["bg_mean"])) / 2
    np.testing.assert_allclose(stats["fg_bg+bg_mean"], expected, atol=1e-4)
    text = report.format()
    assert "OK: no problems found." in text and "mask coverage mean 9.77%" in text


def test_every_problem_is_named(tmp_path):
    path = tmp_path / "bad.zip"
    good = scene(32, 1, 1)
    write_dataset_zip(
        path,
        num_bg=3,
        per_bg=2,
        replace={
            "fg_bg/bg000_fg001.jpg": b"\xff\xd8\xff\xe0 truncated",
            "depth/bg001_fg000.jpg": jpeg_bytes(good["depth"][:, :20]),
            "mask/bg002_fg001.png": None,
        },
        extra_rows=[
            ["fg_bg/bg009_fg000.jpg", "bg/bg000.jpg", "mask/bg000_fg000.png", "depth/bg000_fg000.jpg", "bg000", "fg000"]
        ],
    )
    report = check_data([str(path)], progress=False)
    assert not report.ok
    assert len(report.problems) == 4, report.problems
    text = "\n".join(report.problems)
    assert f"{path}: fg_bg/bg000_fg001.jpg: " in text
    assert f"{path}: depth/bg001_fg000.jpg: image is 20x32 px, expected 32x32" in text
    assert "mask entry 'mask/bg002_fg001.png' (line 7" in text
    assert "fg_bg entry 'fg_bg/bg009_fg000.jpg' (line 8" in text
    # mask and depth of bg000_fg000 now appear in two samples: a note, not a problem
    assert any("appear in several samples" in note for note in report.notes)
    assert "4 problem(s):" in report.format()


def test_limit_unused_entries_and_unreadable_paths(tmp_path):
    path = tmp_path / "d.zip"
    write_dataset_zip(path, num_bg=3, per_bg=2)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("fg_bg/stray.jpg", jpeg_bytes(scene(32, 0, 0)["fg_bg"]))
    report = check_data([path], limit=2, progress=False)
    assert report.ok and report.stats[str(path)]["checked"] == 2
    report = check_data([path], progress=False)
    assert report.ok and any("1 image entries are in no sample: fg_bg/stray.jpg" in n for n in report.notes)
    report = check_data([path, tmp_path / "absent.zip"], progress=False)
    assert not report.ok and report.problems == [
        f"{tmp_path / 'absent.zip'}: dataset not found (expected a zip with manifest.csv, or a manifest.csv)"
    ]
    report = check_data([path], size=64, progress=False)
    assert not report.ok and "expected 64x64 from 64 (--size)" in report.problems[0]


def test_size_from_first_image_without_dataset_json(tmp_path):
    path = tmp_path / "d.zip"
    write_dataset_zip(path, num_bg=3, per_bg=1, dataset_json=False,
                      replace={"mask/bg002_fg000.png": jpeg_bytes(scene(24, 0, 0)["mask"])})
    report = check_data([path], progress=False)
    assert report.problems == [
        f"{path}: mask/bg002_fg000.png: image is 24x24 px, expected 32x32 from 32x32 "
        f"(the first background, {path}: bg/bg000.jpg)"
    ]


def test_cli_check_data(tmp_path, capsys, tiny_data):
    assert main(["check-data", str(tiny_data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found." in out and "mask coverage" in out
    info = json.loads(zipfile.ZipFile(tiny_data).read("dataset.json"))
    assert f"samples {info['count']} (all checked)" in out

    bad = tmp_path / "bad.zip"
    write_dataset_zip(bad, num_bg=3, per_bg=1, replace={"fg_bg/bg001_fg000.jpg": b"garbage"})
    assert main(["check-data", str(bad), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: fg_bg/bg001_fg000.jpg: not a readable image" in captured.out
    assert "Traceback" not in captured.out + captured.err

    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    assert main(["check-data", str(fake), "--quiet"]) == 1
    assert f"{fake}: not a zip archive" in capsys.readouterr().out


def test_duplicate_entry_names_are_problems(tmp_path):
    """A name written twice into one zip: only the later entry is readable, so check-data names it
    and counts it, and exits non-zero."""
    path = tmp_path / "dup.zip"
    write_dataset_zip(path, num_bg=3, per_bg=2)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as z:
        z.writestr("mask/bg000_fg000.png", b"a second mask")
        z.writestr("fg_bg/bg001_fg001.jpg", jpeg_bytes(scene(32, 1, 1)["fg_bg"]))
        z.writestr("mask/bg000_fg000.png", b"a third one")
    report = check_data([path], progress=False)
    assert not report.ok
    line = next(p for p in report.problems if "duplicate" in p)
    assert line == (f"{path}: 2 entry name(s) occur more than once (3 earlier entries hidden; only the last of "
                    "each is read): fg_bg/bg001_fg001.jpg, mask/bg000_fg000.png; re-create the zip without them")
    assert main(["check-data", str(path), "--quiet"]) == 1
