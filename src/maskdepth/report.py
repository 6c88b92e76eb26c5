"""Where a model fails: its worst samples, its errors by depth and by object size, per scene kind.

    maskdepth evaluate runs/quick/checkpoints/best.pt --report runs/quick/report

    found = FailureReport(k=8)                        # ranks and bins while evaluate runs: one pass
    evaluate(model, loader, device, on_batch=found)
    write_report(found, model, dataset, "report/", device, results=..., scenes=scene_table(data))

    grids = EpochGrids(run_dir, model, fixed_batch, device, val_set=val_set, worst=8, metric="val_iou")
    evaluate(model, val_loader, device, on_batch=grids.observe)
    grids(row)                                        # samples/epoch_NNN.png and samples/worst_NNN.png

The per-epoch grid shows the same samples every epoch, which is right for watching progress but
says nothing about where the model fails; these pictures do. Every figure here is a per-image
value from `maskdepth.metrics` (`evaluate`'s own, or `depth_metrics(region=...)` for the depth
bands), averaged with every image weighing the same, as `evaluate` averages. Nothing per image
is kept but a few numbers: the worst-K lists keep K indices and re-read those K samples at the end.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from maskdepth import viz
from maskdepth.data import collate, read_scene_table
from maskdepth.evaluate import draw_epoch_grid, predict_batch
from maskdepth.fileio import write_atomic
from maskdepth.history import minimised
from maskdepth.metrics import DEPTH_KEYS, MASK_KEYS, MetricAccumulator, depth_metrics

# bands of true depth (in [0, 1], 1 = far) and of object coverage (mask fraction): lo <= x < hi,
# the last band closed; the depth bands split what is near, where objects stand, from far walls and sky
DEPTH_BANDS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
COVERAGE_BANDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)
BAND_KEYS = ("rmse", "abs_rel", "delta1")  # the depth figures of each band
ROW_KEYS = ("iou", "dice", "rmse", "abs_rel", "delta1")  # the figures kept per image
SCENE_GROUPS = ("scene_kind", "object_kind")  # scenes.csv columns the report groups by


def bands(edges: Sequence[float]) -> list[tuple[float, float]]:
    """(lo, hi) of each band, the last one's hi raised to +inf so that x == edges[-1] falls in it."""
    return [(lo, hi if i < len(edges) - 2 else math.inf) for i, (lo, hi) in enumerate(itertools.pairwise(edges))]


def band_label(edges: Sequence[float], i: int) -> str:
    return f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == len(edges) - 2 else ')'}"


def row_title(row: Mapping[str, Any]) -> str:
    """A worst-grid row's title: the entry name and its figures."""
    return (f"{row['name']}  IoU {row.get('iou', math.nan):.3f}  RMSE {row.get('rmse', math.nan):.4f}  "
            f"\u03b41 {row.get('delta1', math.nan):.3f}")


class WorstK:
    """The k worst images by one per-image figure `key`, kept exactly while batches stream past.

    Holds at most k (badness, dataset index, figures) entries: each update merges the batch and keeps
    the k worst, ties going to the lower index, so the result is the one a full sort of every image
    gives. "Worst" is the largest value for a minimised figure (rmse, abs_rel, ...; see
    `maskdepth.history.minimised`), the smallest otherwise (iou, delta1). NaN values never rank.
    """

    def __init__(self, k: int, key: str) -> None:
        self.k, self.key, self.higher_is_worse = k, key, minimised(key)
        self.reset()

    def reset(self) -> None:
        self._badness = np.empty(0, np.float64)
        self._index = np.empty(0, np.int64)
        self._rows: list[dict[str, Any]] = []

    def update(self, indices: Sequence[int], names: Sequence[str], values: Mapping[str, Any]) -> None:
        """Merge one batch: dataset `indices`, entry `names` and per-image `values` {key: [B]}."""
        if self.k <= 0:
            return
        score = np.asarray(torch.as_tensor(values[self.key]).double().cpu(), np.float64)
        badness = score if self.higher_is_worse else -score
        fresh = np.flatnonzero(~np.isnan(badness))
        all_badness = np.concatenate([self._badness, badness[fresh]])
        all_index = np.concatenate([self._index, np.asarray(indices, np.int64)[fresh]])
        keep = np.lexsort((all_index, -all_badness))[: self.k]  # badness descending, then index ascending
        old = len(self._rows)
        self._rows = [self._rows[i] if i < old else _figures(int(fresh[i - old]), indices, names, values)
                      for i in keep.tolist()]
        self._badness, self._index = all_badness[keep], all_index[keep]

    def result(self) -> list[dict[str, Any]]:
        """The kept images, worst first: {"index", "name", and the ROW_KEYS figures}."""
        return [dict(row) for row in self._rows]


