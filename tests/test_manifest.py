"""Pairing: make-data manifests, `maskdepth index` for the original layout, manifests naming archives."""

from __future__ import annotations

import csv
import zipfile

import numpy as np
import pytest

from maskdepth.cli import main
from maskdepth.data import build_manifest, open_dataset
from maskdepth.data.manifest import load_manifest
from maskdepth.errors import ConfigError, DataError

from data_helpers import jpeg_bytes, scene, write_dataset_zip, write_original_layout


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_in_zip_becomes_integer_arrays(tmp_path):
    rows = write_dataset_zip(tmp_path / "d.zip", num_bg=3, per_bg=2)
    manifest = load_manifest(tmp_path / "d.zip")
    assert len(manifest) == 6 and manifest.missing_count == 0
    assert manifest.entries.dtype == np.int32 and manifest.entries.shape == (4, 6)
    assert manifest.bg_ids == ["bg000", "bg001", "bg002"] and manifest.bg_code.tolist() == [0, 0, 1, 1, 2, 2]
    for row, expected in enumerate(rows):
        names = [manifest.entry_name(k, row) for k in range(4)]
        assert names == [expected[r] for r in ("fg_bg", "bg", "mask", "depth")]
    assert manifest.info["size"] == 32
    assert load_manifest(tmp_path / "d.zip") is manifest  # shared while in use


def test_original_layout_pairs_by_stem_and_names_every_unpaired_entry(tmp_path):
    paths = write_original_layout(
        tmp_path / "zips",
        num_bg=3,
        per_bg=2,
        drop=("fg_bg_depth_full/bg192_002_fg001_pos01.jpg",),  # one depth map missing
        add={
            ("mask", "mask/bg192_009_fg001_pos01.jpg"): jpeg_bytes(scene(32, 0, 0)["mask"]),  # no fg_bg for it
            ("bg", "bg_192/bg192_004.jpg"): jpeg_bytes(scene(32, 4, 0)["bg"]),  # a background nobody uses
            ("fg_bg", "fg_bg/other_fg001.jpg"): jpeg_bytes(scene(32, 0, 1)["fg_bg"]),  # key 'other' has no bg
            ("fg_bg", "fg_bg/readme.txt"): b"not an image",
        },
    )
    out = tmp_path / "out" / "manifest.csv"
    report = build_manifest(bg=paths["bg"], fg_bg=paths["fg_bg"], mask=paths["mask"], depth=paths["depth"], out=out)
    assert not report.ok
    assert report.rows == 5  # 3 x 2 minus the one without depth
    assert report.ignored == 1
    assert len(report.unpaired) == 4
    text = "\n".join(report.unpaired)
    assert "fg_bg/bg192_002_fg001_pos01.jpg: no depth with stem 'bg192_002_fg001_pos01'" in text
    assert "mask/bg192_009_fg001_pos01.jpg: no fg_bg with stem" in text
    assert "bg_192/bg192_004.jpg: no fg_bg refers to this background" in text
    assert "fg_bg/other_fg001.jpg: no mask with stem" in text and "no background whose key is 'other'" in text
    formatted = report.format()
    assert "4 entries could not be paired" in formatted and all(line in formatted for line in report.unpaired)

    rows = _read_csv(out)
    assert len(rows) == 5
    first = rows[0]
    assert first["fg_bg"] == "fg_bg/bg192_001_fg001_pos01.jpg"
    assert first["bg"] == "bg_192/bg192_001.jpg"
    assert first["mask"] == "mask/bg192_001_fg001_pos01.jpg"
    assert first["depth"] == "fg_bg_depth_full/bg192_001_fg001_pos01.jpg"
    assert (first["bg_id"], first["fg_id"]) == ("bg192_001", "fg001")
    assert first["fg_bg_archive"] == "../zips/fg_bg.zip"  # relative to the manifest's folder


def test_manifest_file_opens_as_a_dataset_from_any_working_directory(tmp_path, monkeypatch):
    paths = write_original_layout(tmp_path / "zips", num_bg=3, per_bg=2)
    out = tmp_path / "meta" / "manifest.csv"
    report = build_manifest(bg=paths["bg"], fg_bg=paths["fg_bg"], mask=paths["mask"], depth=paths["depth"], out=out)
    assert report.ok and report.rows == 6
    monkeypatch.chdir(tmp_path / "zips")
    ds = open_dataset(out, size=16, split="all")
    assert len(ds) == 6
    item = ds[0]
    # JPEG masks come back binary: thresholded at 128
    assert set(np.unique(item["mask"].numpy())) <= {0.0, 1.0} and item["mask"].sum() > 0
    assert item["bg_id"] == "bg192_001" and item["name"] == "bg192_001_fg001_pos01"
    assert sorted(ds.splits["train"] + ds.splits["val"] + ds.splits["test"]) == ["bg192_001", "bg192_002", "bg192_003"]


