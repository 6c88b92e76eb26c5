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
    by_order = pair_inputs(str(tmp_path / "other" / "bg_*.png"), str(tmp_path / "fgs" / "*.jpg"))
    assert [(b.name, f.name) for b, f in by_order] == [("bg_1.png", "a.jpg"), ("bg_2.png", "b.jpg")]
    shared = pair_inputs(tmp_path / "bgs" / "a.png", tmp_path / "fgs")
    assert [(b.name, f.name) for b, f in shared] == [("a.png", "a.jpg"), ("a.png", "b.jpg")]

    with pytest.raises(DataError, match="b only in --fg-bg.*bg_1, bg_2 only in --bg"):
        pair_inputs(tmp_path / "other", tmp_path / "fgs")
    with pytest.raises(DataError, match="nope.png: no such file"):
        pair_inputs(tmp_path / "nope.png", tmp_path / "fgs" / "a.jpg")
    with pytest.raises(DataError, match=r"\*.gif: no file matches"):
        pair_inputs(str(tmp_path / "bgs" / "*.gif"), str(tmp_path / "fgs" / "*.jpg"))
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
