"""Pictures of a run: depth colour maps, per-epoch sample grids, training curves.

    grid = save_sample_grid(run / "samples/epoch_001.png", bg, fg_bg, true_mask, pred_mask,
                            true_depth, pred_depth, title="epoch 1")
    save_curves(run / "metrics.csv", run / "curves.png")

Colour conventions, fixed so that pictures of different epochs and runs compare:
- depth: `DEPTH_CMAP` ("plasma_r") over [0, 1]: near (small depth) is bright yellow, far is dark
  blue, the DenseDepth convention. Values outside [0, 1] are clipped.
- depth error |pred - true|: `ERROR_CMAP` ("inferno") over [0, `ERROR_MAX`] = [0, 0.25]: black is
  exact, bright is wrong by 0.25 or more.
- masks: grayscale, 1 = white; the predicted mask column shows the probability.

Only matplotlib's object API is used (`Figure` + `FigureCanvasAgg`): no pyplot, no global
backend, so drawing works the same in a notebook (which shows the PNGs) and on a headless server.
Files are written to a temp file in the target folder and renamed, so a reader (or a Drive sync)
never sees half a PNG.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from maskdepth.errors import DataError
from maskdepth.fileio import write_atomic
from maskdepth.metrics import depth_metrics, mask_metrics

DEPTH_CMAP = "plasma_r"
ERROR_CMAP = "inferno"
ERROR_MAX = 0.25

GRID_COLUMNS = ("bg", "fg_bg", "true mask", "pred mask", "true depth", "pred depth", "depth error")

_DPI = 100
_MIN_CELL_PX = 128  # small inputs are upscaled by an integer factor to at least this, for crisp pixels


def colorize_depth(
    depth: Any, vmin: float = 0.0, vmax: float = 1.0, cmap: str = DEPTH_CMAP
) -> np.ndarray:
    """Map a depth image to RGB with a fixed range.

    Args:
        depth: [H, W] (or [1, H, W]) array or tensor; values are clipped to [vmin, vmax], NaN
            shows as vmax (far).
        vmin, vmax: the values shown as the two ends of the colour map (fixed, so epochs compare).
        cmap: a matplotlib colour map name; the default "plasma_r" shows near as bright.

    Returns:
        uint8 [H, W, 3]; `vmin` gets the colour map's first colour, `vmax` its last.
    """
    if vmax <= vmin:
        raise ValueError(f"vmax must be greater than vmin, got vmin={vmin}, vmax={vmax}")
    values = _as_image(depth, "depth", channels=1)
    scaled = (np.nan_to_num(values, nan=vmax) - vmin) / (vmax - vmin)
    index = np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.intp)
    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    return lut[index]


def save_sample_grid(
    path: str | os.PathLike[str],
    bg: Any,
    fg_bg: Any,
    true_mask: Any,
    pred_mask: Any,
    true_depth: Any,
    pred_depth: Any,
    *,
    title: str | None = None,
    row_titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG with one row per sample and the columns of `GRID_COLUMNS`.

    Args:
        path: the PNG to write (parent folders are created; written atomically).
        bg, fg_bg: [N, 3, H, W] RGB in [0, 1] (tensors or arrays, any device/dtype).
        true_mask: [N, 1, H, W] in {0, 1}; pred_mask: [N, 1, H, W] probabilities in [0, 1].
        true_depth, pred_depth: [N, 1, H, W] in [0, 1], larger = farther.
        title: an optional line above the grid (e.g. "epoch 3").
        row_titles: optional, one line per row, written left-aligned under its input columns (e.g.
            the sample's entry name and figures, in the failure report's worst-sample grids).

    Each row is annotated with its IoU under the predicted mask, its depth RMSE under the
    predicted depth (`maskdepth.metrics` definitions) and its mean error under the error map.
    Depth and error use fixed ranges, shown by colour bars at the bottom.

    Returns:
        The path written.
    """
    images = _grid_inputs(bg, fg_bg, true_mask, pred_mask, true_depth, pred_depth)
    n, h, w = images["bg"].shape[:3]
    grid = _GridLayout.of(n, h, w, titled=bool(title))
    fig = Figure(figsize=(grid.width / _DPI, grid.height / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    if title:
        fig.text(grid.pad / grid.width, 1.0 - (grid.pad + grid.title_h / 2) / grid.height, title,
                 ha="left", va="center", fontsize=grid.font + 2, weight="bold")
    header_y = grid.pad + grid.title_h
    for c, label in enumerate(GRID_COLUMNS):
        fig.text((grid.col_x(c) + grid.cell_w / 2) / grid.width, 1.0 - (header_y + grid.header_h / 2) / grid.height,
                 label, ha="center", va="center", fontsize=grid.font + 1)
    if row_titles is not None and len(row_titles) != n:
        raise ValueError(f"save_sample_grid got {len(row_titles)} row titles for {n} rows")
    _draw_grid_rows(fig, grid, header_y + grid.header_h, images, row_titles)
    _draw_grid_bars(fig, grid)
    return write_figure(fig, path)


def _grid_inputs(bg: Any, fg_bg: Any, true_mask: Any, pred_mask: Any, true_depth: Any,
                 pred_depth: Any) -> dict[str, np.ndarray]:
    """The grid's inputs as [N, H, W, C] float32 arrays, checked to agree in N, H, W (N >= 1)."""
    images = {name: _as_batch(value, name, channels=3 if name in ("bg", "fg_bg") else 1) for name, value in (
        ("bg", bg), ("fg_bg", fg_bg), ("true_mask", true_mask), ("pred_mask", pred_mask),
        ("true_depth", true_depth), ("pred_depth", pred_depth))}
    shapes = {name: a.shape[:3] for name, a in images.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"save_sample_grid needs the same N, H, W for every input, got {shapes}")
    if images["bg"].shape[0] == 0:
        raise ValueError("save_sample_grid needs at least one sample, got N=0")
    return images


def _draw_grid_rows(fig: Figure, grid: _GridLayout, top: int, images: dict[str, np.ndarray],
                    row_titles: Sequence[str] | None = None) -> None:
    """One row per sample from pixel row `top` down, each annotated with its IoU, RMSE and mean error
    (and its title, when given, under the input columns)."""
    true_d, pred_d = images["true_depth"][..., 0], images["pred_depth"][..., 0]
    error = np.abs(np.clip(pred_d, 0.0, 1.0) - true_d)
    ious = mask_metrics(torch.from_numpy(images["pred_mask"]), torch.from_numpy(images["true_mask"]),
                        reduction="none")["iou"].tolist()
    rmses = depth_metrics(torch.from_numpy(pred_d), torch.from_numpy(true_d), reduction="none")["rmse"].tolist()
    for r in range(len(error)):
        cells = [
            (images["bg"][r], {}),
            (images["fg_bg"][r], {}),
            (images["true_mask"][r, ..., 0], dict(cmap="gray", vmin=0.0, vmax=1.0)),
            (images["pred_mask"][r, ..., 0], dict(cmap="gray", vmin=0.0, vmax=1.0)),
            (true_d[r], dict(cmap=DEPTH_CMAP, vmin=0.0, vmax=1.0)),
            (pred_d[r], dict(cmap=DEPTH_CMAP, vmin=0.0, vmax=1.0)),
            (error[r], dict(cmap=ERROR_CMAP, vmin=0.0, vmax=ERROR_MAX)),
        ]
        notes = {3: f"IoU {ious[r]:.3f}", 5: f"RMSE {rmses[r]:.4f}" if np.isfinite(rmses[r]) else "RMSE n/a",
                 6: f"mean {np.mean(error[r]):.4f}"}
        y = top + r * (grid.cell_h + grid.note_h + grid.gap)
        _draw_grid_row(fig, grid, y, cells, notes)
        if row_titles is not None:  # left-aligned under bg, fg_bg and true mask, which carry no notes
            fig.text(grid.col_x(0) / grid.width, 1.0 - (y + grid.cell_h + grid.note_h / 2 + 1) / grid.height,
                     row_titles[r], ha="left", va="center", fontsize=grid.font - 1, color="#111111")


@dataclass
class _GridLayout:
    """The sample grid's geometry in pixels: every cell an integer multiple of the image size,
    so that interpolation="nearest" gives crisp, undistorted pixels."""

    width: int
    height: int
    cell_w: int
    cell_h: int
    title_h: int
    pad: int = 6
    gap: int = 4
    header_h: int = 18
    note_h: int = 15  # per-row annotation line under the cells
    bar_h: int = 8
    bar_note_h: int = 18
    bar_gap: int = 6

    @classmethod
    def of(cls, n: int, h: int, w: int, titled: bool) -> _GridLayout:
        scale = max(1, math.ceil(_MIN_CELL_PX / min(h, w)))
        g = cls(0, 0, w * scale, h * scale, 22 if titled else 0)
        cols = len(GRID_COLUMNS)
        g.width = 2 * g.pad + cols * g.cell_w + (cols - 1) * g.gap
        g.height = (g.pad + g.title_h + g.header_h + n * (g.cell_h + g.note_h) + (n - 1) * g.gap + g.bar_gap
                    + g.bar_h + g.bar_note_h + g.pad)
        return g

    @property
    def font(self) -> int:
        return 9 if self.cell_w >= 160 else 8

    def col_x(self, c: int) -> int:
        return self.pad + c * (self.cell_w + self.gap)

    def box(self, x: float, y_top: float, bw: float, bh: float) -> list[float]:
        """Figure-fraction rectangle of a box given in pixels from the top-left corner."""
        return [x / self.width, 1.0 - (y_top + bh) / self.height, bw / self.width, bh / self.height]


def _draw_grid_row(fig: Figure, grid: _GridLayout, y: int, cells: list[tuple[np.ndarray, dict[str, Any]]],
                   notes: dict[int, str]) -> None:
    for c, (img, style) in enumerate(cells):
        ax = fig.add_axes(grid.box(grid.col_x(c), y, grid.cell_w, grid.cell_h))
        ax.imshow(np.clip(img, 0.0, 1.0) if img.ndim == 3 else img, interpolation="nearest", **style)
        ax.set_axis_off()
    for c, text in notes.items():
        y_note = y + grid.cell_h + grid.note_h / 2 + 1
        fig.text((grid.col_x(c) + grid.cell_w / 2) / grid.width, 1.0 - y_note / grid.height,
                 text, ha="center", va="center", fontsize=grid.font - 1, color="#333333")


def _draw_grid_bars(fig: Figure, grid: _GridLayout) -> None:
    """The depth and error colour bars under the grid, and the legend line beside them."""
    bar_y = grid.height - grid.pad - grid.bar_note_h - grid.bar_h
    depth_bar = fig.add_axes(grid.box(grid.col_x(4), bar_y, 2 * grid.cell_w + grid.gap, grid.bar_h))
    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), DEPTH_CMAP), cax=depth_bar,
                 orientation="horizontal", ticks=[0.0, 0.5, 1.0])
    depth_bar.set_xticklabels(["0 near", "0.5", "1 far"])
    error_bar = fig.add_axes(grid.box(grid.col_x(6), bar_y, grid.cell_w, grid.bar_h))
    fig.colorbar(ScalarMappable(Normalize(0.0, ERROR_MAX), ERROR_CMAP), cax=error_bar,
                 orientation="horizontal", ticks=[0.0, ERROR_MAX / 2, ERROR_MAX])
    error_bar.set_xticklabels(["0", f"{ERROR_MAX / 2:g}", f"\u2265{ERROR_MAX:g}"])
    for bar in (depth_bar, error_bar):
        bar.tick_params(labelsize=grid.font - 1, length=2, pad=1)
        labels = bar.get_xticklabels()
        labels[0].set_horizontalalignment("left")  # keep the end labels inside the bar's width
        labels[-1].set_horizontalalignment("right")
    fig.text(grid.pad / grid.width, 1.0 - (bar_y + grid.bar_h / 2) / grid.height,
             "mask: IoU at p \u2265 0.5    depth: fixed range [0, 1]    "
             f"error: |pred \u2212 true| clipped at {ERROR_MAX:g}",
             ha="left", va="center", fontsize=grid.font - 1, color="#333333")


