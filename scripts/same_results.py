"""python scripts/same_results.py OLD_COMMIT [--configs quick.yaml seed.yaml] [--keep DIR]

Does this checkout still compute what OLD_COMMIT computed? The check behind a data file's
`meta.still_valid` (tests/test_figures.py) when its sources changed by refactoring only. OLD_COMMIT
goes to a temporary git worktree; then, in a fresh CPU process per tree (one torch thread, the
tree's own `src/` and `configs/`):

1. make-data writes a 64 px archive (8 scenes x 3 objects x 2 flips x 2 placements, seed 0, one
   process) and a 192 px one (4 x 3 x 2 x 2, seed 1, two processes): the sha256 of every entry;
2. each config trains on the 64 px archive for 2 epochs of 4 steps (batch 8, device=cpu, its
   augmentation, losses and LR schedule as configured): the metrics.csv rows and the final weights;
3. the report's baselines (background subtraction with Otsu and a 3x3 or 5x5 opening and closing,
   the mean-depth predictor of the training split) on the 64 px archive, where the tree has them
   (maskdepth.baselines, or the old scripts/benchmark.py).

It prints what differs: images and manifest.csv byte for byte (dataset.json and scenes.csv name
the generator's version, so they are only listed), every metrics.csv column both trees write
(but the seconds), every weight tensor bit for bit, every baseline figure. Exit status 0 when all
of it is identical, 1 otherwise, 2 when a tree fails to run it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(tree: Path, out: Path, configs: list[str]) -> None:
    """In a fresh process whose sys.path starts with tree/src: everything the trees are compared on."""
    import csv
    import types
    import warnings
    import zipfile

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    try:
        from maskdepth.synth import make_dataset
    except ImportError:  # before the synth package (2026-12-07)
        from maskdepth.data.synthetic import make_dataset
    from maskdepth.config import load_config
    from maskdepth.train import fit

    found: dict = {"entries": {}, "runs": {}}
    archives = {"64": dict(size=64, num_bg=8, num_fg=3, seed=0, workers=1),
                "192": dict(size=192, num_bg=4, num_fg=3, seed=1, workers=2)}
    for name, options in archives.items():
        path = out / f"data{name}.zip"
        make_dataset(path, per_pair=2, progress=False, **options)
        with zipfile.ZipFile(path) as z:
            found["entries"][name] = {i.filename: hashlib.sha256(z.read(i.filename)).hexdigest() for i in z.infolist()}
    data = out / "data64.zip"
    for config in configs:
        run = out / f"run_{config}"
        fit(load_config(tree / "configs" / config, [
            f"data.path={data}", f"run_dir={run}", "data.size=64", "data.num_workers=0", "train.epochs=2",
            "train.batch_size=8", "train.max_steps_per_epoch=4", "train.checkpoint_minutes=0", "train.num_samples=1",
            "device=cpu", "resume=never"]))
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        weights = torch.load(str(run / "checkpoints" / "last.pt"), map_location="cpu", weights_only=False)["model"]
        found["runs"][config] = {"rows": rows, "weights": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()
                                                           for k, v in weights.items()}}
    found["baselines"] = _baselines(tree, data, types.SimpleNamespace)
    (out / "found.json").write_text(json.dumps(found))


def _baselines(tree: Path, data: Path, namespace) -> dict:
    """The report's evaluate_baselines at 32 and 64 px (kernel 3) and a 5x5 mask, or {} without them."""
    import importlib.util

    old = tree / "scripts" / "benchmark.py"
    try:
        if old.exists():  # before benchmarks/ (2026-12-07)
            spec = importlib.util.spec_from_file_location("old_report", old)
            report = importlib.util.module_from_spec(spec)
            sys.modules["old_report"] = report
            spec.loader.exec_module(report)
            subtract = report.background_subtraction
        else:
            sys.path.insert(0, str(tree))
            import benchmarks.report as report
            from maskdepth.baselines import background_subtraction as subtract
    except (ImportError, AttributeError):
        return {}
    from maskdepth.data import collate, open_dataset

    out = {}
    for size in (32, 64):
        r = report.evaluate_baselines(namespace(size=size), {"train": {"path": str(data)}, "test": {"path": str(data)}})
        out[f"{size}px"] = {"bgsub": {k: repr(v) for k, v in r["bgsub"]["metrics"].items()},
                            "mean_depth": {k: repr(v) for k, v in r["mean_depth"]["metrics"].items()},
                            "mean_depth_map": hashlib.sha256(r["mean_depth"]["image"].numpy().tobytes()).hexdigest()}
    dataset = open_dataset(data, 64, "all")
    batch = collate([dataset[i] for i in range(len(dataset))])
    out["bgsub 5x5 masks"] = hashlib.sha256(subtract(batch["bg"], batch["fg_bg"], 5).numpy().tobytes()).hexdigest()
    return out


