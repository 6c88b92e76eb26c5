"""The training loop: `fit(cfg)` builds everything, trains, validates and saves, epoch by epoch.

    maskdepth train configs/quick.yaml data.path=runs/demo/data.zip train.epochs=3
    torchrun --nproc_per_node=2 -m maskdepth train configs/full192.yaml

`fit` reads top to bottom: take the run directory's lock, find the checkpoint to continue from
(and stop at once when the run is already done), `build` the loaders, model, losses and
optimiser, `restore` the `TrainState`, then per epoch `train_one_epoch`, validate, save.
`last.pt` is also written every `train.checkpoint_minutes` inside an epoch, with the position
inside the epoch, so a runtime that drops mid-epoch (Colab) loses minutes, not an epoch.

Resuming is exact: the batch order is a pure function of (seed, epoch), the device-side
augmentation and the learning rate pure functions of the step, and the checkpoint carries every
RNG and optimiser state, the EMA of the weights and the training clock, so a killed and
restarted run ends with the same weights as one that was never interrupted (CPU).

`last.pt` is the commit point: at the end of an epoch it is written first, then best.pt,
epoch_NNN.pt, metrics.csv, curves.png and the sample grid, and every one of those is derived
again from last.pt when a run starts (or finds itself finished), so a kill between two writes
loses nothing. A resumed run may change only `RESUMABLE_KEYS` (more epochs, another lr, where
the data lives, ...); any other changed key is refused, naming it, so RUN/config.yaml always
says what the run does.

`train.max_minutes` is a budget on the training clock (the seconds of every epoch so far,
validation included, as metrics.csv's `seconds` column sums them; it survives resumes): when it
runs out inside an epoch, that epoch ends there, is validated and saved, and the run is done.
With `train.ema` the checkpoint's `model` is the averaged weights (what evaluation, the grids,
best.pt and inference use) and `raw_model` the optimised ones that training continues from.
`fit(cfg, on_epoch_end=f)` calls f(row, model) after each epoch is saved (rank 0): row is the
metrics.csv row as a dict, model the evaluated network in eval mode.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
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
from maskdepth.checkpoint import (Checkpoint, TrainState, all_finite, make_state, read_checkpoint, restore,
                                  save_checkpoint)
from maskdepth.config import Config, config_from_dict, config_to_dict, diff_configs, save_config
from maskdepth.data import collate, open_dataset, to_float
from maskdepth.data.augment import augment_batch
from maskdepth.ema import ModelEMA
from maskdepth.errors import CheckpointError, ConfigError, MaskDepthError
from maskdepth.evaluate import evaluate, forward, to_device
from maskdepth.fileio import atomic_open, write_atomic
from maskdepth.history import CSV_COLUMNS, COUNT_KEYS, best_epoch, is_better, write_metrics_csv
from maskdepth.losses import DepthLoss, DiceBCELoss
from maskdepth.metrics import MetricAccumulator
from maskdepth.model import IMAGENET_MEAN, IMAGENET_STD, build_model, load_pretrained, nearest_valid_sizes
from maskdepth.runlock import RunLock
from maskdepth.runtime import (Dist, StopRequest, amp_dtype, grad_scaler, ignore_interrupts, init_distributed,
                               seed_everything, shutdown_distributed)
from maskdepth.viz import save_curves, save_sample_grid

# Keys a resumed run may change; any other difference from the checkpoint's config is refused.
RESUMABLE_KEYS = (
    "run_dir", "resume", "device", "data.path", "data.num_workers", "data.in_memory", "data.skip_bad",
    "train.epochs", "train.lr", "train.max_minutes", "train.checkpoint_minutes", "train.checkpoint_every",
    "train.keep_last", "train.num_samples", "train.on_nonfinite", "train.grad_clip", "train.amp",
    "train.compile", "train.channels_last", "train.deterministic", "log.tensorboard", "log.every",
)
EpochHook = Callable[[dict[str, Any], nn.Module], None]


class TrainingError(MaskDepthError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / the notebook's Stop button stopped training after last.pt was saved with the
    position; the message says where, and rerunning the same command continues from there."""


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