# Panels of the curves figure: (title, [(column, label, colour, line style)], y axis), where the
# y axis is "linear", "log", or "fraction" (fixed [0, 1], so runs and epochs compare at a glance).
# A quantity keeps its colour across train and val; val is dashed.
_CURVE_PANELS: tuple[tuple[str, tuple[tuple[str, str, str, str], ...], str], ...] = (
    ("loss", (("train_loss", "train", "C0", "-"), ("val_loss", "val", "C0", "--")), "linear"),
    ("loss parts", (
        ("train_mask_loss", "train mask", "C2", "-"), ("val_mask_loss", "val mask", "C2", "--"),
        ("train_depth_loss", "train depth", "C3", "-"), ("val_depth_loss", "val depth", "C3", "--"),
    ), "linear"),
    ("val mask", (("val_iou", "IoU", "C0", "-"), ("val_dice", "Dice", "C1", "-")), "fraction"),
    ("val depth error", (("val_rmse", "RMSE", "C0", "-"), ("val_abs_rel", "abs_rel", "C1", "-"),
                         ("val_abs_rel_ms", "abs_rel median-scaled", "C1", "--")), "linear"),
    ("val depth accuracy", (
        ("val_delta1", "\u03b4<1.25", "C0", "-"), ("val_delta2", "\u03b4<1.25\u00b2", "C1", "-"),
        ("val_delta3", "\u03b4<1.25\u00b3", "C2", "-"), ("val_delta1_ms", "\u03b4<1.25 median-scaled", "C0", "--"),
    ), "fraction"),
    ("learning rate", (("lr", "lr", "C0", "-"),), "log"),
)


