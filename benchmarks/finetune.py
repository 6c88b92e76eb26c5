"""python -m benchmarks.finetune [--size 192] [--steps 300] [--batch 8] [--evals 6] [--steps-64 300] [--init CKPT]
                               [--work runs/bench_finetune] [--out docs/results/finetune.json]

Fine-tune from a checkpoint (issue 22, item 5): does a 192 px run started from 64 px weights
(`train.init_from`) reach the validation quality of a 192 px run from scratch sooner, in the same
number of steps? RobustVideoMatting trains its stages this way, low resolution first. Writes
docs/results/finetune.json; `python benchmarks/render.py` turns it into the `finetune.*` tables.

Archives (made once in --work, reused while their dataset.json arguments match):
- train:   --size px, --num-bg backgrounds x --num-fg objects x 2 flips x --per-pair, seed 0
           (default 100 x 8 x 2 x 1 = 1,600 samples: the original dataset's structure, scaled down);
- low:     the same arguments at 64 px, for the 64 px stage (only without --init);
- unseen:  --unseen-bg x --unseen-fg x 2 x 1 at --size px, seed 1 (default 20 x 4 x 2 = 160 samples):
           backgrounds and objects that no run has seen.
The three archives take about 3.5 min with one process (below).

1. The 64 px weights: `--init CKPT` takes an existing checkpoint (a configs/quick.yaml run, e.g.
   runs/bench_finetune/stage64/checkpoints/last.pt of an earlier invocation); without it, this
   script trains configs/quick.yaml at 64 px on the low archive for --steps-64 steps (batch
   --batch-64) and uses its last.pt. The stage's training clock (the sum of its metrics.csv
   `seconds`, validation included; from CKPT's history with --init) counts in the comparison.
2. Two --size px runs of configs/quick.yaml, identical but for `train.init_from`: `scratch` and
   `from64`, the same --steps optimiser steps at batch --batch each, the LR schedule planned for
   those steps (--evals epochs of steps/evals batches, `train.max_steps_per_epoch`: every "epoch" is
   the start of a fresh shuffle, the same batches and augmentations for both runs), --threads torch
   threads, one after the other in this process. Before the first step (step 0: what the 64 px
   weights do at 192 px) and after every epoch each is evaluated on val (the held-out backgrounds of
   the train archive: fit's row) and on the unseen archive: the curves.
3. Per run, the last epoch's figures and the steps (and seconds of its training clock) until val_iou
   and val_delta1 first reach the scratch run's final values (null: never); for from64 also with the
   64 px stage added, in seconds and in --size px step equivalents (the stage's seconds divided by
   scratch's seconds per step). Steps are the robust figure; seconds compare only on a quiet
   machine, since both runs' clocks include whatever else ran.

Run time of the defaults, estimated from a timing trial on this machine (2 cores shared with two
training jobs, load ~3.5, one torch thread, about half a core for this process): a 192 px step at
batch 8 took 8-10 s, a 64 px step at batch 32 ~3.4 s, evaluating a 192 px image ~0.26 s, and
make-data ~1 s a 192 px background plus ~0.03 s a sample. So: archives ~3.5 min, the 64 px stage
~18 min, each 192 px run ~55 min (300 steps ~45 min; 7 evaluations of 160 val + 160 unseen images
~10 min): about 2.2 h in all under that load, roughly 1.2 h on an idle core. --init skips the
64 px stage (~18 min less); the archives are reused from --work, the run folders replaced.

--smoke shrinks everything (a 32 px stage, 48 px runs, tiny archives, a few steps; < 60 s) for
tests/test_benchmark.py.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS, log, meta, rounded, shown, write_results
from benchmarks.quality import ensure_archive, subset_loader

QUICK = REPO / "configs" / "quick.yaml"
# what the figures depend on (tests/test_figures.py: a newer commit of one of them marks them stale)
SOURCES = ("benchmarks/finetune.py", "src/maskdepth/train.py", "src/maskdepth/checkpoint.py",
           "src/maskdepth/model/maskdepthnet.py", "src/maskdepth/losses.py", "configs/quick.yaml")
KEYS = ("iou", "rmse", "delta1", "delta1_ms", "abs_rel", "abs_rel_ms", "silog")  # per point, val_ and unseen_
REACH = ("val_iou", "val_delta1")  # higher is better: steps until the scratch run's final value


def _log(message: str) -> None:
    log(message, who="bench_finetune")


def archive_specs(args: argparse.Namespace, low_size: int) -> dict[str, dict[str, Any]]:
    """name -> make_dataset arguments: train (--size), unseen (--size, seed 1), low (the 64 px stage's)."""
    train = dict(num_bg=args.num_bg, num_fg=args.num_fg, per_pair=args.per_pair, seed=0, size=args.size)
    specs = {"train": train,
             "unseen": dict(num_bg=args.unseen_bg, num_fg=args.unseen_fg, per_pair=1, seed=1, size=args.size)}
    if not args.init:
        specs["low"] = dict(train, size=low_size)
    return specs


def plan(steps: int, full_epoch: int, evals: int) -> tuple[int, int]:
    """(epochs, steps per epoch) for about `steps` optimiser steps with about `evals` epochs, no
    epoch longer than the split (`full_epoch` batches)."""
    per_epoch = max(1, min(full_epoch, round(steps / max(1, evals))))
    return max(1, round(steps / per_epoch)), per_epoch


def _overrides(archive: Path, run_dir: Path, size: int, batch: int, steps: int, evals: int | None) -> list[str]:
    """configs/quick.yaml overrides for a CPU run of about `steps` steps, its schedule planned for them,
    in `evals` epochs (None: as few as whole epochs allow)."""
    from maskdepth.config import load_config
    from maskdepth.data import open_dataset

    cfg = load_config(QUICK, [f"data.path={archive}", f"data.size={size}"])
    n_train = len(open_dataset(archive, size, "train", **cfg.data.dataset_options()))
    full = max(1, n_train // batch)
    epochs, per_epoch = plan(steps, full, evals or math.ceil(steps / full))
    return [f"data.path={archive}", f"run_dir={run_dir}", f"data.size={size}", "data.num_workers=0",
            "resume=never", "device=cpu", f"train.batch_size={batch}", "train.checkpoint_minutes=0",
            "train.num_samples=0", "train.worst_samples=0", f"train.epochs={epochs}",
            f"train.max_steps_per_epoch={per_epoch}"]


def _fresh(run_dir: Path) -> None:
    """resume=never wants an empty run_dir: an earlier invocation's run there is replaced."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def _figures(prefix: str, figures: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(figures[k]) for k in KEYS}


# --------------------------------------------------------------------------------------------
# the runs


def stage_low(archive: Path, run_dir: Path, size: int, batch: int, steps: int) -> dict[str, Any]:
    """Train configs/quick.yaml at the low size for about `steps` steps; its last.pt and its clock."""
    from maskdepth.config import load_config
    from maskdepth.train import fit

    _fresh(run_dir)
    cfg = load_config(QUICK, _overrides(archive, run_dir, size, batch, steps, evals=None))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    fit(cfg, on_epoch_end=lambda row, model: rows.append(row))
    wall = time.perf_counter() - start
    _log(f"{size} px stage: {rows[-1]['steps']} steps in {wall:.0f} s, val iou {rows[-1]['val_iou']:.3f} "
         f"d1 {rows[-1]['val_delta1']:.3f}")
    return {"source": "trained here", "checkpoint": str(run_dir / "checkpoints" / "last.pt"), "size": size,
            "batch": batch, "steps": rows[-1]["steps"], "epochs": len(rows),
            "seconds": sum(r["seconds"] for r in rows), "wall_s": wall,
            "val_iou": rows[-1]["val_iou"], "val_delta1": rows[-1]["val_delta1"]}


def stage_from(checkpoint: Path) -> dict[str, Any]:
    """What an existing checkpoint (--init) cost: its size, steps and training clock (its history)."""
    from maskdepth.checkpoint import read_checkpoint

    ck = read_checkpoint(checkpoint)
    history = ck.train.history
    last = history[-1] if history else {}
    return {"source": "--init", "checkpoint": str(checkpoint), "size": ck.config["data"]["size"],
            "batch": ck.config["train"]["batch_size"], "steps": ck.train.step, "epochs": ck.train.epoch,
            "seconds": sum(r.get("seconds", 0.0) for r in history), "wall_s": None,
            "val_iou": last.get("val_iou"), "val_delta1": last.get("val_delta1")}


def train_run(name: str, overrides: list[str], unseen: Path, size: int) -> dict[str, Any]:
    """One --size px run of configs/quick.yaml: its curve from step 0 (the weights it starts from)
    to the last epoch, on val and on the unseen archive."""
    import torch

    from maskdepth.config import load_config
    from maskdepth.evaluate import evaluate
    from maskdepth.runtime import settle
    from maskdepth.train import build, fit

    cfg = load_config(QUICK, overrides)
    _fresh(Path(cfg.run_dir))
    device = torch.device("cpu")
    unseen_loader = subset_loader(unseen, size, "all", 0, 32)
    curve: list[dict[str, Any]] = []

    def point(row: dict[str, Any], model: Any, val: dict[str, float] | None = None) -> None:
        start = time.perf_counter()
        figures = evaluate(model, unseen_loader, device)
        p = {"run": name, "epoch": row["epoch"], "steps": row["steps"],
             "seconds": row["seconds"] + (curve[-1]["seconds"] if curve else 0.0), "lr": row.get("lr"),
             "train_loss": row.get("train_loss"),
             **(_figures("val", val) if val is not None else {f"val_{k}": row[f"val_{k}"] for k in KEYS}),
             **_figures("unseen", figures), "eval_s": time.perf_counter() - start}
        curve.append(p)
        _log(f"{name}: step {p['steps']} ({p['seconds']:.0f} s): val iou {p['val_iou']:.3f} d1 {p['val_delta1']:.3f} "
             f"| unseen iou {p['unseen_iou']:.3f} d1 {p['unseen_delta1']:.3f} (ms {p['unseen_delta1_ms']:.3f}) "
             f"rmse {p['unseen_rmse']:.4f}")

    # step 0: exactly the network fit starts from (fit seeds, then builds, the same way)
    settle(cfg.seed, cfg.train.deterministic, device)
    parts = build(cfg, device=device)
    model = parts.eval_model.eval()
    point({"epoch": 0, "steps": 0, "seconds": 0.0}, model, evaluate(model, parts.val_loader, device))
    del parts, model

    start = time.perf_counter()
    fit(cfg, on_epoch_end=point)
    return {"name": name, "init_from": cfg.train.init_from, "curve": curve, "wall_s": time.perf_counter() - start}


# --------------------------------------------------------------------------------------------
# the figures


def _first(curve: list[dict[str, Any]], key: str, target: float) -> dict[str, Any] | None:
    """The first point whose `key` reaches `target` (higher is better), or None."""
    return next((p for p in curve if p[key] >= target), None)


def summary_rows(runs: list[dict[str, Any]], stage: dict[str, Any]) -> list[dict[str, Any]]:
    """Per run: the last point's figures; the steps and seconds until val_iou and val_delta1 reach the
    scratch run's final values; for from64 the same with the 64 px stage added (seconds, and
    --size px step equivalents at scratch's seconds per step)."""
    scratch = next(r for r in runs if r["name"] == "scratch")["curve"][-1]
    s_per_step = scratch["seconds"] / max(1, scratch["steps"])
    rows = []
    for run in runs:
        last = run["curve"][-1]
        stage_s = stage["seconds"] if run["init_from"] else 0.0
        row: dict[str, Any] = {
            "run": run["name"], "init": f"{stage['size']} px weights" if run["init_from"] else "random",
            "steps": last["steps"], "epochs": len(run["curve"]) - 1, "training_s": rounded(last["seconds"], 1),
            "stage_s": rounded(stage_s, 1), "total_s": rounded(last["seconds"] + stage_s, 1),
            **{k: rounded(last[k], 4) for k in (*(f"val_{k}" for k in KEYS), *(f"unseen_{k}" for k in KEYS))},
            "start_val_iou": rounded(run["curve"][0]["val_iou"], 4),
            "start_val_delta1": rounded(run["curve"][0]["val_delta1"], 4)}
        for key in REACH:
            target = scratch[key]
            hit = _first(run["curve"], key, target)
            short = key.removeprefix("val_")
            row[f"target_{short}"] = rounded(target, 4)
            row[f"steps_to_{short}"] = hit["steps"] if hit else None
            row[f"s_to_{short}"] = rounded(hit["seconds"], 1) if hit else None
            row[f"total_s_to_{short}"] = rounded(hit["seconds"] + stage_s, 1) if hit else None
            row[f"total_steps_to_{short}"] = rounded(hit["steps"] + stage_s / s_per_step, 1) if hit else None
        rows.append(row)
    return rows


def _point(p: dict[str, Any]) -> dict[str, Any]:
    return {k: rounded(v, 4) if isinstance(v, float) else v for k, v in p.items()}


def figures(args: argparse.Namespace, specs: dict[str, dict[str, Any]], stage: dict[str, Any],
            runs: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Everything docs/results/finetune.json holds besides its meta."""
    return {
        "settings": settings,
        "archives": [{"name": name, "size": v["size"], "num_bg": v["num_bg"], "num_fg": v["num_fg"], "flips": 2,
                      "per_pair": v["per_pair"], "samples": v["num_bg"] * v["num_fg"] * 2 * v["per_pair"],
                      "seed": v["seed"]} for name, v in specs.items()],
        "stage64": {**{k: rounded(v, 4) if isinstance(v, float) else v for k, v in stage.items()},
                    "checkpoint": shown(Path(stage["checkpoint"]))},
        "runs": summary_rows(runs, stage),
        "curves": {run["name"]: [_point(p) for p in run["curve"]] for run in runs},
    }


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192, help="image side of the two compared runs")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of each compared run")
    parser.add_argument("--batch", type=int, default=8, help="batch of the compared runs")
    parser.add_argument("--evals", type=int, default=6, help="epochs of each compared run: evaluations after step 0")
    parser.add_argument("--steps-64", type=int, default=300, help="steps of the 64 px stage (without --init)")
    parser.add_argument("--batch-64", type=int, default=32, help="batch of the 64 px stage")
    parser.add_argument("--init", type=Path, help="an existing 64 px checkpoint (configs/quick.yaml): no 64 px stage")
    parser.add_argument("--num-bg", type=int, default=100)
    parser.add_argument("--num-fg", type=int, default=8)
    parser.add_argument("--per-pair", type=int, default=1)
    parser.add_argument("--unseen-bg", type=int, default=20)
    parser.add_argument("--unseen-fg", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--work", default="runs/bench_finetune", help="archives and runs")
    parser.add_argument("--out", default=str(RESULTS / "finetune.json"), help="the data file (default %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="a 32 px stage, 48 px runs, tiny archives, a few steps")
    args = parser.parse_args(argv)
    low_size = 64
    if args.smoke:
        low_size = 32
        args.size, args.steps, args.batch, args.evals, args.steps_64, args.batch_64 = 48, 4, 4, 2, 3, 8
        args.num_bg, args.num_fg, args.per_pair, args.unseen_bg, args.unseen_fg = 10, 2, 1, 3, 2

    import torch

    torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    specs = archive_specs(args, low_size)
    archives = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        archives[name] = ensure_archive(work / f"{name}_{spec['size']}.zip", spec, workers=1)
        _log(f"archive {name}: {time.perf_counter() - t0:.0f} s")
    archives_s = time.perf_counter() - started

    if args.init:
        stage = stage_from(args.init)
    else:
        stage = stage_low(archives["low"], work / "stage64", low_size, args.batch_64, args.steps_64)
    runs = []
    for name, init in (("scratch", None), ("from64", stage["checkpoint"])):
        overrides = _overrides(archives["train"], work / name, args.size, args.batch, args.steps, args.evals)
        runs.append(train_run(name, overrides + ([f"train.init_from={init}"] if init else []), archives["unseen"],
                              args.size))

    curve = runs[0]["curve"]
    settings = {"size": args.size, "steps": curve[-1]["steps"], "batch": args.batch, "epochs": len(curve) - 1,
                "steps_per_epoch": curve[1]["steps"],
                "stage_size": stage["size"], "stage_steps": stage["steps"], "stage_batch": stage["batch"],
                "threads": args.threads, "config": shown(QUICK), "archives_s": rounded(archives_s, 1)}
    run_meta = meta("finetune", argv, device="cpu", smoke=args.smoke, sources=list(SOURCES),
                    load_start=rounded(load_start, 2), load_end=rounded(os.getloadavg()[0], 2),
                    minutes_of_this_invocation=rounded((time.perf_counter() - started) / 60, 1))
    return write_results(Path(args.out), run_meta, figures(args, specs, stage, runs, settings))


if __name__ == "__main__":
    main()