def test_custom_bg_pattern_and_bad_patterns(tmp_path):
    paths = write_original_layout(tmp_path, num_bg=2, per_bg=1)
    kwargs = dict(bg=paths["bg"], fg_bg=paths["fg_bg"], mask=paths["mask"], depth=paths["depth"],
                  out=tmp_path / "m.csv")
    report = build_manifest(**kwargs, bg_pattern=r"(bg192_\d+)")
    assert report.ok and report.rows == 2
    assert {r["fg_id"] for r in _read_csv(tmp_path / "m.csv")} == {""}  # no second group
    report = build_manifest(**kwargs, bg_pattern=r"^(bg\d+)_")  # one key 'bg192' for both backgrounds
    assert not report.ok and report.out is None and report.rows == 0
    assert any(line.startswith(f"{paths['bg']}: bg_192/bg192_001.jpg: 2 backgrounds have the key 'bg192'")
               for line in report.unpaired)
    assert "no manifest written" in report.format()
    with pytest.raises(ConfigError, match="not a valid regex"):
        build_manifest(**kwargs, bg_pattern="(unclosed")
    with pytest.raises(ConfigError, match="needs a group"):
        build_manifest(**kwargs, bg_pattern="bg")


def test_one_zip_with_several_folders(tmp_path):
    paths = write_original_layout(tmp_path / "parts", num_bg=3, per_bg=1)
    single = tmp_path / "all.zip"
    with zipfile.ZipFile(single, "w") as out:
        for path in paths.values():
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    out.writestr(name, z.read(name))
    report = build_manifest(
        bg=f"{single}::bg_192/", fg_bg=f"{single}::fg_bg", mask=f"{single}::mask/",
        depth=f"{single}::fg_bg_depth_full/",
        out=tmp_path / "m.csv",
    )
    assert report.ok and report.rows == 3
    with pytest.raises(DataError, match="given for both --fg-bg and --mask"):
        build_manifest(bg=f"{single}::bg_192/", fg_bg=single, mask=single, depth=single, out=tmp_path / "m2.csv")


def test_bad_manifests_are_named(tmp_path):
    write_original_layout(tmp_path, num_bg=1, per_bg=1)
    no_archives = tmp_path / "plain.csv"
    no_archives.write_text("fg_bg,bg,mask,depth\nfg_bg/a.jpg,bg_192/a.jpg,mask/a.jpg,d/a.jpg\n")
    with pytest.raises(DataError, match="plain.csv: a manifest outside a zip must name its archives"):
        load_manifest(no_archives)
    no_column = tmp_path / "cols.csv"
    no_column.write_text("fg_bg,bg,depth\n")
    with pytest.raises(DataError, match="cols.csv: manifest has no column mask"):
        load_manifest(no_column)
    lost = tmp_path / "lost.csv"
    lost.write_text(
        "fg_bg,bg,mask,depth,fg_bg_archive,bg_archive,mask_archive,depth_archive\n"
        "fg_bg/a.jpg,bg_192/a.jpg,mask/a.jpg,d/a.jpg,gone.zip,bg.zip,mask.zip,depth.zip\n"
    )
    with pytest.raises(DataError, match=r"lost.csv: line 2: archive 'gone.zip' not found"):
        load_manifest(lost)
    short = tmp_path / "short.csv"
    short.write_text("fg_bg,bg,mask,depth,fg_bg_archive,bg_archive,mask_archive,depth_archive\nfg_bg/a.jpg,bg.jpg\n")
    with pytest.raises(DataError, match="short.csv: line 2: 2 fields, expected 8"):
        load_manifest(short)


