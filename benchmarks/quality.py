"""python -m benchmarks.quality [--minutes 30] [--ablation-epochs 3] [--jobs 2] [--out docs/results/quality.json]

Does depth generalise to scenes never seen in training? Writes the figures to
docs/results/quality.json and its pictures beside it (docs/results/quality_*.png); `python
benchmarks/render.py` turns them into the "Generalisation to unseen scenes" tables of
docs/results.md. Every figure comes from one run of this script, whose date, machine and
arguments the data file names.

Archives (64 px, made once and reused from --work when their arguments match):
- diverse: 1,000 backgrounds x 4 objects x 2 flips x 1 placement = 8,000 samples (seed 0);
- s15:     100 backgrounds x 40 objects x 2 x 1 = 8,000 samples (seed 0): the structure of the
           original dataset, which is what a user of the real data has;
- unseen:  60 backgrounds x 10 objects x 2 x 1 = 1,200 samples made with seed 1: backgrounds and
           objects that no run has seen. Quality is judged here, never on the val split alone.
Baselines on the unseen archive: the mean-depth predictor (per-pixel mean depth of the training
split) and background subtraction for the mask (Otsu, 3x3 open/close), from maskdepth.baselines.

1. Ablation: each change alone against the old default (configs/quick.yaml as it was), on the
   s15 archive (and the old default on the diverse one), every run the same number of training
   steps (--ablation-epochs full epochs), so they see the same images; the step time of each is
   reported beside it. Runs go --jobs at a time, one torch thread each.
2. The budget runs: the current configs/quick.yaml on both archives, each enforced by
   train.max_minutes=--minutes (--threads torch threads each, --jobs at a time; the epoch count is
   planned from the step time measured at the start so that the LR schedule ends near the
   budget). After every epoch the model is evaluated on a fixed 640-sample subset of its
   training split (no augmentation), on val (held-out backgrounds of the same archive) and on the
   unseen archive: the generalisation gap as curves.
3. Pictures: unseen-scene grids of both budget runs, samples evenly spaced over the archive
   (not picked), and the curves.

--ablation-set depth runs issue 22's rows instead (DEPTH_ABLATION: configs/quick.yaml as it is
against each scale option alone, seeds 1 and 2 of the baseline and of pyramid pooling, the
1,000-scene archive, and the same 1,000 scenes with 4 of 100 objects each instead of the same 4
objects in every scene ("objects", make-data --fg-per-bg), both also with seed 1; no budget runs) and writes
docs/results/depth_scale.json: metric and scale-invariant figures side by side (δ1_ms, abs_rel_ms
after per-image median scaling; SILog), the rows that differ only by seed taken together
(`seeds`: mean and range), every run's per-epoch curve and one unseen grid per run. --rows N ...
runs some rows; a run killed from outside resumes from its last checkpoint when started again
with the same spec (its curve is kept in RUN.progress.json).

--smoke shrinks everything (32 px, tiny archives, seconds of training) for tests/test_benchmark.py.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS, log, meta, module_env, rounded, shown, write_results

QUICK = REPO / "configs" / "quick.yaml"
# The default before issue 12, for the ablation: configs/quick.yaml with every new option off.
OLD_DEFAULT = [
    "data.flip=false", "data.crop=0", "data.photometric=0", "loss.w_silog=0", "loss.w_grad=0",
    "model.context=null", "model.depth_sees_mask=null", "model.coords=null", "model.dropout=null",
    "train.ema=0", "train.weight_decay=1e-4",
]
ABLATION: list[tuple[str, str, list[str]]] = [  # (name, archive, overrides on top of OLD_DEFAULT)
    ("old default", "s15", []),
    ("scene diversity: 1,000 backgrounds", "diverse", []),
    ("paired flip + crop 0.3", "s15", ["data.flip=true", "data.crop=0.3"]),
    ("photometric 0.3 (bg and fg_bg apart)", "s15", ["data.photometric=0.3"]),
    ("loss + SILog 0.5 + gradient matching 1", "s15", ["loss.w_silog=0.5", "loss.w_grad=1"]),
    ("pyramid pooling + depth sees mask", "s15", ["model.context=ppm", "model.depth_sees_mask=true"]),
    ("coordinate channels", "s15", ["model.coords=true"]),
    ("EMA 0.995 + weight decay 0.05", "s15", ["train.ema=0.995", "train.weight_decay=0.05"]),
    ("EMA 0.995 alone", "s15", ["train.ema=0.995"]),
    ("weight decay 0.05 alone", "s15", ["train.weight_decay=0.05"]),
    ("dropout 0.1 at the bottleneck", "s15", ["model.dropout=0.1"]),
    ("deeper encoder: 3 blocks a level, 24 wide (0.50 vs 0.57 GFLOP)", "s15",
     ["model.blocks=3", "model.base_channels=24"]),
]
# Issue 22: does depth learn its scale? configs/quick.yaml as it is (no OLD_DEFAULT) against each option
# alone, the same steps; rows with "seed=1" repeat a row with another seed: the noise of one run.
DEPTH_ABLATION: list[tuple[str, str, list[str]]] = [
    ("configs/quick.yaml", "s15", []),
    ("global scale head", "s15", ["model.scale_head=true"]),
    ("object as a ruler (mask, pixel height, foot row)", "s15", ["model.ruler=true"]),
    ("pyramid pooling at the bottleneck", "s15", ["model.context=ppm"]),
    ("log depth + SILog 2", "s15", ["model.log_depth=true", "loss.w_silog=2.0"]),
    ("configs/quick.yaml, seed 1", "s15", ["seed=1"]),
    ("configs/quick.yaml", "diverse", []),
    ("pyramid pooling at the bottleneck, seed 1", "s15", ["model.context=ppm", "seed=1"]),
    ("pyramid pooling at the bottleneck", "diverse", ["model.context=ppm"]),
    ("larger crops (0.5 instead of 0.3)", "s15", ["data.crop=0.5"]),
    ("configs/quick.yaml, seed 2", "s15", ["seed=2"]),
    ("pyramid pooling at the bottleneck, seed 2", "s15", ["model.context=ppm", "seed=2"]),
    ("configs/quick.yaml", "objects", []),
    ("configs/quick.yaml, seed 1", "diverse", ["seed=1"]),
    ("configs/quick.yaml, seed 1", "objects", ["seed=1"]),
]
ABLATION_SETS = {"issue12": (ABLATION, OLD_DEFAULT), "depth": (DEPTH_ABLATION, [])}
# what each run records per epoch on the training subset, val and the unseen archive
EVAL_KEYS = ("iou", "rmse", "delta1", "abs_rel", "delta1_ms", "abs_rel_ms", "silog")
TRAIN_SUBSET = 640
# what the figures depend on (tests/test_figures.py: a figure older than one of these is stale)
SOURCES = ["benchmarks/quality.py", "src/maskdepth/train.py", "src/maskdepth/model/maskdepthnet.py",
           "src/maskdepth/losses.py", "src/maskdepth/metrics.py", "configs/quick.yaml"]


def _log(message: str) -> None:
    log(message, who="bench_quality")


def archive_specs(smoke: bool) -> dict[str, dict[str, Any]]:
    if smoke:
        return {"diverse": dict(num_bg=20, num_fg=2, per_pair=1, seed=0, size=32),
                "objects": dict(num_bg=20, num_fg=4, fg_per_bg=2, per_pair=1, seed=0, size=32),
                "s15": dict(num_bg=5, num_fg=8, per_pair=1, seed=0, size=32),
                "unseen": dict(num_bg=4, num_fg=3, per_pair=1, seed=1, size=32)}
    # "objects": as many samples as "diverse", its 1,000 scenes each with 4 of 100 objects (40 scenes each)
    return {"diverse": dict(num_bg=1000, num_fg=4, per_pair=1, seed=0, size=64),
            "objects": dict(num_bg=1000, num_fg=100, fg_per_bg=4, per_pair=1, seed=0, size=64),
            "s15": dict(num_bg=100, num_fg=40, per_pair=1, seed=0, size=64),
            "unseen": dict(num_bg=60, num_fg=10, per_pair=1, seed=1, size=64)}


def archive_rows(specs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per archive_specs entry for a data file: its make-data arguments (fg_per_bg: objects
    per scene, num_fg when every scene has every object) and its number of samples."""
    rows = []
    for name, v in specs.items():
        k = v.get("fg_per_bg", v["num_fg"])
        rows.append({"name": name, "num_bg": v["num_bg"], "num_fg": v["num_fg"], "fg_per_bg": k, "flips": 2,
                     "per_pair": v["per_pair"], "samples": v["num_bg"] * k * 2 * v["per_pair"], "seed": v["seed"],
                     "size": v["size"]})
    return rows


