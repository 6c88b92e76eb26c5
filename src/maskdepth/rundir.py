"""The run directory's lifecycle: which checkpoint a run continues from, one writer at a time,
nothing stale after a kill, and the files an epoch's end writes, in the order that makes a kill
harmless. The training loop calls these; this is the one place that decides what RUN/ holds, as
timm keeps its CheckpointSaver apart from its loop.

    RUN/config.yaml, split.json        what the run does and on which samples (`prepare_run_dir`)
    RUN/checkpoints/last.pt            the commit point: written first at an epoch's end
    RUN/checkpoints/best.pt            by train.best_metric; epoch_NNN.pt: the last train.keep_last
    RUN/metrics.csv, curves.png        one row per epoch, and its plot
    RUN/samples/epoch_NNN.png          the fixed validation samples (`evaluate.draw_epoch_grid`, called by the loop)
    RUN/samples/worst_NNN.png          the epoch's worst validation samples (`report.EpochGrids`, train.worst_samples)
    RUN/tb/                            optional TensorBoard logs (`tblog`)

Every file after last.pt is derived again from last.pt when a run starts (`repair_run_dir`), so a
kill between two writes loses nothing. A resumed run may change only `RESUMABLE_KEYS` (more
epochs, another lr, where the data lives, ...); any other changed key is refused, naming it, so
RUN/config.yaml always says what the run does.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from maskdepth.checkpoint import Checkpoint, TrainState, read_checkpoint, resolve_checkpoint
from maskdepth.config import Config, config_from_dict, diff_configs, save_config
from maskdepth.data.manifest import load_manifest
from maskdepth.errors import CheckpointError, ConfigError, DataError, MaskDepthError, TrainingError
from maskdepth.fileio import atomic_open, write_atomic
from maskdepth.history import best_epoch, write_metrics_csv
from maskdepth.runlock import RunLock
from maskdepth.runtime import Dist, all_ranks_true
from maskdepth.viz import save_curves

# Keys a resumed run may change; any other difference from the checkpoint's config is refused.
RESUMABLE_KEYS = (
    "run_dir", "resume", "device", "data.path", "data.num_workers", "data.in_memory", "data.skip_bad",
    "train.epochs", "train.lr", "train.max_minutes", "train.checkpoint_minutes", "train.checkpoint_every",
    "train.keep_last", "train.num_samples", "train.worst_samples", "train.on_nonfinite", "train.grad_clip", "train.amp",
    "train.compile", "train.channels_last", "train.deterministic", "log.tensorboard", "log.every",
)
Log = Callable[[str], Any]


def last_checkpoint(run_dir: Path) -> Path:
    """RUN/checkpoints/last.pt: what a rerun continues from."""
    return run_dir / "checkpoints" / "last.pt"


def grid_path(run_dir: Path, epoch: int) -> Path:
    """RUN/samples/epoch_NNN.png, the sample grid of `epoch`."""
    return run_dir / "samples" / f"epoch_{epoch:03d}.png"


# --------------------------------------------------------------------------------------------
# starting: which checkpoint, one writer, nothing stale


def resume_source(cfg: Config, run_dir: Path, log: Log) -> Path | None:
    """Which checkpoint to continue from, per `resume` (auto | never | PATH); None: a fresh run."""
    last = last_checkpoint(run_dir)
    if cfg.resume == "auto":
        return last if last.is_file() else None
    if cfg.resume == "never":
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"run_dir {run_dir} is not empty and resume=never; choose another run_dir "
                              "or use resume=auto")
        return None
    source = resolve_checkpoint(cfg.resume, prefer=("last.pt", "best.pt"))  # a run directory: the state to continue
    if not source.is_file():
        raise ConfigError(f"resume={cfg.resume}: no such checkpoint file (use auto, never, a path to a .pt file or "
                          "a run directory)")
    if last.is_file() and last.resolve() != source.resolve():
        # The run already has progress of its own: continuing it loses nothing; restarting would.
        log(f"note: {run_dir} already has {last}; continuing from it rather than from {source}")
        return last
    return source


@contextlib.contextmanager
def run_lock(run_dir: Path, world: Dist, device: torch.device, log: Log | None = None) -> Iterator[None]:
    """Hold RUN/.lock (rank 0) for the block; every rank fails together when it is taken. `log`
    gets the note of a lock taken over from a machine that stopped beating (or whose clock is ahead)."""
    lock, error = None, None
    if world.main:
        try:
            lock = RunLock(run_dir, log=log).acquire()
        except MaskDepthError as exc:
            error = exc
    if not all_ranks_true(error is None, world, device):
        raise error or TrainingError(f"rank 0 could not lock {run_dir}; see its message")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def read_resumable(source: Path | None, cfg: Config, log: Log = print) -> Checkpoint | None:
    """The checkpoint at `source` (None: none), after checking that `cfg` changes only
    RESUMABLE_KEYS of the config it was trained with, and that data.path is the data it trained on
    (`check_same_data`; a checkpoint given as resume=PATH from elsewhere gets a note instead)."""
    if source is None:
        return None
    ck = read_checkpoint(source)
    own = source.resolve() == last_checkpoint(Path(cfg.run_dir)).resolve()
    check_same_data(ck, cfg.data.path, f"run {cfg.run_dir}" if own else f"checkpoint {source}", log, refuse=own)
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


TRAIN_ADVICE = "train this data under a new run_dir (in the notebook a new RUN_NAME), or set data.path back"


def check_same_data(ck: Checkpoint, data_path: str | Path, what: str, log: Log, *, refuse: bool = True,
                    advice: str = TRAIN_ADVICE) -> str | None:
    """Whether `data_path` holds the data `ck` trained on (its `Manifest.fingerprint`, which a copy
    of the same archive at another path shares). Other data: DataError naming `what` (e.g. "run
    RUN"), both datasets and what to do, or with `refuse=False` the line "trained on A, evaluated
    on B", logged and returned. A checkpoint that records no fingerprint (older ones) gets a note;
    data that is not there is left to whatever reads it next (a finished run needs none)."""
    trained = ck.config.get("data", {}).get("path", "?")
    if not data_path or not Path(data_path).exists():
        return None
    if ck.data is None:
        log(f"note: {ck.path} records no data fingerprint (written before maskdepth recorded one); "
            f"not checking that {data_path} is the data it trained on ({trained})")
        return None
    given = load_manifest(data_path, in_memory=False).fingerprint
    if given == ck.data:
        return None

    def describe(path: Any, fp: dict[str, Any]) -> str:
        return f"{path} ({fp.get('samples')} samples, fingerprint {fp.get('sha1')})"

    if refuse:
        raise DataError(f"{what} was trained on {describe(trained, ck.data)}, but data.path is other data: "
                        f"{describe(data_path, given)}; the checkpoint is left as it is: {advice}")
    line = f"note: {ck.path} was trained on {describe(trained, ck.data)}, evaluated on {describe(data_path, given)}"
    log(line)
    return line


def training_clock(history: list[dict[str, Any]], current: float) -> float:
    """The run's training clock in seconds (what train.max_minutes budgets): every finished
    epoch's seconds, as metrics.csv sums them, plus `current`, the epoch in progress."""
    return sum(float(row.get("seconds") or 0.0) for row in history) + current


def run_finished(ts: TrainState, cfg: Config, run_dir: Path, log: Log) -> bool:
    """Whether the run has nothing left to do (all epochs, or its time budget, spent); says so."""
    if ts.epoch >= cfg.train.epochs:
        log(f"{run_dir}: already trained {ts.epoch}/{cfg.train.epochs} epochs; raise train.epochs to train longer")
        return True
    budget_s = 60.0 * cfg.train.max_minutes
    if budget_s and not ts.batch_in_epoch and training_clock(ts.history, 0.0) >= budget_s:
        log(f"{run_dir}: already trained for its train.max_minutes={cfg.train.max_minutes:g} "
            f"({training_clock(ts.history, 0.0) / 60:.1f} min); raise train.max_minutes to train longer")
        return True
    return False


def prepare_run_dir(run_dir: Path, cfg: Config, splits: dict[str, Any]) -> None:
    """Folders, config.yaml, split.json; temp files that kills left behind are removed (we hold
    the lock, so no other writer's temp file can be among them)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_atomic(run_dir / "split.json", json.dumps(splits, indent=2) + "\n")


def repair_run_dir(run_dir: Path, ck: Checkpoint, cfg: Config, draw_grid: Callable[[dict[str, Any]], Any]) -> None:
    """Derive again from the checkpoint whatever a kill between two writes left missing or stale:
    best.pt and epoch_NNN.pt (when that epoch is the checkpoint's), metrics.csv, curves.png and
    the last sample grid (`draw_grid(row)` with the last metrics.csv row, called only when it is missing)."""
    ts, ckpt_dir = ck.train, run_dir / "checkpoints"
    at_epoch_end = ts.epoch > 0 and ts.batch_in_epoch == 0
    if at_epoch_end and best_epoch(ts.history, cfg.train.best_metric) == ts.epoch:
        best = ckpt_dir / "best.pt"
        if not best.is_file() or read_checkpoint(best, mmap=True).train.epoch != ts.epoch:
            _copy(ck.path, best)
    if at_epoch_end and cfg.train.keep_last and not (ckpt_dir / f"epoch_{ts.epoch:03d}.pt").is_file():
        _copy(ck.path, ckpt_dir / f"epoch_{ts.epoch:03d}.pt")
        _prune(ckpt_dir, cfg.train.keep_last)
    csv_changed = bool(ts.history) and write_metrics_csv(run_dir / "metrics.csv", ts.history)
    if ts.history and (csv_changed or not (run_dir / "curves.png").is_file()):
        save_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    if at_epoch_end and cfg.train.num_samples > 0 and not grid_path(run_dir, ts.epoch).is_file():
        draw_grid(ts.history[-1])


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 16 << 20)


def _prune(ckpt_dir: Path, keep: int) -> None:
    for old in sorted(ckpt_dir.glob("epoch_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# the end of an epoch (rank 0): last.pt first, the commit point; everything after derives from it


def save_epoch(run_dir: Path, cfg: Config, ts: TrainState, improved: bool, save: Callable[[Path], None]) -> None:
    """last.pt, then best.pt (when `improved`), epoch_NNN.pt (pruned to train.keep_last), metrics.csv
    and curves.png; `save(path)` writes the run's state now as a checkpoint at `path`."""
    ckpt_dir = run_dir / "checkpoints"
    save(ckpt_dir / "last.pt")
    if improved:
        save(ckpt_dir / "best.pt")
    if cfg.train.keep_last:
        save(ckpt_dir / f"epoch_{ts.epoch:03d}.pt")
        _prune(ckpt_dir, cfg.train.keep_last)
    write_metrics_csv(run_dir / "metrics.csv", ts.history)
    save_curves(run_dir / "metrics.csv", run_dir / "curves.png")


__all__ = ["RESUMABLE_KEYS", "check_same_data", "grid_path", "last_checkpoint", "prepare_run_dir", "read_resumable",
           "repair_run_dir", "resume_source", "run_finished", "run_lock", "save_epoch", "training_clock"]
