"""The training loop: `fit(cfg)` builds everything, trains, validates and saves, epoch by epoch.

    maskdepth train configs/quick.yaml data.path=runs/demo/data.zip train.epochs=3
    torchrun --nproc_per_node=2 -m maskdepth train configs/full192.yaml

`fit` reads top to bottom: lock the run directory, find the checkpoint to continue from (stop at
once when the run is done), `build`, `restore` the `TrainState`, then per epoch
`train_one_epoch`, validate, save; `maskdepth.rundir` owns what RUN/ holds and its repair after
a kill. Resuming is exact: the batch order is a pure function of (seed, epoch), augmentation and
learning rate of the step, and the checkpoint carries every RNG and optimiser state, the EMA and
the training clock; last.pt is also written every `train.checkpoint_minutes` with the position
in the epoch, so a runtime that drops (Colab) loses minutes. `train.max_minutes` budgets that
clock (validation included, across resumes): when it runs out, the epoch ends there, is
validated and saved, and the run is done. Under `train.ema` the checkpoint's `model` is the
average (what evaluation, grids, best.pt and inference use), `raw_model` what training continues.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from maskdepth import __version__
from maskdepth.checkpoint import TrainState, all_finite, load_init_weights, make_state, restore, save_checkpoint
from maskdepth.config import Config, config_to_dict
from maskdepth.data import collate, open_dataset
from maskdepth.data.augment import augment_batch
from maskdepth.data.sampler import EpochBatches
from maskdepth.ema import ModelEMA
from maskdepth.errors import ConfigError, TrainingError, TrainingInterrupted
from maskdepth.evaluate import draw_epoch_grid, evaluate, fixed_samples, forward, to_device
from maskdepth.history import COUNT_KEYS, CSV_COLUMNS, epoch_summary, is_better, with_score
from maskdepth.losses import DepthLoss, DiceBCELoss
from maskdepth.metrics import MetricAccumulator
from maskdepth.model import IMAGENET_MEAN, IMAGENET_STD, build_model, load_pretrained, nearest_valid_sizes
from maskdepth.report import EpochGrids

# one name a line (ruff's isort) would take 21 of train.py's 400 lines (issue 23): wrapped by hand
# isort: off
from maskdepth.rundir import (grid_path, last_checkpoint, prepare_run_dir, read_resumable, repair_run_dir,
                              resume_source, run_finished, run_lock, save_epoch, training_clock)
from maskdepth.runtime import (Dist, StopRequest, all_ranks_finite, all_ranks_true, amp_dtype, broadcast_buffers,
                               channels_last_on, any_rank, grad_scaler, ignore_interrupts, init_distributed, settle,
                               shutdown_distributed)
# isort: on
from maskdepth.tblog import tensorboard_log

EpochHook = Callable[[dict[str, Any], nn.Module], None]


def lr_factor(schedule: str, step: int, total: int, warmup: float) -> float:
    """LR multiplier at `step` of `total`: linear warm-up, then cosine decay (onecycle/cosine) or flat."""
    warm = int(round(warmup * total))
    if schedule == "constant":
        return 1.0 if step >= warm else (step + 1) / max(warm, 1)
    floor = 0.04 if schedule == "onecycle" else 0.0  # onecycle starts at lr/25 and anneals to ~0
    if step < warm:
        return floor + (1 - floor) * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(total - warm, 1))
    return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(cfg: Config, step: int, total: int) -> float:
    """The learning rate of optimiser step `step` (0-based) of `total`: a pure function of the
    step, as in nanoGPT, so a resume has no scheduler state to restore and a longer run (more
    train.epochs) or another train.lr simply recomputes it."""
    return cfg.train.lr * lr_factor(cfg.train.schedule, step, total, cfg.train.warmup)


@dataclass
class Parts:
    """What `build` makes from a config: data, networks, losses, optimiser, precision."""

    train_set: Any
    val_set: Any
    train_batches: EpochBatches
    train_loader: Any
    val_loader: Any
    model: nn.Module  # the optimised network, unwrapped (what checkpoints hold)
    net: nn.Module  # what the training step calls: `model`, compiled and/or DDP-wrapped
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scaler: Any
    mask_loss: nn.Module
    depth_loss: nn.Module
    amp_dtype: torch.dtype | None
    precision: str  # the precision chosen and why, e.g. "fp32 (no CUDA)"
    channels_last: bool

    @property
    def eval_model(self) -> nn.Module:
        """What validation, the grids, best.pt and inference use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_batches)