def ensure_archive(path: Path, spec: dict[str, Any], workers: int) -> Path:
    """Make the archive unless `path` already holds one made with the same arguments."""
    import zipfile

    from maskdepth.synth import make_dataset

    if path.is_file():
        try:
            with zipfile.ZipFile(path) as z:
                info = json.loads(z.read("dataset.json"))
            if all(info.get(k) == v for k, v in spec.items()):
                _log(f"reusing {path}")
                return path
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass
    summary = make_dataset(path, workers=workers, overwrite=True, progress=False, **spec)
    _log(summary.format())
    return path


# --------------------------------------------------------------------------------------------
# one training run (runs in its own process: `--one SPEC.json`)


def subset_loader(path: Path, size: int, split: str, limit: int, batch: int) -> Any:
    """An unshuffled uint8 DataLoader of `split` of the archive at `path`; with `limit`, that many
    samples evenly spaced over the split (not picked)."""
    import numpy as np
    import torch

    from maskdepth.data import collate, open_dataset

    dataset = open_dataset(path, size, split, uint8=True)
    if limit and len(dataset) > limit:
        picks = np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist()
        dataset = torch.utils.data.Subset(dataset, picks)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collate)


def _measure_step_seconds(cfg: Any, steps: int) -> float:
    """Seconds per training step of cfg's model and losses on random inputs (after one warm-up step)."""
    import torch

    from maskdepth.losses import DepthLoss, DiceBCELoss
    from maskdepth.model import build_model

    model = build_model(cfg.model.name, **cfg.model.options())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, s = cfg.train.batch_size, cfg.data.size
    g = torch.Generator().manual_seed(0)
    bg, fg_bg, depth = (torch.rand(b, c, s, s, generator=g) for c in (3, 3, 1))
    mask = (torch.rand(b, 1, s, s, generator=g) > 0.8).float()
    mask_loss = DiceBCELoss()
    depth_loss = DepthLoss(w_silog=cfg.loss.w_silog, w_grad=cfg.loss.w_grad)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        logits, pred = model(bg, fg_bg)
        loss = mask_loss(logits, mask) + depth_loss(pred, depth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def step_times(specs: list[dict[str, Any]], rounds: int, steps: int) -> list[float]:
    """Seconds per training step of each spec's config (one thread; the best of `rounds`
    interleaved rounds, so that every variant meets the same machine)."""
    import torch

    from maskdepth.config import load_config

    torch.set_num_threads(1)
    cfgs = [load_config(QUICK, [f"data.size={s['size']}", f"train.batch_size={s['batch']}", *s["overrides"]])
            for s in specs]
    best = [math.inf] * len(cfgs)
    for _ in range(rounds):
        for i, cfg in enumerate(cfgs):
            best[i] = min(best[i], _measure_step_seconds(cfg, steps))
    return best


def _progress_path(spec: dict[str, Any]) -> Path:
    run_dir = Path(spec["run_dir"])
    return run_dir.with_name(run_dir.name + ".progress.json")  # beside run_dir: fit wants that one empty


def _resume_or_wipe(spec: dict[str, Any]) -> tuple[str, list[dict[str, Any]], int]:
    """A run killed from outside goes on from its last checkpoint when RUN.progress.json holds the
    same spec and a curve point for every finished epoch; otherwise its run_dir is wiped. Returns
    (train's `resume`, the curve so far, the restarts so far)."""
    import shutil

    from maskdepth.checkpoint import read_checkpoint

    progress, last = _progress_path(spec), Path(spec["run_dir"]) / "checkpoints" / "last.pt"
    if progress.is_file() and last.is_file():
        saved = json.loads(progress.read_text())
        if saved["spec"] == spec and read_checkpoint(last).train.epoch == len(saved["curve"]):
            _log(f"{spec['name']}: resuming after {len(saved['curve'])} epoch(s) from {last}")
            return "auto", saved["curve"], saved.get("restarts", 0) + 1
    shutil.rmtree(spec["run_dir"], ignore_errors=True)
    return "never", [], 0


def _save_progress(spec: dict[str, Any], curve: list[dict[str, Any]], restarts: int) -> None:
    path = _progress_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"spec": spec, "curve": curve, "restarts": restarts}))


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one variant, evaluating it on train / val / unseen after every epoch; a run killed
    from outside resumes from its last checkpoint when started again with the same spec."""
    import torch

    from maskdepth.config import load_config
    from maskdepth.data import open_dataset
    from maskdepth.evaluate import evaluate
    from maskdepth.model import count_parameters
    from maskdepth.train import fit

    torch.set_num_threads(spec["threads"])
    size, batch = spec["size"], spec["batch"]
    resume, curve, restarts = _resume_or_wipe(spec)
    base = [f"data.path={spec['archive']}", f"run_dir={spec['run_dir']}", f"data.size={size}",
            "data.num_workers=0", f"resume={resume}", "device=cpu", f"train.batch_size={batch}",
            "train.checkpoint_minutes=3", "train.num_samples=4"]
    cfg = load_config(QUICK, base + spec["overrides"])
    n_train = len(open_dataset(spec["archive"], size, "train"))
    steps_per_epoch = n_train // batch
    step_s = _measure_step_seconds(cfg, spec["calibration_steps"])
    if spec.get("minutes"):
        # Plan the epochs so that the LR schedule ends near the budget; max_minutes enforces it.
        planned = spec["minutes"] * 60 * 0.9 / (step_s * 1.15)  # 1.15: data loading and validation
        epochs = max(1, round(planned / steps_per_epoch))
        extra = [f"train.epochs={epochs}", f"train.max_minutes={spec['minutes']}"]
    else:
        extra = [f"train.epochs={spec['epochs']}"]
    cfg = load_config(QUICK, base + spec["overrides"] + extra)

    device = torch.device("cpu")
    train_loader = subset_loader(Path(spec["archive"]), size, "train", TRAIN_SUBSET, 64)
    unseen_loader = subset_loader(Path(spec["unseen"]), size, "all", 0, 64)
    _save_progress(spec, curve, restarts)

    def on_epoch_end(row: dict[str, Any], model: Any) -> None:
        start = time.perf_counter()
        seen = evaluate(model, train_loader, device)
        unseen = evaluate(model, unseen_loader, device)
        point = {"epoch": row["epoch"], "steps": row["steps"], "seconds": row["seconds"],
                 "train_depth_loss": row["train_depth_loss"], "eval_s": time.perf_counter() - start}
        for prefix, figures in (("train", seen), ("unseen", unseen)):
            point.update({f"{prefix}_{k}": figures[k] for k in EVAL_KEYS})
        point.update({f"val_{k}": row.get(f"val_{k}") for k in EVAL_KEYS})
        point["val_score"] = row.get("val_score")
        curve.append(point)
        _save_progress(spec, curve, restarts)
        _log(f"{spec['name']}: epoch {row['epoch']} step {row['steps']}: unseen rmse {unseen['rmse']:.4f} "
             f"d1 {unseen['delta1']:.3f} d1_ms {unseen['delta1_ms']:.3f} iou {unseen['iou']:.3f} "
             f"| val rmse {row['val_rmse']:.4f} "
             f"| train rmse {seen['rmse']:.4f}")

    start = time.perf_counter()
    fit(cfg, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - start
    from maskdepth.inference import load_model

    model, _ = load_model(Path(spec["run_dir"]) / "checkpoints" / "last.pt", "cpu")
    return {**spec, "curve": curve, "step_s": step_s, "wall_s": wall, "params": count_parameters(model),
            "train_s": sum(p["seconds"] for p in curve), "epochs": len(curve), "restarts": restarts}


# --------------------------------------------------------------------------------------------
# baselines and pictures


def baselines(archives: dict[str, Path], size: int, names: tuple[str, ...] = ("diverse", "s15"),
              otsu: bool = True) -> dict[str, dict[str, float]]:
    """On the unseen archive: the mean-depth predictor of the training split of each archive in
    `names` (`mean_depth_<name>`) and, with `otsu`, background subtraction with a 3x3 opening and
    closing (`otsu`), by maskdepth.baselines."""
    import torch

    from maskdepth.baselines import mean_depth, score_baselines
    from maskdepth.data import collate, open_dataset

    means = {}
    for name in names:
        train_set = open_dataset(archives[name], size, "train")
        means[f"mean_depth_{name}"] = mean_depth(train_set[i]["depth"] for i in range(len(train_set)))
    unseen = open_dataset(archives["unseen"], size, "all")
    loader = torch.utils.data.DataLoader(unseen, batch_size=64, collate_fn=collate)
    out = score_baselines(loader, means, kernel=3 if otsu else None)
    if otsu:
        out["otsu"] = out.pop("bgsub")
    return out


def unseen_grid(run_dir: Path, unseen: Path, size: int, path: Path, title: str, n: int = 8) -> Path:
    import numpy as np
    import torch

    from maskdepth.data import collate, open_dataset
    from maskdepth.inference import load_model
    from maskdepth.viz import save_sample_grid

    model, _ = load_model(run_dir / "checkpoints" / "last.pt", "cpu")
    dataset = open_dataset(unseen, size, "all")
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()  # evenly spaced, not picked
    batch = collate([dataset[i] for i in picks])
    with torch.no_grad():
        logits, depth = model(batch["bg"], batch["fg_bg"])
    return save_sample_grid(path, batch["bg"], batch["fg_bg"], batch["mask"], torch.sigmoid(logits), batch["depth"],
                            depth, title=title)


DEPTH_BINS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 0.99, 1.0)  # 1.0 = 20 m or farther (the sky)


def error_by_depth(run_dir: Path, unseen: Path, size: int) -> list[dict[str, float]]:
    """Where on the unseen archive the depth is wrong: per band of true depth, the share of
    valid pixels, δ1 and the median of pred / true (above 1: predicted too far)."""
    import torch

    from maskdepth.data import collate, open_dataset
    from maskdepth.inference import load_model

    model, _ = load_model(run_dir / "checkpoints" / "last.pt", "cpu")
    loader = torch.utils.data.DataLoader(open_dataset(unseen, size, "all"), batch_size=64, collate_fn=collate)
    preds, trues = [], []
    with torch.no_grad():
        for batch in loader:
            preds.append(model(batch["bg"], batch["fg_bg"])[1].flatten())
            trues.append(batch["depth"].flatten())
    pred, true = torch.cat(preds), torch.cat(trues)
    valid = true > 1e-3
    pred, true = pred[valid].clamp(1e-3, 1.0), true[valid]
    ratio = pred / true
    rows = []
    for lo, hi in pairwise(DEPTH_BINS):
        inside = (true > lo) & (true <= hi)
        if inside.any():
            r = ratio[inside]
            rows.append({"lo": lo, "hi": hi, "share": float(inside.float().mean()),
                         "delta1": float((torch.maximum(r, 1 / r) < 1.25).float().mean()),
                         "median_ratio": float(r.median())})
    return rows


SPLIT_LABELS = {"train": "training scenes", "val": "val (held-out bg)", "unseen": "unseen archive"}


CURVE_METRICS = (("rmse", "depth RMSE (lower is better)"), ("delta1", "depth δ1 (higher is better)"))


def curves_png(runs: list[dict[str, Any]], base: dict[str, dict[str, float]], path: Path,
               metrics: tuple[tuple[str, str], ...] = CURVE_METRICS) -> Path:
    """One row of panels per run, one panel per (metric, label) of `metrics`: train, val and unseen
    per epoch, and the mean-depth predictor of the run's archive (`base`, from `baselines`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), len(metrics), figsize=(5 * len(metrics), 3.2 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        steps = [p["steps"] for p in run["curve"]]
        for ax, (metric, label) in zip(row, metrics, strict=True):
            for split, style in (("train", "-"), ("val", "--"), ("unseen", "-")):
                ax.plot(steps, [p[f"{split}_{metric}"] for p in run["curve"]], style, marker="o", ms=3,
                        label=SPLIT_LABELS[split])
            ax.axhline(base[f"mean_depth_{run['archive_name']}"][metric], color="gray", ls=":",
                       label="mean-depth predictor (unseen)")
            ax.set_title(f"{run['name']}: {label}", fontsize=9)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# the figures


