"""python -m benchmarks.model [--sizes 64 128 192] [--models maskdepth seed resnet18 ...] [--device auto]
       [--out docs/results/model.json]

Training-step and inference throughput (images/s, and ms per training step) with parameters and
forward GFLOPs of MaskDepthNet, the seed network and MaskDepthNet on each torchvision encoder
(resnet18, resnet34, efficientnet_b0: `model.encoder`), on random inputs, with the real losses
(DiceBCELoss + DepthLoss) and an Adam step. Each network is built and trained as its config
does: maskdepth and the encoders as configs/quick.yaml (model options and depth loss terms,
e.g. SILog and gradient matching) with `model.encoder` set, seed as configs/seed.yaml. The
encoders have stride 32: a size that is not a multiple of 32 is skipped for them.

Batch sizes: 32 at 64 px, 16 at 128 px, 8 at 192 px by default (smaller at the larger sizes to
keep a CPU run to a few minutes; throughput is per image, so they remain comparable across
models); `--batch N` uses N everywhere. Timing: `--warmup` untimed steps, then `--steps` timed
ones; the figure is batch / the fastest timed step (best-of-N, as timeit does: other processes
on a shared machine only ever slow a step down).

CPU by default when no GPU is present (all cores torch sees; set `--threads`). On CUDA the
defaults are AMP in bfloat16 and channels_last on, torch.compile off; toggle with
`--amp/--no-amp`, `--channels-last/--no-channels-last`, `--compile/--no-compile` (the same
flags work on the CPU, where AMP means CPU autocast in bfloat16).

Prints one row per (size, model) and the speed-up of the first model over the second, and writes
them to `--out` (docs/results/model.json: `results`, `speedup`). benchmarks/report.py and
benchmarks/gpu.py time their cells with `bench_one`.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import RESULTS, meta, rounded, write_results
from maskdepth.config import load_config
from maskdepth.losses import DepthLoss, DiceBCELoss
from maskdepth.model import ENCODERS, build_model, count_parameters

CONFIGS = {"maskdepth": "quick.yaml", "seed": "seed.yaml", **{e: "quick.yaml" for e in ENCODERS[1:]}}
MODELS = ["maskdepth", "seed", *ENCODERS[1:]]
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

DEFAULT_BATCH = {64: 32, 128: 16, 192: 8}


@dataclass
class Result:
    model: str
    size: int
    batch: int
    params: int
    gflops: float  # forward, per image
    train_ips: float
    infer_ips: float

    def row(self) -> dict[str, Any]:
        """The figures as a data file keeps them."""
        return {**asdict(self), "gflops": rounded(self.gflops, 3), "train_ips": rounded(self.train_ips, 1),
                "infer_ips": rounded(self.infer_ips, 1),
                "train_ms_per_step": rounded(1000 * self.batch / self.train_ips, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def _batch(size: int, batch: int, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = {
        "bg": torch.rand(batch, 3, size, size, generator=gen),
        "fg_bg": torch.rand(batch, 3, size, size, generator=gen),
        "mask": (torch.rand(batch, 1, size, size, generator=gen) > 0.7).float(),
        "depth": torch.rand(batch, 1, size, size, generator=gen).clamp_min(0.01),
    }
    return {k: v.to(device).contiguous(memory_format=fmt) for k, v in images.items()}


def _forward_gflops(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward FLOPs per image (2 per multiply-add), counted by torch on one eval forward."""
    model.eval()
    x = torch.rand(1, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, x)
    return counter.get_total_flops() / 1e9


def model_and_depth_loss(name: str) -> tuple[torch.nn.Module, DepthLoss]:
    """The network `name` and its DepthLoss as its shipped config builds them."""
    overrides = [f"model.encoder={name}"] if name in ENCODERS[1:] else []
    cfg = load_config(CONFIG_DIR / CONFIGS[name], overrides) if name in CONFIGS else None
    if cfg is None:
        return build_model(name), DepthLoss()
    loss = cfg.loss
    depth_loss = DepthLoss(w_depth=loss.w_depth, w_ssim=loss.w_ssim, w_edge=loss.w_edge, w_silog=loss.w_silog,
                           w_grad=loss.w_grad)
    return build_model(cfg.model.name, **cfg.model.options()), depth_loss