# --------------------------------------------------------------------------------------------
# build


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
    `pretrained`: load `model.pretrained` weights (a fresh run; a resumed one has them in its
    checkpoint)."""
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
    train_loader, val_loader = (torch.utils.data.DataLoader(s, batch_sampler=b, generator=torch.Generator().manual_seed(cfg.seed),
                                                            **loader_args)
                                for s, b in ((train_set, train_batches), (val_set, val_batches)))

    model = build_model(cfg.model.name, **cfg.model.options())
    if cfg.model.pretrained != "none":  # ImageNet's normalisation, which the weights expect
        model.set_normalization(IMAGENET_MEAN, IMAGENET_STD)
        if pretrained:  # on every rank: each rank's EMA (made below, before DDP syncs) starts from them
            report = load_pretrained(model, cfg.model.pretrained)
            if world.main:
                tqdm.write(report)
    elif "mean" in train_set.info and "std" in train_set.info:
        model.set_normalization(train_set.info["mean"], train_set.info["std"])
    if cfg.data.size % model.stride:  # fail before any training, naming the config key
        sizes = " or ".join(map(str, nearest_valid_sizes(cfg.data.size, model.stride)))
        raise ConfigError(f"data.size={cfg.data.size} is not a multiple of the model's stride {model.stride}; use {sizes}")
    model.to(device)
    channels_last = cfg.train.channels_last and device.type == "cuda"
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
        grad_scaler(enabled=dtype == torch.float16),
        DiceBCELoss(bce_weight=cfg.loss.bce_weight, dice_weight=cfg.loss.dice_weight),
        DepthLoss(w_depth=cfg.loss.w_depth, w_ssim=cfg.loss.w_ssim, w_edge=cfg.loss.w_edge,
                  w_silog=cfg.loss.w_silog, w_grad=cfg.loss.w_grad),
        dtype, precision, channels_last,
    )


# --------------------------------------------------------------------------------------------
# the loop


def fit(cfg: Config, on_epoch_end: EpochHook | None = None) -> Path:
    """Train (or continue training) the run described by `cfg`; returns the run directory.

    `on_epoch_end(row, model)`, if given, runs on rank 0 after each epoch has been saved."""
    run_dir = Path(cfg.run_dir)
    world, device = init_distributed(cfg.device)
    log = tqdm.write if world.main else (lambda *a, **k: None)
    try:
        source = _resume_source(cfg, run_dir, log)
        with _run_lock(run_dir, world, device), StopRequest(log) as stop, contextlib.ExitStack() as stack:
            ck = _resumable(read_checkpoint(source), cfg) if source is not None else None
            if ck is not None and _finished(ck.train, cfg, run_dir, log):
                if world.main:
                    _repair_run_dir(run_dir, ck, cfg, parts=None)
                return run_dir
            _settle(cfg, device)
            p = build(cfg, world, device, pretrained=ck is None)
            ts = restore(ck, model=p.model, optimizer=p.optimizer, scaler=p.scaler, ema=p.ema) if ck else TrainState()
            total = p.steps_per_epoch * cfg.train.epochs
            grid = _fixed_samples(p.val_set, cfg.train.num_samples) if world.main else None
            if world.main:
                _prepare_run_dir(run_dir, cfg, p.train_set.splits)
                if ck is not None:
                    _repair_run_dir(run_dir, ck, cfg, parts=(p, grid, device))
            _log_start(log, cfg, p, ts, world, device, source, run_dir)
            tb = stack.enter_context(_tensorboard(run_dir, cfg, ts, world))

            def save(path: Path) -> None:  # the run's state now, rank 0
                if not all_finite(p.model):
                    raise TrainingError("the model has non-finite weights; refusing to overwrite the last good checkpoint")
                save_checkpoint(path, make_state(ts, config=config_to_dict(cfg), model=p.model, optimizer=p.optimizer,
                                                 scaler=p.scaler, ema=p.ema, splits=p.train_set.splits, version=__version__))

            for _ in range(ts.epoch, cfg.train.epochs):
                figures, out_of_time = train_one_epoch(p, ts, cfg, world, device, total=total, stop=stop,
                                                       save=lambda: save(run_dir / "checkpoints" / "last.pt"),
                                                       on_step=tb.step if tb else None)
                t0 = time.monotonic()
                val = evaluate(p.eval_model, p.val_loader, device, mask_loss=p.mask_loss, depth_loss=p.depth_loss,
                               loss_weights=(cfg.loss.mask_weight, cfg.loss.depth_weight), amp_dtype=p.amp_dtype,
                               channels_last=p.channels_last)
                row = {"epoch": ts.epoch + 1, **figures, **{f"val_{k}": v for k, v in val.items() if f"val_{k}" in CSV_COLUMNS},
                       "lr": lr_at(cfg, ts.step, total), "seconds": ts.epoch_seconds + time.monotonic() - t0,
                       "steps": ts.step}
                improved = is_better(cfg.train.best_metric, row.get(cfg.train.best_metric), ts.best_metric)
                ts.history.append(row)
                ts.best_metric = row[cfg.train.best_metric] if improved else ts.best_metric
                ts.epoch, ts.batch_in_epoch, ts.sums, ts.epoch_seconds = ts.epoch + 1, 0, {}, 0.0
                if world.main:
                    _save_epoch(run_dir, cfg, ts, improved, save)
                    _draw_grid(run_dir, p, grid, device, row)
                    log(_summary(row, cfg, improved))
                    if tb:
                        tb.epoch(row, run_dir / "samples" / f"epoch_{row['epoch']:03d}.png")
                    if on_epoch_end is not None:
                        was_training = p.eval_model.training
                        on_epoch_end(dict(row), p.eval_model.eval())
                        p.eval_model.train(was_training)
                if _any_rank(stop.requested, world, device):
                    raise TrainingInterrupted(f"interrupted after epoch {ts.epoch} (step {ts.step}); "
                                              f"{run_dir / 'checkpoints' / 'last.pt'} holds it: run again to continue")
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
            bg, fg_bg, true_mask, true_depth = _augment(to_device(batch, device, p.channels_last), cfg, ts.step, world.rank,
                                                        p.channels_last)
            pred_logits, pred_depth = forward(p.net, bg, fg_bg, p.amp_dtype)
            m, d = p.mask_loss(pred_logits, true_mask), p.depth_loss(pred_depth, true_depth)
            loss = cfg.loss.mask_weight * m + cfg.loss.depth_weight * d
            if not _all_ranks_finite(loss, world):
                if cfg.train.on_nonfinite == "stop":
                    raise TrainingError(
                        f"non-finite loss at epoch {ts.epoch + 1}, step {ts.step} (mask {m.item():.4g}, depth {d.item():.4g}); "
                        f"the last good checkpoint is kept in {Path(cfg.run_dir) / 'checkpoints'}; lower train.lr, "
                        "or set train.on_nonfinite=skip")
                sums.add("skipped_batches", 1)
                p.optimizer.zero_grad(set_to_none=True)
                continue
            lr = lr_at(cfg, ts.step, total)
            _optimise(p, cfg, loss, lr)
            ts.step += 1
            values = {"loss": loss.item(), "mask_loss": m.item(), "depth_loss": d.item()}  # one host sync
            if on_step is not None and world.main and ts.step % cfg.log.every == 0:
                on_step(ts.step, {**values, "lr": lr})
            n = bg.shape[0]
            for key, value in values.items():
                sums.add(f"train_{key}", value * n, n)
            bar.set_postfix(loss=f"{values['loss']:.4f}", mask=f"{values['mask_loss']:.4f}",
                            depth=f"{values['depth_loss']:.4f}", refresh=False)
            ts.sums, ts.epoch_seconds = sums.state_dict(), time.monotonic() - started
            if budget_s and _all_ranks_true(_clock(ts.history, ts.epoch_seconds) >= budget_s, world, device):
                out_of_time = True  # this epoch ends here, is validated and saved, and the run is done
                break
            if stop is not None and ts.batch_in_epoch < p.steps_per_epoch and _any_rank(stop.requested, world, device):
                if world.main:
                    save()
                raise TrainingInterrupted(f"interrupted at epoch {ts.epoch + 1}, batch {ts.batch_in_epoch}/{p.steps_per_epoch} "
                                          f"(step {ts.step}); {Path(cfg.run_dir) / 'checkpoints' / 'last.pt'} holds this "
                                          "position: run again to continue")
            due = (cfg.train.checkpoint_every and ts.step % cfg.train.checkpoint_every == 0) or (
                cfg.train.checkpoint_minutes and time.monotonic() - last_save >= 60 * cfg.train.checkpoint_minutes)
            if world.main and due and ts.batch_in_epoch < p.steps_per_epoch:
                save()
                last_save = time.monotonic()
    finally:
        bar.close()
    ts.epoch_seconds = time.monotonic() - started
    means = sums.all_reduce().compute()
    figures = {k: means.get(k, math.nan) for k in ("train_loss", "train_mask_loss", "train_depth_loss")}
    return {**figures, **{k: int(round(sums.total(k))) for k in COUNT_KEYS}}, out_of_time


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


# --------------------------------------------------------------------------------------------
# starting: which checkpoint, one writer, nothing stale


def _resume_source(cfg: Config, run_dir: Path, log: Callable[[str], Any]) -> Path | None:
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
        log(f"note: {run_dir} already has {last}; continuing from it rather than from {source}")
        return last
    return source


@contextlib.contextmanager
def _run_lock(run_dir: Path, world: Dist, device: torch.device) -> Iterator[None]:
    """Hold RUN/.lock (rank 0) for the block; every rank fails together when it is taken."""
    lock, error = None, None
    if world.main:
        try:
            lock = RunLock(run_dir).acquire()
        except MaskDepthError as exc:
            error = exc
    if not _all_ranks_true(error is None, world, device):
        raise error or TrainingError(f"rank 0 could not lock {run_dir}; see its message")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _resumable(ck: Checkpoint, cfg: Config) -> Checkpoint:
    """`ck`, after checking that `cfg` changes only RESUMABLE_KEYS of the config it was trained with."""
    try:
        saved = config_from_dict(ck.config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {ck.path} holds a config this version cannot read: {exc}") from None
    changed = [(k, old, new) for k, old, new in diff_configs(saved, cfg) if k not in RESUMABLE_KEYS]
    arch = [f"{k}={old!r} (this config: {new!r})" for k, old, new in changed if k.startswith("model.")]
    if arch:
        raise CheckpointError(f"checkpoint {ck.path} is of another architecture: {'; '.join(arch)}; "
                              "use a new run_dir or the checkpoint's model settings")
    if changed:
        key, old, new = changed[0]
        more = f" ({len(changed) - 1} more: {', '.join(k for k, _, _ in changed[1:])})" if len(changed) > 1 else ""
        raise ConfigError(f"{key}={new!r} but the run in {ck.path} was trained with {key}={old!r}{more}; a resumed "
                          f"run may change only {', '.join(RESUMABLE_KEYS)}; set it back, or train into a new run_dir")
    return ck


def _clock(history: list[dict[str, Any]], current: float) -> float:
    """The run's training clock in seconds: every finished epoch's seconds plus `current`."""
    return sum(float(row.get("seconds") or 0.0) for row in history) + current


def _finished(ts: TrainState, cfg: Config, run_dir: Path, log: Callable[[str], Any]) -> bool:
    """Whether the run has nothing left to do (all epochs, or its time budget, spent); says so."""
    if ts.epoch >= cfg.train.epochs:
        log(f"{run_dir}: already trained {ts.epoch}/{cfg.train.epochs} epochs; raise train.epochs to train longer")
        return True
    budget_s = 60.0 * cfg.train.max_minutes
    if budget_s and not ts.batch_in_epoch and _clock(ts.history, 0.0) >= budget_s:
        log(f"{run_dir}: already trained for its train.max_minutes={cfg.train.max_minutes:g} "
            f"({_clock(ts.history, 0.0) / 60:.1f} min); raise train.max_minutes to train longer")
        return True
    return False


def _settle(cfg: Config, device: torch.device) -> None:
    """Determinism switches and seeds, before anything random is built."""
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
    seed_everything(cfg.seed)


def _prepare_run_dir(run_dir: Path, cfg: Config, splits: dict[str, Any]) -> None:
    """Folders, config.yaml, split.json; temp files that kills left behind are removed (we hold
    the lock, so no other writer's temp file can be among them)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_atomic(run_dir / "split.json", json.dumps(splits, indent=2) + "\n")


def _repair_run_dir(run_dir: Path, ck: Checkpoint, cfg: Config, parts: tuple[Parts, Any, torch.device] | None) -> None:
    """Derive again from the checkpoint whatever a kill between two writes left missing or stale:
    best.pt and epoch_NNN.pt (when that epoch is the checkpoint's), metrics.csv, curves.png and
    the last sample grid (drawn with `parts`; built here when the run is finished and it is missing)."""
    ts, ckpt_dir = ck.train, run_dir / "checkpoints"
    at_epoch_end = ts.epoch > 0 and ts.batch_in_epoch == 0
    if at_epoch_end and best_epoch(ts.history, cfg.train.best_metric) == ts.epoch:
        best = ckpt_dir / "best.pt"
        if not best.is_file() or read_checkpoint(best, mmap=True).train.epoch != ts.epoch:
            _copy(ck.path, best)
    if at_epoch_end and cfg.train.keep_last and not (ckpt_dir / f"epoch_{ts.epoch:03d}.pt").is_file():
        _copy(ck.path, ckpt_dir / f"epoch_{ts.epoch:03d}.pt")
        _prune(ckpt_dir, cfg.train.keep_last)
    if ts.history and (write_metrics_csv(run_dir / "metrics.csv", ts.history) or not (run_dir / "curves.png").is_file()):
        save_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    if not at_epoch_end or cfg.train.num_samples <= 0 or (run_dir / "samples" / f"epoch_{ts.epoch:03d}.png").is_file():
        return
    if parts is None:  # a finished run without its last grid: load what drawing it needs
        _settle(cfg, torch.device("cpu"))
        p = build(cfg, pretrained=False)
        restore(ck, model=p.model, optimizer=p.optimizer, scaler=p.scaler, ema=p.ema)
        parts = (p, _fixed_samples(p.val_set, cfg.train.num_samples), torch.device("cpu"))
    p, grid, device = parts
    _draw_grid(run_dir, p, grid, device, ts.history[-1])


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 16 << 20)


