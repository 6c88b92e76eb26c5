"""python -m benchmarks.long_run [--epochs 24] [--work runs/bench_long] [--out docs/results/long_run.json] [--reuse]

How far does training go (issue 22, item 6)? One long run of configs/quick.yaml as it is, on the
1,000-scene archive of benchmarks.quality (1,000 backgrounds x 4 objects x 2 flips, seed 0, 64 px),
evaluated after every epoch on the training scenes (640 samples evenly spaced), on val (held-out
backgrounds of the same archive) and on the unseen archive (60 backgrounds x 10 objects x 2 flips,
seed 1: scenes and objects no run has seen). Metric and scale-invariant depth figures side by side
(δ1, δ1 after per-image median scaling, abs_rel, RMSE, SILog) and the mask IoU.

Writes docs/results/long_run.json (`python -m benchmarks.render` turns it into the `long_run.*`
tables of docs/results.md), docs/results/long_run_curves.png and an unseen grid of the last
epoch. `level_off` says, for unseen δ1, δ1 median-scaled and RMSE, the first step from which the
figure stays within --tolerance of its best value, and what the last third of the steps still
bought: what more steps buy a Colab user.

The run is benchmarks.quality's `run_one` (one torch thread, batch 32, the LR schedule planned for
--epochs): killed from outside, it resumes from its last checkpoint when started again with the
same arguments. With --reuse, a finished run whose spec is unchanged is reported, not rerun.

Run time of the defaults: 24 epochs x 200 steps at ~1 s a step on one busy core, plus ~40 s of
evaluation an epoch: about 1 h 45 min. --smoke shrinks it to seconds (tests/test_benchmark.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, log, meta, rounded, save_png, shown, write_results
from benchmarks.quality import archive_specs, ensure_archive, run_one, unseen_grid

SOURCES = ["benchmarks/long_run.py", "benchmarks/quality.py", "src/maskdepth/train.py",
           "src/maskdepth/model/maskdepthnet.py", "src/maskdepth/losses.py", "configs/quick.yaml"]
KEYS = ("iou", "rmse", "delta1", "delta1_ms", "abs_rel", "abs_rel_ms", "silog")
WATCH = (("unseen_delta1", 1), ("unseen_delta1_ms", 1), ("unseen_rmse", -1))  # (figure, +1: higher is better)


def _log(message: str) -> None:
    log(message, who="bench_long_run")


def _spec(args: argparse.Namespace, archives: dict[str, Path], size: int, work: Path) -> dict[str, Any]:
    return dict(size=size, batch=args.batch, threads=1, unseen=str(archives["unseen"]),
                calibration_steps=2 if args.smoke else 5, key="long", name="configs/quick.yaml, long run",
                archive_name="diverse", archive=str(archives["diverse"]), run_dir=str(work / "long"),
                overrides=[], epochs=args.epochs)


def _run(spec: dict[str, Any], work: Path, reuse: bool) -> dict[str, Any]:
    spec_path, done = work / "spec_long.json", work / "spec_long.result.json"
    if reuse and done.is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == spec:
        _log(f"reusing the finished run ({done})")
        return dict(json.loads(done.read_text()), reused=True)
    spec_path.write_text(json.dumps(spec))
    result = run_one(spec)
    done.write_text(json.dumps(result))
    return result


def curve_points(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Per epoch: step, training minutes so far (validation included, evaluation here not), and the
    train / val / unseen figures."""
    points, minutes = [], 0.0
    for p in run["curve"]:
        minutes += p["seconds"] / 60
        point = {"epoch": p["epoch"], "steps": p["steps"], "minutes": rounded(minutes, 1)}
        point.update({f"{where}_{k}": rounded(p.get(f"{where}_{k}"), 4)
                      for where in ("train", "val", "unseen") for k in KEYS})
        points.append(point)
    return points


