"""The synthetic dataset generator: layout, contents, geometry, statistics, determinism, bad input."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskdepth.cli import main
from maskdepth.data.images import png_rows
from maskdepth.errors import ConfigError, DataError
from maskdepth.synth import MANIFEST_COLUMNS, make_dataset, render_background, scene_objects
from maskdepth.synth import make as synthetic

TINY = dict(size=32, num_bg=4, num_fg=3, per_pair=1, workers=1, progress=False)  # 24 samples


def _read(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """The entry as uint8 (masks, stored as 1-bit PNGs, as 8-bit gray: 0 / 255)."""
    img = Image.open(io.BytesIO(zf.read(name)))
    return np.asarray(img.convert("L") if img.mode == "1" else img)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, r)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= padded[r + dy: r + dy + mask.shape[0], r + dx: r + dx + mask.shape[1]]
    return out


def _manifest(zf: zipfile.ZipFile) -> list[dict]:
    return list(csv.DictReader(io.TextIOWrapper(zf.open("manifest.csv"), encoding="utf-8")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "d.zip"
    summary = make_dataset(path, **TINY)
    assert summary.path == path and summary.count == 24
    return path


@pytest.fixture(scope="module")
def tiny_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("png") / "d.zip"
    make_dataset(path, size=48, num_bg=3, num_fg=2, per_pair=2, workers=1, progress=False, image_format="png")
    return path


# ------------------------------------------------------------------------------ format


def test_layout_counts_and_manifest(tiny):
    with zipfile.ZipFile(tiny) as zf:
        names = zf.namelist()
        rows = _manifest(zf)
        info = json.loads(zf.read("dataset.json"))
        for entry in zf.infolist():
            assert entry.compress_type == zipfile.ZIP_STORED
            assert entry.date_time == (1980, 1, 1, 0, 0, 0)
    assert len(rows) == 4 * 3 * 2 * 1 == info["count"]
    assert len(names) == len(set(names)) == 4 + 3 * len(rows) + 3  # + manifest.csv, scenes.csv, dataset.json
    assert sorted(n for n in names if n.startswith("bg/")) == [f"bg/bg00{i}.jpg" for i in range(4)]
    assert set(rows[0]) == set(MANIFEST_COLUMNS)
    assert {"fg_bg", "bg", "mask", "depth", "bg_id", "fg_id", "flip", "x", "y", "scale", "distance"} <= set(rows[0])
    for row in rows:
        for key in ("fg_bg", "bg", "mask", "depth"):
            assert row[key] in names
        stem = f"{row['bg_id']}_{row['fg_id']}_{row['flip']}_00"
        assert row["fg_bg"] == f"fg_bg/{stem}.jpg" and row["mask"] == f"mask/{stem}.png"
        assert row["depth"] == f"depth/{stem}.jpg" and row["bg"] == f"bg/{row['bg_id']}.jpg"
    # Every (bg, fg, flip) combination exactly once.
    assert len({(r["bg_id"], r["fg_id"], r["flip"]) for r in rows}) == 24
    assert {r["flip"] for r in rows} == {"0", "1"}


def test_dataset_json(tiny):
    with zipfile.ZipFile(tiny) as zf:
        info = json.loads(zf.read("dataset.json"))
    assert info["size"] == 32 and info["count"] == 24 and info["seed"] == 0
    assert info["generator"] == "maskdepth.synth" and info["version"] == synthetic.GENERATOR_VERSION
    assert info["image_format"] == "jpg" and info["depth_divisor"] == 255
    assert "larger = farther" in info["depth_encoding"] and "255" in info["depth_encoding"]
    for key in ("mean", "std", "fg_bg_mean", "fg_bg_std", "bg_mean", "bg_std"):
        assert len(info[key]) == 3 and all(0.0 < v < 1.0 for v in info[key])
    assert {"mean", "std", "min", "max", "p50"} <= set(info["mask_coverage"])


def test_scene_table_has_one_sane_row_per_sample(tiny):
    """scenes.csv: what made each scene, one row per sample in manifest order, consistent with the
    manifest and with the pinhole camera (h_px = focal * H / z; the horizon above the image
    centre by focal * tan(pitch)); the same camera for every sample of a background."""
    from maskdepth.data import read_scene_table
    from maskdepth.synth.make import SCENE_COLUMNS

    with zipfile.ZipFile(tiny) as zf:
        rows = _manifest(zf)
        info = json.loads(zf.read("dataset.json"))
    scenes = read_scene_table(tiny)
    assert info["scene_table"] == "scenes.csv" and info["scene_columns"] == list(SCENE_COLUMNS)
    assert len(scenes) == len(rows) == 24 and all(list(s) == list(SCENE_COLUMNS) for s in scenes)
    cameras = {}
    for scene, row in zip(scenes, rows, strict=True):
        assert (scene["fg_bg"], scene["bg_id"], scene["fg_id"]) == (row["fg_bg"], row["bg_id"], row["fg_id"])
        assert scene["scene_kind"] == row["bg_kind"] in ("room", "hall", "street", "yard")
        assert scene["object_kind"] == row["fg_kind"] and isinstance(scene["object_foot_row"], int)
        assert 0.8 <= scene["camera_height_m"] <= 1.8 and 6 < scene["camera_pitch_deg"] < 29
        assert 48 <= scene["fov_deg"] <= 70
        half = math.radians(scene["fov_deg"]) / 2
        assert scene["focal_px"] == pytest.approx(16 / math.tan(half), abs=0.02)
        pitch = math.radians(scene["camera_pitch_deg"])
        assert scene["horizon_row"] == pytest.approx(16 - scene["focal_px"] * math.tan(pitch), abs=0.05)
        assert scene["object_height_px"] == pytest.approx(
            scene["focal_px"] * scene["object_height_m"] / scene["object_distance_m"], rel=0.01)
        assert scene["object_height_px"] == pytest.approx(float(row["scale"]) * 32, abs=0.01)
        assert scene["object_foot_row"] == int(row["y"]) and scene["object_coverage"] == float(row["coverage"])
        assert scene["object_distance_m"] == float(row["distance"]) and 0 < scene["object_coverage"] <= 1
        assert 0 < scene["median_depth_m"] <= scene["bg_median_depth_m"] <= 20  # the object only hides scene
        camera = tuple(scene[k] for k in SCENE_COLUMNS[3:9] + ("bg_median_depth_m",))
        assert cameras.setdefault(scene["bg_id"], camera) == camera


def test_scene_table_is_no_training_input(tiny, tmp_path):
    """The dataset and check-data accept an archive with scenes.csv silently; an archive without
    one (the original layout, older make-data) has no table. (Training on it: every training test,
    whose data conftest.py makes with make_dataset.)"""
    from maskdepth.data import check_data, open_dataset, read_scene_table

    from data_helpers import write_dataset_zip

    report = check_data(tiny, progress=False)
    assert report.ok and not any("scenes" in note for note in report.notes), report.format()
    assert len(open_dataset(tiny, size=32, split="all")) == 24
    plain = tmp_path / "plain.zip"
    write_dataset_zip(plain, num_bg=2, per_bg=2)
    assert read_scene_table(plain) is None
    with pytest.raises(DataError, match="not found"):
        read_scene_table(tmp_path / "nope.zip")


def test_images_masks_and_depth_decode(tiny):
    with zipfile.ZipFile(tiny) as zf:
        rows = _manifest(zf)
        for row in rows:
            fg_bg, mask, depth = _read(zf, row["fg_bg"]), _read(zf, row["mask"]), _read(zf, row["depth"])
            assert fg_bg.shape == (32, 32, 3) and fg_bg.dtype == np.uint8
            assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
            assert Image.open(io.BytesIO(zf.read(row["mask"]))).mode == "1"  # a 1-bit PNG
            assert png_rows(zf.read(row["mask"])) is not None  # that the dataset reads itself
            assert depth.shape == (32, 32) and depth.min() > 0
            assert float(row["coverage"]) == pytest.approx((mask == 255).mean(), abs=1e-4)
            assert (mask == 255).sum() >= 3
        assert _read(zf, rows[0]["bg"]).shape == (32, 32, 3)


def test_mean_std_match_the_images(tiny):
    with zipfile.ZipFile(tiny) as zf:
        info = json.loads(zf.read("dataset.json"))
        rows = _manifest(zf)
        fg = np.stack([_read(zf, r["fg_bg"]) for r in rows]).reshape(-1, 3) / 255.0
        bg = np.stack([_read(zf, f"bg/bg00{i}.jpg") for i in range(4)]).reshape(-1, 3) / 255.0
    # Statistics are of the pixels before JPEG encoding; decoding moves them by well under 0.01.
    np.testing.assert_allclose(info["fg_bg_mean"], fg.mean(0), atol=0.01)
    np.testing.assert_allclose(info["fg_bg_std"], fg.std(0), atol=0.01)
    np.testing.assert_allclose(info["bg_mean"], bg.mean(0), atol=0.01)
    both = np.concatenate([fg, np.repeat(bg, 6, axis=0)])  # each bg is the background of 6 samples
    np.testing.assert_allclose(info["mean"], both.mean(0), atol=0.01)
    np.testing.assert_allclose(info["std"], both.std(0), atol=0.01)


# ---------------------------------------------------------------------------- geometry


def test_png_archive_is_lossless_16_bit(tiny_png):
    with zipfile.ZipFile(tiny_png) as zf:
        info = json.loads(zf.read("dataset.json"))
        row = _manifest(zf)[0]
        depth = Image.open(io.BytesIO(zf.read(row["depth"])))
        assert row["fg_bg"].endswith(".png") and row["depth"].endswith(".png")
        assert depth.mode.startswith("I") and np.asarray(depth).max() > 255
    assert info["depth_divisor"] == 65535 and "65535" in info["depth_encoding"]


def test_object_stands_on_the_floor_and_occludes(tiny_png):
    """Composite depth = the scene's, except on the mask, where the object is nearer."""
    with zipfile.ZipFile(tiny_png) as zf:
        rows = _manifest(zf)
        for row in rows:
            b = int(row["bg_id"][2:])
            bg_rgb, bg_depth, floor = render_background(b, size=48, seed=0)
            depth = _read(zf, row["depth"]).astype(np.float64) / 65535
            mask = _read(zf, row["mask"]) == 255
            fg_bg = _read(zf, row["fg_bg"])
            assert np.array_equal(_read(zf, row["bg"]), bg_rgb)
            true_bg = np.round(bg_depth * 65535) / 65535
            np.testing.assert_allclose(depth[~mask], true_bg[~mask], atol=1e-9)
            assert np.all(depth[mask] <= true_bg[mask] + 1e-9)
            assert depth.min() > 0
            # The foot point is a floor pixel, the object's distance is the floor's depth there,
            # and its pixel height is focal * height / distance (the manifest's scale).
            x, y = int(row["x"]), int(row["y"])
            assert floor[y, x]
            assert float(row["distance"]) == pytest.approx(bg_depth[y, x] * synthetic.FAR_M, abs=2e-3)
            # Away from the object (its soft edges and thin parts under alpha 0.5, within 3 px of the
            # mask here) and from its contact shadow (on the floor), fg_bg is exactly bg.
            far = ~_dilate(mask, 3) & ~floor
            assert far.sum() > 0 and np.array_equal(fg_bg[far], bg_rgb[far])