def bench_one(name: str, size: int, batch: int, args: argparse.Namespace, device: torch.device) -> Result:
    model, depth_loss = model_and_depth_loss(name)
    model = model.to(device)
    params = count_parameters(model)
    gflops = _forward_gflops(model, size, device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    backend = getattr(args, "compile_backend", None)  # benchmarks/gpu.py --dry-run: "eager" (TorchDynamo alone)
    step_model = (torch.compile(model, backend=backend) if backend else torch.compile(model)) if args.compile else model
    data = _batch(size, batch, device, args.channels_last)
    mask_loss = DiceBCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step() -> None:
        with _autocast(device, args.amp):
            pred_mask_logits, pred_depth = step_model(data["bg"], data["fg_bg"])
        loss = mask_loss(pred_mask_logits, data["mask"]) + depth_loss(pred_depth, data["depth"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), _autocast(device, args.amp):
            step_model(data["bg"], data["fg_bg"])

    def timed(step, train: bool) -> float:
        model.train(train)
        for _ in range(args.warmup):
            step()
        _sync(device)
        seconds = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            _sync(device)
            seconds.append(time.perf_counter() - start)
        return batch / min(seconds)

    train_ips = timed(train_step, train=True)
    infer_ips = timed(infer_step, train=False)
    return Result(name, size, batch, params, gflops, train_ips, infer_ips)


def speedups(results: list[Result], fast: str, slow: str) -> list[dict[str, Any]]:
    """Per size, `fast`'s throughput over `slow`'s: {size, train_x, infer_x}."""
    rows = []
    for size in sorted({r.size for r in results}):
        by = {r.model: r for r in results if r.size == size}
        if fast in by and slow in by:
            rows.append({"size": size, "train_x": rounded(by[fast].train_ips / by[slow].train_ips, 2),
                         "infer_x": rounded(by[fast].infer_ips / by[slow].infer_ips, 2)})
    return rows


def format_table(results: list[Result], models: list[str]) -> str:
    lines = [
        f"{'size':>5} {'batch':>5} {'model':<15} {'params':>11} {'GFLOP/img':>10} {'train ms/step':>13} "
        f"{'train img/s':>12} {'infer img/s':>12}"
    ]
    for r in results:
        lines.append(
            f"{r.size:>5} {r.batch:>5} {r.model:<15} {r.params:>11,} {r.gflops:>10.3f} "
            f"{1000 * r.batch / r.train_ips:>13.1f} "
            f"{r.train_ips:>12.1f} {r.infer_ips:>12.1f}"
        )
    if len(models) >= 2:
        lines += ["", f"speed-up of {models[0]} over {models[1]} (throughput ratio)"]
        lines += [f"{r['size']:>5} px  train x{r['train_x']:.2f}  infer x{r['infer_x']:.2f}"
                  for r in speedups(results, models[0], models[1])]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS,
                        help="networks to measure (default: all); the first is compared to the second")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 192])
    parser.add_argument("--batch", type=int, default=None, help="batch at every size (default: 32/16/8 at 64/128/192)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (default 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1, 3 with --compile)")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="autocast in bfloat16 (default: on for CUDA, off for CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last memory format (default: on for CUDA, off for CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile the model (default off; the warm-up steps compile train and eval graphs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "model.json", help="the data file (default %(default)s)")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 3 if args.compile else 1
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = args.device.startswith("cuda")
    args.amp = on_cuda if args.amp is None else args.amp
    args.channels_last = on_cuda if args.channels_last is None else args.channels_last
    return args


def main(argv: list[str] | None = None) -> list[Result]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(
        f"device {device} ({where}); torch {torch.__version__}; amp bf16={args.amp} "
        f"channels_last={args.channels_last} compile={args.compile}; {args.warmup} warm-up + {args.steps} timed steps"
    )
    results = []
    for size in args.sizes:
        batch = args.batch or DEFAULT_BATCH.get(size, 8)
        for name in args.models:
            if name in ENCODERS[1:] and size % 32:
                print(f"  {name} {size}px: skipped (stride 32)")
                continue
            result = bench_one(name, size, batch, args, device)
            print(f"  {name} {size}px batch {batch}: train {result.train_ips:.1f} img/s, "
                  f"infer {result.infer_ips:.1f} img/s",
                  flush=True)
            results.append(result)
    print()
    print(format_table(results, args.models))
    run = meta("model", argv, device=str(device), amp_bf16=args.amp, channels_last=args.channels_last,
               compile=args.compile, warmup=args.warmup, timed_steps=args.steps)
    speedup = speedups(results, *args.models[:2]) if len(args.models) >= 2 else []
    write_results(args.out, run, {"results": [r.row() for r in results], "speedup": speedup})
    return results


if __name__ == "__main__":
    main()