def _figures(j: int, indices: Sequence[int], names: Sequence[str], values: Mapping[str, Any]) -> dict[str, Any]:
    return {"index": int(indices[j]), "name": str(names[j]),
            **{k: float(values[k][j]) for k in ROW_KEYS if k in values}}


@torch.no_grad()  # as the epoch grid: its forward pass builds no graph
def draw_worst_grid(path: str | os.PathLike[str], model: nn.Module, dataset: Any, worst: WorstK,
                    device: torch.device, *, title: str, amp_dtype: torch.dtype | None = None) -> Path | None:
    """The `worst` samples re-read from `dataset`, through `model`, as one sample grid (worst first,
    each row titled with its name and figures); None when nothing was ranked."""
    rows = worst.result()
    if not rows:
        return None
    batch = collate([dataset[row["index"]] for row in rows])
    batch, pred_mask, pred_depth = predict_batch(model, batch, device, amp_dtype)
    return viz.save_sample_grid(path, batch["bg"], batch["fg_bg"], batch["mask"], pred_mask, batch["depth"],
                                pred_depth, title=title, row_titles=[row_title(row) for row in rows])


def worst_key(metric: str) -> str:
    """The per-image figure a run's worst grid ranks by: its train.best_metric where that is one
    (val_iou -> iou, val_rmse -> rmse, ...), else (a loss, a train_ column) the mask IoU."""
    key = metric.removeprefix("val_")
    return key if metric.startswith("val_") and key in MASK_KEYS + DEPTH_KEYS else "iou"


class EpochGrids:
    """What the training loop draws at an epoch's end: samples/epoch_NNN.png (the fixed samples) and
    samples/worst_NNN.png, the epoch's `worst` worst validation samples by `worst_key(metric)`.

    The ranking rides on the validation pass (`observe` is evaluate's `on_batch`), so val is read
    once; the K worst are re-read and drawn after it. Under DDP each rank sees its own shard:
    build this with worst=0 on all ranks but 0, whose grid then ranks rank 0's shard only.
    Calling it draws both grids (the worst one only when this epoch was observed) and resets.
    """

    def __init__(self, run_dir: Path, model: nn.Module, fixed: dict[str, Any] | None, device: torch.device, *,
                 val_set: Any = None, worst: int = 0, metric: str = "val_iou",
                 amp_dtype: torch.dtype | None = None) -> None:
        self.run_dir, self.model, self.fixed, self.device, self.amp_dtype = run_dir, model, fixed, device, amp_dtype
        self.val_set = val_set
        self.worst = WorstK(worst if val_set is not None else 0, worst_key(metric))

    def observe(self, batch: dict[str, Any], values: dict[str, torch.Tensor], tensors: Any = None) -> None:
        self.worst.update(batch["index"], batch["name"], values)

    def __call__(self, row: dict[str, Any]) -> None:
        draw_epoch_grid(self.run_dir, self.model, self.fixed, self.device, row, amp_dtype=self.amp_dtype)
        epoch, key = row["epoch"], self.worst.key
        title = (f"{self.run_dir.name}  epoch {epoch}  the {len(self.worst.result())} worst validation samples "
                 f"by {key} ({'highest' if self.worst.higher_is_worse else 'lowest'} first)")
        draw_worst_grid(self.run_dir / "samples" / f"worst_{epoch:03d}.png", self.model, self.val_set, self.worst,
                        self.device, title=title, amp_dtype=self.amp_dtype)
        self.worst.reset()


