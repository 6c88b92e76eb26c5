"""The training loop: `fit(cfg)` builds everything, trains, validates and saves, epoch by epoch.

    maskdepth train configs/quick.yaml data.path=runs/demo/data.zip train.epochs=3
    torchrun --nproc_per_node=2 -m maskdepth train configs/full192.yaml

It reads top to bottom: build (data, model, losses, optimiser, schedule), resume if the run
directory has a checkpoint, then per epoch: train, validate, checkpoint, write metrics.csv,
curves.png and samples/epoch_NNN.png. `last.pt` is also written every
`train.checkpoint_minutes` inside an epoch, with the position inside the epoch, so a runtime that
drops mid-epoch (Colab) loses minutes, not an epoch. Resuming is exact: the batch order is a pure
function of (seed, epoch), the device-side augmentation a pure function of (seed, step), and the
checkpoint carries every RNG and optimiser state, the EMA of the weights and the training clock,
so a killed and restarted run ends with the same weights as one that was never interrupted (CPU).

`train.max_minutes` is a budget on the training clock (the seconds of every epoch so far,
validation included, as metrics.csv's `seconds` column sums them; it survives resumes): when it
runs out inside an epoch, that epoch ends there, is validated and saved, and the run is done.
With `train.ema` the checkpoint's `model` is the averaged weights (what evaluation, the grids,
best.pt and inference use) and `raw_model` the optimised ones that training continues from.
`fit(cfg, on_epoch_end=f)` calls f(row, model) after each epoch is saved (rank 0): row is the
metrics.csv row as a dict, model the evaluated network in eval mode.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from maskdepth import __version__
from maskdepth.checkpoint import all_finite, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from maskdepth.config import Config, config_to_dict, save_config
from maskdepth.data import collate, open_dataset, to_float
from maskdepth.data.augment import augment_batch
from maskdepth.ema import ModelEMA
from maskdepth.errors import CheckpointError, ConfigError, MaskDepthError
from maskdepth.fileio import atomic_open, write_atomic
from maskdepth.losses import DepthLoss, DiceBCELoss
from maskdepth.metrics import MetricAccumulator, depth_metrics, mask_metrics
from maskdepth.model import build_model, nearest_valid_sizes
from maskdepth.viz import save_curves, save_sample_grid

CSV_COLUMNS = [
    "epoch", "train_loss", "train_mask_loss", "train_depth_loss",
    "val_loss", "val_mask_loss", "val_depth_loss",
    "val_iou", "val_dice", "val_rmse", "val_abs_rel", "val_sq_rel", "val_rmse_log", "val_log10",
    "val_delta1", "val_delta2", "val_delta3",
    "lr", "seconds", "steps", "skipped_batches", "skipped_samples",
]
# metrics.csv columns where smaller is better; every other column is maximised for best.pt
_MINIMISED = ("loss", "rmse", "rel", "log")


class TrainingError(MaskDepthError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# process group and device


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(cfg: Config) -> tuple[_Dist, torch.device]:
    """Join the torchrun process group if there is one; pick the device for this rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} but CUDA is not available here; use device=cpu or device=auto")
    if world > 1:
        info = _Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if want_cuda:
            torch.cuda.set_device(info.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        device = torch.device("cuda", info.local_rank) if want_cuda else torch.device("cpu")
        return info, device
    if cfg.device == "auto":
        return _Dist(), torch.device("cuda" if want_cuda else "cpu")
    return _Dist(), torch.device(cfg.device)


def _amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    amp = cfg.train.amp
    if amp == "fp32" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs CUDA; on CPU use train.amp=bf16 or fp32")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _grad_scaler(enabled: bool) -> Any:
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # pragma: no cover - torch 2.2


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# batch order: a pure function of (seed, epoch), so a resumed epoch replays the same batches


class EpochBatches:
    """Batch sampler whose order depends only on (seed, epoch); can start part-way through an epoch.

    Every rank gets the same number of batches (the shuffled order is cut to a multiple of the
    world size, then dealt out rank by rank), so DDP never waits on a rank that has run out.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool, rank: int = 0, world: int = 1,
                 max_batches: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world, self.max_batches = rank, world, max_batches
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; `start` batches at its beginning are skipped (already trained on)."""
        self.epoch, self.start = epoch, start

    def _batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        per_rank = self.n // self.world if self.shuffle else math.ceil(self.n / self.world)
        mine = order[self.rank :: self.world][:per_rank].tolist()
        size = self.batch_size
        # Training drops the ragged tail (BatchNorm dislikes batches of 1) unless that leaves nothing.
        if self.shuffle and len(mine) >= size:
            mine = mine[: len(mine) // size * size]
        batches = [mine[i : i + size] for i in range(0, len(mine), size)]
        return batches[: self.max_batches] if self.max_batches else batches

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.start :])


