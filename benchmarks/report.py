"""python -m benchmarks.report [--out docs/results/report.json] [--budget-64 240] [--budget-192 1500] [--smoke]

How good and how fast MaskDepthNet is, against the seed baseline and the classical alternatives:
writes the figures to docs/results/report.json and the pictures beside it (docs/results/*.png);
`python benchmarks/render.py` turns them into sections 1-3 of docs/results.md. Every figure comes
from this one invocation; the data file names its date, machine, command and budgets.

1. Quality on unseen scenes. A training archive (make-data, seed 0) and a separate test archive
   (seed 1: backgrounds and objects never seen in training) at 64 px, and again at 192 px.
   MaskDepthNet (configs/quick.yaml) and the seed baseline (configs/seed.yaml) are trained by the
   same loop (`maskdepth.train.fit`) for the same wall-clock budget of training steps: each
   model's training step is timed first (section 2), and its step count is set to
   budget x measured img/s / batch. Both are evaluated (last checkpoint, no selection on the test
   archive) by `maskdepth.evaluate` on every sample of the test archive, beside the baselines of
   `maskdepth.baselines`: background subtraction for the mask (|fg_bg - bg| summed over
   channels, Otsu threshold per image, 3x3 opening then closing; 5x5 above 96 px) and a
   mean-depth predictor (the per-pixel mean depth of the training split).
2. Training speed: img/s of a training step (losses + optimiser step, random inputs) and of
   inference for both models at 64/128/192 px (benchmarks/model.py), and the data pipeline
   against its decode limit (benchmarks/data.py, in a fresh process).
3. Scaling: index time and memory of 4k/40k/400k-sample archives (benchmarks/data.py's synthetic
   central directory), step time vs resolution, a training epoch of a small archive vs
   DataLoader workers 0/1/2 (`benchmarks.data.bench_epoch_workers`).
4. Pictures: predictions of both models on the same unseen samples; learning curves.

`--budget-64` / `--budget-192` are seconds of training steps per model (default 240 and 1500:
the 192 px section then fits a CPU hour for both models with evaluation). `--smoke` runs every
section at 32 px with tiny archives and budgets of seconds (what tests/test_benchmark.py runs).
A section that fails is recorded under `errors` in the data file; the others are kept.
GPU figures: `bash benchmarks/gpu.sh` writes docs/results/gpu.json on a CUDA machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import REPO, RESULTS, log, meta, module_env, rounded, save_png, shown, write_results
from benchmarks.data import bench_epoch_workers, bench_index
from benchmarks.model import bench_one, speedups

MODELS = ("maskdepth", "seed")
LABELS = {"maskdepth": "MaskDepthNet", "seed": "seed baseline"}
CONFIGS = {"maskdepth": REPO / "configs" / "quick.yaml", "seed": REPO / "configs" / "seed.yaml"}
COLORS = {"maskdepth": "tab:blue", "seed": "tab:orange"}


# --------------------------------------------------------------------------------------------
# settings of one run


@dataclass
class Scale:
    """One quality comparison: archive sizes, batch, budget."""

    size: int
    budget_s: float
    batch: int
    epochs: int  # preferred number of (possibly capped) epochs, for the learning curves
    train_data: dict[str, int]  # num_bg, num_fg, per_pair of the training archive (seed 0)
    test_data: dict[str, int]  # ... of the unseen archive (seed 1)


@dataclass
class Plan:
    scales: list[Scale]
    speed_sizes: list[int]
    speed_batch: dict[int, int]
    speed_steps: int
    speed_warmup: int
    data_sizes: list[int]
    data_workers: list[int]
    data_repeats: int
    index_counts: list[int]
    epoch_workers: list[int]
    epoch_samples: int
    grid_rows: int
    smoke: bool = False


def make_plan(args: argparse.Namespace) -> Plan:
    if args.smoke:
        tiny = dict(num_bg=4, num_fg=3, per_pair=1)
        return Plan(
            scales=[Scale(32, args.budget_64 or 0.5, 8, 2, tiny, dict(num_bg=2, num_fg=2, per_pair=1))],
            speed_sizes=[32], speed_batch={32: 4}, speed_steps=1, speed_warmup=0, data_sizes=[32], data_workers=[0],
            data_repeats=1,
            index_counts=[400, 4000], epoch_workers=[0], epoch_samples=8, grid_rows=2, smoke=True,
        )
    # 20 backgrounds: 19 train + 1 validation (for the curves); the test archive is separate.
    return Plan(
        scales=[Scale(64, args.budget_64, 32, 4, dict(num_bg=20, num_fg=20, per_pair=2),
                      dict(num_bg=5, num_fg=8, per_pair=2)),
                Scale(192, args.budget_192, 8, 2 if args.budget_192 < 600 else 4,
                      dict(num_bg=20, num_fg=10, per_pair=1), dict(num_bg=3, num_fg=4, per_pair=2))],
        speed_sizes=[64, 128, 192], speed_batch={64: 32, 128: 16, 192: 8}, speed_steps=2, speed_warmup=1,
        data_sizes=[64, 192], data_workers=[0, 1, 2], data_repeats=3, index_counts=[4_000, 40_000, 400_000],
        epoch_workers=[0, 1, 2], epoch_samples=128, grid_rows=5,
    )


FRACTIONS = [0.95, 0.05, 0.0]  # train / val (curves) / test (unused: the unseen archive is the test)


# --------------------------------------------------------------------------------------------
# 1. quality on unseen scenes


def make_archives(scale: Scale, work: Path) -> dict[str, Any]:
    from maskdepth.synth import make_dataset

    out = {}
    for role, seed, spec in (("train", 0, scale.train_data), ("test", 1, scale.test_data)):
        path = work / f"{role}{scale.size}.zip"
        summary = make_dataset(path, size=scale.size, seed=seed, overwrite=True, progress=False, **spec)
        out[role] = {"path": path, "count": summary.count, "seconds": summary.seconds, "seed": seed, **spec}
        log(summary.format())
    return out


def plan_steps(budget_s: float, train_ips: float, batch: int, n_train: int, epochs: int) -> tuple[int, int, int]:
    """(epochs, max_steps_per_epoch, total steps) that spend about `budget_s` in training steps."""
    total = max(1, round(budget_s * train_ips / batch))
    full = max(1, n_train // batch)
    if total <= epochs * full:
        epochs = min(epochs, total)
        per_epoch = math.ceil(total / epochs)
        return epochs, per_epoch, epochs * per_epoch
    epochs = math.ceil(total / full)
    return epochs, 0, epochs * full


def train_model(name: str, scale: Scale, data: dict[str, Any], train_ips: float, work: Path) -> dict[str, Any]:
    from maskdepth.config import load_config
    from maskdepth.data import open_dataset
    from maskdepth.model import count_parameters
    from maskdepth.train import fit

    train_set = open_dataset(data["train"]["path"], scale.size, "train", fractions=FRACTIONS)
    n_train, n_train_bg = len(train_set), len(train_set.splits["train"])
    epochs, per_epoch, steps = plan_steps(scale.budget_s, train_ips, scale.batch, n_train, scale.epochs)
    run_dir = work / f"run_{name}_{scale.size}"
    overrides = [
        f"data.path={data['train']['path']}", f"run_dir={run_dir}", f"data.size={scale.size}",
        f"data.fractions={FRACTIONS}", "data.num_workers=0", "resume=never", "device=cpu",
        f"train.batch_size={scale.batch}", f"train.epochs={epochs}", f"train.max_steps_per_epoch={per_epoch}",
        "train.checkpoint_minutes=0", "train.num_samples=2",
    ]
    cfg = load_config(CONFIGS[name], overrides)
    log(f"{name} {scale.size}px: {steps} steps planned ({epochs} epochs x {per_epoch or 'all'} steps) "
         f"for a {scale.budget_s:.0f} s budget at {train_ips:.1f} img/s")
    start = time.perf_counter()
    fit(cfg)
    wall = time.perf_counter() - start
    rows = list(csv.DictReader(io.StringIO((run_dir / "metrics.csv").read_text())))
    from maskdepth.inference import load_model

    model, _ = load_model(run_dir / "checkpoints" / "last.pt", "cpu")
    return {
        "name": name, "run_dir": run_dir, "model": model, "params": count_parameters(model),
        "wall_s": wall, "epoch_s": sum(float(r["seconds"]) for r in rows), "steps": int(rows[-1]["steps"]),
        "planned_steps": steps, "epochs": epochs, "images": int(rows[-1]["steps"]) * scale.batch,
        "overrides": overrides, "history": rows, "n_train": n_train, "n_train_bg": n_train_bg,
    }


def _test_loader(data: dict[str, Any], size: int, batch: int) -> Any:
    from maskdepth.data import collate, open_dataset

    dataset = open_dataset(data["test"]["path"], size, "all")
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collate)


def evaluate_baselines(scale: Scale, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Background subtraction and the mean-depth predictor of the training split, scored on every
    sample of the unseen archive (`maskdepth.baselines`)."""
    from maskdepth.baselines import mean_depth, opening_kernel, score_baselines
    from maskdepth.data import open_dataset

    start = time.perf_counter()
    train_set = open_dataset(data["train"]["path"], scale.size, "train", fractions=FRACTIONS)
    depth_map = mean_depth(train_set[i]["depth"] for i in range(len(train_set)))
    mean_seconds = time.perf_counter() - start
    kernel = opening_kernel(scale.size)
    start = time.perf_counter()
    figures = score_baselines(_test_loader(data, scale.size, 32), {"mean_depth": depth_map}, kernel)
    return {
        "bgsub": {"metrics": figures["bgsub"], "seconds": None, "kernel": kernel,
                  "eval_s": time.perf_counter() - start},
        "mean_depth": {"metrics": figures["mean_depth"], "seconds": mean_seconds, "image": depth_map},
    }


