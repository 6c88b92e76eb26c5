"""metrics.csv's columns come from the metric names; a run started before a metric existed resumes and plots."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from maskdepth.history import CSV_COLUMNS, best_epoch, is_better, metric_columns, with_score, write_metrics_csv
from maskdepth.metrics import DEPTH_KEYS, MASK_KEYS

from conftest import QUICK

NEW = ("val_delta1_ms", "val_abs_rel_ms", "val_silog")  # the columns issue 22 added


def test_columns_follow_the_metric_names_of_metrics_py() -> None:
    assert all(f"val_{k}" in CSV_COLUMNS for k in MASK_KEYS + DEPTH_KEYS)
    assert set(NEW) <= set(metric_columns())
    # metrics knows nothing of history, and reading the names pulls in no torch (the notebook helpers read them)
    code = ("import sys, maskdepth.metrics; assert 'maskdepth.history' not in sys.modules; "
            "import maskdepth.history; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_val_score_is_the_mean_of_iou_and_delta1() -> None:
    row = with_score({"epoch": 1, "val_iou": 0.8, "val_delta1": 0.5})
    assert row["val_score"] == pytest.approx(0.65) and row["val_iou"] == 0.8  # (0.8 + 0.5) / 2
    assert with_score({"val_iou": 1.0, "val_delta1": 0.0})["val_score"] == 0.5
    for partial in ({"val_iou": 0.8}, {"val_iou": 0.8, "val_delta1": float("nan")}, {}):
        assert with_score(partial)["val_score"] != with_score(partial)["val_score"]  # NaN: never best
    assert "val_score" in metric_columns() and not is_better("val_score", float("nan"), None)
    # the mask alone picks epoch 1; the score, which also sees depth, picks epoch 2
    history = [with_score({"epoch": 1, "val_iou": 0.9, "val_delta1": 0.2}),   # score 0.55
               with_score({"epoch": 2, "val_iou": 0.85, "val_delta1": 0.45}),  # score 0.65
               with_score({"epoch": 3, "val_iou": 0.7, "val_delta1": 0.5})]    # score 0.60
    assert best_epoch(history, "val_iou") == 1 and best_epoch(history, "val_score") == 2


@pytest.mark.parametrize(("metric", "minimised"), [
    ("val_score", False), ("val_silog", True), ("val_abs_rel_ms", True), ("val_delta1_ms", False),
    ("val_rmse", True), ("val_abs_rel", True), ("val_delta1", False), ("val_iou", False), ("val_loss", True),
])
def test_best_metric_direction(metric: str, minimised: bool) -> None:
    assert is_better(metric, 1.0, 2.0) is minimised
    assert is_better(metric, 2.0, 1.0) is not minimised
    history = [{"epoch": 1, metric: 2.0}, {"epoch": 2, metric: 1.0}]
    assert best_epoch(history, metric) == (2 if minimised else 1)


def test_rows_without_the_new_columns_are_written_with_empty_cells(tmp_path: Path) -> None:
    old = {"epoch": 1, "val_iou": 0.5, "val_delta1": 0.25}
    new = {"epoch": 2, "val_iou": 0.75, "val_delta1": 0.5, "val_delta1_ms": 0.8, "val_silog": 20.0}
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, [old, new])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["val_delta1_ms"] == "" and rows[1]["val_delta1_ms"] == "0.8"
    assert best_epoch([old, new], "val_silog") == 2 and best_epoch([old], "val_silog") is None


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_a_run_started_before_the_new_metrics_resumes_and_plots(tiny_overrides: list[str]) -> None:
    """A checkpoint and a metrics.csv without the scale-invariant columns (as a run started before they
    existed leaves them): the resumed run rewrites metrics.csv with every column, old rows blank there."""
    import torch

    from maskdepth.config import load_config
    from maskdepth.train import fit
    from maskdepth.viz import save_curves

    short = [*tiny_overrides, "train.max_steps_per_epoch=2", "train.num_samples=0"]
    run = fit(load_config(QUICK, [*short, "train.epochs=1"]))
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    state["history"] = [{k: v for k, v in row.items() if k not in NEW} for row in state["history"]]
    torch.save(state, last)
    old_columns = [c for c in CSV_COLUMNS if c not in NEW]
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(state["history"])
    save_curves(run / "metrics.csv", run / "curves.png")  # the old file plots

    fit(load_config(QUICK, [*short, "train.epochs=2"]))
    with open(run / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == CSV_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    assert all(rows[0][c] == "" for c in NEW) and all(rows[1][c] != "" for c in NEW)
    assert rows[0]["val_delta1"] != ""
    assert save_curves(run / "metrics.csv", run / "curves.png").is_file()
