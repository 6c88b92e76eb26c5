"""python scripts/benchmark.py [--out docs/results.md] [--budget-64 240] [--budget-192 1500] [--smoke]

Writes docs/results.md and its pictures (docs/results/*.png): how good and how fast MaskDepthNet
is, against the seed baseline and the classical alternatives. Every figure in the report is
measured by this one invocation; the report names the date, the machine, the command and every
budget it used.

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
   inference for both models at 64/128/192 px (scripts/bench_model.py), and the data pipeline
   against its decode limit (scripts/bench_data.py).
3. Scaling: index time and memory of 4k/40k/400k-sample archives (bench_data's synthetic
   central directory), step time vs resolution, a training epoch of a small archive vs
   DataLoader workers 0/1/2 (`bench_data.bench_epoch_workers`).
4. Pictures: predictions of both models on the same unseen samples; learning curves.
5. GPU: rendered from docs/results/gpu.json when `bash scripts/bench_gpu.sh` has written it on a
   CUDA machine; otherwise the section says it has not been measured. `--gpu-only` re-renders
   just that section of an existing report.

`--budget-64` / `--budget-192` are seconds of training steps per model (default 240 and 1500:
the 192 px section then fits a CPU hour for both models with evaluation). `--smoke` runs every
section at 32 px with tiny archives and budgets of seconds (what tests/test_benchmark.py runs).

This file only plans, calls and renders: the measurements are library functions or other
scripts (bench_model.py, bench_data.py), the report helpers live in scripts/mdreport.py.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package
from mdreport import (REPO, SCRIPTS, dict_table, fmt, load_script, log,  # noqa: E402
                      marked_block, replace_block, save_png, shown, table)

GPU_BEGIN, GPU_END = "<!-- gpu:begin -->", "<!-- gpu:end -->"
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
            speed_sizes=[32], speed_batch={32: 4}, speed_steps=1, speed_warmup=0, data_sizes=[32], data_workers=[0], data_repeats=1,
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
    from maskdepth.data.synthetic import make_dataset

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


def quality_section(scale: Scale, data: dict[str, Any], trained: dict[str, dict[str, Any]],
                    baselines: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    header = ["method", "IoU", "Dice", "RMSE", "abs_rel", "δ1", "training s", "parameters"]
    rows = []
    for name in MODELS:
        r, m = trained[name], trained[name]["unseen"]
        rows.append([f"{LABELS[name]} ({name})", fmt(m["iou"]), fmt(m["dice"]), fmt(m["rmse"], 4), fmt(m["abs_rel"]),
                     fmt(m["delta1"]), f"{r['epoch_s']:.0f}", fmt(r["params"])])
    b, d = baselines["bgsub"]["metrics"], baselines["mean_depth"]["metrics"]
    rows.append([f"background subtraction (Otsu, {baselines['bgsub']['kernel']}x{baselines['bgsub']['kernel']} "
                 "open/close)", fmt(b["iou"]), fmt(b["dice"]), "–", "–", "–", "0", "0"])
    rows.append(["mean depth of the training split", "–", "–", fmt(d["rmse"], 4), fmt(d["abs_rel"]), fmt(d["delta1"]),
                 f"{baselines['mean_depth']['seconds']:.1f}", "0"])
    md, seed = trained["maskdepth"]["unseen"], trained["seed"]["unseen"]
    targets = {
        "iou_vs_seed": md["iou"] > seed["iou"], "rmse_vs_seed": md["rmse"] < seed["rmse"],
        "iou_vs_bgsub": md["iou"] > b["iou"],
    }
    tr, te = data["train"], data["test"]
    runs = [table(
        ["model", "budget s", "steps (planned)", "epochs", "images seen", "fit wall s", "sum of epoch s",
         "test eval s"],
        [[LABELS[n], f"{scale.budget_s:g}", f"{trained[n]['steps']} ({trained[n]['planned_steps']})",
          str(trained[n]["epochs"]), fmt(trained[n]["images"]), f"{trained[n]['wall_s']:.0f}",
          f"{trained[n]['epoch_s']:.0f}", f"{trained[n]['unseen']['eval_s']:.0f}"] for n in MODELS])]
    text = f"""### {scale.size} px