def test_nearer_floor_is_lower_in_the_image():
    _, depth, floor = render_background(0, size=64, seed=3)
    rows = [r for r in range(64) if floor[r].any()]
    nearest = [depth[r][floor[r]].mean() for r in rows]
    assert len(rows) > 10
    assert nearest[-1] < nearest[0]  # the bottom rows of the floor are the nearest
    assert 0 < depth.min() and depth.max() <= 1


def test_object_size_follows_distance(tmp_path):
    """scale = pixel height / size and distance obey h = focal * H / z, so scale * distance ~ const."""
    path = tmp_path / "d.zip"
    make_dataset(path, size=64, num_bg=1, num_fg=1, per_pair=12, workers=1, progress=False)
    with zipfile.ZipFile(path) as zf:
        rows = _manifest(zf)
    k = [float(r["scale"]) * float(r["distance"]) / float(r["height_m"]) for r in rows]
    assert np.ptp(k) / np.mean(k) < 1e-3  # focal / size, the same for every placement in the scene
    ys = np.array([int(r["y"]) for r in rows])
    scale = np.array([float(r["scale"]) / float(r["height_m"]) for r in rows])
    assert scale[ys.argmax()] > scale[ys.argmin()]  # lower = nearer = larger


def test_coverage_statistics(tmp_path):
    # 4 bg x 12 fg x 2 flips x 2 = 192 samples at 32 px (~1 s). Placements aim at a log-uniform
    # coverage (0.01 .. 1.6, capped by how near the floor comes into view), which gives a mean of
    # ~10% over many scenes (6,400 samples: mean 9.9%, 1st percentile 0.8%, 99th 52%). This
    # sample, with only 4 scenes, measures mean 7.4%, min 0.7%, max 33%: the bounds leave margin.
    path = tmp_path / "d.zip"
    summary = make_dataset(path, size=32, num_bg=4, num_fg=12, per_pair=2, workers=1, progress=False)
    with zipfile.ZipFile(path) as zf:
        rows = _manifest(zf)
        masks = np.stack([_read(zf, r["mask"]) == 255 for r in rows])
    coverage = masks.mean(axis=(1, 2))
    assert 0.05 <= coverage.mean() <= 0.2
    assert coverage.min() < 0.02
    assert coverage.max() > 0.25
    assert summary.info["mask_coverage"]["mean"] == pytest.approx(coverage.mean(), abs=1e-4)
    assert summary.info["mask_coverage"]["max"] == pytest.approx(coverage.max(), abs=1e-4)
    assert summary.info["mask_coverage"]["empty"] == 0
    # Depth uses the whole range: near floors, mid-range walls, far streets and sky.
    hist = np.array(summary.info["depth"]["histogram_fraction_by_tenth"])
    assert hist.sum() == pytest.approx(1.0, abs=1e-3) and (hist > 0).sum() >= 8