def _lr_factor(schedule: str, step: int, total: int, warmup: float) -> float:
    """LR multiplier at `step` of `total`: linear warm-up, then cosine decay (onecycle/cosine) or flat."""
    warm = int(round(warmup * total))
    if schedule == "constant":
        return 1.0 if step >= warm else (step + 1) / max(warm, 1)
    floor = 0.04 if schedule == "onecycle" else 0.0  # onecycle starts at lr/25 and anneals to ~0
    if step < warm:
        return floor + (1 - floor) * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(total - warm, 1))
    return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))


class _Schedule:
    """Picklable LR lambda; `total` is recomputed from the config on resume (extending a run)."""

    def __init__(self, schedule: str, total: int, warmup: float) -> None:
        self.schedule, self.total, self.warmup = schedule, total, warmup

    def __call__(self, step: int) -> float:
        return _lr_factor(self.schedule, step, self.total, self.warmup)


# --------------------------------------------------------------------------------------------
# evaluation (also used by maskdepth.inference)


def _to(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, ...]:
    """(bg, fg_bg, mask, depth) of a batch on `device` as float32. The loaders give uint8
    images (`open_dataset(uint8=True)`), a third of the bytes to copy: they become floats
    here, after the copy (on a GPU, for free)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    moved = to_float({key: batch[key].to(device, non_blocking=True) for key in ("bg", "fg_bg", "mask", "depth")})
    return (moved["bg"].contiguous(memory_format=fmt), moved["fg_bg"].contiguous(memory_format=fmt),
            moved["mask"], moved["depth"])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    mask_loss: nn.Module | None = None,
    depth_loss: nn.Module | None = None,
    loss_weights: tuple[float, float] = (1.0, 1.0),
    amp_dtype: torch.dtype | None = None,
    regions: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Mask and depth metrics over `loader`, every image weighted equally (design.md).

    Returns iou, dice, rmse, abs_rel, sq_rel, rmse_log, log10, delta1..3, and `count` (images);
    with losses given also loss, mask_loss, depth_loss; with `regions` also depth metrics
    inside and outside the true mask as `inside_<name>` / `outside_<name>`. Under
    torch.distributed each rank passes its own shard and all ranks get the global figures.
    """
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        if batch is None:
            continue
        bg, fg_bg, true_mask, true_depth = _to(batch, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            pred_logits, pred_depth = model(bg, fg_bg)
        pred_logits, pred_depth = pred_logits.float(), pred_depth.float()
        n = bg.shape[0]
        values: dict[str, torch.Tensor] = {}
        values.update(mask_metrics(torch.sigmoid(pred_logits), true_mask, reduction="none"))
        values.update(depth_metrics(pred_depth, true_depth, reduction="none"))
        if regions:
            inside = true_mask >= 0.5
            for prefix, region in (("inside_", inside), ("outside_", ~inside)):
                for k, v in depth_metrics(pred_depth, true_depth, region=region, reduction="none").items():
                    values[prefix + k] = v
        if mask_loss is not None and depth_loss is not None:
            m = mask_loss(pred_logits, true_mask).detach()
            d = depth_loss(pred_depth, true_depth).detach()
            total = loss_weights[0] * m + loss_weights[1] * d
            for k, v in (("loss", total), ("mask_loss", m), ("depth_loss", d)):
                values[k] = v.double().expand(n).cpu()
        acc.update({k: v.detach().double().cpu() for k, v in values.items()})
    acc.all_reduce()
    results = acc.compute()
    results["count"] = float(acc.count("iou"))  # one IoU per image, never NaN
    model.train(was_training)
    return results


# --------------------------------------------------------------------------------------------
# run directory files


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the checkpoint's history, atomically (it may live on Drive)."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    minimise = any(tag in metric for tag in _MINIMISED)
    return value < best if minimise else value > best


def _resume_source(cfg: Config, run_dir: Path) -> Path | None:
    """Which checkpoint to continue from, per `resume` (auto | never | PATH)."""
    last = run_dir / "checkpoints" / "last.pt"
    if cfg.resume == "auto":
        return last if last.is_file() else None
    if cfg.resume == "never":
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"run_dir {run_dir} is not empty and resume=never; choose another run_dir or use resume=auto")
        return None
    source = Path(cfg.resume)
    if not source.is_file():
        raise ConfigError(f"resume={cfg.resume}: no such checkpoint file (use auto, never or a path to a .pt file)")
    if last.is_file() and last.resolve() != source.resolve():
        # The run already has progress of its own: continuing it loses nothing; restarting would.
        print(f"note: {run_dir} already has {last}; continuing from it rather than from {source}", flush=True)
        return last
    return source