Training archive: `make-data --size {scale.size} --num-bg {tr['num_bg']} --num-fg {tr['num_fg']} --per-pair {tr['per_pair']} --seed 0` ({tr['count']:,} samples; {trained['maskdepth']['n_train']:,} train samples on {trained['maskdepth']['n_train_bg']} backgrounds, the rest validation for the curves).
Unseen test archive: `make-data --size {scale.size} --num-bg {te['num_bg']} --num-fg {te['num_fg']} --per-pair {te['per_pair']} --seed 1` ({te['count']:,} samples, all evaluated: split `all`).
Both networks: batch {scale.batch}, the lr and schedule of their config, CPU fp32, the last checkpoint.

{table(header, rows)}

"training s" is the sum of the per-epoch seconds in the run's metrics.csv (training steps plus the
per-epoch validation); the step budget itself is below.

{runs[0]}

Targets (unseen archive): MaskDepthNet beats the seed baseline on IoU: **{_yes(targets['iou_vs_seed'])}**
({md['iou']:.3f} vs {seed['iou']:.3f}); on RMSE: **{_yes(targets['rmse_vs_seed'])}** ({md['rmse']:.4f} vs
{seed['rmse']:.4f}); beats background subtraction on IoU: **{_yes(targets['iou_vs_bgsub'])}** ({md['iou']:.3f} vs
{b['iou']:.3f}).
"""
    return text, targets


def _yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------------------------------
# 2. speed


def speed_section(plan: Plan) -> tuple[list[Any], dict[tuple[str, int], float]]:
    bench_model = load_script("bench_model")
    args = argparse.Namespace(amp=False, channels_last=False, compile=False, warmup=plan.speed_warmup,
                              steps=plan.speed_steps)
    results = []
    for size in plan.speed_sizes:
        for name in MODELS:
            r = bench_model.bench_one(name, size, plan.speed_batch[size], args, torch.device("cpu"))
            log(f"bench_model {name} {size}px batch {r.batch}: train {r.train_ips:.1f} img/s, infer {r.infer_ips:.1f} img/s")
            results.append(r)
    return results, {(r.model, r.size): r.train_ips for r in results}


def speed_text(results: list[Any], plan: Plan) -> str:
    rows = []
    for r in results:
        rows.append([str(r.size), str(r.batch), LABELS[r.model], fmt(r.params), f"{r.gflops:.2f}",
                     f"{r.train_ips:.1f}", f"{r.infer_ips:.1f}", f"{1000 * r.batch / r.train_ips:.0f}"])
    ratios = []
    for size in plan.speed_sizes:
        by = {r.model: r for r in results if r.size == size}
        ratios.append(f"{size} px: training x{by['maskdepth'].train_ips / by['seed'].train_ips:.2f}, "
                      f"inference x{by['maskdepth'].infer_ips / by['seed'].infer_ips:.2f}")
    return (table(["px", "batch", "model", "parameters", "GFLOP/img (fwd)", "train img/s", "infer img/s",
                    "ms / train step"], rows)
            + f"\n\nMaskDepthNet over the seed baseline: {'; '.join(ratios)}.\n"
            + f"(`bench_model.bench_one`: CPU fp32, {plan.speed_warmup} warm-up + {plan.speed_steps} timed steps per cell, random inputs, "
              "DiceBCELoss + DepthLoss + Adam step; these rates also set the step counts of section 1.)\n")


def data_section(plan: Plan, archive: Path, work: Path) -> tuple[str, list[dict] | None]:
    """bench_data's throughput table, measured in a fresh process: this one has trained models by
    now, and its heap and threads slowed every data pipeline, the naive one too, by ~25%."""
    args = (["--sizes", *map(str, plan.data_sizes), "--workers", *map(str, plan.data_workers),
             "--repeats", str(plan.data_repeats), "--index-samples"])
    command = f"python scripts/bench_data.py --data {archive.name} {' '.join(args)}"
    out = work / "bench_data.json"
    try:
        done = subprocess.run([sys.executable, str(SCRIPTS / "bench_data.py"), "--data", str(archive), *args,
                               "--json", str(out)], capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        rows = json.loads(out.read_text())["throughput"]
    except Exception as exc:  # another script: report, don't fail the whole report
        log(f"bench_data throughput failed: {exc!r}")
        return f"Pending: `{command}` failed in this run ({type(exc).__name__}: {exc}).\n", None
    for r in rows:
        r["ours / limit"] = r["ours"] / r["limit"]
        r["ours / strict"] = r["ours"] / r["limit_strict"]
        r["ours / naive"] = r["ours"] / r["naive"]
    columns = [("size", "px", 0), ("workers", "workers", 0), ("limit", "decode limit /s", 0),
               ("limit_strict", "strict limit /s", 0), ("ours", "ours /s", 0), ("naive", "naive /s", 0),
               ("ours / limit", "ours / limit", 2), ("ours / strict", "ours / strict", 2),
               ("ours / naive", "ours / naive", 1), ("ours_uint8", "ours uint8 /s", 0)]
    table = dict_table([{k: r[k] for k, _, _ in columns} for r in rows], columns)
    return (f"Samples/s on `{archive.name}` (the {_archive_size(archive)} px training archive of section 1), "
            f"DataLoader batch 32, one torch thread per process, measured by `{command}` in a fresh process "
            f"(best of {plan.data_repeats} rounds after a warm-up; the one-process cells in interleaved rounds). "
            f"limit: one process decoding the same fg_bg + mask + depth bytes at full resolution in tight loops, "
            f"nothing else, by the faster of PIL and torchvision per image kind; strict: also counting maskdepth's "
            f"own PNG reader; ours: `open_dataset(in_memory=True)` (float32 batches); ours uint8: "
            f"`open_dataset(uint8=True)`, the batches training uses; naive: extracted files + PIL + torchvision "
            f"transforms. With workers the figures are wall-clock samples/s of the whole loader; 0 workers: per CPU "
            f"second of the process.\n\n{table}\n", rows)


def _archive_size(path: Path) -> str:
    return "".join(ch for ch in path.stem if ch.isdigit())


# --------------------------------------------------------------------------------------------
# 3. scaling


def index_section(plan: Plan, work: Path) -> str:
    command = f"python scripts/bench_data.py --skip-throughput --index-samples {' '.join(map(str, plan.index_counts))}"
    try:
        bench_data = load_script("bench_data")
        rows = bench_data.bench_index(plan.index_counts, work)
    except Exception as exc:
        log(f"bench_data index failed: {exc!r}")
        return f"Pending: `bench_data.bench_index` failed in this run ({type(exc).__name__}: {exc}); run `{command}`.\n"
    table = dict_table(rows, [("samples", "samples", 0), ("entries", "zip entries", 0), ("index_s", "index s", 2),
                               ("open_s", "open s", 2), ("index_mb", "index MB", 1), ("manifest_mb", "manifest MB", 1),
                               ("anon_after_open_mb", "private MB after open", 0), ("peak_rss_mb", "peak RSS MB", 0),
                               ("pickle_mb", "pickle MB", 1), ("zip_mb", "zip MB", 0), ("write_s", "zip written s", 2),
                               ("missing", "missing", 0)])
    return ("Indexing a large archive (`bench_data.bench_index`): a zip with the original's naming, 3 empty "
            "entries per sample plus 100 backgrounds and a manifest.csv, indexed in a fresh process each; open = "
            "central directory + manifest resolution (what `open_dataset` does). RSS relative to the fresh "
            f"process.\n\n{table}\n")


def resolution_text(results: list[Any], plan: Plan) -> str:
    base = {r.model: r for r in results if r.size == plan.speed_sizes[0]}
    rows = []
    for r in results:
        ms_img = 1000 / r.train_ips
        pixels = (r.size / plan.speed_sizes[0]) ** 2
        rows.append([str(r.size), LABELS[r.model], f"{ms_img:.1f}", f"x{ms_img * base[r.model].train_ips / 1000:.1f}",
                     f"x{pixels:.0f}"])
    return ("Training-step time per image against resolution (from the speed table): the cost grows with the "
            "pixel count.\n\n" + table(["px", "model", "ms / image", "vs smallest", "pixels vs smallest"], rows) + "\n")


def epoch_workers_section(plan: Plan, archive: Path, size: int, batch: int) -> str:
    """A MaskDepthNet training epoch on the first `epoch_samples` samples with 0/1/2 loader workers
    (`bench_data.bench_epoch_workers`)."""
    rows = load_script("bench_data").bench_epoch_workers(archive, size, batch, plan.epoch_samples, plan.epoch_workers)
    cells = [[str(r["workers"]), f"{r['loader_s']:.2f}", f"{r['epoch_s']:.2f}", f"{r['img_s']:.1f}"] for r in rows]
    return (f"One epoch over {plan.epoch_samples} samples of `{archive.name}` at {size} px, batch {batch}, MaskDepthNet "
            f"with AdamW, uint8 batches as training loads them (`open_dataset(uint8=True)`, made float by `to_float`), "
            f"DataLoader workers started inside the timing (no persistent workers); 'loader only' "
            f"iterates the same loader without the model.\n\n"
            + table(["workers", "loader only s", "training epoch s", "img/s"], cells) + "\n")


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
            for ax, key in zip(axes, ("val_iou", "val_rmse")):
                ax.plot(seconds, [float(r[key]) for r in rows], styles[k % 3], marker="o", markersize=3,
                        color=COLORS[name], label=f"{LABELS[name]} {size}px")
    for ax, title in zip(axes, ("validation IoU (higher is better)", "validation RMSE (lower is better)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training seconds (cumulative, incl. per-epoch validation)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


# --------------------------------------------------------------------------------------------
# 5. GPU


def gpu_section(gpu_json: Path) -> str:
    if not gpu_json.is_file():
        return (f"{GPU_BEGIN}\nNot measured yet: no CUDA device was available for this run. On a CUDA machine run "
                f"`bash scripts/bench_gpu.sh` (writes `{shown(gpu_json)}`), then "
                f"`python scripts/benchmark.py --gpu-only` to render it here.\n{GPU_END}\n")
    g = json.loads(gpu_json.read_text())
    rows = [[str(r["size"]), str(r["batch"]), LABELS.get(r["model"], r["model"]), "on" if r["compile"] else "off",
             fmt(r.get("train_ips"), 0), fmt(r.get("infer_ips"), 0), fmt(r.get("peak_mem_mb"), 0), r.get("error", "")]
            for r in g["bench_model"]]
    t = g.get("train")
    train = "The short training run did not finish." if not t else (
        f"Short {t.get('size', 192)} px training run (`maskdepth.train.fit`, configs/full192.yaml, data pipeline with "
        f"{t['num_workers']} workers, batch {t['batch']}, {t['samples']:,}-sample make-data archive made in "
        f"{t['make_data_s']:.0f} s): epoch {t['epoch']} trained {t['steps']} steps in {t['epoch_s']:.1f} s incl. "
        f"validation = **{t['img_s']:.0f} img/s**; a 400k-sample epoch would take about "
        f"**{t['epoch_400k_min']:.1f} min**; peak GPU memory {fmt(t.get('peak_mem_mb'), 0)} MB.")
    return (f"{GPU_BEGIN}\nMeasured {g['date']} on **{g['gpu']}** (torch {g['torch']}, CUDA {g['cuda']}) by "
            f"`{g['command']}`; rendered from `{shown(gpu_json)}`.\n\n"
            + table(["px", "batch", "model", "compile", "train img/s", "infer img/s", "peak MB", "note"], rows)
            + f"\n\nbench_model with AMP bf16 and channels_last. {train}\n{GPU_END}\n")


# --------------------------------------------------------------------------------------------
# the report


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}; {os.cpu_count()} CPUs seen, torch threads: {torch.get_num_threads()}; torch {torch.__version__}; "
            f"Python {platform.python_version()}; device cpu")


def measure(plan: Plan, work: Path, images: Path) -> dict[str, Any]:
    """Every measurement of the report, section by section, in the order the timings list them."""
    timings: dict[str, float] = {}

    def timed(label: str, func: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        value = func()
        timings[label] = time.perf_counter() - t
        return value

    log("speed: bench_model")
    speed, train_ips = timed("speed (bench_model)", lambda: speed_section(plan))
    quality, runs, targets, archives = [], {}, {}, {}
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
        text, targets[scale.size] = quality_section(scale, data, trained, evaluate_baselines(scale, data))
        quality.append(text)
        timings[f"quality {scale.size} px"] = time.perf_counter() - t
    first = plan.scales[0]
    first_data = archives[first.size]
    log("pictures")
    pictures = _guarded("pictures", lambda: (
        comparison_grid(images / f"compare_{first.size}.png", runs[first.size], first_data, first.size,
                        plan.grid_rows),
        learning_curves(images / "curves.png", runs)))
    log("data pipeline: bench_data")
    last_train = archives[max(archives)]["train"]["path"]
    data_text, _ = timed("data pipeline (bench_data)", lambda: data_section(plan, last_train, work))
    log("index scaling")
    index_text = timed("index scaling (bench_data)", lambda: index_section(plan, work))
    log("epoch vs workers")
    epoch_text = timed("epoch vs workers", lambda: _guarded("epoch vs workers", lambda: epoch_workers_section(
        plan, first_data["train"]["path"], first.size, 16)))
    make_rows = [[f"{d[role]['count']:,}", str(_archive_size(d[role]["path"])), str(d[role]["seed"]),
                  f"{d[role]['seconds']:.1f}", f"{d[role]['count'] / d[role]['seconds']:.0f}"]
                 for d in archives.values() for role in ("train", "test")]
    return dict(speed=speed, quality=quality, runs=runs, targets=targets, pictures=pictures, data_text=data_text,
                index_text=index_text, epoch_text=epoch_text, make_rows=make_rows, timings=timings)


def summary_text(runs: dict[int, dict[str, dict[str, Any]]], targets: dict[int, dict[str, bool]]) -> str:
    """The summary table of every (size, model) on the unseen archive, and the targets met or not."""
    rows = [[f"{size}", LABELS[name], fmt(m["iou"]), fmt(m["rmse"], 4), fmt(m["delta1"]),
             f"{trained[name]['epoch_s']:.0f}"]
            for size, trained in sorted(runs.items()) for name in MODELS for m in [trained[name]["unseen"]]]
    met = all(all(t.values()) for t in targets.values())
    target_lines = "\n".join(
        f"- {key} px: MaskDepthNet > seed on IoU: {_yes(t['iou_vs_seed'])}; MaskDepthNet < seed on RMSE: "
        f"{_yes(t['rmse_vs_seed'])}; MaskDepthNet > background subtraction on IoU: {_yes(t['iou_vs_bgsub'])}"
        for key, t in sorted(targets.items()))
    return (table(["px", "model", "IoU (unseen)", "RMSE (unseen)", "δ1 (unseen)", "training s"], rows)
            + f"\n\nTargets: {'all met' if met else 'not all met'}.\n{target_lines}")


def render(args: argparse.Namespace, plan: Plan, m: dict[str, Any], out: Path, header: dict[str, Any]) -> str:
    """The report's markdown from `measure`'s figures; `header`: date, total (s), load_start, load_end."""
    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in args.argv)
    budgets = "; ".join(f"{s.size} px: {s.budget_s:g} s of training steps per model, batch {s.batch}"
                        for s in plan.scales)
    load_start, load_end, total = header["load_start"], header["load_end"], header["total"]
    busy = max(load_start[0], load_end[0]) > (os.cpu_count() or 1) + 0.5
    pictures, first = m["pictures"], plan.scales[0]
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731 - links relative to the report
    timing_rows = [[k, f"{v:.0f}"] for k, v in m["timings"].items()] + [["total", f"{total:.0f}"]]
    return f"""# Results: how good and how fast