def _prune(ckpt_dir: Path, keep: int) -> None:
    for old in sorted(ckpt_dir.glob("epoch_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def _log_start(log: Callable[[str], Any], cfg: Config, p: Parts, ts: TrainState, world: Dist, device: torch.device,
               source: Path | None, run_dir: Path) -> None:
    if source is not None:
        where = (f"epoch {ts.epoch + 1}, batch {ts.batch_in_epoch}/{p.steps_per_epoch}" if ts.batch_in_epoch
                 else f"epoch {ts.epoch + 1}")
        log(f"resuming {run_dir} from {source} at {where} (step {ts.step})")
    log(f"training {cfg.model.name} ({sum(t.numel() for t in p.model.parameters()):,} parameters) on {device}"
        f"{f' x{world.world}' if world.world > 1 else ''} in {p.precision}: {len(p.train_set)} train / "
        f"{len(p.val_set)} val samples, {p.steps_per_epoch} steps per epoch, run dir {run_dir}")


# --------------------------------------------------------------------------------------------
# the end of an epoch (rank 0): last.pt first, the commit point; everything after derives from it


def _save_epoch(run_dir: Path, cfg: Config, ts: TrainState, improved: bool, save: Callable[[Path], None]) -> None:
    ckpt_dir = run_dir / "checkpoints"
    save(ckpt_dir / "last.pt")
    if improved:
        save(ckpt_dir / "best.pt")
    if cfg.train.keep_last:
        save(ckpt_dir / f"epoch_{ts.epoch:03d}.pt")
        _prune(ckpt_dir, cfg.train.keep_last)
    write_metrics_csv(run_dir / "metrics.csv", ts.history)
    save_curves(run_dir / "metrics.csv", run_dir / "curves.png")


def _fixed_samples(dataset: Any, n: int) -> dict[str, Any] | None:
    """The same `n` validation samples every epoch, spread evenly over the split."""
    if n <= 0 or len(dataset) == 0:
        return None
    picks = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int)
    return collate([dataset[int(i)] for i in dict.fromkeys(picks.tolist())])