def _check_architecture(state: dict[str, Any], cfg: Config, source: Path) -> None:
    theirs = state["config"].get("model", {})
    ours = config_to_dict(cfg)["model"]
    diffs = [f"model.{k}={theirs.get(k)!r} (this config: {v!r})" for k, v in ours.items() if theirs.get(k) != v]
    if diffs:
        raise CheckpointError(f"checkpoint {source} is of another architecture: {'; '.join(diffs)}; "
                              "use a new run_dir or the checkpoint's model settings")


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class _EpochSums:
    """Running sums of the training losses inside an epoch (saved in mid-epoch checkpoints)."""

    loss: float = 0.0
    mask: float = 0.0
    depth: float = 0.0
    images: int = 0
    skipped_batches: int = 0
    skipped_samples: int = 0
    seconds: float = 0.0


EpochHook = Callable[[dict[str, Any], nn.Module], None]


def fit(cfg: Config, on_epoch_end: EpochHook | None = None) -> Path:
    """Train (or continue training) the run described by `cfg`; returns the run directory.

    `on_epoch_end(row, model)`, if given, runs on rank 0 after each epoch has been saved."""
    world, device = _init_distributed(cfg)
    try:
        return _fit(cfg, world, device, on_epoch_end)
    finally:
        if world.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(cfg: Config, world: _Dist, device: torch.device, on_epoch_end: EpochHook | None = None) -> Path:
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    log = tqdm.write if world.main else (lambda *a, **k: None)
    if not cfg.data.path:
        raise ConfigError("data.path is empty: set it to a dataset zip or manifest.csv, e.g. data.path=runs/demo/data.zip")
    valid = [c for c in CSV_COLUMNS if c.startswith(("val_", "train_"))]
    if cfg.train.best_metric not in valid:
        raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not a metrics.csv column; choose one of {', '.join(valid)}")
    source = _resume_source(cfg, run_dir)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
    _seed_everything(cfg.seed)

    # ---- data
    split_args = cfg.data.dataset_options()
    train_set = open_dataset(cfg.data.path, cfg.data.size, "train", augment=cfg.data.augment,
                             augment_seed=cfg.seed, uint8=True, **split_args)
    val_set = open_dataset(cfg.data.path, cfg.data.size, "val", uint8=True, **split_args)
    if len(train_set) == 0 or len(val_set) == 0:
        raise ConfigError(f"data.path={cfg.data.path}: the {'train' if len(train_set) == 0 else 'val'} split is empty; "
                          "use more backgrounds or change data.fractions")
    train_batches = EpochBatches(len(train_set), cfg.train.batch_size, seed=cfg.seed, shuffle=True,
                                 rank=world.rank, world=world.world, max_batches=cfg.train.max_steps_per_epoch)
    val_batches = EpochBatches(len(val_set), cfg.train.batch_size, seed=cfg.seed, shuffle=False,
                               rank=world.rank, world=world.world)
    workers = cfg.data.num_workers
    loader_args = dict(num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                       persistent_workers=workers > 0 and not cfg.data.augment)
    # The loaders get their own generator so building one never consumes the global torch RNG.
    train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=train_batches,
                                               generator=torch.Generator().manual_seed(cfg.seed), **loader_args)
    val_loader = torch.utils.data.DataLoader(val_set, batch_sampler=val_batches,
                                             generator=torch.Generator().manual_seed(cfg.seed), **loader_args)
    steps_per_epoch = len(train_batches)
    total_steps = steps_per_epoch * cfg.train.epochs

    # ---- model, losses, optimiser, schedule
    model = build_model(cfg.model.name, **cfg.model.options())
    if "mean" in train_set.info and "std" in train_set.info:
        model.set_normalization(train_set.info["mean"], train_set.info["std"])
    if cfg.data.size % model.stride:  # fail before any training, naming the config key
        sizes = " or ".join(map(str, nearest_valid_sizes(cfg.data.size, model.stride)))
        raise ConfigError(f"data.size={cfg.data.size} is not a multiple of the model's stride {model.stride}; use {sizes}")
    model.to(device)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    mask_loss = DiceBCELoss(bce_weight=cfg.loss.bce_weight, dice_weight=cfg.loss.dice_weight)
    depth_loss = DepthLoss(w_depth=cfg.loss.w_depth, w_ssim=cfg.loss.w_ssim, w_edge=cfg.loss.w_edge,
                           w_silog=cfg.loss.w_silog, w_grad=cfg.loss.w_grad)
    weights = (cfg.loss.mask_weight, cfg.loss.depth_weight)
    opt_cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _Schedule(cfg.train.schedule, total_steps, cfg.train.warmup))
    amp_dtype = _amp_dtype(cfg, device)
    scaler = _grad_scaler(enabled=amp_dtype == torch.float16)
    ema = ModelEMA(model, cfg.train.ema) if cfg.train.ema else None
    budget_s = 60.0 * cfg.train.max_minutes

    # ---- resume
    epoch, batch_in_epoch, step = 0, 0, 0
    best: float | None = None
    history: list[dict[str, Any]] = []
    sums = _EpochSums()
    if source is not None:
        state = load_checkpoint(source)
        _check_architecture(state, cfg, source)
        try:
            model.load_state_dict(state.get("raw_model", state["model"]))
            if ema is not None:
                ema.module.load_state_dict(state["model"])
                ema.updates = int(state.get("ema_updates", 0))
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {source} does not fit this model: {str(exc).splitlines()[0]}") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.lr_lambdas[0] = _Schedule(cfg.train.schedule, total_steps, cfg.train.warmup)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, batch_in_epoch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        best, history = state.get("best_metric"), list(state.get("history", []))
        sums = _EpochSums(**state["epoch_sums"]) if batch_in_epoch else _EpochSums()
        restore_rng(state["rng"])
        # Re-apply the LR for the (possibly extended) schedule at the current step.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * scheduler.lr_lambdas[0](step)
        if epoch >= cfg.train.epochs:
            log(f"{run_dir}: already trained {epoch}/{cfg.train.epochs} epochs; raise train.epochs to train longer")
            return run_dir
        if budget_s and not batch_in_epoch and _clock(history, 0.0) >= budget_s:
            log(f"{run_dir}: already trained for its train.max_minutes={cfg.train.max_minutes:g} "
                f"({_clock(history, 0.0) / 60:.1f} min); raise train.max_minutes to train longer")
            return run_dir
        where = f"epoch {epoch + 1}, batch {batch_in_epoch}/{steps_per_epoch}" if batch_in_epoch else f"epoch {epoch + 1}"
        log(f"resuming {run_dir} from {source} at {where} (step {step})")

    # ---- run directory
    if world.main:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_atomic(run_dir / "split.json", json.dumps(train_set.splits, indent=2) + "\n")
        if history:
            _write_csv(run_dir / "metrics.csv", history)

    raw_model = model
    if cfg.train.compile:
        model = torch.compile(model)
    if world.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    grid_batch = _fixed_samples(val_set, cfg.train.num_samples) if world.main else None

    eval_model = ema.module if ema is not None else raw_model  # what validation, grids and best.pt use

    def checkpoint_state(at_epoch: int, at_batch: int) -> dict[str, Any]:
        if not all_finite(raw_model):
            raise TrainingError("the model has non-finite weights; refusing to overwrite the last good checkpoint")
        extra = {"raw_model": raw_model.state_dict(), "ema_updates": ema.updates} if ema is not None else {}
        return {
            "version": __version__, "format": 1, "config": config_to_dict(cfg), **extra,
            "model": eval_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": at_epoch, "batch_in_epoch": at_batch, "step": step,
            "epoch_sums": vars(sums).copy(), "rng": capture_rng(), "sampler_seed": cfg.seed,
            "best_metric": best, "history": history, "splits": train_set.splits,
        }

    log(f"training {cfg.model.name} ({sum(p.numel() for p in raw_model.parameters()):,} parameters) on {device}"
        f"{f' x{world.world}' if world.world > 1 else ''}: {len(train_set)} train / {len(val_set)} val samples, "
        f"{steps_per_epoch} steps per epoch, run dir {run_dir}")
    last_save = time.monotonic()
    out_of_time = False
    for epoch in range(epoch, cfg.train.epochs):
        # ---- train one epoch
        model.train()
        train_batches.set_epoch(epoch, batch_in_epoch)
        train_set.set_epoch(epoch)  # the augmentation draw depends on (seed, epoch, sample)
        started = time.monotonic() - sums.seconds
        bar = tqdm(total=steps_per_epoch, initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not world.main, leave=False, dynamic_ncols=True)
        for batch in train_loader:
            batch_in_epoch += 1
            bar.update(1)
            if batch is None:  # every sample of the batch was bad and data.skip_bad is on
                sums.skipped_batches += 1
                continue
            sums.skipped_samples += int(batch.get("skipped", 0))
            bg, fg_bg, true_mask, true_depth = _augment(_to(batch, device, channels_last), cfg, step, world.rank, channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                pred_logits, pred_depth = model(bg, fg_bg)
            m = mask_loss(pred_logits, true_mask)
            d = depth_loss(pred_depth, true_depth)
            loss = weights[0] * m + weights[1] * d
            if not _all_ranks_finite(loss, world):
                if cfg.train.on_nonfinite == "stop":
                    raise TrainingError(
                        f"non-finite loss at epoch {epoch + 1}, step {step} (mask {m.item():.4g}, depth {d.item():.4g}); "
                        f"the last good checkpoint is kept in {ckpt_dir}; lower train.lr, or set train.on_nonfinite=skip")
                sums.skipped_batches += 1
                optimizer.zero_grad(set_to_none=True)
                continue
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(raw_model)
            step += 1
            n = bg.shape[0]
            sums.loss += loss.item() * n
            sums.mask += m.item() * n
            sums.depth += d.item() * n
            sums.images += n
            bar.set_postfix(loss=f"{loss.item():.4f}", mask=f"{m.item():.4f}", depth=f"{d.item():.4f}", refresh=False)

            due_steps = cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0
            due_time = cfg.train.checkpoint_minutes and time.monotonic() - last_save >= 60 * cfg.train.checkpoint_minutes
            if budget_s and _all_ranks_true(_clock(history, time.monotonic() - started) >= budget_s, world, device):
                out_of_time = True  # this epoch ends here, is validated and saved, and the run is done
                break
            if world.main and (due_steps or due_time) and batch_in_epoch < steps_per_epoch:
                sums.seconds = time.monotonic() - started
                save_checkpoint(ckpt_dir / "last.pt", checkpoint_state(epoch, batch_in_epoch))
                last_save = time.monotonic()
        bar.close()
        train_figures = _reduce_sums(sums, world, device)

        # ---- validate
        val = evaluate(eval_model, val_loader, device, mask_loss=mask_loss, depth_loss=depth_loss,
                       loss_weights=weights, amp_dtype=amp_dtype, channels_last=channels_last)
        row: dict[str, Any] = {"epoch": epoch + 1, **train_figures}
        row.update({f"val_{k}": v for k, v in val.items() if f"val_{k}" in CSV_COLUMNS})
        row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.monotonic() - started, steps=step)
        history.append(row)
        improved = _is_better(cfg.train.best_metric, row.get(cfg.train.best_metric), best)
        if improved:
            best = row[cfg.train.best_metric]
        sums, batch_in_epoch = _EpochSums(), 0

        # ---- save and draw (rank 0)
        if world.main:
            state = checkpoint_state(epoch + 1, 0)
            save_checkpoint(ckpt_dir / "last.pt", state)
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", state)
            if cfg.train.keep_last:
                save_checkpoint(ckpt_dir / f"epoch_{epoch + 1:03d}.pt", state)
                for old in sorted(ckpt_dir.glob("epoch_*.pt"))[: -cfg.train.keep_last]:
                    old.unlink(missing_ok=True)
            last_save = time.monotonic()
            _write_csv(run_dir / "metrics.csv", history)
            save_curves(run_dir / "metrics.csv", run_dir / "curves.png")
            if grid_batch is not None:
                _save_grid(eval_model, grid_batch, device, amp_dtype, run_dir / "samples" / f"epoch_{epoch + 1:03d}.png",
                           title=f"epoch {epoch + 1}")
            log(_summary(row, cfg, improved))
            if on_epoch_end is not None:
                was_training = eval_model.training
                on_epoch_end(dict(row), eval_model.eval())
                eval_model.train(was_training)
        if out_of_time:
            log(f"train.max_minutes={cfg.train.max_minutes:g} reached after {step} steps "
                f"(epoch {epoch + 1} ended early); raise it to train longer")
            break
    return run_dir