Generated by `{command}` on {header['date']}{' (SMOKE settings: tiny data, seconds of training; figures mean nothing)' if plan.smoke else ''}.
Nothing below is typed by hand; rerunning the command regenerates this page and its pictures.

- Machine: {_machine()}.
- Load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (the machine has {os.cpu_count()} CPUs{'; other jobs shared it, so timings are noisy' if busy else ''}).
- Budgets: {budgets}. The whole report took {total / 60:.1f} min.
- All quality figures are on a separate archive generated with another seed (unseen backgrounds and
  objects); nothing was tuned on it.

## Summary

{summary_text(m['runs'], m['targets'])}

## 1. Quality on unseen scenes

Metrics as in design.md (per image, then averaged over images): IoU/Dice of the mask at 0.5, depth
RMSE, abs_rel and δ1 = share of pixels with max(t/p, p/t) < 1.25.

{chr(10).join(m['quality'])}
## 2. Training speed

### Model step

{speed_text(m['speed'], plan)}
### Data pipeline

{m['data_text']}
Archive generation in this run (`make_dataset`, {os.cpu_count()} processes):

{table(["samples", "px", "seed", "seconds", "samples/s"], m['make_rows'])}

## 3. Scaling

### Index time and memory vs archive size

{m['index_text']}
### Step time vs resolution