def evaluate_unseen(result: dict[str, Any], scale: Scale, data: dict[str, Any]) -> dict[str, float]:
    """`maskdepth.evaluate` of a trained model on every sample of the unseen archive, plus eval_s."""
    from maskdepth.evaluate import evaluate

    start = time.perf_counter()
    figures = evaluate(result["model"], _test_loader(data, scale.size, scale.batch), torch.device("cpu"))
    figures["eval_s"] = time.perf_counter() - start
    return figures


def quality_figures(scale: Scale, data: dict[str, Any], trained: dict[str, dict[str, Any]],
                    baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Section 1's rows for one size: every method on the unseen archive, the training runs, the
    targets (MaskDepthNet beats the seed on IoU and RMSE and background subtraction on IoU)."""
    methods = []
    for name in MODELS:
        r, m = trained[name], trained[name]["unseen"]
        methods.append({"method": f"{LABELS[name]} ({name})", "model": name, **_metrics(m),
                        "training_s": round(r["epoch_s"]), "params": r["params"]})
    b, d = baselines["bgsub"]["metrics"], baselines["mean_depth"]["metrics"]
    k = baselines["bgsub"]["kernel"]
    methods.append({"method": f"background subtraction (Otsu, {k}x{k} open/close)", "model": "bgsub",
                    "iou": rounded(b["iou"], 3), "dice": rounded(b["dice"], 3), "training_s": 0, "params": 0})
    methods.append({"method": "mean depth of the training split", "model": "mean_depth",
                    **{key: v for key, v in _metrics(d).items() if key not in ("iou", "dice")},
                    "training_s": rounded(baselines["mean_depth"]["seconds"], 1), "params": 0})
    runs = [{"model": n, "label": LABELS[n], "budget_s": scale.budget_s, "batch": scale.batch,
             "steps": trained[n]["steps"], "planned_steps": trained[n]["planned_steps"], "epochs": trained[n]["epochs"],
             "images": trained[n]["images"], "fit_wall_s": rounded(trained[n]["wall_s"], 1),
             "epoch_s": rounded(trained[n]["epoch_s"], 1), "eval_s": rounded(trained[n]["unseen"]["eval_s"], 1),
             "overrides": trained[n]["overrides"]} for n in MODELS]
    md, seed = trained["maskdepth"]["unseen"], trained["seed"]["unseen"]
    targets = {"px": scale.size, "iou_vs_seed": md["iou"] > seed["iou"], "rmse_vs_seed": md["rmse"] < seed["rmse"],
               "iou_vs_bgsub": md["iou"] > b["iou"], "iou": rounded(md["iou"], 3), "seed_iou": rounded(seed["iou"], 3),
               "rmse": rounded(md["rmse"], 4), "seed_rmse": rounded(seed["rmse"], 4), "bgsub_iou": rounded(b["iou"], 3)}
    return {"size": scale.size, "batch": scale.batch, "budget_s": scale.budget_s, "methods": methods, "runs": runs,
            "targets": targets}


def _metrics(m: dict[str, float]) -> dict[str, float | None]:
    return {"iou": rounded(m.get("iou"), 3), "dice": rounded(m.get("dice"), 3), "rmse": rounded(m.get("rmse"), 4),
            "abs_rel": rounded(m.get("abs_rel"), 3), "delta1": rounded(m.get("delta1"), 3)}


def archive_rows(scale: Scale, data: dict[str, Any], trained: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The two archives of one size: how make-data made them, how many samples, how they are used."""
    t = trained["maskdepth"]
    rows = []
    for role, label in (("train", "training"), ("test", "unseen test")):
        a = data[role]
        row = {"px": scale.size, "role": label, "seed": a["seed"], "num_bg": a["num_bg"], "num_fg": a["num_fg"],
               "per_pair": a["per_pair"], "samples": a["count"]}
        if role == "train":
            row.update(train_samples=t["n_train"], train_backgrounds=t["n_train_bg"],
                       evaluated=f"train {FRACTIONS[0]:.0%}, val {FRACTIONS[1]:.0%} (curves)")
        else:
            row["evaluated"] = "all"
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# 2. speed


def speed_section(plan: Plan) -> list[Any]:
    args = argparse.Namespace(amp=False, channels_last=False, compile=False, warmup=plan.speed_warmup,
                              steps=plan.speed_steps)
    results = []
    for size in plan.speed_sizes:
        for name in MODELS:
            r = bench_one(name, size, plan.speed_batch[size], args, torch.device("cpu"))
            log(f"bench_one {name} {size}px batch {r.batch}: train {r.train_ips:.1f} img/s, "
                f"infer {r.infer_ips:.1f} img/s")
            results.append(r)
    return results


def speed_rows(results: list[Any], plan: Plan) -> dict[str, Any]:
    """The speed table, MaskDepthNet over the seed per size, and the step time per image against
    the resolution (relative to the smallest size)."""
    base = {r.model: r for r in results if r.size == plan.speed_sizes[0]}
    resolution = [{"size": r.size, "model": r.model, "label": LABELS[r.model],
                   "ms_per_image": rounded(1000 / r.train_ips, 1),
                   "vs_smallest": rounded(base[r.model].train_ips / r.train_ips, 2),
                   "pixels_vs_smallest": rounded((r.size / plan.speed_sizes[0]) ** 2, 2)} for r in results]
    return {"speed": [{**r.row(), "label": LABELS[r.model]} for r in results],
            "speedup": speedups(results, "maskdepth", "seed"), "resolution": resolution,
            "speed_settings": {"device": "cpu", "dtype": "float32", "warmup": plan.speed_warmup,
                               "steps": plan.speed_steps, "inputs": "random",
                               "step": "DiceBCELoss + DepthLoss + Adam step"}}


def data_pipeline(plan: Plan, archive: Path, work: Path) -> dict[str, Any]:
    """benchmarks/data.py's throughput rows, measured in a fresh process: this one has trained
    models by now, and its heap and threads slowed every data pipeline, the naive one too, by ~25%."""
    args = (["--sizes", *map(str, plan.data_sizes), "--workers", *map(str, plan.data_workers),
             "--repeats", str(plan.data_repeats), "--index-samples"])
    out = work / "data.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.data", "--data", str(archive), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=3600, env=module_env())
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    rows = json.loads(out.read_text())["throughput"]
    keep = ("size", "workers", "limit", "limit_strict", "ours", "naive", "ours_uint8")
    return {"command": shlex.join(["python", "-m", "benchmarks.data", "--data", archive.name, *args]),
            "archive": archive.name, "batch": 32, "repeats": plan.data_repeats,
            "rows": [{**{k: rounded(r[k], 0) if k not in ("size", "workers") else r[k] for k in keep},
                      "ours_per_limit": rounded(r["ours"] / r["limit"], 2),
                      "ours_per_strict": rounded(r["ours"] / r["limit_strict"], 2),
                      "ours_per_naive": rounded(r["ours"] / r["naive"], 2)} for r in rows]}