def _last(run: dict[str, Any]) -> dict[str, Any]:
    return run["curve"][-1]


def _gap(point: dict[str, Any]) -> float:
    """Unseen minus training-scene depth RMSE: what the model knows only of scenes it saw."""
    return point["unseen_rmse"] - point["train_rmse"]


def _point(point: dict[str, Any]) -> dict[str, Any]:
    """One epoch's figures as the data file keeps them, with the gap."""
    figures = {k: rounded(v, 4) if isinstance(v, float) else v for k, v in point.items()}
    return {**figures, "gap": rounded(_gap(point), 4)}


def ablation_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per change: the last epoch's figures and the step time relative to the first row."""
    ref = runs[0]
    rows = []
    for run in runs:
        p = _last(run)
        rows.append({"change": run["name"], "archive": run["archive_name"],
                     **{k: rounded(p[k], 4) for k in ("unseen_delta1", "unseen_rmse", "unseen_iou", "val_rmse",
                                                      "train_rmse")},
                     "gap_val_train": rounded(p["val_rmse"] - p["train_rmse"], 4),
                     "gap_unseen_train": rounded(_gap(p), 4),
                     "step_time_rel": rounded(run["step_s"] / ref["step_s"], 3), "step_s": rounded(run["step_s"], 4),
                     "params": run["params"], "epochs": run["epochs"], "steps": p["steps"],
                     "overrides": run["overrides"][len(OLD_DEFAULT):]})
    return rows