def _clock(history: list[dict[str, Any]], current: float) -> float:
    """The run's training clock in seconds: every finished epoch's seconds plus `current`."""
    return sum(float(row.get("seconds") or 0.0) for row in history) + current


def _all_ranks_true(flag: bool, world: _Dist, device: torch.device) -> bool:
    """`flag` of rank 0 on every rank (clocks differ a little; all ranks must stop together)."""
    if world.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device if device.type == "cuda" else "cpu")
    dist.broadcast(value, src=0)
    return bool(value.item())


def _augment(tensors: tuple[torch.Tensor, ...], cfg: Config, step: int, rank: int,
             channels_last: bool) -> tuple[torch.Tensor, ...]:
    """(bg, fg_bg, mask, depth) with the config's device-side paired augmentation applied; the
    draws are a pure function of (seed, rank, step)."""
    d = cfg.data
    if not (d.flip or d.crop or d.photometric):
        return tensors
    batch = augment_batch(dict(zip(("bg", "fg_bg", "mask", "depth"), tensors)), seed=cfg.seed + 1_000_003 * rank, step=step,
                          flip=d.flip, crop=d.crop, photometric=d.photometric)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (batch["bg"].contiguous(memory_format=fmt), batch["fg_bg"].contiguous(memory_format=fmt),
            batch["mask"], batch["depth"])


