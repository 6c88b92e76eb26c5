"""python -m benchmarks.gpu [--out docs/results/gpu.json] [--samples 1600] [--steps 20]   (run by benchmarks/gpu.sh)

GPU figures for docs/results.md, on one CUDA device:
1. The training and inference step of benchmarks/model.py's `bench_one` for both networks
   at 64/128/192 px, AMP bf16 + channels_last, torch.compile off and on, with the peak GPU memory
   of each cell (torch.cuda.max_memory_allocated).
2. A short 192 px training run through the real loop and data pipeline: make-data at 192 px
   (`--samples`, all CPU cores), then `maskdepth.train.fit` with configs/full192.yaml for 2 epochs
   of at most `--steps` steps; the second epoch (warm: workers up, cudnn autotuned) gives img/s
   and the projected time of a 400k-sample epoch; peak GPU memory over the run.
Prints a table and writes the figures to `--out` (docs/results/gpu.json), which `python
benchmarks/render.py` turns into the GPU section of docs/results.md.
`--device cpu` runs the same path on the CPU with tiny settings (a check that it works, not a
measurement).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, RESULTS, meta, rounded, write_results
from benchmarks.model import bench_one

GPU_BATCH = {64: 256, 128: 128, 192: 64}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bench_steps(device: torch.device, sizes: list[int], batches: dict[int, int], steps: int,
                compile_modes: tuple[bool, ...] = (False, True)) -> list[dict[str, Any]]:
    rows = []
    for compile_ in compile_modes:
        # compiling happens in the first calls: give it untimed warm-up steps
        args = argparse.Namespace(amp=True, channels_last=device.type == "cuda", compile=compile_,
                                  warmup=10 if compile_ else 3, steps=steps)
        for size in sizes:
            for name in ("maskdepth", "seed"):
                row: dict[str, Any] = {"model": name, "size": size, "batch": batches[size], "compile": compile_}
                _reset_peak(device)
                try:
                    r = bench_one(name, size, batches[size], args, device)
                    row.update(train_ips=rounded(r.train_ips, 1), infer_ips=rounded(r.infer_ips, 1), params=r.params,
                               gflops=rounded(r.gflops, 3))
                except Exception as exc:  # e.g. compile unsupported here: record it, measure the rest
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
                    traceback.print_exc()
                row["peak_mem_mb"] = rounded(_peak_mb(device), 0)
                if compile_:
                    torch.compiler.reset()  # compiled graphs of one model must not pile up
                print(f"  {name:9s} {size:3d}px batch {batches[size]:3d} compile={compile_!s:5s} "
                      f"train {row.get('train_ips', float('nan')):8.0f} img/s  "
                      f"infer {row.get('infer_ips', float('nan')):8.0f} img/s"
                      f"  peak {row['peak_mem_mb'] or 0:7.0f} MB {row.get('error', '')}", flush=True)
                rows.append(row)
    return rows


def bench_train(device: torch.device, work: Path, samples: int, steps: int, batch: int, workers: int,
                size: int) -> dict[str, Any]:
    from maskdepth.config import load_config
    from maskdepth.synth import make_dataset
    from maskdepth.train import fit

    data = work / f"bench{size}.zip"
    num_bg = 20
    per_pair = 2
    num_fg = max(1, samples // (num_bg * 2 * per_pair))
    summary = make_dataset(data, size=size, num_bg=num_bg, num_fg=num_fg, per_pair=per_pair, seed=0, progress=False)
    print(summary.format(), flush=True)
    run_dir = work / "run"
    overrides = [f"data.path={data}", f"run_dir={run_dir}", f"data.size={size}", f"data.num_workers={workers}",
                 f"train.batch_size={batch}", "train.epochs=2", f"train.max_steps_per_epoch={steps}",
                 "resume=never", f"device={device}", "train.checkpoint_minutes=0", "train.num_samples=4"]
    cfg = load_config(REPO / "configs" / "full192.yaml", overrides)
    _reset_peak(device)
    start = time.perf_counter()
    fit(cfg)
    wall = time.perf_counter() - start
    rows = list(csv.DictReader(io.StringIO((run_dir / "metrics.csv").read_text())))
    last = rows[-1]
    epoch_steps = int(last["steps"]) - (int(rows[-2]["steps"]) if len(rows) > 1 else 0)
    epoch_s = float(last["seconds"])
    img_s = epoch_steps * batch / epoch_s
    return {
        "config": "configs/full192.yaml", "samples": summary.count, "make_data_s": rounded(summary.seconds, 1),
        "size": size, "batch": batch, "num_workers": workers, "epoch": int(last["epoch"]), "steps": epoch_steps,
        "epoch_s": rounded(epoch_s, 2), "img_s": rounded(img_s, 1), "epoch_400k_min": rounded(400_000 / img_s / 60, 2),
        "fit_wall_s": rounded(wall, 1), "peak_mem_mb": rounded(_peak_mb(device), 0), "overrides": overrides,
        "val_iou": rounded(float(last["val_iou"]), 4), "amp": cfg.train.amp, "channels_last": cfg.train.channels_last,
    }


def _user_args(argv: list[str]) -> list[str]:
    """The arguments as typed to bench_gpu.sh (without the --out that the shell script adds)."""
    out = list(argv)
    if "--out" in out:
        i = out.index("--out")
        del out[i : i + 2]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json", help="the data file (default %(default)s)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 192])
    parser.add_argument("--steps", type=int, default=20,
                        help="timed bench_model steps; also max steps per training epoch")
    parser.add_argument("--samples", type=int, default=1600, help="samples of the 192 px make-data archive")
    parser.add_argument("--batch", type=int, default=64, help="batch of the training run")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the training run")
    parser.add_argument("--train-size", type=int, default=192)
    parser.add_argument("--compile", choices=["both", "off", "on"], default="both",
                        help="torch.compile settings to measure")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_gpu: CUDA is not available here (use --device cpu only to check the script)")
        torch.backends.cudnn.benchmark = True
        gpu, cuda = torch.cuda.get_device_name(device), torch.version.cuda
        batches = GPU_BATCH
    else:
        gpu, cuda = "none (CPU check run)", None
        batches = {s: 2 for s in args.sizes}
    argv = sys.argv[1:] if argv is None else argv
    print(f"bench_gpu on {gpu}, torch {torch.__version__}, CUDA {cuda}", flush=True)
    run_meta = meta("gpu", argv, gpu=gpu, device=str(device), compile=args.compile)
    run_meta["command"] = " ".join(["bash benchmarks/gpu.sh", *_user_args(argv)])
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]
    result: dict[str, Any] = {
        "bench_model": bench_steps(device, args.sizes, {s: batches.get(s, 32) for s in args.sizes}, args.steps, modes)}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        try:
            result["train"] = bench_train(device, Path(tmp), args.samples, args.steps, args.batch, args.workers,
                                          args.train_size)
        except Exception as exc:
            traceback.print_exc()
            result["errors"] = {"train": f"{type(exc).__name__}: {exc}"}
    t = result.get("train")
    if t:
        print(f"\ntraining {t['size']}px batch {t['batch']}, {t['num_workers']} workers: {t['img_s']:.0f} img/s "
              f"(epoch {t['epoch']}: {t['steps']} steps in {t['epoch_s']:.1f} s incl. validation); "
              f"400k-sample epoch ~ {t['epoch_400k_min']:.1f} min; peak GPU memory {t['peak_mem_mb'] or 0:.0f} MB")
    write_results(args.out, run_meta, result)
    return result


if __name__ == "__main__":
    main()
