"""The checkpoint format: written and read here only, by everyone (train, inference, colab).

    state = make_state(ts, config=..., model=..., optimizer=..., scaler=..., ema=..., splits=...)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
    ck = read_checkpoint(path)              # Checkpoint: config, weights, train state, splits
    ck = read_checkpoint(run_dir)           # a run directory: its checkpoints/best.pt (else last.pt)
    ts = restore(ck, model=..., optimizer=..., scaler=..., ema=...)   # resume training
    load_weights(model, ck)                 # inference: one mismatch message for every caller
    load_init_weights(model, path)          # train.init_from: another run's weights, nothing else

A checkpoint is a plain dict of tensors and Python values, so it loads with
`torch.load(weights_only=True)`. Keys (format 2):
    format, version       this format's number and the maskdepth version that wrote it
    config                the run's config as a plain dict
    model                 the weights to evaluate with (the EMA of the weights under train.ema)
    raw_model             the optimised weights training continues from (only under train.ema)
    ema_updates           how many updates the EMA has had (only under train.ema)
    optimizer, scaler     their state_dicts (the learning rate is a pure function of the step)
    epoch                 epochs completed; batch_in_epoch: batches of the next epoch done
    step                  optimiser steps so far
    epoch_sums            the running training-loss sums of the epoch in progress
    rng                   every RNG training touches (see `capture_rng`)
    best_metric, history  the best value of train.best_metric and one metrics.csv row per epoch
    splits                the bg ids of train / val / test
    data                  the data it trained on: {"samples", "sha1"} (`Manifest.fingerprint`); absent
                          in checkpoints written before it was recorded
Older formats are migrated on read (`_MIGRATIONS`): format 1 kept a LambdaLR state and the
epoch sums as a flat dict.

It is written to a temp file in the destination folder, flushed, fsynced and `os.replace`d, so
a kill at any moment (or a full disk) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maskdepth.errors import CheckpointError
from maskdepth.fileio import atomic_open

FORMAT = 2


@dataclass
class TrainState:
    """Where training stands: what a resume restores besides the weights and optimiser.

    epoch: epochs completed (0..train.epochs); batch_in_epoch: batches of epoch `epoch + 1`
    already trained (0 at an epoch boundary); step: optimiser steps so far; best_metric: the
    best value of train.best_metric so far (None before the first epoch); history: one
    metrics.csv row (dict) per completed epoch; sums: running sums of the training losses of
    the epoch in progress (a `MetricAccumulator.state_dict()`); epoch_seconds: time spent in it.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, Any] = field(default_factory=dict)
    epoch_seconds: float = 0.0


@dataclass
class Checkpoint:
    """A checkpoint read from disk: what inference and resume need, without knowing its keys."""

    path: Path
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    train: TrainState
    splits: dict[str, list[Any]] | None
    state: dict[str, Any]  # the whole dict, for `restore`

    @property
    def data(self) -> dict[str, Any] | None:
        """The fingerprint of the data this run trained on (None: an older checkpoint without one)."""
        return self.state.get("data") or None


# --------------------------------------------------------------------------------------------
# write


def make_state(
    ts: TrainState,
    *,
    config: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    ema: Any = None,
    splits: dict[str, list[Any]] | None = None,
    version: str = "",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a training run. `model` is the optimised network (unwrapped from
    DDP / compile); with `ema` (a `ModelEMA`) the saved `model` is its average and the
    optimised weights go to `raw_model`; `data` is the training data's fingerprint. The RNG
    states are captured now."""
    extra = {"raw_model": model.state_dict(), "ema_updates": ema.updates} if ema is not None else {}
    return {
        "format": FORMAT, "version": version, "config": config, **extra,
        "model": (ema.module if ema is not None else model).state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "epoch": ts.epoch, "batch_in_epoch": ts.batch_in_epoch, "step": ts.step,
        "epoch_sums": {"sums": ts.sums, "seconds": ts.epoch_seconds} if ts.batch_in_epoch else {},
        "rng": capture_rng(), "best_metric": ts.best_metric, "history": list(ts.history), "splits": splits,
        **({"data": dict(data)} if data else {}),
    }


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically: the old file stays whole until the new one is complete.

    Raises DiskFullError naming `path` when the disk fills up ("no space left on device writing
    RUN/checkpoints/last.pt (the previous last.pt is kept)")."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


# --------------------------------------------------------------------------------------------
# read


def _migrate_1(state: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: drop the LambdaLR state; epoch sums become accumulator state."""
    state.pop("scheduler", None)
    state.pop("sampler_seed", None)
    old = state.get("epoch_sums") or {}
    if state.get("batch_in_epoch") and old:
        n = int(old.get("images", 0))
        sums = {"sums": {"train_loss": old["loss"], "train_mask_loss": old["mask"], "train_depth_loss": old["depth"]},
                "counts": {"train_loss": n, "train_mask_loss": n, "train_depth_loss": n}}
        for key in ("skipped_batches", "skipped_samples"):
            sums["sums"][key], sums["counts"][key] = float(old.get(key, 0)), 1
        state["epoch_sums"] = {"sums": sums, "seconds": float(old.get("seconds", 0.0))}
    else:
        state["epoch_sums"] = {}
    return state


# format N -> a function that turns a format-N dict into a format-(N+1) one
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _migrate_1}


CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what a run directory stands for, in this order


def resolve_checkpoint(path: str | os.PathLike[str], prefer: tuple[str, ...] = CHECKPOINT_NAMES) -> Path:
    """The checkpoint file `path` stands for: a file (or a missing path) is itself; a run directory
    RUN, or its RUN/checkpoints folder, is the first of RUN/checkpoints/{`prefer`} that exists:
    best.pt, else last.pt (a run stopped in its first epoch has no best.pt yet). Training's
    resume=RUN prefers last.pt, the state to continue from. CheckpointError (one line, naming the
    paths tried) for a folder with none of them."""
    path = Path(path)
    if not path.is_dir():
        return path
    folder = path if path.name == "checkpoints" else path / "checkpoints"
    tried = [folder / name for name in prefer]
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise CheckpointError(f"{path} is a folder, not a checkpoint, and holds neither "
                              f"{' nor '.join(str(p) for p in tried)}; pass a checkpoint file, or a run directory "
                              "that has saved one")
    return found


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict at `path`, migrated to the current format (`mmap`: tensors are mapped
    from the file, not read, for when only the small keys are wanted). A run directory stands for
    its best.pt, else last.pt (`resolve_checkpoint`).

    Raises CheckpointError, one line naming the file: missing, unreadable (truncated), not a
    maskdepth checkpoint (any other file: a text file, config.yaml, metrics.csv, another
    project's weights), or written by a newer maskdepth."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip; a text file (config.yaml, metrics.csv) is not ours
        raise CheckpointError(f"{path} is not a maskdepth checkpoint (not a file written by torch.save; "
                              "pass RUN/checkpoints/last.pt or best.pt)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated: the end of the file is missing)")
    with zipfile.ZipFile(path) as archive:  # torch.jit.save's zip holds constants.pkl; torch.save's never does
        if any(name.endswith("/constants.pkl") for name in archive.namelist()):
            raise CheckpointError(f"{path} is a TorchScript export, not a checkpoint: pass the checkpoint it was "
                                  "exported from (RUN/checkpoints/best.pt or last.pt)")
    try:
        # str(path): torch < 2.3 maps only a str path (mmap=True with a Path raises ValueError there)
        state = torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError,
            IndexError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or not a maskdepth checkpoint): {first}"
        ) from None
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("config"), dict)):
        raise CheckpointError(f"{path} is not a maskdepth checkpoint (no model weights and config inside)")
    fmt = int(state.get("format", 1))
    if fmt > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt}, newer than this maskdepth reads ({FORMAT}); "
                              "upgrade maskdepth (pip install -U maskdepth)")
    while fmt < FORMAT:
        state = _MIGRATIONS[fmt](state)
        fmt += 1
        state["format"] = fmt
    return state


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> Checkpoint:
    """`load_checkpoint` as a `Checkpoint`: the parts callers need, by name."""
    path = resolve_checkpoint(path)
    state = load_checkpoint(path, map_location, mmap=mmap)
    sums = state.get("epoch_sums") or {}
    ts = TrainState(
        epoch=int(state.get("epoch", 0)), batch_in_epoch=int(state.get("batch_in_epoch", 0)),
        step=int(state.get("step", 0)), best_metric=state.get("best_metric"),
        history=list(state.get("history", [])), sums=dict(sums.get("sums", {})),
        epoch_seconds=float(sums.get("seconds", 0.0)),
    )
    return Checkpoint(Path(path), dict(state["config"]), state["model"], ts, state.get("splits"), state)