def budget_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per archive: the last epoch's figures, every epoch (`curve`) and the error by depth band."""
    out = {}
    for run in runs:
        p = _last(run)
        out[run["archive_name"]] = {
            "method": "MaskDepthNet, configs/quick.yaml", "archive": run["archive_name"],
            **{k: rounded(p[k], 4) for k in ("unseen_delta1", "unseen_rmse", "unseen_abs_rel", "unseen_iou")},
            "epochs": run["epochs"], "steps": p["steps"], "training_min": rounded(run["train_s"] / 60, 1),
            "wall_s": rounded(run["wall_s"], 1), "params": run["params"], "reused": bool(run.get("reused")),
            "curve": [_point(q) for q in run["curve"]],
            "bands": [{k: rounded(v, 4) for k, v in b.items()} for b in run.get("bands", [])]}
    return out


def baseline_rows(base: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = [{"method": f"mean-depth predictor of the {name} training split", "archive": name,
             **{f"unseen_{k}": rounded(base[f"mean_depth_{name}"][k], 4) for k in ("delta1", "rmse", "abs_rel")},
             "training_min": 0} for name in ("diverse", "s15")]
    rows.append({"method": "background subtraction (Otsu)", "unseen_iou": rounded(base["otsu"]["iou"], 4),
                 "training_min": 0})
    return rows


def target_rows(runs: list[dict[str, Any]], base: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Issue 12's targets for each budget run, met or not: δ1 ≥ 0.75, RMSE ≤ half the mean
    predictor's, IoU ≥ 0.94, and the gap at the first and the last epoch."""
    rows = []
    for run in runs:
        p, first = _last(run), run["curve"][0]
        half = base[f"mean_depth_{run['archive_name']}"]["rmse"] / 2
        rows.append({"archive": run["archive_name"], "delta1_ok": p["unseen_delta1"] >= 0.75,
                     "unseen_delta1": rounded(p["unseen_delta1"], 4), "rmse_ok": p["unseen_rmse"] <= half,
                     "unseen_rmse": rounded(p["unseen_rmse"], 4), "half_mean_rmse": rounded(half, 4),
                     "iou_ok": p["unseen_iou"] >= 0.94, "unseen_iou": rounded(p["unseen_iou"], 4),
                     "gap_first": rounded(_gap(first), 4), "gap_last": rounded(_gap(p), 4)})
    return rows


def figures(args: argparse.Namespace, specs: dict[str, dict[str, Any]], ablation: list[dict[str, Any]],
            budget: list[dict[str, Any]], base: dict[str, dict[str, float]],
            pictures: dict[str, Path]) -> dict[str, Any]:
    """Everything docs/results/quality.json holds besides its meta."""
    settings = {"minutes": args.minutes, "threads": args.threads, "ablation_threads": 1,
                "ablation_epochs": args.ablation_epochs, "batch": args.batch, "jobs": args.jobs,
                "step_time_rounds": 1 if args.smoke else 3, "train_subset": TRAIN_SUBSET, "old_default": OLD_DEFAULT}
    if ablation:
        settings.update(ablation_steps=_last(ablation[0])["steps"], reference_step_s=rounded(ablation[0]["step_s"], 3))
    return {
        "settings": settings,
        "archives": archive_rows(specs),
        "budget": budget_runs(budget), "baselines": baseline_rows(base),
        "targets": target_rows(budget, base) if budget else [],
        "ablation": ablation_rows(ablation) if ablation else [],
        "pictures": {k: shown(v) for k, v in pictures.items()},
    }


def reuse_note(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How many runs came from earlier invocations (--reuse), and their run time."""
    reused = [r for r in runs if r.get("reused")]
    return {"runs_reused": f"{len(reused)} of {len(runs)}",
            "run_hours_in_all": rounded(sum(r["wall_s"] for r in runs) / 3600, 2)}


def spec_files(work: Path, spec: dict[str, Any]) -> tuple[Path, Path]:
    """(WORK/spec_KEY.json, WORK/spec_KEY.result.json): a run's spec and, once it finished, its result."""
    spec_path = work / f"spec_{spec['key']}.json"
    return spec_path, spec_path.with_suffix(".result.json")


def finished_result(work: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a finished run of `work` whose spec is `spec` (marked `reused`), else None."""
    spec_path, done = spec_files(work, spec)
    if done.is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == spec:
        _log(f"reusing the finished run {spec['name']} ({done})")
        return dict(json.loads(done.read_text()), reused=True)
    return None


def _launch(specs: list[dict[str, Any]], work: Path, jobs: int, reuse: bool) -> list[dict[str, Any]]:
    """Run every spec in its own process (`--one`), `jobs` at a time; results in spec order. With
    `reuse`, a run whose spec and result are already in `work` is not run again."""
    pending = list(enumerate(specs))
    running: list[tuple[int, subprocess.Popen, Path]] = []
    results: dict[int, dict[str, Any]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            i, spec = pending.pop(0)
            spec_path, done = spec_files(work, spec)
            found = finished_result(work, spec) if reuse else None
            if found is not None:
                results[i] = found
                continue
            done.unlink(missing_ok=True)
            spec_path.write_text(json.dumps(spec))
            env = dict(module_env(), OMP_NUM_THREADS=str(spec["threads"]))
            log_file = open(work / f"log_{spec['key']}.txt", "w")
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.quality", "--one", str(spec_path)],
                                    stdout=log_file, stderr=subprocess.STDOUT, env=env)
            running.append((i, proc, spec_path))
            _log(f"started {spec['name']} ({spec['archive_name']})")
        time.sleep(2)
        for item in list(running):
            i, proc, spec_path = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                raise SystemExit(f"run {specs[i]['name']} failed (exit {proc.returncode}); see "
                                 f"{work / ('log_' + specs[i]['key'] + '.txt')}")
            results[i] = json.loads(spec_files(work, specs[i])[1].read_text())
            _log(f"finished {specs[i]['name']}")
    return [results[i] for i in range(len(specs))]


def depth_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """--ablation-set depth: one row per run, the last epoch's unseen figures, metric and
    scale-invariant side by side, with the val figures and the step time relative to the first row."""
    ref = runs[0]
    rows = []
    for run in runs:
        p = _last(run)
        rows.append({"change": run["name"], "overrides": " ".join(run["overrides"]) or "(none)",
                     "archive": run["archive_name"], "steps": p["steps"],
                     **{f"{where}_{k}": rounded(p.get(f"{where}_{k}"), 4) for where in ("unseen", "val")
                        for k in EVAL_KEYS},
                     "gap_unseen_train": rounded(_gap(p), 4),
                     "step_time_rel": rounded(run["step_s"] / ref["step_s"], 3),
                     "params": run["params"], "restarts": run.get("restarts", 0)})
    return rows


SEED_FIGURES = ("unseen_delta1", "unseen_delta1_ms", "unseen_abs_rel", "unseen_rmse", "unseen_iou")


def seed_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that differ only by `seed=N` (named "..., seed N"), taken together: per change and
    archive with two seeds or more, the mean, lowest and highest of each SEED_FIGURES figure, so
    that an option's effect reads against the baseline's own seed spread."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        change = row["change"].split(", seed ")[0]
        groups.setdefault((change, row["archive"]), []).append(row)
    out = []
    for (change, archive), members in groups.items():
        if len(members) < 2:
            continue
        summary: dict[str, Any] = {"change": change, "archive": archive, "seeds": len(members)}
        for key in SEED_FIGURES:
            values = [m[key] for m in members]
            summary.update({f"{key}_mean": rounded(sum(values) / len(values), 4), f"{key}_min": min(values),
                            f"{key}_max": max(values)})
        out.append(summary)
    return out


def depth_figures(ablation: list[dict[str, Any]], specs: dict[str, dict[str, Any]],
                  base: dict[str, dict[str, float]], archives: dict[str, Path], pictures_dir: Path) -> dict[str, Any]:
    """Everything docs/results/depth_scale.json holds besides its meta: the table, every run's
    per-epoch curve, the mean-depth predictors and one unseen grid per run (evenly spaced samples)."""
    size = specs["s15"]["size"]
    grids = {}
    for run in ablation:
        png = pictures_dir / f"depth_unseen_{run['key']}.png"
        grids[run["key"]] = shown(unseen_grid(Path(run["run_dir"]), archives["unseen"], size, png,
                                              title=f"unseen scenes, {run['name']} ({run['archive_name']}), "
                                                    f"after {_last(run)['steps']} steps"))
    return {
        "archives": archive_rows(specs),
        "ablation": (rows := depth_rows(ablation)),
        "seeds": seed_summary(rows),
        "baselines": [{"method": f"mean-depth predictor of the {name} training split", "archive": name,
                       **{f"unseen_{k}": rounded(v, 4) for k, v in base[f"mean_depth_{name}"].items()}}
                      for name in ("s15", "diverse", "objects")],
        "curves": {run["key"]: [_point(q) for q in run["curve"]] for run in ablation},
        "pictures": grids,
    }


def _specs(args: argparse.Namespace, specs: dict[str, dict[str, Any]], archives: dict[str, Path],
           work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(budget runs, ablation runs) that this invocation asks for."""
    common = dict(size=specs["s15"]["size"], batch=args.batch, threads=1, unseen=str(archives["unseen"]),
                  calibration_steps=2 if args.smoke else 5)
    rows, under = ABLATION_SETS[args.ablation_set]
    prefix = "ablation" if args.ablation_set == "issue12" else args.ablation_set
    ablation = []
    if args.ablation_epochs and args.only != "budget":
        for i, (name, archive, overrides) in enumerate(rows[:3] if args.smoke else rows):
            if args.rows is None or i in args.rows:
                ablation.append(dict(common, key=f"{prefix}{i}", name=name, archive_name=archive,
                                     archive=str(archives[archive]), run_dir=str(work / f"{prefix}{i}"),
                                     overrides=under + overrides, epochs=args.ablation_epochs))
    budget = []
    if args.only != "ablation" and args.ablation_set == "issue12":  # the depth set has no budget runs
        for name in ("diverse", "s15"):
            budget.append(dict(common, threads=args.threads, key=f"budget_{name}", name=f"configs/quick.yaml on {name}",
                               archive_name=name, archive=str(archives[name]), run_dir=str(work / f"budget_{name}"),
                               overrides=[], minutes=args.minutes))
    return budget, ablation


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget of each budget run")
    parser.add_argument("--ablation-epochs", type=int, default=3, help="epochs of every ablation run (0: skip)")
    parser.add_argument("--ablation-set", choices=tuple(ABLATION_SETS), default="issue12",
                        help="issue12: the old default against each change, with the budget runs (quality.json); "
                             "depth: configs/quick.yaml against issue 22's scale options (depth_scale.json)")
    parser.add_argument("--rows", type=int, nargs="+",
                        help="run only these rows (0-based) of the ablation set, e.g. beside a running invocation; "
                             "a later --reuse invocation without --rows reports them all")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each budget run (ablation runs: 1)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--work", default="runs/bench_quality", help="archives, runs and logs")
    parser.add_argument("--out", help="the data file (default docs/results/quality.json, or depth_scale.json)")
    parser.add_argument("--pictures", default=str(RESULTS), help="folder of the pictures (default %(default)s)")
    parser.add_argument("--only", choices=("ablation", "budget"), help="run one part (the other is left out)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs of --work whose spec is unchanged (their results, not a rerun)")
    parser.add_argument("--smoke", action="store_true", help="32 px, tiny archives, seconds of training")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> Path | None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.one:
        spec = json.loads(Path(args.one).read_text())
        result = run_one(spec)
        Path(args.one).with_suffix(".result.json").write_text(json.dumps(result))
        return None
    started = time.perf_counter()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    specs = archive_specs(args.smoke)
    archives = {name: ensure_archive(work / f"{name}.zip", spec, max(1, args.jobs)) for name, spec in specs.items()}
    size = specs["s15"]["size"]
    budget_specs, ablation_specs = _specs(args, specs, archives, work)
    results = _launch(budget_specs + ablation_specs, work, args.jobs, args.reuse)
    budget, ablation = results[: len(budget_specs)], results[len(budget_specs):]
    if ablation:  # step times measured here, one after another in one quiet process, not during the runs
        seconds_per_step = step_times(ablation, rounds=1 if args.smoke else 3, steps=1 if args.smoke else 4)
        for run, seconds in zip(ablation, seconds_per_step, strict=True):
            run["step_s"] = seconds
    base = baselines(archives, size, names=("diverse", "s15", "objects") if args.ablation_set == "depth" else
                     ("diverse", "s15"))
    pictures_dir = Path(args.pictures)
    run_meta = meta("quality", argv, device="cpu", smoke=args.smoke, ablation_set=args.ablation_set, sources=SOURCES,
                    minutes_of_this_invocation=rounded((time.perf_counter() - started) / 60, 1),
                    **reuse_note(ablation + budget))
    if args.ablation_set == "depth":
        out = Path(args.out or RESULTS / "depth_scale.json")
        return write_results(out, run_meta, depth_figures(ablation, specs, base, archives, pictures_dir))
    pictures: dict[str, Path] = {}
    if budget:
        pictures["curves"] = curves_png(budget, base, pictures_dir / "quality_curves.png")
        for run in budget:
            run["bands"] = error_by_depth(Path(run["run_dir"]), archives["unseen"], size)
            png = pictures_dir / f"quality_unseen_{run['archive_name']}.png"
            pictures[run["archive_name"]] = unseen_grid(
                Path(run["run_dir"]), archives["unseen"], size, png,
                title=f"unseen scenes, {run['name']}, after {_last(run)['steps']} steps")
    out = Path(args.out or RESULTS / "quality.json")
    return write_results(out, run_meta, figures(args, specs, ablation, budget, base, pictures))


if __name__ == "__main__":
    main()