def save_curves(metrics_csv: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Plot a run's metrics.csv per epoch: losses (train vs val), IoU/Dice, RMSE/abs_rel, deltas, lr.

    Tolerant of what the CSV holds: missing columns leave their curve out (a panel with none of
    its columns says so), empty or non-numeric cells are gaps, and when an epoch appears more than
    once (a resumed run that re-logged it) its last row wins. One epoch is drawn as points.

    Args:
        metrics_csv: the CSV, with a header row that has an `epoch` column.
        path: the PNG to write (atomically).

    Returns:
        The path written.

    Raises:
        DataError: the CSV is missing or has no `epoch` column.
    """
    epochs, columns = read_metrics(Path(metrics_csv))
    fig = Figure(figsize=(12, 6.4), dpi=_DPI, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    for ax, (name, curves, y_axis) in zip(axes.flat, _CURVE_PANELS, strict=True):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        drawn = 0
        for column, label, color, style in curves:
            values = columns.get(column)
            if values is None or np.all(np.isnan(values)):
                continue
            last = values[~np.isnan(values)][-1]
            ax.plot(epochs, values, linestyle=style, color=color, marker="o", markersize=3,
                    label=f"{label} {last:.3g}")
            drawn += 1
            if y_axis == "log" and np.all(values[~np.isnan(values)] > 0):
                ax.set_yscale("log")
        if y_axis == "fraction":
            ax.set_ylim(0.0, 1.02)
        if drawn:
            ax.legend(fontsize=8, title="last epoch", title_fontsize=7, framealpha=0.7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
                    fontsize=9, color="gray")
        if len(epochs):
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)  # also gives one epoch a sane axis
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    run_name = Path(metrics_csv).resolve().parent.name
    fig.suptitle(f"{run_name}: {len(epochs)} epoch{'s' if len(epochs) != 1 else ''}", fontsize=11)
    return write_figure(fig, path)


def read_metrics(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A metrics.csv as (epochs sorted and unique, {column: values aligned to them, NaN = missing});
    a later row for an epoch wins. Raises DataError for a missing file or one without `epoch`."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found") from None
    if "epoch" not in header:
        raise DataError(f"{path}: no 'epoch' column in the header (found: {', '.join(header) or 'nothing'})")
    by_epoch: dict[float, dict[str, str]] = {}
    for row in rows:
        epoch = _to_float(row.get("epoch"))
        if not math.isnan(epoch):
            by_epoch[epoch] = row  # a later row for the same epoch wins
    epochs = np.array(sorted(by_epoch), dtype=np.float64)
    columns = {
        name: np.array([_to_float(by_epoch[e].get(name)) for e in epochs], dtype=np.float64)
        for name in header
        if name and name != "epoch"
    }
    return epochs, columns


def _to_float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _to_numpy(x: Any) -> np.ndarray:
    """A float32 numpy copy of an array or tensor (detached, on CPU, any dtype incl. bf16)."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def _as_batch(x: Any, name: str, channels: int) -> np.ndarray:
    """[N, C, H, W] (or [N, H, W] when channels == 1) -> [N, H, W, C] float32."""
    a = _to_numpy(x)
    if channels == 1 and a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] != channels:
        want = f"[N, {channels}, H, W]" + (" or [N, H, W]" if channels == 1 else "")
        raise ValueError(f"{name} must have shape {want}, got {list(a.shape)}")
    return a.transpose(0, 2, 3, 1)


def _as_image(x: Any, name: str, channels: int) -> np.ndarray:
    """[H, W] or [1, H, W] -> [H, W] float32."""
    a = _to_numpy(x)
    if a.ndim == 3 and a.shape[0] == channels == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape [H, W] or [1, H, W], got {list(a.shape)}")
    return a


def write_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render `fig` to PNG and put it at `path` atomically (temp file in the same folder, fsync, rename)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor=fig.get_facecolor())
    return write_atomic(path, buffer.getvalue())
