"""The whole job on a CPU in a few minutes: make data, check it, train, evaluate, show where to look.

    python scripts/demo.py --out runs/demo          (what `make demo` runs)

Makes a small 64 px synthetic archive (skipped when it already exists), trains configs/quick.yaml
on it (re-running continues or extends the same run), evaluates the best checkpoint on the
held-out test backgrounds, and prints the metrics table and the paths of the sample grids and
curves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from maskdepth.cli import main as maskdepth

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    print(f"\n$ maskdepth {' '.join(args)}", flush=True)
    code = maskdepth(list(args))
    if code != 0:
        sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="folder for the data and the run")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs of quick.yaml")
    args = parser.parse_args()
    out = Path(args.out)
    data, run_dir = out / "data.zip", out / "run"
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)

    if not data.exists():
        # 1,600 samples from 100 scenes (not 20 scenes x 20 objects x 2 placements): scene
        # diversity is what makes depth generalise (docs/results.md, issue 12)
        run("make-data", str(data), "--size", "64", "--num-bg", "100", "--num-fg", "8", "--per-pair", "1",
            "--seed", "0")
    run("check-data", str(data), "--quiet")
    overrides = [f"data.path={data}", f"run_dir={run_dir}"]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    run("train", str(REPO / "configs" / "quick.yaml"), *overrides)
    run("evaluate", str(run_dir / "checkpoints" / "best.pt"), "--split", "test",
        "--out", str(run_dir / "test_metrics.json"))

    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    print(f"\ndone in {time.monotonic() - started:.0f} s")
    print(f"sample grids: {run_dir / 'samples'} (latest: {grids[-1] if grids else 'none'})")
    print(f"curves:       {run_dir / 'curves.png'}")
    print(f"metrics:      {run_dir / 'metrics.csv'}, {run_dir / 'test_metrics.json'}")


if __name__ == "__main__":
    main()