def build(cfg: Config, world: Dist | None = None, device: torch.device | None = None, *,
          pretrained: bool = True) -> Parts:
    """The train/val loaders (batch order a pure function of seed and epoch), the model with the
    dataset's input normalisation, EMA, losses, optimiser and GradScaler for `cfg` on `device`.
    `pretrained`: load the `train.init_from` or `model.pretrained` weights (a fresh run; a resumed one
    has its own in its checkpoint), on every rank: each rank's EMA (made below, before DDP syncs)
    starts from them."""
    world, device = world or Dist(), device or torch.device("cpu")
    options = cfg.data.dataset_options()
    train_set = open_dataset(cfg.data.path, cfg.data.size, "train", uint8=True, **options)
    val_set = open_dataset(cfg.data.path, cfg.data.size, "val", uint8=True, **options)
    if len(train_set) == 0 or len(val_set) == 0:
        raise ConfigError(f"data.path={cfg.data.path}: the {'train' if len(train_set) == 0 else 'val'} split is empty; "
                          "use more backgrounds or change data.fractions")
    train_batches = EpochBatches(len(train_set), cfg.train.batch_size, seed=cfg.seed, shuffle=True,
                                 rank=world.rank, world=world.world, max_batches=cfg.train.max_steps_per_epoch)
    val_batches = EpochBatches(len(val_set), cfg.train.batch_size, seed=cfg.seed, shuffle=False,
                               rank=world.rank, world=world.world)
    workers = cfg.data.num_workers
    loader_args = dict(num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                       worker_init_fn=ignore_interrupts if workers > 0 else None,
                       persistent_workers=workers > 0)
    # The loaders get their own generator so building one never consumes the global torch RNG.
    train_loader, val_loader = (torch.utils.data.DataLoader(s, batch_sampler=b, **loader_args,
                                                            generator=torch.Generator().manual_seed(cfg.seed))
                                for s, b in ((train_set, train_batches), (val_set, val_batches)))

    model = build_model(cfg.model.name, **cfg.model.options())
    if cfg.model.pretrained != "none":  # ImageNet's normalisation, which the weights expect
        model.set_normalization(IMAGENET_MEAN, IMAGENET_STD)
    elif "mean" in train_set.info and "std" in train_set.info:
        model.set_normalization(train_set.info["mean"], train_set.info["std"])
    if pretrained and (cfg.train.init_from or cfg.model.pretrained != "none"):
        report = (load_init_weights(model, cfg.train.init_from, config_to_dict(cfg)["model"]) if cfg.train.init_from
                  else load_pretrained(model, cfg.model.pretrained))
        if world.main:  # init_from's normalisation buffers come with its weights, replacing the ones set above
            tqdm.write(report)
    if cfg.data.size % model.stride:  # fail before any training, naming the config key
        sizes = " or ".join(map(str, nearest_valid_sizes(cfg.data.size, model.stride)))
        raise ConfigError(f"data.size={cfg.data.size} is not a multiple of the model's stride {model.stride}; "
                          f"use {sizes}")
    model.to(device)
    channels_last = channels_last_on(cfg.train.channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt_cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    dtype, precision = amp_dtype(cfg.train.amp, device)
    ema = ModelEMA(model, cfg.train.ema) if cfg.train.ema else None
    net = torch.compile(model) if cfg.train.compile else model
    if world.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return Parts(
        train_set, val_set, train_batches, train_loader, val_loader, model, net, ema, optimizer,
        grad_scaler(dtype == torch.float16, device),
        DiceBCELoss(bce_weight=cfg.loss.bce_weight, dice_weight=cfg.loss.dice_weight),
        DepthLoss(w_depth=cfg.loss.w_depth, w_ssim=cfg.loss.w_ssim, w_edge=cfg.loss.w_edge,
                  w_silog=cfg.loss.w_silog, w_grad=cfg.loss.w_grad),
        dtype, precision, channels_last,
    )


# --------------------------------------------------------------------------------------------
# the loop


def fit(cfg: Config, on_epoch_end: EpochHook | None = None) -> Path:
    """Train (or continue training) the run described by `cfg`; returns the run directory.

    `on_epoch_end(row, model)`, if given, runs on rank 0 after each epoch has been saved: row is the
    metrics.csv row as a dict, model the evaluated network (the EMA under train.ema) in eval mode."""
    run_dir, last = Path(cfg.run_dir), last_checkpoint(Path(cfg.run_dir))
    world, device = init_distributed(cfg.device)
    log = tqdm.write if world.main else (lambda *a, **k: None)
    try:
        source = resume_source(cfg, run_dir, log)
        with run_lock(run_dir, world, device, log), StopRequest(log, last) as stop, contextlib.ExitStack() as stack:
            ck = read_resumable(source, cfg, log)
            if ck is not None and run_finished(ck.train, cfg, run_dir, log):
                if world.main:
                    repair_run_dir(run_dir, ck, cfg, draw_grid=functools.partial(_draw_finished, run_dir, ck, cfg))
                return run_dir
            settle(cfg.seed, cfg.train.deterministic, device)
            p = build(cfg, world, device, pretrained=ck is None)
            ts = restore(ck, model=p.model, optimizer=p.optimizer, scaler=p.scaler, ema=p.ema) if ck else TrainState()
            total = p.steps_per_epoch * cfg.train.epochs
            grid = fixed_samples(p.val_set, cfg.train.num_samples) if world.main else None
            draw = EpochGrids(run_dir, p.eval_model, grid, device, val_set=p.val_set if world.main else None,
                              worst=cfg.train.worst_samples, metric=cfg.train.best_metric, amp_dtype=p.amp_dtype)
            save = functools.partial(_save, p=p, ts=ts, cfg=cfg)
            if world.main:
                prepare_run_dir(run_dir, cfg, p.train_set.splits)
                if ck is not None:
                    repair_run_dir(run_dir, ck, cfg, draw_grid=draw)
            _log_start(log, cfg, p, ts, world, device, source, run_dir)
            tb = stack.enter_context(tensorboard_log(run_dir / "tb", enabled=cfg.log.tensorboard and world.main,
                                                     resume_step=ts.step))
            for _ in range(ts.epoch, cfg.train.epochs):
                figures, out_of_time = train_one_epoch(p, ts, cfg, world, device, total=total, stop=stop,
                                                       save=lambda: save(last), on_step=tb.step if tb else None)
                broadcast_buffers([p.model, p.ema and p.ema.module], world)  # every rank validates rank 0's model
                t0 = time.monotonic()
                val = evaluate(p.eval_model, p.val_loader, device, mask_loss=p.mask_loss, depth_loss=p.depth_loss,
                               loss_weights=(cfg.loss.mask_weight, cfg.loss.depth_weight), amp_dtype=p.amp_dtype,
                               channels_last=p.channels_last, on_batch=draw.observe)
                row, improved = _end_epoch(ts, cfg, figures, val, total, time.monotonic() - t0)
                if world.main:
                    save_epoch(run_dir, cfg, ts, improved, save)
                    draw(row)
                    log(epoch_summary(row, cfg.train.epochs, improved))
                    if tb:
                        tb.epoch(row, grid_path(run_dir, row["epoch"]))
                    if on_epoch_end is not None:  # the evaluated model, in eval mode, then back as it was
                        was_training = p.eval_model.training
                        on_epoch_end(dict(row), p.eval_model.eval())
                        p.eval_model.train(was_training)
                if any_rank(stop.requested, world, device):
                    raise TrainingInterrupted(f"interrupted after epoch {ts.epoch} (step {ts.step}); {last} holds it: "
                                              "run again to continue")
                if out_of_time:
                    log(f"train.max_minutes={cfg.train.max_minutes:g} reached after {ts.step} steps "
                        f"(epoch {ts.epoch} ended early); raise it to train longer")
                    break
            return run_dir
    finally:
        shutdown_distributed(world)


def train_one_epoch(p: Parts, ts: TrainState, cfg: Config, world: Dist, device: torch.device, *, total: int,
                    save: Callable[[], None], stop: StopRequest | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None) -> tuple[dict[str, float], bool]:
    """Train epoch `ts.epoch + 1` from batch `ts.batch_in_epoch` on, updating `ts` in place (step,
    position, loss sums, seconds); `save()` writes a mid-epoch last.pt when one is due (rank 0).
    When `stop.requested` (Ctrl-C) turns true, the step in progress ends, last.pt is saved with
    this position and TrainingInterrupted is raised (at the epoch's last step, the epoch ends first).
    `on_step(step, {loss, mask_loss, depth_loss, lr})` runs every `log.every` steps (rank 0).

    Returns (the epoch's mean training losses and skip counts over all ranks, whether
    train.max_minutes ran out inside this epoch, which then ends early)."""
    p.net.train()
    p.train_batches.set_epoch(ts.epoch, ts.batch_in_epoch)
    sums = MetricAccumulator().load_state_dict(ts.sums)
    started, last_save = time.monotonic() - ts.epoch_seconds, time.monotonic()
    budget_s, out_of_time = 60.0 * cfg.train.max_minutes, False
    bar = tqdm(total=p.steps_per_epoch, initial=ts.batch_in_epoch, desc=f"epoch {ts.epoch + 1}/{cfg.train.epochs}",
               disable=not world.main, leave=False, dynamic_ncols=True)
    try:  # the bar is closed before any message below it (Ctrl-C, errors)
        for batch in p.train_loader:
            ts.batch_in_epoch += 1
            bar.update(1)
            if batch is None:  # every sample of the batch was bad and data.skip_bad is on
                sums.add("skipped_batches", 1)
                continue
            sums.add("skipped_samples", int(batch.get("skipped", 0)))
            loss, m, d, n = _losses(p, cfg, batch, ts.step, world.rank, device)
            if not all_ranks_finite(loss, world):
                _nonfinite(p, cfg, ts, m, d)  # raises under train.on_nonfinite=stop; else the batch is skipped
                sums.add("skipped_batches", 1)
                continue
            lr = lr_at(cfg, ts.step, total)
            _optimise(p, cfg, loss, lr)
            ts.step += 1
            values = {"loss": loss.item(), "mask_loss": m.item(), "depth_loss": d.item()}  # one host sync
            if on_step is not None and world.main and ts.step % cfg.log.every == 0:
                on_step(ts.step, {**values, "lr": lr})
            for key, value in values.items():
                sums.add(f"train_{key}", value * n, n)
            bar.set_postfix(loss=f"{values['loss']:.4f}", mask=f"{values['mask_loss']:.4f}",
                            depth=f"{values['depth_loss']:.4f}", refresh=False)
            ts.sums, ts.epoch_seconds = sums.state_dict(), time.monotonic() - started
            if budget_s and all_ranks_true(training_clock(ts.history, ts.epoch_seconds) >= budget_s, world, device):
                out_of_time = True  # this epoch ends here, is validated and saved, and the run is done
                break
            if stop is not None and ts.batch_in_epoch < p.steps_per_epoch and any_rank(stop.requested, world, device):
                if world.main:
                    save()
                raise TrainingInterrupted(f"interrupted at epoch {ts.epoch + 1}, batch {ts.batch_in_epoch}/"
                                          f"{p.steps_per_epoch} (step {ts.step}); {last_checkpoint(Path(cfg.run_dir))} "
                                          "holds this position: run again to continue")
            if world.main and ts.batch_in_epoch < p.steps_per_epoch and _checkpoint_due(cfg, ts.step, last_save):
                save()
                last_save = time.monotonic()
    finally:
        bar.close()
    ts.epoch_seconds = time.monotonic() - started
    means = sums.all_reduce().compute()
    figures = {k: means.get(k, math.nan) for k in ("train_loss", "train_mask_loss", "train_depth_loss")}
    return {**figures, **{k: int(round(sums.total(k))) for k in COUNT_KEYS}}, out_of_time


# --------------------------------------------------------------------------------------------
# the pieces the loop calls: the step, saving, the epoch's end, logging


def _losses(p: Parts, cfg: Config, batch: dict[str, Any], step: int, rank: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(weighted loss, mask loss, depth loss, batch size) of `batch` through `p.net`, after the paired
    augmentation (data.flip, data.crop, data.photometric), whose draws are a pure function of (seed, rank, step)."""
    x = dict(zip(("bg", "fg_bg", "mask", "depth"), to_device(batch, device, p.channels_last), strict=True))
    if cfg.data.flip or cfg.data.crop or cfg.data.photometric:
        x = augment_batch(x, seed=cfg.seed + 1_000_003 * rank, step=step, flip=cfg.data.flip, crop=cfg.data.crop,
                          photometric=cfg.data.photometric)
        fmt = torch.channels_last if p.channels_last else torch.contiguous_format
        x["bg"], x["fg_bg"] = x["bg"].contiguous(memory_format=fmt), x["fg_bg"].contiguous(memory_format=fmt)
    pred_logits, pred_depth = forward(p.net, x["bg"], x["fg_bg"], p.amp_dtype)
    m, d = p.mask_loss(pred_logits, x["mask"]), p.depth_loss(pred_depth, x["depth"])
    return cfg.loss.mask_weight * m + cfg.loss.depth_weight * d, m, d, x["bg"].shape[0]


def _nonfinite(p: Parts, cfg: Config, ts: TrainState, m: torch.Tensor, d: torch.Tensor) -> None:
    """A non-finite loss on some rank: stop (train.on_nonfinite=stop, the last good checkpoint is
    kept) or drop this step's gradients so that the batch is skipped on every rank."""
    if cfg.train.on_nonfinite == "stop":
        raise TrainingError(
            f"non-finite loss at epoch {ts.epoch + 1}, step {ts.step} (mask {m.item():.4g}, depth {d.item():.4g}); "
            f"the last good checkpoint is kept in {Path(cfg.run_dir) / 'checkpoints'}; lower train.lr, "
            "or set train.on_nonfinite=skip")
    p.optimizer.zero_grad(set_to_none=True)


def _optimise(p: Parts, cfg: Config, loss: torch.Tensor, lr: float) -> None:
    """One optimiser step on `loss` at learning rate `lr` (scaled, clipped), then the EMA."""
    for group in p.optimizer.param_groups:
        group["lr"] = lr
    p.optimizer.zero_grad(set_to_none=True)
    p.scaler.scale(loss).backward()
    if cfg.train.grad_clip > 0:
        p.scaler.unscale_(p.optimizer)
        nn.utils.clip_grad_norm_(p.model.parameters(), cfg.train.grad_clip)
    p.scaler.step(p.optimizer)
    p.scaler.update()
    if p.ema is not None:
        p.ema.update(p.model)


def _checkpoint_due(cfg: Config, step: int, last_save: float) -> bool:
    """Whether a mid-epoch last.pt is due: every train.checkpoint_every steps or
    train.checkpoint_minutes since the last one (0 turns either off)."""
    return bool((cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0) or (
        cfg.train.checkpoint_minutes and time.monotonic() - last_save >= 60 * cfg.train.checkpoint_minutes))


def _save(path: Path, *, p: Parts, ts: TrainState, cfg: Config) -> None:
    """The run's state now as a checkpoint at `path` (rank 0), never with non-finite weights."""
    if not all_finite(p.model):
        raise TrainingError("the model has non-finite weights; refusing to overwrite the last good checkpoint")
    save_checkpoint(path, make_state(ts, config=config_to_dict(cfg), model=p.model, optimizer=p.optimizer,
                                     scaler=p.scaler, ema=p.ema, splits=p.train_set.splits, version=__version__,
                                     data=p.train_set.manifest.fingerprint))


def _draw_finished(run_dir: Path, ck: Any, cfg: Config, row: dict[str, Any]) -> None:
    """The last sample grid of a finished run that lacks it: build on the CPU what drawing it needs."""
    settle(cfg.seed, cfg.train.deterministic, torch.device("cpu"))
    p = build(cfg, pretrained=False)
    restore(ck, model=p.model, optimizer=p.optimizer, scaler=p.scaler, ema=p.ema)
    draw_epoch_grid(run_dir, p.eval_model, fixed_samples(p.val_set, cfg.train.num_samples), torch.device("cpu"), row,
                    amp_dtype=p.amp_dtype)


def _end_epoch(ts: TrainState, cfg: Config, figures: dict[str, Any], val: dict[str, Any], total: int,
               val_seconds: float) -> tuple[dict[str, Any], bool]:
    """The epoch's metrics.csv row (training `figures`, `evaluate`'s `val`), appended to `ts`, which
    moves to the next epoch's start; (row, whether it is the best so far by train.best_metric)."""
    row = with_score({"epoch": ts.epoch + 1, **figures, **{f"val_{k}": v for k, v in val.items()
                                                          if f"val_{k}" in CSV_COLUMNS},
                      "lr": lr_at(cfg, ts.step, total), "seconds": ts.epoch_seconds + val_seconds, "steps": ts.step})
    metric = cfg.train.best_metric
    improved = is_better(metric, row.get(metric), ts.best_metric)
    ts.history.append(row)
    ts.best_metric = row[metric] if improved else ts.best_metric
    ts.epoch, ts.batch_in_epoch, ts.sums, ts.epoch_seconds = ts.epoch + 1, 0, {}, 0.0
    return row, improved


def _log_start(log: Callable[[str], Any], cfg: Config, p: Parts, ts: TrainState, world: Dist, device: torch.device,
               source: Path | None, run_dir: Path) -> None:
    if source is not None:
        where = (f"epoch {ts.epoch + 1}, batch {ts.batch_in_epoch}/{p.steps_per_epoch}" if ts.batch_in_epoch
                 else f"epoch {ts.epoch + 1}")
        log(f"resuming {run_dir} from {source} at {where} (step {ts.step})")
    log(f"training {cfg.model.name} ({sum(t.numel() for t in p.model.parameters()):,} parameters) on {device}"
        f"{f' x{world.world}' if world.world > 1 else ''} in {p.precision}: {len(p.train_set)} train / "
        f"{len(p.val_set)} val samples, {p.steps_per_epoch} steps per epoch, run dir {run_dir}")


__all__ = ["CSV_COLUMNS", "EpochHook", "Parts", "build", "fit", "lr_at", "lr_factor", "train_one_epoch"]