# --------------------------------------------------------------------------------------------
# 3. scaling


def index_rows(plan: Plan, work: Path) -> list[dict[str, Any]]:
    """`benchmarks.data.bench_index` on archives of `plan.index_counts` samples (empty entries)."""
    digits = {"index_s": 3, "open_s": 3, "write_s": 3}
    return [{k: rounded(v, digits.get(k, 1)) if isinstance(v, float) else v for k, v in r.items()}
            for r in bench_index(plan.index_counts, work)]


def epoch_workers(plan: Plan, archive: Path, size: int, batch: int) -> dict[str, Any]:
    """A MaskDepthNet training epoch on the first `epoch_samples` samples with 0/1/2 loader workers."""
    rows = bench_epoch_workers(archive, size, batch, plan.epoch_samples, plan.epoch_workers)
    return {"archive": archive.name, "size": size, "batch": batch, "samples": plan.epoch_samples,
            "rows": [{k: rounded(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]}


# --------------------------------------------------------------------------------------------
# 4. pictures


@torch.no_grad()
def comparison_grid(path: Path, trained: dict[str, dict[str, Any]], data: dict[str, Any], size: int,
                    rows: int) -> Path:
    """bg | fg_bg | true mask | maskdepth mask | seed mask | true depth | maskdepth depth | seed depth."""
    from matplotlib.figure import Figure

    from maskdepth.data import collate, open_dataset
    from maskdepth.metrics import depth_metrics, mask_metrics
    from maskdepth.viz import colorize_depth

    dataset = open_dataset(data["test"]["path"], size, "all")
    picks = np.linspace(0, len(dataset) - 1, num=min(rows, len(dataset))).round().astype(int)
    batch = collate([dataset[int(i)] for i in dict.fromkeys(picks.tolist())])
    preds = {}
    for name in MODELS:
        model = trained[name]["model"].eval()
        logits, depth = model(batch["bg"], batch["fg_bg"])
        prob = torch.sigmoid(logits)
        preds[name] = (prob, depth, mask_metrics(prob, batch["mask"], reduction="none"),
                       depth_metrics(depth, batch["depth"], reduction="none"))
    columns = ["bg", "fg_bg", "true mask", "MaskDepthNet\nmask", "seed\nmask", "true depth", "MaskDepthNet\ndepth",
               "seed\ndepth"]
    n = batch["bg"].shape[0]
    fig = Figure(figsize=(1.2 * len(columns), 1.4 * n + 0.6), dpi=90, facecolor="white", layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)

    def rgb(x: torch.Tensor) -> np.ndarray:
        return x.permute(1, 2, 0).clamp(0, 1).numpy()

    for i in range(n):
        cells = [
            (rgb(batch["bg"][i]), ""), (rgb(batch["fg_bg"][i]), ""), (batch["mask"][i, 0].numpy(), ""),
            (preds["maskdepth"][0][i, 0].numpy(), f"IoU {preds['maskdepth'][2]['iou'][i]:.2f}"),
            (preds["seed"][0][i, 0].numpy(), f"IoU {preds['seed'][2]['iou'][i]:.2f}"),
            (colorize_depth(batch["depth"][i, 0].numpy()), ""),
            (colorize_depth(preds["maskdepth"][1][i, 0].numpy()), f"RMSE {preds['maskdepth'][3]['rmse'][i]:.3f}"),
            (colorize_depth(preds["seed"][1][i, 0].numpy()), f"RMSE {preds['seed'][3]['rmse'][i]:.3f}"),
        ]
        for j, (image, note) in enumerate(cells):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
            if note:
                ax.set_xlabel(note, fontsize=7, labelpad=1)
    fig.suptitle(f"unseen test archive (seed 1), {size} px: evenly spaced samples, not picked", fontsize=8)
    return save_png(fig, path)


def learning_curves(path: Path, runs: dict[int, dict[str, dict[str, Any]]]) -> Path:
    """val IoU and val RMSE vs cumulative seconds of both models, one line per (model, size)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=80, facecolor="white", layout="constrained")
    axes = fig.subplots(1, 2)
    styles = ["-", "--", ":"]
    for k, (size, trained) in enumerate(sorted(runs.items())):
        for name in MODELS:
            rows = trained[name]["history"]
            seconds = np.cumsum([float(r["seconds"]) for r in rows])
            for ax, key in zip(axes, ("val_iou", "val_rmse"), strict=True):
                ax.plot(seconds, [float(r[key]) for r in rows], styles[k % 3], marker="o", markersize=3,
                        color=COLORS[name], label=f"{LABELS[name]} {size}px")
    titles = ("validation IoU (higher is better)", "validation RMSE (lower is better)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training seconds (cumulative, incl. per-epoch validation)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


# --------------------------------------------------------------------------------------------
# the run


def measure(plan: Plan, work: Path, images: Path) -> dict[str, Any]:
    """Every measurement, section by section, in the order the timings list them: the figures of
    docs/results/report.json (without its meta)."""
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    figures: dict[str, Any] = {}

    def timed(label: str, key: str, func: Callable[[], Any]) -> Any:
        """func()'s result, stored under `key`, or its error under errors[key]: one broken section
        must not lose the rest of the run."""
        t = time.perf_counter()
        try:
            figures[key] = func()
        except Exception as exc:
            log(f"{label} failed: {exc!r}")
            errors[key] = f"{type(exc).__name__}: {exc}"
        timings[label] = time.perf_counter() - t
        return figures.get(key)

    log("speed: bench_one")
    t = time.perf_counter()
    speed = speed_section(plan)  # the step counts of section 1 depend on it: no guard
    timings["speed (bench_model)"] = time.perf_counter() - t
    figures.update(speed_rows(speed, plan))
    train_ips = {(r.model, r.size): r.train_ips for r in speed}
    runs, archives, quality = {}, {}, {}
    for scale in plan.scales:
        t = time.perf_counter()
        data = archives[scale.size] = make_archives(scale, work)
        trained = runs[scale.size] = {}
        for name in MODELS:
            ips = train_ips.get((name, scale.size)) or _nearest_rate(train_ips, name, scale.size)
            trained[name] = train_model(name, scale, data, ips, work)
            trained[name]["unseen"] = evaluate_unseen(trained[name], scale, data)
            log(f"{name} {scale.size}px unseen: " + ", ".join(f"{k} {trained[name]['unseen'][k]:.4f}"
                                                              for k in ("iou", "rmse", "delta1")))
        quality[str(scale.size)] = quality_figures(scale, data, trained, evaluate_baselines(scale, data))
        timings[f"quality {scale.size} px"] = time.perf_counter() - t
    figures["archives"] = [row for s in plan.scales for row in archive_rows(s, archives[s.size], runs[s.size])]
    figures["summary"] = [{"px": int(px), "model": m["model"], "label": LABELS[m["model"]], "iou": m["iou"],
                           "rmse": m["rmse"], "delta1": m["delta1"], "training_s": m["training_s"]}
                          for px, q in quality.items() for m in q["methods"] if m["model"] in MODELS]
    figures["targets"] = [q.pop("targets") for q in quality.values()]
    figures["quality"] = quality
    first = plan.scales[0]
    first_data = archives[first.size]
    log("pictures")
    timed("pictures", "pictures", lambda: [
        shown(comparison_grid(images / f"compare_{first.size}.png", runs[first.size], first_data, first.size,
                              plan.grid_rows)),
        shown(learning_curves(images / "curves.png", runs))])
    log("data pipeline: benchmarks.data")
    last_train = archives[max(archives)]["train"]["path"]
    timed("data pipeline (bench_data)", "data_pipeline", lambda: data_pipeline(plan, last_train, work))
    log("index scaling")
    timed("index scaling (bench_data)", "index", lambda: index_rows(plan, work))
    log("epoch vs workers")
    timed("epoch vs workers", "epoch_workers", lambda: epoch_workers(plan, first_data["train"]["path"], first.size, 16))
    figures["make_data"] = [{"samples": d[role]["count"], "px": size, "seed": d[role]["seed"],
                             "seconds": rounded(d[role]["seconds"], 2),
                             "samples_per_s": rounded(d[role]["count"] / d[role]["seconds"], 1)}
                            for size, d in archives.items() for role in ("train", "test")]
    figures["timings"] = [{"section": k, "seconds": rounded(v, 1)} for k, v in timings.items()]
    if errors:
        figures["errors"] = errors
    return figures


def run(args: argparse.Namespace) -> Path:
    """Measure everything in a temporary folder under --work, write the figures to --out."""
    out = Path(args.out)
    plan = make_plan(args)
    started, load_start = time.perf_counter(), os.getloadavg()
    run_meta = meta("report", args.argv, device="cpu", smoke=plan.smoke,
                    budgets={str(s.size): {"budget_s": s.budget_s, "batch": s.batch} for s in plan.scales})
    with tempfile.TemporaryDirectory(prefix="maskdepth_bench_", dir=args.work) as tmp:
        figures = measure(plan, Path(tmp), Path(args.pictures))
    total = time.perf_counter() - started
    figures["timings"].append({"section": "total", "seconds": rounded(total, 1)})
    run_meta.update(load_start=rounded(load_start[0], 2), load_end=rounded(os.getloadavg()[0], 2),
                    total_min=rounded(total / 60, 1))
    write_results(out, run_meta, figures)
    log(f"done in {total / 60:.1f} min")
    return out


def _nearest_rate(rates: dict[tuple[str, int], float], name: str, size: int) -> float:
    """Scale the measured rate of the closest size by the pixel ratio (step cost ~ pixels)."""
    sizes = [s for (n, s) in rates if n == name]
    near = min(sizes, key=lambda s: abs(s - size))
    return rates[(name, near)] * (near / size) ** 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "report.json"), help="the data file (default %(default)s)")
    parser.add_argument("--pictures", default=str(RESULTS), help="folder of the pictures (default %(default)s)")
    parser.add_argument("--budget-64", type=float, default=None,
                        help="seconds of training steps per model at 64 px (default 240)")
    parser.add_argument("--budget-192", type=float, default=None,
                        help="seconds of training steps per model at 192 px (default 1500: fits a CPU hour)")
    parser.add_argument("--work", default=None,
                        help="folder for the temporary archives and runs (default: system temp)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, for the test: every section in seconds")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the data file's exact command
    if not args.smoke:
        args.budget_64 = 240.0 if args.budget_64 is None else args.budget_64
        args.budget_192 = 1500.0 if args.budget_192 is None else args.budget_192
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main()
