"""Did my change help? Several runs' curves in one picture, and each run's best and last epoch.

    maskdepth compare runs/a runs/b runs/c --out compare.png

    runs = [read_run(path) for path in paths]
    save_comparison(runs, "compare.png")   # one panel per loss and validation metric, one colour per run
    print(format_table(runs))              # best (by each run's train.best_metric) and last epoch

Reads only what a run directory holds: metrics.csv (written atomically, so a run still training
is read as of its last finished epoch) and config.yaml (the keys that differ between the runs go
into the legend). Runs of different lengths, and runs without some column, simply draw less.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from maskdepth.config import Config, config_from_dict, config_to_dict, diff_configs, flatten
from maskdepth.errors import ConfigError, DataError
from maskdepth.history import CSV_COLUMNS, LOSS_KEYS, best_epoch
from maskdepth.viz import read_metrics, write_figure

# the columns the table shows for the best and the last epoch, when a run has them
TABLE_METRICS = ("val_loss", "val_iou", "val_rmse", "val_abs_rel", "val_delta1", "val_delta1_ms")
IGNORED_KEYS = ("run_dir", "resume", "device")  # differ between runs without changing what they learn


@dataclass
class Run:
    """One run directory as compare reads it."""

    path: Path
    epochs: np.ndarray  # the finished epochs, sorted
    columns: dict[str, np.ndarray]  # metrics.csv column -> values aligned to epochs (NaN: missing)
    config: Config | None  # RUN/config.yaml (None when absent or unreadable)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_metric(self) -> str:
        return self.config.train.best_metric if self.config is not None else Config().train.best_metric

    def rows(self) -> list[dict[str, Any]]:
        """metrics.csv as history rows ({"epoch": ..., column: value}), NaN cells left out."""
        return [{"epoch": int(e), **{k: float(v[i]) for k, v in self.columns.items() if not math.isnan(v[i])}}
                for i, e in enumerate(self.epochs)]


def read_run(path: str | os.PathLike[str]) -> Run:
    """A run directory's metrics.csv and config.yaml. Raises DataError naming the folder when it is
    missing or holds no metrics.csv."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such run directory")
    if not (folder / "metrics.csv").is_file():
        raise DataError(f"{folder}: not a run directory, or no epoch has finished yet (no metrics.csv)")
    epochs, columns = read_metrics(folder / "metrics.csv")
    return Run(folder, epochs, columns, _read_config(folder / "config.yaml"))


def _read_config(path: Path) -> Config | None:
    try:
        return config_from_dict(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, ConfigError):
        return None  # an older or hand-edited config: the curves still compare, without its keys


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """The config keys whose values are not the same in every run that has a config (IGNORED_KEYS aside)."""
    configs = [run.config for run in runs if run.config is not None]
    keys = {key for other in configs[1:] for key, _, _ in diff_configs(configs[0], other)}
    return [key for key in flatten(config_to_dict(Config())) if key in keys and key not in IGNORED_KEYS]


def legend_label(run: Run, keys: Sequence[str]) -> str:
    """"name: key=value, ..." with the differing keys' values (the section prefix dropped)."""
    if run.config is None or not keys:
        return run.name
    flat = flatten(config_to_dict(run.config))
    return f"{run.name}: " + ", ".join(f"{key.rpartition('.')[2]}={flat.get(key)}" for key in keys)


def panels(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(title, columns) of each panel: one per loss (train solid, val dashed), then one per validation
    metric; only what some run logged."""
    logged = {c for run in runs for c, v in run.columns.items() if np.any(~np.isnan(v))}
    out = [(key, [c for c in (f"train_{key}", f"val_{key}") if c in logged]) for key in LOSS_KEYS]
    extra = sorted(c for c in logged if c.startswith("val_") and c not in CSV_COLUMNS)
    metrics = [c for c in CSV_COLUMNS if c.startswith("val_") and c.removeprefix("val_") not in LOSS_KEYS]
    out += [(c.removeprefix("val_"), [c]) for c in [*metrics, *extra] if c in logged]
    return [(title, columns) for title, columns in out if columns]


def save_comparison(runs: Sequence[Run], path: str | os.PathLike[str]) -> Path:
    """The runs' curves overlaid, one panel per loss and validation metric, one colour per run, the
    differing config keys in the legend; written atomically as PNG."""
    chosen = panels(runs)
    cols = min(4, max(1, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / cols))
    fig = Figure(figsize=(4 * cols, 2.8 * rows + 0.4 + 0.25 * len(runs)), dpi=100, facecolor="white",
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    keys = differing_keys(runs)
    for ax, (title, columns) in zip(axes, chosen, strict=False):  # the grid's spare axes are switched off below
        for r, run in enumerate(runs):
            for column in columns:
                values = run.columns.get(column)
                if values is not None and np.any(~np.isnan(values)):
                    ax.plot(run.epochs, values, color=f"C{r % 10}", marker="o", markersize=2.5,
                            linestyle="--" if column.startswith("val_") and len(columns) > 1 else "-")
        ax.set_title(title + (" (train solid, val dashed)" if len(columns) > 1 else ""), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    handles = [axes[0].plot([], [], color=f"C{r % 10}")[0] for r in range(len(runs))]
    fig.legend(handles, [legend_label(run, keys) for run in runs], loc="outside lower center", fontsize=8,
               ncols=1 if len(runs) > 3 else len(runs))
    return write_figure(fig, path)


def summary(run: Run) -> list[dict[str, Any]]:
    """The run's best epoch (by its train.best_metric) and its last one, as history rows with a "which" key."""
    rows = run.rows()
    if not rows:
        return []
    best = best_epoch(rows, run.best_metric)
    picked = [("best", next(r for r in rows if r["epoch"] == best))] if best is not None else []
    return [{"which": which, **row} for which, row in [*picked, ("last", rows[-1])]]


def format_table(runs: Sequence[Run]) -> str:
    """A plain-text table: per run its best and last epoch, the metric that picks best, and the
    headline validation figures (a dash where the run has no value)."""
    header = ["run", "row", "epoch", "best by", *TABLE_METRICS]
    lines = [header]
    for run in runs:
        found = summary(run) or [{"which": "-", "epoch": "no epoch yet"}]
        for row in found:
            lines.append([run.name, row["which"], str(row["epoch"]), run.best_metric,
                          *(f"{row[c]:.4g}" if c in row else "-" for c in TABLE_METRICS)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def compare_runs(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> tuple[Path, str]:
    """`maskdepth compare`: read the runs, write the overlay to `out`; (its path, the table)."""
    runs = [read_run(path) for path in paths]
    return save_comparison(runs, out), format_table(runs)


__all__ = ["IGNORED_KEYS", "TABLE_METRICS", "Run", "compare_runs", "differing_keys", "format_table", "legend_label",
           "panels", "read_run", "save_comparison", "summary"]