# ------------------------------------------------------------------------- determinism


def test_deterministic_whatever_the_workers(tiny, tmp_path):
    again = tmp_path / "again.zip"
    make_dataset(again, **{**TINY, "workers": 2})
    assert again.read_bytes() == tiny.read_bytes()


def test_different_seed_differs(tiny, tmp_path):
    other = tmp_path / "other.zip"
    make_dataset(other, **{**TINY, "seed": 1})
    assert other.read_bytes() != tiny.read_bytes()
    with zipfile.ZipFile(other) as zf, zipfile.ZipFile(tiny) as zt:
        assert zf.namelist() == zt.namelist()  # same layout, other content
        assert zf.read("bg/bg000.jpg") != zt.read("bg/bg000.jpg")


def test_zip64_records_are_readable(tiny, tmp_path, monkeypatch):
    """Beyond 65,535 entries or 4 GiB zipfile switches to zip64 records; force them on a tiny archive."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 8)
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    path = tmp_path / "z64.zip"
    make_dataset(path, **TINY)
    monkeypatch.undo()
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and data != tiny.read_bytes()  # zip64 end of central directory
    with zipfile.ZipFile(path) as z64, zipfile.ZipFile(tiny) as zt:
        assert z64.namelist() == zt.namelist()
        assert all(z64.read(n) == zt.read(n) for n in zt.namelist())


# ------------------------------------------------------------- objects per scene (fg_per_bg)


def test_scene_objects_deal_is_balanced_distinct_and_seeded():
    assert scene_objects(3, 4) == [[0, 1, 2, 3]] * 3 == scene_objects(3, 4, 4, seed=5)  # default: every object
    deal = scene_objects(10, 7, 3, seed=0)
    assert len(deal) == 10 and all(len(set(objs)) == 3 and objs == sorted(objs) for objs in deal)
    counts = np.bincount([f for objs in deal for f in objs], minlength=7)
    assert counts.sum() == 30 and counts.max() - counts.min() <= 1  # 30 = 4 * 7 + 2: each object 4 or 5 times
    assert scene_objects(10, 7, 3, seed=0) == deal and scene_objects(10, 7, 3, seed=1) != deal


def test_fg_per_bg_archive_is_the_subset_of_the_full_one(tiny, tmp_path):
    out = tmp_path / "k.zip"
    summary = make_dataset(out, **{**TINY, "fg_per_bg": 2})
    assert summary.count == 4 * 2 * 2 * 1 and "(4 bg x 2 of 3 fg x 2 flips" in summary.format()
    with zipfile.ZipFile(out) as zk, zipfile.ZipFile(tiny) as zf:
        info = json.loads(zk.read("dataset.json"))
        assert (info["count"], info["num_fg"], info["fg_per_bg"]) == (16, 3, 2)
        assert json.loads(zf.read("dataset.json"))["fg_per_bg"] == 3
        rows = _manifest(zk)
        assert len(rows) == 16
        for b, objs in enumerate(scene_objects(4, 3, 2, seed=0)):
            mine = sorted({r["fg_id"] for r in rows if r["bg_id"] == f"bg{b:03d}"})
            assert mine == [f"fg{f:03d}" for f in objs]
        # the same (scene, object) pair is placed exactly as in the archive with every object
        for r in rows:
            for col in ("fg_bg", "mask", "depth", "bg"):
                assert zk.read(r[col]) == zf.read(r[col]), r[col]
        full = {r["fg_bg"]: r for r in _manifest(zf)}
        assert all(full[r["fg_bg"]] == r for r in rows)


def test_cli_make_data_fg_per_bg(tmp_path, capsys):
    out = tmp_path / "k.zip"
    assert main(["make-data", str(out), "--size", "32", "--num-bg", "3", "--num-fg", "5", "--fg-per-bg", "2",
                 "--per-pair", "1", "--workers", "2", "--quiet"]) == 0
    assert "12 samples (3 bg x 2 of 5 fg" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        assert len(_manifest(zf)) == 12 and json.loads(zf.read("dataset.json"))["fg_per_bg"] == 2
    assert main(["make-data", str(tmp_path / "x.zip"), "--num-fg", "3", "--fg-per-bg", "4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fg_per_bg (4) cannot exceed num_fg (3)" in err and "\n" not in err
    assert not (tmp_path / "x.zip").exists()


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def no_rendering(monkeypatch):
    """Fail the test if any rendering starts: argument errors must come before any work."""

    def boom(*args, **kwargs):
        raise AssertionError("rendering started before the arguments were checked")

    monkeypatch.setattr(synthetic, "render_scene", boom)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("bad", [dict(num_bg=0), dict(num_fg=-1), dict(per_pair=0), dict(size=31),
                                 dict(size=0), dict(workers=0), dict(image_format="bmp"), dict(seed=-1),
                                 dict(fg_per_bg=0), dict(fg_per_bg=4), dict(fg_per_bg=1.5)])
def test_bad_arguments(tmp_path, no_rendering, bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        make_dataset(tmp_path / "d.zip", **{**TINY, **bad})
    assert list(tmp_path.iterdir()) == []


def test_existing_out_without_overwrite(tmp_path, no_rendering):
    out = tmp_path / "d.zip"
    out.write_bytes(b"precious")
    with pytest.raises(DataError, match="already exists.*overwrite"):
        make_dataset(out, **TINY)
    assert out.read_bytes() == b"precious" and _leftovers(tmp_path) == []


def test_overwrite_replaces(tiny, tmp_path):
    out = tmp_path / "d.zip"
    out.write_bytes(b"old")
    make_dataset(out, **TINY, overwrite=True)
    assert out.read_bytes() == tiny.read_bytes()


def test_missing_parent_folder(tmp_path, no_rendering):
    with pytest.raises(DataError, match="does not exist"):
        make_dataset(tmp_path / "nope" / "d.zip", **TINY)


def test_parent_is_a_file(tmp_path, no_rendering):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_dataset(tmp_path / "file" / "d.zip", **TINY)


def test_out_is_a_directory(tmp_path, no_rendering):
    (tmp_path / "d.zip").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        make_dataset(tmp_path / "d.zip", **TINY, overwrite=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path, no_rendering):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(DataError, match="cannot write"):
            make_dataset(folder / "d.zip", **TINY)
    finally:
        folder.chmod(0o700)


def test_unwritable_folder_simulated(tmp_path, no_rendering, monkeypatch):
    """The same as above for root, who can write anywhere: creating the temp file is refused."""

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DataError, match="cannot write to .*Permission denied"):
        make_dataset(tmp_path / "d.zip", **TINY)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def _fail_writes_after(monkeypatch, n: int, exc: BaseException) -> None:
    real = zipfile.ZipFile.writestr
    calls = {"n": 0}

    def writestr(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch, workers):
    out = tmp_path / "d.zip"
    out.write_bytes(b"old archive")
    _fail_writes_after(monkeypatch, 10, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DataError, match="no space left on device"):
        make_dataset(out, **{**TINY, "workers": workers}, overwrite=True)
    assert out.read_bytes() == b"old archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip"]


def test_full_disk_estimate_is_in_mb_below_a_gigabyte(tmp_path, monkeypatch):
    """Issue 24: on a nearly full disk a small archive was estimated at "about 0.0 GB"."""
    _fail_writes_after(monkeypatch, 10, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DataError, match=r"\(the archive needs about 0\.02 MB\)") as err:
        make_dataset(tmp_path / "d.zip", **TINY)  # 24 samples of 32 px
    assert "GB" not in str(err.value)
    assert synthetic.size_text(5.6e9) == "5.6 GB" and synthetic.size_text(0.999e9) == "999 MB"
    assert synthetic.size_text(3.46e6) == "3.5 MB" and synthetic.size_text(12) == "0.01 MB"


def test_interrupt_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "d.zip"
    _fail_writes_after(monkeypatch, 5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        make_dataset(out, **TINY)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- CLI


def test_cli_make_data(tiny, tmp_path, capsys):
    out = tmp_path / "cli.zip"
    args = ["make-data", str(out), "--size", "32", "--num-bg", "4", "--num-fg", "3", "--per-pair", "1",
            "--workers", "1", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "24 samples" in printed
    assert out.read_bytes() == tiny.read_bytes()

    assert main(args) == 2  # exists now, no --overwrite
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskdepth: error:") and "--overwrite" in err and "\n" not in err

    assert main(["make-data", str(tmp_path / "x.zip"), "--size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "size" in err and "\n" not in err and not (tmp_path / "x.zip").exists()


def test_every_background_layout_can_be_drawn():
    """Rooms narrower than two window widths once made make-data fail (at 1,000 backgrounds)."""
    from maskdepth.synth import background_scene

    kinds = {background_scene(b, seed=0).kind for b in range(1500)}
    assert kinds == {"room", "hall", "street", "yard"}


def test_aborted_archive_gets_no_central_directory():
    """abort() cuts the file off before closing the zip: the entries written so far stay, no
    central directory or end record follows them, and nothing is written when it is collected."""
    import gc
    import io

    from maskdepth.synth import ArchiveWriter

    buf = io.BytesIO()
    archive = ArchiveWriter(buf)
    archive.write("bg/a.jpg", b"a" * 100)
    archive.write("bg/b.jpg", b"b" * 100)
    written = buf.getvalue()
    archive.abort()
    del archive
    gc.collect()
    assert buf.getvalue() == written and b"PK\x01\x02" not in written and b"PK\x05\x06" not in written
    whole = io.BytesIO()
    complete = ArchiveWriter(whole)
    complete.write("bg/a.jpg", b"a" * 100)
    complete.close()
    assert b"PK\x05\x06" in whole.getvalue()  # a zip that is not aborted ends as usual


def test_the_archive_follows_the_umask(umask, tmp_path):
    """Issue 24: written files follow the umask like any file the user creates (0644 under 022,
    0664 under 002), so an archive on a shared folder stays readable to the group."""
    out = make_dataset(tmp_path / "d.zip", **TINY).path
    assert out.stat().st_mode & 0o777 == umask, oct(out.stat().st_mode)