def test_manifest_csv_dialect_quotes_crlf_bom_blank_lines(tmp_path):
    """The csv module reads what spreadsheets write: a BOM, CRLF line ends, quoted names holding
    commas, blank lines; line numbers in messages count physical lines."""
    paths = write_original_layout(tmp_path, num_bg=2, per_bg=1)
    with zipfile.ZipFile(paths["fg_bg"], "a") as z:
        z.writestr("fg_bg/a,b.jpg", jpeg_bytes(scene(32, 1, 1)["fg_bg"]))
    header = "fg_bg,bg,mask,depth,bg_id,fg_id,fg_bg_archive,bg_archive,mask_archive,depth_archive"
    tail = "fg_bg.zip,bg.zip,mask.zip,depth.zip"
    rows = [
        f"fg_bg/bg192_001_fg001_pos01.jpg,bg_192/bg192_001.jpg,mask/bg192_001_fg001_pos01.jpg,"
        f"fg_bg_depth_full/bg192_001_fg001_pos01.jpg,bg192_001,fg001,{tail}",
        "",
        f'"fg_bg/a,b.jpg",bg_192/bg192_002.jpg,mask/bg192_002_fg001_pos01.jpg,'
        f'fg_bg_depth_full/bg192_002_fg001_pos01.jpg,"bg192_002","",{tail}',
        f"fg_bg/none.jpg,bg_192/bg192_002.jpg,mask/bg192_002_fg001_pos01.jpg,"
        f"fg_bg_depth_full/bg192_002_fg001_pos01.jpg,bg192_002,x,{tail}",
    ]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([header, *rows, ""]).encode())
    manifest = load_manifest(path)
    assert len(manifest) == 3 and manifest.bg_ids == ["bg192_001", "bg192_002"]
    assert manifest.entry_name(0, 1) == "fg_bg/a,b.jpg" and manifest.fg_ids == ["", "fg001", "x"]
    assert manifest.missing_count == 1
    assert manifest.missing[0].endswith(f"fg_bg entry 'fg_bg/none.jpg' (line 5 of {path}) is not in the archive")
    path.write_bytes(path.read_bytes() + b"a,b\r\n")
    with pytest.raises(DataError, match="excel.csv: line 6: 2 fields, expected 10"):
        load_manifest(path)
    path.write_bytes(b"fg_bg,bg,mask,depth\n\xff\xfe")
    with pytest.raises(DataError, match=r"excel.csv: manifest.csv is not UTF-8 text \(byte 20\)"):
        load_manifest(path)