{resolution_text(m['speed'], plan)}
### Epoch time vs DataLoader workers

{m['epoch_text']}
## 4. Pictures

Predictions of both networks on the same unseen samples ({first.size} px, after the same training budget):

{pictures if isinstance(pictures, str) else f"![comparison]({rel(pictures[0])})"}

Learning curves (validation split of the training archive: held-out backgrounds of the same generator seed):

{pictures if isinstance(pictures, str) else f"![curves]({rel(pictures[1])})"}

## 5. GPU

{gpu_section(Path(args.gpu_json))}
## Time spent by this run

{table(["section", "seconds"], timing_rows)}
"""


def carry_blocks(old: str, report: str) -> str:
    """`report` with the blocks that other scripts own in the old page appended unchanged:
    scripts/bench_quality.py's and scripts/full_size_job.py's, between their markers."""
    for owner in ("quality", "fullsize"):
        begin, end = f"<!-- {owner}:begin -->", f"<!-- {owner}:end -->"
        kept = marked_block(old, begin, end)
        if kept is not None:
            report += "\n" + begin + kept + end + "\n"
    return report


def run(args: argparse.Namespace) -> Path:
    """Measure everything in a temporary folder under --work, write the report to --out."""
    out = Path(args.out)
    plan = make_plan(args)
    started, load_start = time.perf_counter(), os.getloadavg()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="maskdepth_bench_", dir=args.work) as tmp:
        figures = measure(plan, Path(tmp), out.parent / out.stem)  # docs/results.md -> docs/results/
    total = time.perf_counter() - started
    header = dict(date=date, total=total, load_start=load_start, load_end=os.getloadavg())
    report = render(args, plan, figures, out, header)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(carry_blocks(out.read_text() if out.is_file() else "", report))
    log(f"wrote {out} in {total / 60:.1f} min")
    return out


def _guarded(what: str, func: Callable[[], Any]) -> Any:
    """func(), or a line saying it failed: one broken section must not lose the rest of the report."""
    try:
        return func()
    except Exception as exc:
        log(f"{what} failed: {exc!r}")
        return f"Failed in this run: {type(exc).__name__}: {exc}\n"


def _nearest_rate(rates: dict[tuple[str, int], float], name: str, size: int) -> float:
    """Scale the measured rate of the closest size by the pixel ratio (step cost ~ pixels)."""
    sizes = [s for (n, s) in rates if n == name]
    near = min(sizes, key=lambda s: abs(s - size))
    return rates[(name, near)] * (near / size) ** 2


def update_gpu(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    try:
        text = replace_block(out.read_text(), GPU_BEGIN, GPU_END, gpu_section(Path(args.gpu_json)))
    except ValueError:
        raise SystemExit(f"{out} has no GPU section markers; run the whole benchmark") from None
    out.write_text(text)
    log(f"updated the GPU section of {out}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "results.md"), help="the report (pictures go to <stem>/)")
    parser.add_argument("--budget-64", type=float, default=None, help="seconds of training steps per model at 64 px (default 240)")
    parser.add_argument("--budget-192", type=float, default=None,
                        help="seconds of training steps per model at 192 px (default 1500: the section fits a CPU hour)")
    parser.add_argument("--gpu-json", default=str(REPO / "docs" / "results" / "gpu.json"),
                        help="figures written by scripts/bench_gpu.sh (rendered when the file exists)")
    parser.add_argument("--gpu-only", action="store_true", help="only re-render the GPU section of an existing --out")
    parser.add_argument("--work", default=None, help="folder for the temporary archives and runs (default: system temp)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, for the test: every section in seconds")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's exact command
    if not args.smoke:
        args.budget_64 = 240.0 if args.budget_64 is None else args.budget_64
        args.budget_192 = 1500.0 if args.budget_192 is None else args.budget_192
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_only:
        return update_gpu(args)
    return run(args)


if __name__ == "__main__":
    main()