def _all_ranks_finite(loss: torch.Tensor, world: _Dist) -> bool:
    finite = torch.isfinite(loss.detach()).float()
    if world.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _reduce_sums(sums: _EpochSums, world: _Dist, device: torch.device) -> dict[str, float]:
    totals = torch.tensor([sums.loss, sums.mask, sums.depth, sums.images, sums.skipped_batches, sums.skipped_samples],
                          dtype=torch.float64, device=device if world.world > 1 and device.type == "cuda" else "cpu")
    if world.world > 1:
        dist.all_reduce(totals)
    loss, mask, depth, images, skipped_batches, skipped_samples = totals.tolist()
    mean = (lambda v: v / images) if images else (lambda v: float("nan"))
    return {"train_loss": mean(loss), "train_mask_loss": mean(mask), "train_depth_loss": mean(depth),
            "skipped_batches": int(skipped_batches), "skipped_samples": int(skipped_samples)}


def _fixed_samples(dataset: Any, n: int) -> dict[str, Any] | None:
    """The same `n` validation samples every epoch, spread evenly over the split."""
    if n <= 0 or len(dataset) == 0:
        return None
    picks = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int)
    return collate([dataset[int(i)] for i in dict.fromkeys(picks.tolist())])


@torch.no_grad()
def _save_grid(model: nn.Module, batch: dict[str, Any], device: torch.device, amp_dtype: torch.dtype | None,
               path: Path, title: str) -> None:
    was_training = model.training
    model.eval()
    batch = to_float(batch)
    bg, fg_bg, true_mask, true_depth = _to(batch, device)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        pred_logits, pred_depth = model(bg, fg_bg)
    model.train(was_training)
    save_sample_grid(path, batch["bg"], batch["fg_bg"], batch["mask"], torch.sigmoid(pred_logits.float()).cpu(),
                     batch["depth"], pred_depth.float().cpu(), title=title)


def _summary(row: dict[str, Any], cfg: Config, improved: bool) -> str:
    return (f"epoch {row['epoch']:>3}/{cfg.train.epochs}  train {row['train_loss']:.4f} "
            f"(mask {row['train_mask_loss']:.4f} depth {row['train_depth_loss']:.4f})  "
            f"val {row.get('val_loss', float('nan')):.4f}  iou {row.get('val_iou', float('nan')):.3f}  "
            f"dice {row.get('val_dice', float('nan')):.3f}  rmse {row.get('val_rmse', float('nan')):.4f}  "
            f"d1 {row.get('val_delta1', float('nan')):.3f}  lr {row['lr']:.2e}  {row['seconds']:.0f}s"
            f"{'  *best' if improved else ''}")
