"""Batch memory: where the Dataset's batch buffers come from (private to maskdepth.data).

Two tricks, each kept because it pays (the ablations, `python -m benchmarks.data --ablate
shared mallopt`, are in docs/results.md), and each reached through an API that is private or
platform-specific, so each is probed once and switched off with one warning where it fails:

- `batch_buffer`: inside a DataLoader worker a batch is allocated straight in shared memory
  (torch's private `_typed_storage()._new_shared`), so sending it to the main process does not
  copy it, as default_collate's batch would not be copied either.
- `reuse_freed_batch_memory`: in the process that keeps the batches (num_workers=0) each batch
  must be new memory, because the training loop holds on to it; glibc's malloc is told to keep
  freed batches for reuse instead of handing them back to the OS, which removes the page faults
  of a fresh float32 batch (the uint8 batches training uses are small enough for glibc's defaults).

`open_dataset(..., tuned_memory=False)` makes a dataset use neither (plain `torch.empty`
buffers, glibc's defaults), which is how a benchmark measures what they buy.
"""

from __future__ import annotations

import ctypes
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import get_worker_info

_UNPROBED = object()


class Probed:
    """A private or platform-specific API, probed once, at first use. `get()` gives what `probe()`
    returned (None where the platform has no such thing: silently). If the probe raises anything,
    or `fail` is called, one warnings.warn says what is switched off, and `get()` gives None from
    then on: no failure path runs per batch or per image."""

    def __init__(self, what: str, probe: Callable[[], Any], instead: str) -> None:
        self.what, self.probe, self.instead = what, probe, instead
        self.value: Any = _UNPROBED

    def get(self) -> Any:
        if self.value is _UNPROBED:
            try:
                self.value = self.probe()
            except Exception as exc:  # noqa: BLE001 - whatever the mismatch, switch the piece off
                self.fail(f"{type(exc).__name__}: {exc}")
        return self.value

    def fail(self, reason: str) -> None:
        self.value = None
        warnings.warn(f"maskdepth: {self.what} does not work here ({reason}); {self.instead}", RuntimeWarning,
                      stacklevel=3)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_malloc_tuned_for = 0  # batch bytes the current settings were made for


def _probe_mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt` through ctypes, with M_MMAP_THRESHOLD set to glibc's own maximum (what
    every tuning sets); None off Linux and on other C libraries (musl has no such tuning)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) != 1:
        raise OSError("mallopt(M_MMAP_THRESHOLD) returned 0")
    return mallopt


MALLOPT = Probed("glibc's mallopt (through ctypes)", _probe_mallopt, "freed batches go back to the OS as glibc decides")


def reuse_freed_batch_memory(batch_bytes: int) -> None:
    """Let glibc's malloc reuse freed batch buffers instead of returning them to the OS (Linux
    with glibc only; elsewhere nothing). Called by the process that keeps the batches; the
    settings are process-wide and only ever raised. By default glibc serves a buffer of this size
    with fresh mmap pages, or trims the freed top of the heap once about two buffers are free, so
    a batch starts as new pages whose faults cost a good part of decoding it. Here the mmap
    threshold is set to glibc's own dynamic maximum (32 MB) and the trim threshold to four
    batches (64 MB to 1 GB); `archive.release_free_memory` (malloc_trim) still hands free memory
    back on request."""
    global _malloc_tuned_for
    if batch_bytes <= _malloc_tuned_for:
        return
    mallopt = MALLOPT.get()
    if mallopt is None:
        _malloc_tuned_for = sys.maxsize  # nothing to do here, ever
        return
    _malloc_tuned_for = batch_bytes
    if mallopt(_M_TRIM_THRESHOLD, min(max(4 * batch_bytes, 2 * _MMAP_THRESHOLD_MAX), 1 << 30)) != 1:
        MALLOPT.fail("mallopt(M_TRIM_THRESHOLD) returned 0")


def _probe_new_shared() -> Callable[[tuple[int, ...], torch.dtype], torch.Tensor]:
    """`new_shared(shape, dtype)`: an uninitialised tensor allocated straight in shared memory by
    torch's private `_typed_storage()._new_shared`, checked once on a small tensor."""

    def new_shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        empty = torch.empty(0, dtype=dtype)
        storage = empty._typed_storage()._new_shared(math.prod(shape), device="cpu")
        return empty.new(storage).resize_(shape)  # not .view: rows must have this as _base

    probe = new_shared((2, 3), torch.uint8)
    if tuple(probe.shape) != (2, 3) or probe.dtype != torch.uint8 or not probe.is_shared():
        raise RuntimeError(f"gave a {tuple(probe.shape)} {probe.dtype} tensor, shared: {probe.is_shared()}")
    return new_shared


NEW_SHARED = Probed(
    "torch's private _typed_storage()._new_shared", _probe_new_shared,
    "batches made by DataLoader workers are copied into shared memory when sent",
)


def probe_shared_memory() -> None:
    """Probe `NEW_SHARED` now: a dataset calls this when it is built, so that DataLoader workers
    forked later inherit the outcome (one warning in all, not one per worker)."""
    NEW_SHARED.get()


def batch_buffer(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, *, shared: bool = True) -> torch.Tensor:
    """An uninitialised tensor; with `shared`, in shared memory inside a DataLoader worker, so
    that sending it to the main process does not copy it (as default_collate does). Without
    torch's `_new_shared` (probed once, `NEW_SHARED`) DataLoader copies each batch into shared
    memory when it sends it."""
    if shared and get_worker_info() is not None:
        new_shared = NEW_SHARED.get()
        if new_shared is not None:
            return new_shared(shape, dtype)
    return torch.empty(shape, dtype=dtype)
