"""python -m benchmarks.long_run [--epochs 24] [--archive diverse|objects] [--work runs/bench_long] [--reuse]

How far does training go (issue 22, item 6)? One long run of configs/quick.yaml as it is, on the
1,000-scene archive of benchmarks.quality (1,000 backgrounds x 4 objects x 2 flips, seed 0, 64 px),
evaluated after every epoch on the training scenes (640 samples evenly spaced), on val (held-out
backgrounds of the same archive) and on the unseen archive (60 backgrounds x 10 objects x 2 flips,
seed 1: scenes and objects no run has seen). --archive objects trains on the same 1,000 scenes
with 4 of 100 objects each (make-data --fg-per-bg 4, as many samples) instead. Metric and
scale-invariant depth figures side by side (δ1, δ1 after per-image median scaling, abs_rel, RMSE,
SILog) and the mask IoU.

Writes docs/results/long_run.json (long_run_objects.json with --archive objects;
`python -m benchmarks.render` turns it into the `long_run.*` tables of docs/results.md),
docs/results/long_run_curves.png and an unseen grid of the last epoch (long_run_objects_*.png).
`object_swap` scores the last checkpoint on the val split of both 1,000-scene archives: the same
held-out scenes with other objects, so what changes is the objects alone. `level_off` says, for
unseen δ1, δ1 median-scaled and RMSE, the first step from which the figure stays within
--tolerance of its best value, and what the last third of the steps still bought: what more steps
buy a Colab user.

The run is benchmarks.quality's `run_one` (one torch thread, batch 32, the LR schedule planned for
--epochs): killed from outside, it resumes from its last checkpoint when started again with the
same arguments. With --reuse, a finished run whose spec is unchanged is reported, not rerun.

Run time of the defaults: 24 epochs x 200 steps at ~1 s a step on one busy core, plus ~40 s of
evaluation an epoch: about 1 h 45 min. --smoke shrinks it to seconds (tests/test_benchmark.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, meta, rounded, shown, write_results
from benchmarks.quality import (
    archive_specs,
    baselines,
    curves_png,
    ensure_archive,
    finished_result,
    run_one,
    spec_files,
    subset_loader,
    unseen_grid,
)

SOURCES = ["benchmarks/long_run.py", "benchmarks/quality.py", "src/maskdepth/train.py",
           "src/maskdepth/model/maskdepthnet.py", "src/maskdepth/losses.py", "configs/quick.yaml"]
KEYS = ("iou", "rmse", "delta1", "delta1_ms", "abs_rel", "abs_rel_ms", "silog")
WATCH = (("unseen_delta1", 1), ("unseen_delta1_ms", 1), ("unseen_rmse", -1))  # (figure, +1: higher is better)


def _suffix(archive: str) -> str:
    """What follows `long` in the run's key and folder and `long_run` in its data file and pictures:
    nothing for the 1,000-scene archive, else `_<archive>`."""
    return "" if archive == "diverse" else f"_{archive}"


def _spec(args: argparse.Namespace, archives: dict[str, Path], size: int, work: Path) -> dict[str, Any]:
    key = "long" + _suffix(args.archive)
    return dict(size=size, batch=args.batch, threads=1, unseen=str(archives["unseen"]),
                calibration_steps=2 if args.smoke else 5, key=key, name="configs/quick.yaml, long run",
                archive_name=args.archive, archive=str(archives[args.archive]), run_dir=str(work / key),
                overrides=[], epochs=args.epochs)


def _run(spec: dict[str, Any], work: Path, reuse: bool) -> dict[str, Any]:
    found = finished_result(work, spec) if reuse else None
    if found is not None:
        return found
    spec_path, done = spec_files(work, spec)
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


SWAP_KEYS = ("delta1", "delta1_ms", "rmse", "abs_rel")


def object_swap(run_dir: Path, archives: dict[str, Path], size: int) -> list[dict[str, Any]]:
    """The last checkpoint of `run_dir` on the val split of "diverse" and of "objects": the same
    seed, backgrounds and split, so the same held-out scenes, with the 4 objects of every scene or
    4 of a pool of 100 each. Per archive: IoU and SWAP_KEYS over the image, inside and outside the
    true mask."""
    import torch

    from maskdepth.evaluate import evaluate
    from maskdepth.inference import load_model

    model, _ = load_model(run_dir / "checkpoints" / "last.pt", "cpu")
    rows = []
    for name in ("diverse", "objects"):
        figures = evaluate(model, subset_loader(archives[name], size, "val", 0, 64), torch.device("cpu"),
                           regions=True)
        row: dict[str, Any] = {"val_of": name, "images": int(figures["count"]), "iou": rounded(figures["iou"], 4)}
        for where, prefix in (("all", ""), ("inside", "inside_"), ("outside", "outside_")):
            row.update({f"{where}_{k}": rounded(figures[prefix + k], 4) for k in SWAP_KEYS})
        rows.append(row)
    return rows


CURVES = (("delta1", "depth δ1 ↑"), ("delta1_ms", "δ1 after per-image median scaling ↑"), ("rmse", "RMSE ↓"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=24, help="epochs of 200 steps (the LR schedule's length)")
    parser.add_argument("--archive", choices=("diverse", "objects"), default="diverse",
                        help="1,000 scenes with the same 4 objects, or with 4 of 100 objects each")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=0.01, help="how close to its best a settled figure is")
    parser.add_argument("--work", default="runs/bench_long", help="archives, the run and its spec")
    parser.add_argument("--out", help="the data file (default docs/results/long_run.json, long_run_objects.json)")
    parser.add_argument("--pictures", default=str(RESULTS), help="folder of the pictures (default %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="report a finished run with the same spec, not rerun it")
    parser.add_argument("--smoke", action="store_true", help="32 px, tiny archives, seconds of training")
    return parser


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    specs = archive_specs(args.smoke)
    names = ("diverse", "objects", "unseen")
    archives = {name: ensure_archive(work / f"{name}.zip", specs[name], 2) for name in names}
    size = specs[args.archive]["size"]
    stem = "long_run" + _suffix(args.archive)
    run = _run(_spec(args, archives, size, work), work, args.reuse)
    points = curve_points(run)
    base = baselines(archives, size, names=(args.archive,), otsu=False)  # the mean-depth predictor on unseen
    pictures = Path(args.pictures)
    what = "1,000 scenes" if args.archive == "diverse" else "1,000 scenes x 4 of 100 objects"
    grid = unseen_grid(Path(run["run_dir"]), archives["unseen"], size, pictures / f"{stem}_unseen.png",
                       title=f"unseen scenes, configs/quick.yaml on {what}, after {points[-1]['steps']} steps")
    run_meta = meta("long_run", argv, device="cpu", smoke=args.smoke, sources=SOURCES,
                    minutes_of_this_invocation=rounded((time.perf_counter() - started) / 60, 1),
                    reused=bool(run.get("reused")), restarts=run.get("restarts", 0))
    figures = {
        "settings": {"config": "configs/quick.yaml", "archive": args.archive, "size": size, "batch": args.batch,
                     "epochs": args.epochs, "steps": points[-1]["steps"], "threads": 1,
                     "archives": {name: specs[name] for name in names}},
        "level_off": level_off(points, args.tolerance),
        "baseline": {"method": f"mean-depth predictor of the {args.archive} training split",
                     **{k: rounded(v, 4) for k, v in base[f"mean_depth_{args.archive}"].items()}},
        "curve": points,
        "object_swap": object_swap(Path(run["run_dir"]), archives, size),
        "pictures": {"curves": shown(curves_png([run], base, pictures / f"{stem}_curves.png", CURVES)),
                     "grid": shown(grid)},
    }
    return write_results(Path(args.out or RESULTS / f"{stem}.json"), run_meta, figures)


if __name__ == "__main__":
    main()
