"""Checkpoints: atomic save, safe load, RNG state capture.

A checkpoint is a plain dict (see `maskdepth.train` for the keys it writes: model, optimizer,
scheduler, scaler, epoch, step, batch_in_epoch, rng, best_metric, history, config, version).
It is written to a temp file in the destination folder, flushed, fsynced and `os.replace`d, so
a kill at any moment (or a full disk) leaves the previous checkpoint intact. Everything in it is
tensors and plain Python values, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskdepth.errors import CheckpointError
from maskdepth.fileio import atomic_open


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically: the old file stays whole until the new one is complete."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; CheckpointError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a maskdepth checkpoint): {first}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a maskdepth checkpoint (no model/config inside)")
    return state


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


def all_finite(module: torch.nn.Module) -> bool:
    """True when every parameter and buffer of `module` is finite (guards against NaN checkpoints)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return False
    return True