def test_cli_index_end_to_end(tmp_path, capsys):
    paths = write_original_layout(tmp_path, num_bg=3, per_bg=2)
    out = tmp_path / "manifest.csv"
    argv = ["index", "--bg", str(paths["bg"]), "--fg-bg", str(paths["fg_bg"]), "--mask", str(paths["mask"]),
            "--depth", str(paths["depth"]), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "paired 6 samples" in printed and "every entry paired" in printed
    assert len(_read_csv(out)) == 6
    assert main(["check-data", str(out), "--quiet"]) == 0

    paths = write_original_layout(tmp_path / "b", num_bg=3, per_bg=2, drop=("mask/bg192_003_fg002_pos02.jpg",))
    argv[2:9:2] = [str(paths[r]) for r in ("bg", "fg_bg", "mask", "depth")]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "fg_bg/bg192_003_fg002_pos02.jpg: no mask with stem 'bg192_003_fg002_pos02'" in printed

    assert main(["index", "--bg", str(tmp_path / "none.zip"), "--fg-bg", str(paths["fg_bg"]),
                 "--mask", str(paths["mask"]), "--depth", str(paths["depth"]), "--out", str(out)]) == 2
    assert "none.zip: archive not found" in capsys.readouterr().err


def test_index_reports_duplicate_names_inside_and_across_archives(tmp_path, capsys):
    paths = write_original_layout(tmp_path / "zips", num_bg=2, per_bg=1)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(paths["mask"], "a") as z:
        z.writestr("mask/bg192_001_fg001_pos01.jpg", jpeg_bytes(scene(32, 0, 1)["mask"]))
    for role in ("bg", "fg_bg"):
        with zipfile.ZipFile(paths[role], "a") as z:
            z.writestr("readme.txt", b"the same name in two zips")
    report = build_manifest(bg=paths["bg"], fg_bg=paths["fg_bg"], mask=paths["mask"], depth=paths["depth"],
                            out=tmp_path / "m.csv")
    assert report.rows == 2 and not report.unpaired
    assert not report.ok  # which of the two masks is meant is unknowable
    assert report.duplicates == [
        f"{paths['mask']}: 1 entry name(s) occur more than once (1 earlier entries hidden; only the last of "
        "each is read): mask/bg192_001_fg001_pos01.jpg; re-create the zip without them"
    ]
    assert report.shared == [f"1 entry name(s) occur in both {paths['fg_bg']} and {paths['bg']}: readme.txt"]
    args = ["index", "--bg", str(paths["bg"]), "--fg-bg", str(paths["fg_bg"]), "--mask", str(paths["mask"]),
            "--depth", str(paths["depth"]), "--out", str(tmp_path / "m2.csv")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert report.duplicates[0] in out and f"note: {report.shared[0]}" in out
    # issue 24: no manifest that would read a hidden copy, and a manifest by hand is refused by training
    assert report.out is None and not (tmp_path / "m.csv").exists() and not (tmp_path / "m2.csv").exists()
    assert "paired 2 samples, but wrote no manifest" in out


def test_a_dataset_whose_archive_repeats_a_name_is_refused_in_one_line(tmp_path):
    from maskdepth.data import open_dataset
    from maskdepth.errors import DataError

    data = tmp_path / "dup.zip"
    write_dataset_zip(data, num_bg=3, per_bg=2)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(data, "a") as z:
        z.writestr("mask/bg001_fg001.png", b"a second copy")
    with pytest.raises(DataError, match=r"dup.zip: 1 entry name\(s\) occur more than once .*mask/bg001_fg001.png; "
                                        r"re-create the zip without them \(or set data.skip_bad=true"):
        open_dataset(data, 32, "all")
    with pytest.warns(UserWarning, match="the last copy of each is read"):
        assert len(open_dataset(data, 32, "all", skip_bad=True)) == 6


def test_index_refuses_an_out_that_is_one_of_its_input_zips(tmp_path, capsys):
    paths = write_original_layout(tmp_path / "zips", num_bg=2, per_bg=1)
    link = tmp_path / "link.zip"
    link.symlink_to(paths["depth"])
    before = paths["depth"].read_bytes()
    for out in (paths["mask"], link):
        roles = [x for r in ("bg", "fg_bg", "mask", "depth") for x in (f"--{r.replace('_', '-')}", str(paths[r]))]
        args = ["index", *roles, "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"maskdepth: error: --out {out} is the input --" in err and "choose another output path" in err
    assert paths["depth"].read_bytes() == before and zipfile.is_zipfile(paths["mask"])


@pytest.mark.parametrize("pattern", [r"bg192_(\d+)", r"(bg192_\d+)", r"^(bg192_\d+)_?(fg\d+)?"])
def test_bg_pattern_applies_to_both_stems(tmp_path, pattern):
    """The key captured from a background stem ('001', or 'bg192_001') is compared with the key
    captured from the fg_bg stem, so both spellings pair every sample; bg_id is the bg stem."""
    paths = write_original_layout(tmp_path / "zips", num_bg=3, per_bg=2)
    out = tmp_path / "m.csv"
    args = ["index", "--bg", str(paths["bg"]), "--fg-bg", str(paths["fg_bg"]), "--mask", str(paths["mask"]),
            "--depth", str(paths["depth"]), "--bg-pattern", pattern, "--out", str(out)]
    assert main(args) == 0
    rows = _read_csv(out)
    assert len(rows) == 6
    assert [(r["fg_bg"].split("_fg")[0][6:], r["bg"], r["bg_id"]) for r in rows[:3]] == [
        ("bg192_001", "bg_192/bg192_001.jpg", "bg192_001"),
        ("bg192_001", "bg_192/bg192_001.jpg", "bg192_001"),
        ("bg192_002", "bg_192/bg192_002.jpg", "bg192_002"),
    ]
    assert {r["fg_id"] for r in rows} == ({"fg001", "fg002"} if "fg" in pattern else {""})


def test_bg_pattern_falls_back_to_the_whole_bg_stem(tmp_path):
    """A background stem the pattern does not match is its own key: here the pattern matches fg_bg
    stems only (they hold '_fg'), and keys 'bg192_00N' meet the bg stems as they are."""
    paths = write_original_layout(tmp_path / "zips", num_bg=2, per_bg=1)
    report = build_manifest(bg=paths["bg"], fg_bg=paths["fg_bg"], mask=paths["mask"], depth=paths["depth"],
                            bg_pattern=r"(.+?)_fg\d+", out=tmp_path / "m.csv")
    assert report.ok and report.rows == 2
    assert [r["bg"] for r in _read_csv(tmp_path / "m.csv")] == ["bg_192/bg192_001.jpg", "bg_192/bg192_002.jpg"]
