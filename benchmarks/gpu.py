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
3. The T4 path: images/s of MaskDepthNet's training step (the loop's autocast and GradScaler) at
   64 and 192 px in fp32 / fp16 / bf16, channels_last off and on, torch.compile off and on, with
   peak GPU memory (`precision`); the loader's rate (2 workers, pinned memory) against the step's
   at the training size (`loader`); and a resume parity check: 2 epochs in one go against a run
   resumed from the first one's epoch-1 checkpoint, train.deterministic=true, weights compared bit
   for bit (`resume`).
`--dry-run` (`bash benchmarks/gpu.sh --dry-run`) takes every one of those code paths on the CPU
with tiny settings in under two minutes (a check that it works, not a measurement): every cell of
the matrix at 64 and 192 px (a 2-level MaskDepthNet of width 8, batch 1, one call each; fp16 where
this torch has it on the CPU), torch.compile on and off in bench_model too (MaskDepthNet only), the
training run, the loader and the resume check at 64 px (in fp16, the T4's precision; one-row
sample grids), written to a temporary file: docs/results is not touched. Its torch.compile traces
with TorchDynamo and runs the captured graphs eagerly (backend "eager"): graph breaks, guards,
autocast and channels_last under compile are exercised, a code generator is not (the CPU's
inductor emits C++, not CUDA's Triton kernels, and takes minutes per cell on 2 cores).
tests/test_gpu_dry_run.py runs it, so that the first GPU run cannot fail on a typo.
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
_DRY_MODEL: dict[str, int] = {}  # a dry run's tiny network: {"base_channels": 8, "num_stages": 2}
_COMPILE: dict[str, str] = {}  # torch.compile's options: a dry run's {"backend": "eager"}
_DRY_TRAIN: list[str] = []  # a dry run's last overrides of its training runs: one-row sample grids
_LAST_DATA: dict[str, list[str]] = {}  # bench_train's data overrides, for the loader and resume checks


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bench_steps(device: torch.device, sizes: list[int], batches: dict[int, int], steps: int,
                compile_modes: tuple[bool, ...] = (False, True),
                compile_models: tuple[str, ...] = ("maskdepth", "seed")) -> list[dict[str, Any]]:
    rows = []
    for compile_ in compile_modes:
        # compiling happens in the first calls: give it untimed warm-up steps
        args = argparse.Namespace(amp=True, channels_last=device.type == "cuda", compile=compile_,
                                  warmup=(10 if compile_ else 3) if steps > 1 else 0, steps=steps,
                                  compile_backend=_COMPILE.get("backend"))
        for size in sizes:
            for name in compile_models if compile_ else ("maskdepth", "seed"):
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
                 "resume=never", f"device={device}", "train.checkpoint_minutes=0", "train.num_samples=4",
                 *(f"model.{k}={v}" for k, v in _DRY_MODEL.items()), *_DRY_TRAIN]
    cfg = load_config(REPO / "configs" / "full192.yaml", overrides)
    _LAST_DATA["overrides"] = [f"data.path={data}", f"data.size={size}", f"data.num_workers={workers}",
                               f"train.batch_size={batch}", f"device={device}", "train.checkpoint_minutes=0",
                               *(f"model.{k}={v}" for k, v in _DRY_MODEL.items())]
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


PRECISIONS = ("fp32", "fp16", "bf16")


def _matrix(compile_: str) -> list[tuple[str, bool, bool]]:
    """(amp, channels_last, compile) cells: every precision x channels_last, with the --compile settings."""
    compiles = {"both": (False, True), "off": (False,), "on": (True,)}[compile_]
    return [(amp, cl, c) for c in compiles for amp in PRECISIONS for cl in (False, True)]


def bench_precision(device: torch.device, sizes: list[int], batches: dict[int, int], steps: int,
                    cells: list[tuple[str, bool, bool]]) -> list[dict[str, Any]]:
    """MaskDepthNet's training step as the loop takes it (autocast, GradScaler for fp16, clipping)."""
    rows = []
    for (amp, channels_last, compile_), size in ((cell, size) for cell in cells for size in sizes):
        row: dict[str, Any] = {"size": size, "batch": batches[size], "amp": amp, "channels_last": channels_last,
                               "compile": compile_}
        _reset_peak(device)
        try:
            step = _train_step(device, amp, channels_last, compile_, size, batches[size])
            warmup = (5 if compile_ else 2) if steps > 1 else 0  # a dry run: one call (the compiling one)
            row["train_ips"] = rounded(batches[size] / _best_seconds(step, device, steps, warmup), 1)
        except Exception as exc:  # e.g. fp16 or compile unsupported here: record it, measure the rest
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        row["peak_mem_mb"] = rounded(_peak_mb(device), 0)
        if compile_:
            torch.compiler.reset()
        print(f"  maskdepth {size:3d}px {amp} channels_last={channels_last!s:5s} compile={compile_!s:5s} "
              f"train {row.get('train_ips', float('nan')):8.1f} img/s {row.get('error', '')}", flush=True)
        rows.append(row)
    return rows