def _mismatch(ours: dict[str, torch.Tensor], theirs: dict[str, Any]) -> str:
    """'' when `theirs` loads into `ours`, else a one-line summary of what differs."""
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and tuple(ours[k].shape) != tuple(theirs[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape (e.g. {k}: {list(theirs[k].shape)} in the checkpoint, "
                     f"{list(ours[k].shape)} in the model)")
    return "; ".join(parts)


def load_weights(model: nn.Module, ck: Checkpoint, *, raw: bool = False) -> nn.Module:
    """Load the checkpoint's weights into `model` (the optimised ones with `raw`, else the
    evaluated ones); CheckpointError naming the file and what does not fit."""
    weights = ck.state.get("raw_model", ck.weights) if raw else ck.weights
    problem = _mismatch(model.state_dict(), weights)
    if problem:
        model_cfg = dict(ck.config.get("model", {}))
        options = {k: v for k, v in model_cfg.items() if k != "name" and v is not None}
        raise CheckpointError(f"checkpoint {ck.path}: the weights do not fit model.name={model_cfg.get('name')!r} with "
                              f"options {options or 'defaults'} (another architecture?): {problem}")
    model.load_state_dict(weights)
    return model


def load_init_weights(model: nn.Module, path: str | os.PathLike[str],
                      model_config: dict[str, Any] | None = None) -> str:
    """Start a run from another run's weights (train.init_from): the evaluated weights of the
    checkpoint at `path` (a run directory: its best.pt; the EMA under train.ema) go into `model`,
    nothing else (optimiser, schedule, history and RNGs start afresh). The input normalisation
    buffers are weights too, so they come from the checkpoint: the network keeps seeing its inputs
    as it was trained to.
    `model_config` (this run's `model` section) names the differing model keys when the weights
    do not fit. Returns the line to log; CheckpointError (one line) when the file is not a
    checkpoint or its weights do not fit."""
    ck = read_checkpoint(path)
    path = ck.path  # a run directory: the file it stands for
    problem = _mismatch(model.state_dict(), ck.weights)
    if problem:
        theirs, ours = dict(ck.config.get("model", {})), dict(model_config or {})
        keys = [f"model.{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(set(theirs) | set(ours))
                if theirs.get(k) != ours.get(k)]
        differ = (f"model keys that differ: {', '.join(keys) or 'none'}" if model_config is not None
                  else f"its model: {theirs}")
        raise CheckpointError(f"train.init_from={path}: its weights do not fit this model: {problem}; {differ}")
    model.load_state_dict(ck.weights)
    size = ck.config.get("data", {}).get("size")
    return (f"initialised from {path} (epoch {ck.train.epoch}, step {ck.train.step}, trained at {size} px): "
            "weights and input normalisation only; optimiser, schedule and history start afresh")


def restore(ck: Checkpoint, *, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
            ema: Any = None) -> TrainState:
    """Put a training run back where `ck` left it: weights, EMA, optimiser, scaler, RNGs.
    Returns its TrainState. The learning rate is not restored: it is a function of the step."""
    load_weights(model, ck, raw=True)
    if ema is not None:
        load_weights(ema.module, ck)
        ema.updates = int(ck.state.get("ema_updates", 0))
    optimizer.load_state_dict(ck.state["optimizer"])
    if ck.state.get("scaler"):
        scaler.load_state_dict(ck.state["scaler"])
    restore_rng(ck.state["rng"])
    return ck.train


# --------------------------------------------------------------------------------------------
# RNGs and sanity


def capture_rng() -> dict[str, Any]:
    """The state of every RNG training touches: python, numpy, torch CPU and CUDA."""
    mt_name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (mt_name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng` (CUDA states are restored when there are as many devices)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    mt_name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((mt_name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def all_finite(module: nn.Module) -> bool:
    """True when every parameter and buffer of `module` is finite (guards against NaN checkpoints)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return False
    return True


__all__ = ["CHECKPOINT_NAMES", "FORMAT", "Checkpoint", "TrainState", "all_finite", "capture_rng", "load_checkpoint",
           "load_init_weights", "load_weights", "make_state", "read_checkpoint", "resolve_checkpoint", "restore",
           "restore_rng", "save_checkpoint"]