def compare(old: dict, new: dict) -> list[str]:
    """Lines saying what was compared and what differs; a line starting with DIFFERS is a failure."""
    lines = []
    for name in old["entries"]:
        a, b = old["entries"][name], new["entries"][name]
        images = sorted(k for k in set(a) & set(b) if k.endswith((".jpg", ".png")) or k == "manifest.csv")
        differing = [k for k in images if a[k] != b[k]]
        others = sorted((set(a) ^ set(b)) | {k for k in set(a) & set(b) if k not in images and a[k] != b[k]})
        lines.append(f"{'DIFFERS' if differing else 'same'}: {name} px archive, {len(images) - len(differing)} of "
                     f"{len(images)} images and manifest.csv byte-identical {differing[:3]}; other entries that "
                     f"differ or exist in one tree only: {others}")
    for config, a in old["runs"].items():
        b = new["runs"][config]
        columns = [c for c in a["rows"][0] if c in b["rows"][0] and c != "seconds"]
        rows = [r for r, (x, y) in enumerate(zip(a["rows"], b["rows"], strict=True))
                if any(x[c] != y[c] for c in columns)]
        tensors = [k for k in a["weights"] if a["weights"][k] != b["weights"].get(k)]
        same = not rows and not tensors and a["weights"].keys() == b["weights"].keys()
        last = a["rows"][-1]
        lines.append(f"{'same' if same else 'DIFFERS'}: {config}, {len(a['rows'])} epochs x 4 steps: metrics.csv "
                     f"columns {', '.join(columns)} (epochs that differ: {rows}); {len(a['weights'])} weight tensors "
                     f"(differing: {tensors[:3]}); last train_loss {last['train_loss']}, val_iou {last['val_iou']}")
    a, b = _flat(old.get("baselines") or {}), _flat(new.get("baselines") or {})
    if a and b:  # a figure only one tree computes (a metric added later) is not compared
        differing = [k for k in a if k in b and a[k] != b[k]]
        lines.append(f"{'DIFFERS' if differing else 'same'}: baselines, {len(set(a) & set(b))} figures (bgsub IoU "
                     f"and Dice, mean-depth metrics and map at 32 and 64 px, 5x5 masks) {differing[:5]}")
    return lines


def _flat(tree: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {prefix + key: value})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("old", help="the commit the figures were measured on")
    parser.add_argument("--configs", nargs="+", default=["quick.yaml", "seed.yaml"])
    parser.add_argument("--keep", type=Path, default=None, help="keep the archives, runs and found.json here")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.configs)
        return 0
    with tempfile.TemporaryDirectory(prefix="same_results_") as tmp:
        work = args.keep or Path(tmp)
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=REPO, check=True,
                       capture_output=True)
        try:
            found = {}
            for label, tree in (("old", old_tree), ("new", REPO)):
                out = work / label
                out.mkdir(parents=True, exist_ok=True)
                env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), args.old, "--child", str(tree),
                                       str(out), "--configs", *args.configs], env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"the {label} tree ({tree}) failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    return 2
                found[label] = json.loads((out / "found.json").read_text())
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, capture_output=True)
    lines = compare(found["old"], found["new"])
    print(f"{args.old} against this checkout ({REPO}):")
    print("\n".join(lines))
    return 1 if any(line.startswith("DIFFERS") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