def _train_step(device: torch.device, amp: str, channels_last: bool, compile_: bool, size: int,
                batch: int) -> Any:
    """One training step of MaskDepthNet on random data, as the loop takes it."""
    from maskdepth.losses import DepthLoss, DiceBCELoss
    from maskdepth.model import build_model
    from maskdepth.runtime import amp_dtype, autocast, grad_scaler

    dtype, _ = amp_dtype(amp, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("maskdepth", **_DRY_MODEL).to(device, memory_format=fmt)
    net = torch.compile(model, **_COMPILE) if compile_ else model
    optimizer, scaler = torch.optim.AdamW(model.parameters(), lr=1e-4), grad_scaler(dtype == torch.float16, device)
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    target = (x[:, :1] > 0.5).float()
    mask_loss, depth_loss = DiceBCELoss(), DepthLoss()

    def step() -> None:
        with autocast(device, dtype):
            logits, depth = net(x, x)
        loss = mask_loss(logits, target) + depth_loss(depth, target.clamp(min=0.01))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()

    return step


def _best_seconds(step: Any, device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(max(1, steps)):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_loader(cfg: Any, device: torch.device, batches: int, step_ips: float | None) -> dict[str, Any]:
    """The training loader's rate (the config's workers; pinned memory on CUDA) against the step's."""
    from maskdepth.train import build

    parts = build(cfg, device=device, pretrained=False)
    it, n, start = iter(parts.train_loader), 0, 0.0
    for i, batch in enumerate(it):  # the first batch waits for the workers to start: untimed
        if i == 0:
            start = time.perf_counter()
            continue
        n += batch["bg"].shape[0]
        batch["bg"].to(device, non_blocking=True)
        if i >= batches:
            break
    ips = n / max(time.perf_counter() - start, 1e-9)
    del it, parts
    return {"num_workers": cfg.data.num_workers, "pin_memory": device.type == "cuda", "loader_ips": rounded(ips, 1),
            "step_ips": rounded(step_ips, 1), "loader_over_step": rounded(ips / step_ips, 2) if step_ips else None}


def check_resume(cfg_path: Path, overrides: list[str], work: Path) -> dict[str, Any]:
    """2 epochs in one go against a second run that resumes from the first one's epoch-1 checkpoint
    (resume=PATH: the weights, optimiser, scaler, EMA and RNG states as a restarted session reads
    them; the learning-rate schedule of the same 2 epochs): are the final weights bit-identical?"""
    from maskdepth.checkpoint import load_checkpoint
    from maskdepth.config import load_config
    from maskdepth.train import fit

    common = [*overrides, "train.deterministic=true", "train.epochs=2", "train.keep_last=2"]
    straight = fit(load_config(cfg_path, [*common, f"run_dir={work / 'straight'}"]))
    epoch_1 = straight / "checkpoints" / "epoch_001.pt"
    resumed = fit(load_config(cfg_path, [*common, f"run_dir={work / 'resumed'}", f"resume={epoch_1}"]))
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    if b["step"] != a["step"] or load_checkpoint(epoch_1)["epoch"] != 1:
        raise RuntimeError(f"the resume check did not resume at epoch 1: steps {a['step']} and {b['step']}")
    a, b = a["model"], b["model"]
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    return {"bit_exact": all(torch.equal(a[k], b[k]) for k in a), "max_abs_diff": diff}


def _precision_name(amp: str, device: torch.device) -> str:
    """The precision train.amp=`amp` trains in on `device` (auto: bf16 or, on a T4, fp16)."""
    from maskdepth.runtime import amp_dtype

    return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[amp_dtype(amp, device)[0]]


def _user_args(argv: list[str]) -> list[str]:
    """The arguments as typed to bench_gpu.sh (without the --out that the shell script adds)."""
    out = list(argv)
    if "--out" in out:
        i = out.index("--out")
        del out[i : i + 2]
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from maskdepth.runtime import cpu_fp16_unsupported

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json", help="the data file (default %(default)s)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 192])
    parser.add_argument("--precision-sizes", type=int, nargs="+", default=[64, 192],
                        help="sizes of the fp32/fp16/bf16 x channels_last x compile matrix")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed bench_model steps; also max steps per training epoch")
    parser.add_argument("--samples", type=int, default=1600, help="samples of the 192 px make-data archive")
    parser.add_argument("--batch", type=int, default=64, help="batch of the training run")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the training run")
    parser.add_argument("--loader-workers", type=int, default=2, help="workers of the loader check (Colab: 2)")
    parser.add_argument("--train-size", type=int, default=192)
    parser.add_argument("--compile", choices=["both", "off", "on"], default="both",
                        help="torch.compile settings to measure")
    parser.add_argument("--dry-run", action="store_true",
                        help="every code path on the CPU with tiny settings (< 2 min): a check, not a measurement")
    args = parser.parse_args(argv)
    if args.dry_run:  # every cell and section, each as small as it gets (docstring)
        args.device, args.sizes, args.precision_sizes, args.steps = "cpu", [32], [64, 192], 1
        args.samples, args.batch, args.workers, args.train_size = 80, 4, 0, 64
        args.compile = "both"
        _DRY_MODEL.update(base_channels=8, num_stages=2)
        _COMPILE["backend"] = "eager"
        # the training runs in the T4's precision, as train.amp=auto on a T4 (bf16 where this torch has no CPU fp16),
        # with one-row sample grids (matplotlib took half of the run's time)
        _DRY_TRAIN[:] = [f"train.amp={'bf16' if cpu_fp16_unsupported() else 'fp16'}", "train.num_samples=1",
                         "train.worst_samples=1"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_gpu: CUDA is not available here (use --dry-run only to check the script)")
        torch.backends.cudnn.benchmark = True
        gpu, cuda = torch.cuda.get_device_name(device), torch.version.cuda
        batches = GPU_BATCH
    else:
        gpu, cuda = "none (CPU check run)", None
        batches = {s: 1 for s in {*args.sizes, *args.precision_sizes}}
    argv = sys.argv[1:] if argv is None else argv
    print(f"bench_gpu on {gpu}, torch {torch.__version__}, CUDA {cuda}", flush=True)
    run_meta = meta("gpu", argv, gpu=gpu, device=str(device), compile=args.compile, dry_run=args.dry_run)
    run_meta["command"] = " ".join(["bash benchmarks/gpu.sh", *_user_args(argv)])
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]
    pbatches = {s: batches.get(s, 32) for s in args.precision_sizes}
    # a dry run compiles MaskDepthNet only in bench_model: tracing the seed network adds half a minute, same code path
    compiled = ("maskdepth",) if args.dry_run else ("maskdepth", "seed")
    result: dict[str, Any] = {
        "bench_model": bench_steps(device, args.sizes, {s: batches.get(s, 32) for s in args.sizes}, args.steps, modes,
                                   compiled),
        "precision": bench_precision(device, args.precision_sizes, pbatches,
                                     args.steps, _matrix(args.compile))}
    _train_checks(args, device, result)
    write_results(args.out, run_meta, result)
    return result