@contextlib.contextmanager
def _tensorboard(run_dir: Path, cfg: Config, ts: TrainState, world: Dist) -> Iterator[Any]:
    """A TensorBoardLog on RUN/tb continuing at `ts.step` (rank 0, log.tensorboard), else None."""
    if not (cfg.log.tensorboard and world.main):
        yield None
        return
    from maskdepth.tblog import TensorBoardLog

    tb = TensorBoardLog(run_dir / "tb", resume_step=ts.step)
    try:
        yield tb
    finally:
        tb.close()


@torch.no_grad()
def _draw_grid(run_dir: Path, p: Parts, batch: dict[str, Any] | None, device: torch.device, row: dict[str, Any]) -> None:
    """samples/epoch_NNN.png: the fixed validation samples through the evaluated model."""
    if batch is None:
        return
    model = p.eval_model
    was_training = model.training
    model.eval()
    batch = to_float(batch)
    bg, fg_bg, _, _ = to_device(batch, device)
    pred_logits, pred_depth = forward(model, bg, fg_bg, p.amp_dtype)
    model.train(was_training)
    title = (f"{run_dir.name}  epoch {row['epoch']}  val IoU {row.get('val_iou', math.nan):.3f}  "
             f"δ1 {row.get('val_delta1', math.nan):.3f}  RMSE {row.get('val_rmse', math.nan):.4f}")
    save_sample_grid(run_dir / "samples" / f"epoch_{row['epoch']:03d}.png", batch["bg"], batch["fg_bg"], batch["mask"],
                     torch.sigmoid(pred_logits.float()).cpu(), batch["depth"], pred_depth.float().cpu(), title=title)


