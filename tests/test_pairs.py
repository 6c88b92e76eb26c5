"""Pairing of predict inputs: files, folders, globs and a CSV, and every way they fail to pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskdepth.errors import ConfigError, DataError
from maskdepth.pairs import collect_pairs, pair_inputs

from test_inference import _png


def test_pairing_rules(tmp_path: Path) -> None:
    for folder in ("bgs", "fgs", "other"):
        (tmp_path / folder).mkdir()
    for name in ("a", "b"):
        _png(tmp_path / "bgs" / f"{name}.png", 8, 8)
        _png(tmp_path / "fgs" / f"{name}.jpg", 8, 8)
    _png(tmp_path / "other" / "bg_1.png", 8, 8)
    _png(tmp_path / "other" / "bg_2.png", 8, 8)
    (tmp_path / "fgs" / "notes.txt").write_text("ignored: not an image")

    by_folder = pair_inputs(tmp_path / "bgs", tmp_path / "fgs")
    assert [(b.name, f.name) for b, f in by_folder] == [("a.png", "a.jpg"), ("b.png", "b.jpg")]
    by_glob = pair_inputs(str(tmp_path / "bgs" / "*.png"), str(tmp_path / "fgs" / "*.jpg"))
    assert [(b.name, f.name) for b, f in by_glob] == [("a.png", "a.jpg"), ("b.png", "b.jpg")]
    shared = pair_inputs(tmp_path / "bgs" / "a.png", tmp_path / "fgs")
    assert [(b.name, f.name) for b, f in shared] == [("a.png", "a.jpg"), ("a.png", "b.jpg")]

    with pytest.raises(DataError, match="b only in --fg-bg.*bg_1, bg_2 only in --bg"):
        pair_inputs(tmp_path / "other", tmp_path / "fgs")
    with pytest.raises(DataError, match="nope.png: no such file"):
        pair_inputs(tmp_path / "nope.png", tmp_path / "fgs" / "a.jpg")
    with pytest.raises(DataError, match=r"\*.gif: no file matches"):
        pair_inputs(str(tmp_path / "bgs" / "*.gif"), str(tmp_path / "fgs" / "*.jpg"))
    with pytest.raises(DataError, match=r"b only in --fg-bg, bg_1, bg_2 only in --bg \(2 vs 2 files\)"):
        pair_inputs(str(tmp_path / "other" / "bg_*.png"), str(tmp_path / "fgs" / "*.jpg"))  # never by sorted order
    with pytest.raises(DataError, match="2 vs 1 files"):
        pair_inputs(str(tmp_path / "bgs" / "*.png"), str(tmp_path / "fgs" / "a.*"))


def test_collect_pairs_takes_one_source(tmp_path: Path) -> None:
    bg, fg_bg = _png(tmp_path / "bg.png", 8, 8), _png(tmp_path / "fg_bg.png", 8, 8)
    csv = tmp_path / "pairs.csv"
    csv.write_text("bg,fg_bg\nbg.png,fg_bg.png\n")
    assert collect_pairs(bg=bg, fg_bg=fg_bg) == [(bg, fg_bg)]
    assert collect_pairs(pairs=csv) == [(bg, fg_bg)]
    with pytest.raises(ConfigError, match="not both"):
        collect_pairs(bg=bg, pairs=csv)
    with pytest.raises(ConfigError, match="give --bg and --fg-bg"):
        collect_pairs(bg=bg)


def test_globs_pair_by_stem_and_name_the_unmatched(tmp_path: Path) -> None:
    """Issue 24: {a,b,c} and {b,c,d} paired by sorted order (a-b, b-c, c-d) and exited 0."""
    for folder, names in (("g2b", "abc"), ("g2f", "bcd")):
        (tmp_path / folder).mkdir()
        for name in names:
            _png(tmp_path / folder / f"{name}.jpg", 8, 8)
    with pytest.raises(DataError, match=r"do not pair by name: d only in --fg-bg, a only in --bg"):
        pair_inputs(str(tmp_path / "g2b" / "*.jpg"), str(tmp_path / "g2f" / "*.jpg"))
    pairs = pair_inputs(str(tmp_path / "g2b" / "[bc].jpg"), str(tmp_path / "g2f" / "[bc].jpg"))
    assert [(b.name, f.name) for b, f in pairs] == [("b.jpg", "b.jpg"), ("c.jpg", "c.jpg")]


def test_a_pairs_csv_that_is_not_utf8_or_has_an_empty_cell_is_one_line(tmp_path: Path) -> None:
    from maskdepth.pairs import read_pairs_csv

    _png(tmp_path / "bg.png", 8, 8)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("bg,fg_bg\nbg.png,caf\u00e9.png\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: not UTF-8 text "
                                        r"\(line 2, byte 19: invalid continuation byte\); save it as UTF-8"):
        read_pairs_csv(latin)
    empty = tmp_path / "empty.csv"
    empty.write_text("bg,fg_bg\nbg.png,bg.png\nbg.png,\n")
    with pytest.raises(DataError, match=r"empty.csv: line 3: empty fg_bg cell; every row needs"):
        read_pairs_csv(empty)