def _train_checks(args: argparse.Namespace, device: torch.device, result: dict[str, Any]) -> None:
    """The training run, the loader against the step and the resume parity check, each recorded or its error."""
    from maskdepth.config import load_config
    from maskdepth.runtime import channels_last_on

    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        errors: dict[str, str] = {}
        for name in ("train", "loader", "resume"):
            try:
                if name == "train":
                    result["train"] = bench_train(device, Path(tmp), args.samples, args.steps, args.batch,
                                                  args.workers, args.train_size)
                    t = result["train"]
                    print(f"\ntraining {t['size']}px batch {t['batch']}, {t['num_workers']} workers: {t['img_s']:.0f} "
                          f"img/s (epoch {t['epoch']}: {t['steps']} steps in {t['epoch_s']:.1f} s incl. validation); "
                          f"400k-sample epoch ~ {t['epoch_400k_min']:.1f} min; peak GPU memory "
                          f"{t['peak_mem_mb'] or 0:.0f} MB", flush=True)
                    continue
                overrides = [*_LAST_DATA["overrides"], f"run_dir={Path(tmp) / name}", "resume=never",
                             f"train.max_steps_per_epoch={max(args.steps, 2)}", "train.num_samples=2", *_DRY_TRAIN]
                if name == "loader":
                    cfg = load_config(REPO / "configs" / "full192.yaml",
                                      [*overrides, f"data.num_workers={args.loader_workers}"])
                    step = [r.get("train_ips") for r in result.get("precision", []) if r["size"] == args.train_size
                            and r["amp"] == _precision_name(cfg.train.amp, device) and not r["compile"]
                            and r["channels_last"] == channels_last_on(cfg.train.channels_last, device)]
                    step_ips = max(filter(None, step), default=None)
                    result["loader"] = bench_loader(cfg, device, max(args.steps, 2), step_ips)
                else:
                    result["resume"] = check_resume(REPO / "configs" / "full192.yaml", overrides, Path(tmp) / "resume")
                print(f"{name}: {result[name]}", flush=True)
            except Exception as exc:
                traceback.print_exc()
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        if errors:
            result["errors"] = errors


if __name__ == "__main__":
    main()
