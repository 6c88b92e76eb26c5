"""maskdepth compare: runs of different lengths, a missing metric, a run still training, bad paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskdepth.cli import main
from maskdepth.compare import compare_runs, differing_keys, panels, read_run, summary
from maskdepth.config import load_config, save_config
from maskdepth.errors import DataError
from maskdepth.history import write_metrics_csv

from conftest import QUICK


def _run(folder: Path, rows: list[dict], overrides: list[str] = ()) -> Path:
    """A run directory with only what compare reads: config.yaml and metrics.csv."""
    folder.mkdir(parents=True)
    save_config(load_config(QUICK, [f"run_dir={folder}", *overrides]), folder / "config.yaml")
    write_metrics_csv(folder / "metrics.csv", rows)
    return folder


def _rows(n: int, *, iou: bool = True) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_rmse": 0.3 / e,
             **({"val_iou": [0.5, 0.8, 0.7, 0.75][e - 1]} if iou else {})} for e in range(1, n + 1)]


def test_runs_of_different_lengths_and_a_missing_metric(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", _rows(4))
    b = _run(tmp_path / "b", _rows(2, iou=False), ["train.lr=0.01", "train.best_metric=val_rmse"])
    runs = [read_run(a), read_run(b)]
    assert differing_keys(runs) == ["train.lr", "train.best_metric"]
    titles = [title for title, _ in panels(runs)]
    assert titles[0] == "loss" and "iou" in titles and "rmse" in titles and "dice" not in titles
    best, last = summary(runs[0])
    assert (best["which"], best["epoch"], best["val_iou"], last["epoch"]) == ("best", 2, 0.8, 4)
    assert [r["epoch"] for r in summary(runs[1])] == [2, 2]  # best by val_rmse (minimised) is the last
    path, table = compare_runs([a, b], tmp_path / "cmp.png")
    assert path.stat().st_size > 0
    lines = table.splitlines()
    assert len(lines) == 5 and lines[2].split()[:3] == ["a", "last", "4"] and lines[3].split()[-1] == "-"


def test_a_run_still_training_and_one_without_epochs(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", _rows(3))
    (a / "metrics.csv").write_text((a / "metrics.csv").read_text() + "4,0.2")  # a half-written row's start
    empty = _run(tmp_path / "empty", [])
    path, table = compare_runs([a, empty], tmp_path / "cmp.png")
    assert path.is_file() and "no epoch yet" in table
    assert read_run(a).epochs.tolist() == [1, 2, 3, 4]  # what is there is read; blanks are gaps


def test_bad_paths_are_one_line_naming_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = _run(tmp_path / "good", _rows(2))
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(DataError, match="no metrics.csv"):
        read_run(tmp_path / "not_a_run")
    for bad in (tmp_path / "missing", tmp_path / "not_a_run"):
        assert main(["compare", str(good), str(bad), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(bad) in err
    assert not (tmp_path / "x.png").exists()


def test_compare_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = _run(tmp_path / "a", _rows(3)), _run(tmp_path / "b", _rows(1), ["model.base_channels=8"])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "val_iou" in out and f"wrote {tmp_path / 'c.png'}" in out and (tmp_path / "c.png").is_file()