def _summary(row: dict[str, Any], cfg: Config, improved: bool) -> str:
    return (f"epoch {row['epoch']:>3}/{cfg.train.epochs}  train {row['train_loss']:.4f} "
            f"(mask {row['train_mask_loss']:.4f} depth {row['train_depth_loss']:.4f})  "
            f"val {row.get('val_loss', float('nan')):.4f}  iou {row.get('val_iou', float('nan')):.3f}  "
            f"dice {row.get('val_dice', float('nan')):.3f}  rmse {row.get('val_rmse', float('nan')):.4f}  "
            f"d1 {row.get('val_delta1', float('nan')):.3f}  lr {row['lr']:.2e}  {row['seconds']:.0f}s"
            f"{'  *best' if improved else ''}")


# --------------------------------------------------------------------------------------------
# small pieces


def _all_ranks_true(flag: bool, world: Dist, device: torch.device) -> bool:
    """`flag` of rank 0 on every rank (clocks differ a little; all ranks must stop together)."""
    return _share_flag(flag, world, device, any_rank=False)


def _any_rank(flag: bool, world: Dist, device: torch.device) -> bool:
    """Whether `flag` holds on any rank (each rank's Ctrl-C arrives at its own moment)."""
    return _share_flag(flag, world, device, any_rank=True)


def _share_flag(flag: bool, world: Dist, device: torch.device, *, any_rank: bool) -> bool:
    if world.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device if device.type == "cuda" else "cpu")
    if any_rank:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    else:
        dist.broadcast(value, src=0)
    return bool(value.item())


def _all_ranks_finite(loss: torch.Tensor, world: Dist) -> bool:
    finite = torch.isfinite(loss.detach()).float()
    if world.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


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


__all__ = ["CSV_COLUMNS", "RESUMABLE_KEYS", "EpochBatches", "Parts", "TrainingError", "TrainingInterrupted", "build", "fit", "lr_at",
           "train_one_epoch"]
