"""metrics.csv: the run's history, one row per epoch, with columns derived from the metric keys.

    CSV_COLUMNS    epoch, train_<loss>, val_<loss>, val_<mask metric>, val_<depth metric>, val_score, lr, ...
    row = with_score(row)            # val_score: mask and depth in one figure, for train.best_metric
    write_metrics_csv(run_dir / "metrics.csv", history)
    best_epoch(history, "val_iou")   # the epoch best.pt holds

The checkpoint's history is the record; metrics.csv is rewritten from it (atomically), so it can
always be derived again. No torch here: the notebook helpers read these names too.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import Any

from maskdepth.fileio import atomic_open
from maskdepth.metrics import DEPTH_KEYS, MASK_KEYS  # the metric names; metrics.py imports torch lazily

LOSS_KEYS = ("loss", "mask_loss", "depth_loss")  # the weighted sum and its two parts
COUNT_KEYS = ("skipped_batches", "skipped_samples")  # summed over the epoch, not averaged

CSV_COLUMNS = [
    "epoch",
    *(f"train_{k}" for k in LOSS_KEYS),
    *(f"val_{k}" for k in LOSS_KEYS + MASK_KEYS + DEPTH_KEYS), "val_score",
    "lr", "seconds", "steps", *COUNT_KEYS,
]
# what the notebook's table shows by default: losses, both mask metrics, the headline depth ones
TABLE_COLUMNS = ("epoch", "train_loss", "val_loss",
                 *(f"val_{k}" for k in MASK_KEYS + ("rmse", "abs_rel", "delta1", "delta1_ms")), "lr", "seconds")
# columns where smaller is better (a column containing one of these: losses, rmse*, abs_rel*, sq_rel,
# rmse_log, log10, silog); every other train_/val_ column (iou, dice, delta*) is maximised
_MINIMISED = ("loss", "rmse", "rel", "log")


def with_score(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with `val_score`, the mean of val_iou and val_delta1: both in [0, 1], higher better, so
    a best.pt picked by it weighs the mask and the depth alike (val_iou alone ignores depth). NaN
    when either is missing or not finite (docs/metrics.md)."""
    iou, delta1 = row.get("val_iou"), row.get("val_delta1")
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (iou, delta1))
    return {**row, "val_score": (iou + delta1) / 2 if finite else math.nan}


def epoch_summary(row: dict[str, Any], epochs: int, improved: bool) -> str:
    """The one line training logs at the end of an epoch (`row` is its metrics.csv row)."""
    return (f"epoch {row['epoch']:>3}/{epochs}  train {row['train_loss']:.4f} "
            f"(mask {row['train_mask_loss']:.4f} depth {row['train_depth_loss']:.4f})  "
            f"val {row.get('val_loss', math.nan):.4f}  iou {row.get('val_iou', math.nan):.3f}  "
            f"dice {row.get('val_dice', math.nan):.3f}  rmse {row.get('val_rmse', math.nan):.4f}  "
            f"d1 {row.get('val_delta1', math.nan):.3f} (ms {row.get('val_delta1_ms', math.nan):.3f})  "
            f"lr {row['lr']:.2e}  {row['seconds']:.0f}s{'  *best' if improved else ''}")


def metric_columns() -> list[str]:
    """The columns train.best_metric may name."""
    return [c for c in CSV_COLUMNS if c.startswith(("train_", "val_"))]


def minimised(metric: str) -> bool:
    """Whether smaller is better for the column (or metric key) `metric`: losses, rmse*, *rel*, *log*."""
    return any(tag in metric for tag in _MINIMISED)


def is_better(metric: str, value: float | None, best: float | None) -> bool:
    """Whether `value` of column `metric` beats `best` (None: nothing yet); NaN never does."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if minimised(metric) else value > best


def best_epoch(history: Sequence[dict[str, Any]], metric: str) -> int | None:
    """The epoch (1-based, as in the rows) whose end best.pt holds: the first row that improved
    on every row before it last, per `is_better`; None when no row has a finite value."""
    best, epoch = None, None
    for row in history:
        if is_better(metric, row.get(metric), best):
            best, epoch = row[metric], int(row["epoch"])
    return epoch


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def format_metrics_csv(history: Sequence[dict[str, Any]]) -> str:
    """The text of metrics.csv for `history` (floats to 6 significant digits)."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def write_metrics_csv(path: str | os.PathLike[str], history: Sequence[dict[str, Any]]) -> bool:
    """Rewrite metrics.csv from `history`, atomically (it may live on Drive), unless it already
    says exactly that. Returns whether the file was written."""
    text = format_metrics_csv(history)
    try:
        with open(path, newline="") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    with atomic_open(path, "w", newline="") as f:
        f.write(text)
    return True


__all__ = ["CSV_COLUMNS", "DEPTH_KEYS", "LOSS_KEYS", "MASK_KEYS", "TABLE_COLUMNS", "best_epoch", "epoch_summary",
           "is_better", "metric_columns", "minimised", "with_score", "write_metrics_csv"]