def level_off(points: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """Per watched figure: its best value and step, the first step from which every later value is
    within `tolerance` of the best, and the change over the last third of the steps (signed so that
    positive is better)."""
    rows = []
    for key, sign in WATCH:
        values = [sign * p[key] for p in points]
        best = max(values)
        settled = next(i for i in range(len(values)) if all(best - v <= tolerance for v in values[i:]))
        third = points[-1]["steps"] * 2 / 3
        start = next(i for i, p in enumerate(points) if p["steps"] >= third)
        rows.append({"figure": key, "best": rounded(sign * best, 4), "best_step": points[values.index(best)]["steps"],
                     "last": points[-1][key], "settled_step": points[settled]["steps"],
                     "settled_minutes": points[settled]["minutes"],
                     "last_third_gain": rounded(values[-1] - values[start], 4),
                     "last_third_from_step": points[start]["steps"], "tolerance": tolerance})
    return rows


def mean_predictor(archives: dict[str, Path], size: int) -> dict[str, float]:
    """The mean-depth predictor of the training split, scored on the unseen archive."""
    import torch

    from maskdepth.baselines import mean_depth, score_baselines
    from maskdepth.data import collate, open_dataset

    train_set = open_dataset(archives["diverse"], size, "train")
    means = {"mean": mean_depth(train_set[i]["depth"] for i in range(len(train_set)))}
    loader = torch.utils.data.DataLoader(open_dataset(archives["unseen"], size, "all"), batch_size=64,
                                         collate_fn=collate)
    return {k: rounded(v, 4) for k, v in score_baselines(loader, means, kernel=None)["mean"].items()}


def curves_png(points: list[dict[str, Any]], base: dict[str, float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    steps = [p["steps"] for p in points]
    panels = (("delta1", "depth δ1 ↑"), ("delta1_ms", "δ1 after per-image median scaling ↑"), ("rmse", "RMSE ↓"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for where, label in (("train", "training scenes"), ("val", "val (held-out bg)"), ("unseen", "unseen archive")):
            ax.plot(steps, [p[f"{where}_{key}"] for p in points], marker="o", ms=2, label=label)
        if key in base:
            ax.axhline(base[key], color="gray", ls=":", label="mean-depth predictor (unseen)")
        ax.set_title(f"configs/quick.yaml on 1,000 scenes: {title}", fontsize=8)
        ax.set_xlabel("training step (batch 32)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=24, help="epochs of 200 steps (the LR schedule's length)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=0.01, help="how close to its best a settled figure is")
    parser.add_argument("--work", default="runs/bench_long", help="archives, the run and its spec")
    parser.add_argument("--out", default=str(RESULTS / "long_run.json"), help="the data file")
    parser.add_argument("--pictures", default=str(RESULTS), help="folder of the pictures (default %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="report a finished run with the same spec, not rerun it")
    parser.add_argument("--smoke", action="store_true", help="32 px, tiny archives, seconds of training")
    return parser


def main(argv: list[str] | None = None) -> Path:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    specs = archive_specs(args.smoke)
    archives = {name: ensure_archive(work / f"{name}.zip", specs[name], 2) for name in ("diverse", "unseen")}
    size = specs["diverse"]["size"]
    run = _run(_spec(args, archives, size, work), work, args.reuse)
    points = curve_points(run)
    base = mean_predictor(archives, size)
    pictures = Path(args.pictures)
    grid = unseen_grid(Path(run["run_dir"]), archives["unseen"], size, pictures / "long_run_unseen.png",
                       title=f"unseen scenes, configs/quick.yaml on 1,000 scenes, after {points[-1]['steps']} steps")
    run_meta = meta("long_run", argv, device="cpu", smoke=args.smoke, sources=SOURCES,
                    minutes_of_this_invocation=rounded((time.perf_counter() - started) / 60, 1),
                    reused=bool(run.get("reused")), restarts=run.get("restarts", 0))
    figures = {
        "settings": {"config": "configs/quick.yaml", "archive": "diverse", "size": size, "batch": args.batch,
                     "epochs": args.epochs, "steps": points[-1]["steps"], "threads": 1,
                     "archives": {name: specs[name] for name in ("diverse", "unseen")}},
        "level_off": level_off(points, args.tolerance),
        "baseline": {"method": "mean-depth predictor of the diverse training split", **base},
        "curve": points,
        "pictures": {"curves": shown(curves_png(points, base, pictures / "long_run_curves.png")), "grid": shown(grid)},
    }
    return write_results(Path(args.out), run_meta, figures)


if __name__ == "__main__":
    main()