# --------------------------------------------------------------------------------------------
# the failure report of `maskdepth evaluate --report`


class FailureReport:
    """Everything the report shows, gathered batch by batch as evaluate's `on_batch`: the K worst by
    IoU and by `depth_key`, the per-image figures (a few floats per image), and the depth figures per
    band of true depth (`depth_metrics` restricted to the band's pixels, per image)."""

    def __init__(self, k: int = 8, depth_key: str = "rmse") -> None:
        self.worst_iou, self.worst_depth = WorstK(k, "iou"), WorstK(k, depth_key)
        self.per_image: dict[str, list[Any]] = {key: [] for key in ("index", "name", "coverage", *ROW_KEYS)}
        self.depth_bands = MetricAccumulator()

    def __call__(self, batch: dict[str, Any], values: dict[str, torch.Tensor],
                 tensors: dict[str, torch.Tensor]) -> None:
        indices, names = [int(i) for i in batch["index"]], list(batch["name"])
        self.worst_iou.update(indices, names, values)
        self.worst_depth.update(indices, names, values)
        true_mask, true_depth = tensors["true_mask"], tensors["true_depth"]
        coverage = (true_mask >= 0.5).flatten(1).double().mean(1).cpu()  # the mask fraction, as make-data's
        for key, column in (("index", indices), ("name", names), ("coverage", coverage.tolist()),
                            *((k, values[k].tolist()) for k in ROW_KEYS)):
            self.per_image[key].extend(column)
        valid = true_depth > 1e-3  # depth_metrics' default min_depth
        for b, (lo, hi) in enumerate(bands(DEPTH_BANDS)):
            region = (true_depth >= lo) & (true_depth < hi)
            figures = depth_metrics(tensors["pred_depth"], true_depth, region=region, reduction="none")
            self.depth_bands.update({f"{b}_{k}": figures[k] for k in BAND_KEYS})
            self.depth_bands.add(f"{b}_pixels", float((region & valid).sum()))

    def tables(self, scenes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The report's tables: depth_bands, coverage_bands, scenes (None without a scene table),
        worst_iou and worst_depth (worst first)."""
        return {"depth_bands": self._depth_table(), "coverage_bands": self._coverage_table(),
                "scenes": None if scenes is None else self._scene_tables(scenes),
                "worst_iou": self.worst_iou.result(), "worst_depth": self.worst_depth.result(),
                "worst_depth_key": self.worst_depth.key}

    def _depth_table(self) -> list[dict[str, Any]]:
        means = self.depth_bands.compute()
        return [{"band": band_label(DEPTH_BANDS, b), "lo": DEPTH_BANDS[b], "hi": DEPTH_BANDS[b + 1],
                 "pixels": int(self.depth_bands.total(f"{b}_pixels")),
                 "images": self.depth_bands.count(f"{b}_{BAND_KEYS[0]}"),
                 **{k: _finite(means.get(f"{b}_{k}")) for k in BAND_KEYS}} for b in range(len(DEPTH_BANDS) - 1)]

    def _coverage_table(self) -> list[dict[str, Any]]:
        coverage = np.asarray(self.per_image["coverage"], np.float64)
        rows = []
        for b, (lo, hi) in enumerate(bands(COVERAGE_BANDS)):
            pick = (coverage >= lo) & (coverage < hi)
            rows.append({"band": band_label(COVERAGE_BANDS, b), "lo": COVERAGE_BANDS[b], "hi": COVERAGE_BANDS[b + 1],
                         "images": int(pick.sum()), **self._means(pick, ("iou", "dice"))})
        return rows

    def _scene_tables(self, scenes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Per SCENE_GROUPS column, one row per kind: images and the mean figures (images without a
        row in the table are left out)."""
        by_name = {entry_stem(str(row.get("fg_bg", ""))): row for row in scenes}
        found = [by_name.get(name) for name in self.per_image["name"]]
        tables = {}
        for column in SCENE_GROUPS:
            kinds = np.array([str(row.get(column, "")) if row else "" for row in found], dtype=object)
            tables[column] = [{"kind": kind, "images": int((kinds == kind).sum()), **self._means(kinds == kind)}
                              for kind in sorted(set(kinds.tolist()) - {""})]
        return tables

    def _means(self, pick: np.ndarray, keys: Sequence[str] = ROW_KEYS) -> dict[str, float | None]:
        """The mean of each per-image figure over the picked images (NaNs skipped, as evaluate's)."""
        out = {}
        for key in keys:
            values = np.asarray(self.per_image[key], np.float64)[pick]
            values = values[~np.isnan(values)]
            out[key] = float(values.mean()) if len(values) else None
        return out


def entry_stem(entry: str) -> str:
    """"fg_bg/bg007_fg042_1_13.jpg" -> "bg007_fg042_1_13", the dataset's `name` of a sample."""
    return os.path.splitext(entry.rpartition("/")[2])[0]


def scene_table(data: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """make-data's scenes.csv of a dataset zip (None for a manifest, or a zip without one)."""
    return read_scene_table(data) if str(data).lower().endswith(".zip") else None


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# writing it: grids, plots, tables, index.md


def write_report(found: FailureReport, model: nn.Module, dataset: Any, out_dir: str | os.PathLike[str],
                 device: torch.device, *, results: Mapping[str, Any] | None = None,
                 scenes: list[dict[str, Any]] | None = None, amp_dtype: torch.dtype | None = None) -> Path:
    """Write the failure report into `out_dir` and return its index.md: worst_iou.png and worst_depth.png
    (the K worst samples re-read and drawn), bands.png, histograms.png, report.json (every table),
    per_image.csv (the figures of every image) and index.md, which shows them in order. `results` is
    `evaluate_checkpoint`'s dict (its headline figures open the page); `scenes` make-data's scene table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = found.tables(scenes)
    key = found.worst_depth.key
    for name, worst, what in (("worst_iou.png", found.worst_iou, "mask IoU (lowest first)"),
                              ("worst_depth.png", found.worst_depth, f"depth {key} (worst first)")):
        draw_worst_grid(out / name, model, dataset, worst, device, amp_dtype=amp_dtype,
                        title=f"the {len(worst.result())} worst of {len(found.per_image['name'])} samples by {what}")
    save_band_plot(tables, out / "bands.png")
    save_histograms(found.per_image, out / "histograms.png")
    write_atomic(out / "report.json", json.dumps({"results": dict(results or {}), **tables}, indent=2) + "\n")
    write_atomic(out / "per_image.csv", _per_image_csv(found.per_image))
    return write_atomic(out / "index.md", format_index(tables, results or {}, key))


def _per_image_csv(per_image: Mapping[str, Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(per_image))
    for row in zip(*per_image.values(), strict=True):
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def save_band_plot(tables: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """bands.png: depth RMSE and abs_rel by band of true depth, mask IoU by object-coverage band."""
    fig = Figure(figsize=(11, 3.8), dpi=100, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    depth, cover = tables["depth_bands"], tables["coverage_bands"]
    x = np.arange(len(depth))
    for shift, k, color in ((-0.2, "rmse", "C0"), (0.2, "abs_rel", "C1")):
        left.bar(x + shift, [_nan(r[k]) for r in depth], width=0.4, color=color, label=k)
    left.set_xticks(x, [f"{r['band']}\n{r['images']} img" for r in depth], fontsize=8)
    left.set(title="depth error by true depth (1 = far)", xlabel="band of true depth")
    left.legend(fontsize=8)
    x = np.arange(len(cover))
    right.bar(x, [_nan(r["iou"]) for r in cover], color="C2")
    right.set_xticks(x, [f"{r['band']}\n{r['images']} img" for r in cover], fontsize=8)
    right.set(title="mask IoU by object coverage", xlabel="mask fraction of the image", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    return viz.write_figure(fig, path)


def save_histograms(per_image: Mapping[str, Sequence[float]], path: str | os.PathLike[str]) -> Path:
    """histograms.png: the distribution of per-image IoU and delta1, with their means."""
    fig = Figure(figsize=(10, 3.4), dpi=100, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key, label in zip(fig.subplots(1, 2), ("iou", "delta1"), ("mask IoU", "depth \u03b41 (< 1.25)"),
                              strict=True):
        values = np.asarray(per_image[key], np.float64)
        values = values[~np.isnan(values)]
        ax.hist(values, bins=np.linspace(0, 1, 21), color="C0", alpha=0.8)
        if len(values):
            ax.axvline(values.mean(), color="C3", linestyle="--", label=f"mean {values.mean():.3f}")
            ax.legend(fontsize=8)
        ax.set(title=f"per-image {label}: {len(values)} images", xlabel=label, ylabel="images", xlim=(0, 1))
        ax.grid(True, alpha=0.3)
    return viz.write_figure(fig, path)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """A markdown table of `rows` (floats to 3 decimals, None as a dash)."""
    return [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}",
            *(f"| {' | '.join(_fmt(row.get(c)) for c in columns)} |" for row in rows)]


def format_index(tables: Mapping[str, Any], results: Mapping[str, Any], depth_key: str = "rmse") -> str:
    """index.md: the headline figures, then the worst grids, the band tables and plot, the histograms
    and the scene tables, in that order."""
    metrics = results.get("metrics", {})
    lines = ["# Failure report", "",
             f"{results.get('checkpoint', 'the model')} (epoch {results.get('epoch', '?')}) on the "
             f"{results.get('split', '?')} split of {results.get('data', '?')}: {results.get('count', '?')} images. "
             + "  ".join(f"{k} {_fmt(metrics.get(k))}" for k in ("iou", "rmse", "abs_rel", "delta1")), "",
             "## The worst samples by mask IoU", "", "![worst by IoU](worst_iou.png)", "",
             f"## The worst samples by depth {depth_key}", "", f"![worst by {depth_key}](worst_depth.png)", "",
             "## Depth error by band of true depth", "", "Means over the images with pixels in the band.", "",
             *markdown_table(tables["depth_bands"], ("band", "pixels", "images", *BAND_KEYS)), "",
             "## Mask IoU by object coverage", "",
             *markdown_table(tables["coverage_bands"], ("band", "images", "iou", "dice")), "",
             "![errors by band](bands.png)", ""]
    lines += ["## Per-image IoU and \u03b41", "", "![histograms](histograms.png)", "", "## Errors by scene kind", ""]
    if tables.get("scenes") is None:
        lines += ["The dataset has no scenes.csv (it was not made by `maskdepth make-data`).", ""]
    else:
        for column, rows in tables["scenes"].items():
            lines += [f"By `{column}`:", "", *markdown_table(rows, ("kind", "images", *ROW_KEYS)), ""]
    return "\n".join(lines)


__all__ = ["BAND_KEYS", "COVERAGE_BANDS", "DEPTH_BANDS", "EpochGrids", "FailureReport", "ROW_KEYS", "WorstK",
           "bands", "draw_worst_grid", "entry_stem", "format_index", "markdown_table", "save_band_plot",
           "save_histograms", "scene_table", "worst_key", "write_report"]
