"""The training dataset: samples read from zip archives as tensors, splits that hold out backgrounds.

    ds = open_dataset("data.zip", size=64, split="train")
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, collate_fn=collate)

Each item is a dict:
    bg, fg_bg   float32 [3, size, size] in [0, 1]
    mask        float32 [1, size, size] in {0, 1}
    depth       float32 [1, size, size] in [0, 1], > 0 where valid (larger = farther)
    index       int, the item's position in this dataset
    name        str, the fg_bg entry's stem;  bg_id, fg_id  str

Splits (`split_mode="bg"`, the default) hold out whole backgrounds: the sorted background ids are
shuffled with `split_seed` and cut by `fractions` (80/10/10), each split with a non-zero fraction
getting at least one; the result does not depend on the manifest's row order and is saved in
each run (`dataset.splits`). `split_mode="random"` splits samples instead, as older solutions
did; it warns, because the same scenes then appear in training and validation.

Bad data: a corrupt or missing entry, an image whose stored size differs from dataset.json's
`size` (or from its background's size when there is no dataset.json), or an out-of-range depth
raises DataError naming the archive and entry. With `skip_bad=True` such an item is None instead,
`collate` drops it and reports the count of dropped items of each batch as `batch["skipped"]`
(sum it in the training loop; a batch where every item was bad is returned as None). The
dataset also counts the bad items it met in `bad_count` (per process: with workers, each worker
has its own copy, so use `batch["skipped"]` for the total).

Workers: the dataset pickles without archive bytes (see `maskdepth.data.archive`): with *fork*
workers share the parent's in-RAM zip copy-on-write; with *spawn* / *forkserver* each worker
memory-maps the zip file instead of copying it. Decoded backgrounds are cached per process
(bounded LRU, `bg_cache_size`).

Batches: DataLoader calls `__getitems__`, which decodes the batch by kind (every fg_bg, then
every mask, then every depth map: ~8% faster than sample by sample) as uint8 and then writes
each sample straight into rows of one [B, ...] buffer per image key (shared memory inside a
worker); `collate` passes those buffers on, so nothing is stacked again and no per-sample float
arrays exist. `ds[i]` runs the same code for a batch of one. In the
main process (num_workers=0) each batch must be new memory, because the training loop keeps it;
glibc's malloc is told to keep freed batches for reuse instead of handing them back to the OS
(`_reuse_freed_batch_memory`), which removes the page faults of a fresh 37 MB float32 batch at
192 px (measured: ~10 ms of kernel time per batch in this VM, a third of the decoding time; the
13 MB uint8 batches do not need it).

uint8 batches (`uint8=True`, what training, evaluation and inference use): bg and fg_bg as uint8
0..255 and mask as uint8 {0, 1}, depth float32 as always; `to_float(batch)` gives the float batch,
bit for bit, on whatever device the batch is. Batches are always decoded this way; a float
dataset (the default, `uint8=False`) converts each uint8 row into float32 buffers right after
writing it, with the arithmetic of `to_float` (there is no separate float32 decoding path).

Augmentation (`augment=True`): per sample one draw from a generator seeded by (augment_seed,
epoch, sample), so it is reproducible and identical with any number of workers: horizontal flip
of all four images, and the same brightness / contrast / saturation change on bg and fg_bg (never
on mask or depth). Call `set_epoch(epoch)` before each epoch; workers copy the dataset when they
start, so with `persistent_workers=True` they would keep the epoch they started with.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import warnings
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from maskdepth.data.images import ImageError, decode_depth_raw, decode_mask_binary, decode_rgb
from maskdepth.data.manifest import Manifest, load_manifest
from maskdepth.errors import ConfigError, DataError

SPLITS = ("train", "val", "test", "all")
SPLIT_MODES = ("bg", "random")
FG_BG, BG, MASK, DEPTH = range(4)  # roles, in manifest.ROLES order
IMAGE_KEYS = {"bg": 3, "fg_bg": 3, "mask": 1, "depth": 1}  # item key -> channels
UINT8_KEYS = ("bg", "fg_bg", "mask")  # uint8 with uint8=True (depth stays float32: 16-bit maps)
_DTYPES = {key: torch.uint8 if key in UINT8_KEYS else torch.float32 for key in IMAGE_KEYS}  # as decoded
_UNIT = 1.0 / 255.0  # uint8 -> [0, 1]: x * float32(1/255), in numpy and torch alike
JITTER = 0.2  # brightness, contrast and saturation factors are drawn from [1 - JITTER, 1 + JITTER]
_STATS_SAMPLES = 64

log = logging.getLogger(__name__)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"data.fractions must be three non-negative numbers (train, val, test) summing to 1, got {list(fractions)}")
    return values  # type: ignore[return-value]


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Sizes of train/val/test for n items: rounded, at least one for a non-zero fraction."""
    val = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
    test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
    while fractions[0] > 0 and n - val - test < 1:  # give train its one back from the larger held-out split
        if val >= test:
            val -= 1
        else:
            test -= 1
    return [n - val - test, val, test]


def split_backgrounds(
    bg_ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, *, source: str = "the dataset"
) -> dict[str, list[str]]:
    """Assign whole backgrounds to train / val / test: {split: sorted bg ids}.

    Raises:
        DataError: fewer backgrounds than splits with a non-zero fraction.
    """
    fractions = _check_fractions(fractions)
    ids = sorted(set(bg_ids))
    needed = sum(f > 0 for f in fractions)
    if len(ids) < needed:
        shown = ", ".join(ids[:5])
        raise DataError(
            f"{source} has {len(ids)} background(s) ({shown}); holding out whole backgrounds for "
            f"train/val/test needs at least {needed}. Make a dataset with more backgrounds "
            "(make-data --num-bg 3 or more), train on split 'all' without validation, or use "
            "split_mode='random' (splits samples; leaks backgrounds into validation)"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n_train, n_val, _ = _split_counts(len(ids), fractions)
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


class MaskDepthDataset(Dataset):
    """Samples of one split of a manifest as tensors (see the module docstring for the item).

    Build it with `open_dataset`. Attributes: `size`, `split`, `splits` ({split: bg ids}),
    `info` (dataset.json; mean/std estimated if absent), `bad_count`, `manifest`.
    """

    bg_cache_size = 128  # decoded backgrounds kept per process (uint8: 110 kB each at 192 px)

    def __init__(
        self,
        manifest: Manifest,
        rows: np.ndarray,
        *,
        size: int,
        split: str,
        splits: dict[str, list[str]],
        augment: bool = False,
        augment_seed: int = 0,
        skip_bad: bool = False,
        uint8: bool = False,
    ) -> None:
        self.manifest = manifest
        self.rows = np.asarray(rows, dtype=np.int64)
        self.size = int(size)
        self.split = split
        self.splits = splits
        self.augment = bool(augment)
        self.augment_seed = int(augment_seed)
        self.skip_bad = bool(skip_bad)
        self.uint8 = bool(uint8)
        self.epoch = 0
        self.bad_count = 0
        self._info = dict(manifest.info)
        stored = self._info.get("size")
        self._stored_size = (int(stored), int(stored)) if isinstance(stored, (int, float)) else None
        self._bg_cache: OrderedDict = OrderedDict()
        _NEW_SHARED.get()  # probed here, so that workers forked later inherit the outcome (one warning)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_bg_cache"] = OrderedDict()  # rebuilt per worker; the archives drop their bytes themselves
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (no effect without augment)."""
        self.epoch = int(epoch)

    @property
    def info(self) -> dict:
        """dataset.json; "mean" / "std" (3 floats, over fg_bg and bg) estimated from up to 64
        evenly spaced samples of this split when dataset.json does not give them (bad samples
        are left out of the estimate)."""
        if "mean" not in self._info or "std" not in self._info:
            self._info.update(self._estimate_mean_std())
        return self._info

    def _estimate_mean_std(self) -> dict:
        picks = np.unique(np.linspace(0, len(self) - 1, min(_STATS_SAMPLES, len(self))).astype(np.int64))
        total = np.zeros(3)
        squares = np.zeros(3)
        pixels = 0
        for i in picks:
            out = {key: torch.empty(shape, dtype=_DTYPES[key]) for key, shape in self._shapes(1).items()}
            try:
                self._load_batch([int(i)], out, augment=False, skip_bad=False)
            except DataError:
                continue  # reported when training reaches it
            for key in ("fg_bg", "bg"):
                x = out[key].numpy().reshape(3, -1).astype(np.float64) / 255.0
                total += x.sum(1)
                squares += np.square(x).sum(1)
                pixels += x.shape[1]
        if not pixels:
            raise DataError(f"{self.manifest.source}: none of {len(picks)} samples of split {self.split!r} could be read")
        mean = total / pixels
        std = np.sqrt(np.maximum(squares / pixels - mean**2, 0))
        return {
            "mean": [round(float(v), 5) for v in mean],
            "std": [round(float(v), 5) for v in std],
            "mean_std_source": f"estimated from {len(picks)} samples of split {self.split!r}",
        }

    def _shapes(self, count: int) -> dict[str, tuple[int, int, int, int]]:
        return {key: (count, channels, self.size, self.size) for key, channels in IMAGE_KEYS.items()}

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return self.__getitems__([i])[0]  # a batch of one: each image is the row of a [1, ...] buffer

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any] | None]:
        """A batch of items, decoded straight into one buffer per image key (what DataLoader calls
        when the dataset has this method): each item's tensors are rows of [B, ...] tensors, which
        `collate` hands on without copying. Inside a DataLoader worker the buffers are in shared
        memory, as default_collate's would be. Decoded as uint8 (depth float32); a float dataset
        (`uint8=False`) also converts each row into float32 buffers, as `to_float` does."""
        shapes = self._shapes(len(indices))
        dtypes = {key: _DTYPES[key] if self.uint8 else torch.float32 for key in IMAGE_KEYS}
        if get_worker_info() is None:
            _reuse_freed_batch_memory(sum(dtypes[key].itemsize * math.prod(shape) for key, shape in shapes.items()))
        # the uint8 buffers that a float dataset converts stay private: only what is sent is shared
        buffers = {key: _batch_buffer(shape, _DTYPES[key], shared=self.uint8 or key not in UINT8_KEYS)
                   for key, shape in shapes.items()}
        floats = None if self.uint8 else {key: _batch_buffer(shapes[key], torch.float32) for key in UINT8_KEYS}
        items = self._load_batch(indices, buffers, augment=self.augment, skip_bad=self.skip_bad, floats=floats)
        buffers.update(floats or {})
        rows = {key: buffer.unbind(0) for key, buffer in buffers.items()}  # views, as buffer[j]
        for j, item in enumerate(items):
            if item is not None:
                item.update({key: rows[key][j] for key in IMAGE_KEYS})
        return items

    def _where(self, role: int, row: int) -> str:
        return self.manifest.where(role, row)

    def _decode(self, decoder, role: int, row: int):
        data = self.manifest.read(role, row)
        try:
            return decoder(data, self.size)
        except ImageError as exc:
            raise DataError(f"{self._where(role, row)}: {exc}") from None

    def _background(self, row: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The cached uint8 [3, size, size] background (read only) and its stored size."""
        key = (int(self.manifest.archive_ids[BG, row]), int(self.manifest.entries[BG, row]))
        cached = self._bg_cache.get(key)
        if cached is not None:
            self._bg_cache.move_to_end(key)
            return cached
        image, stored = self._decode(decode_rgb, BG, row)
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        chw.flags.writeable = False
        cached = self._bg_cache[key] = (chw, stored)
        if len(self._bg_cache) > self.bg_cache_size:
            self._bg_cache.popitem(last=False)
        return cached

    def _load_batch(
        self, indices: Sequence[int], out: dict[str, torch.Tensor], *, augment: bool, skip_bad: bool,
        floats: dict[str, torch.Tensor] | None = None,
    ) -> list[dict[str, Any] | None]:
        """Samples `indices` written into the rows of `out` ([B, C, size, size] per image key:
        uint8 for bg / fg_bg / mask, float32 for depth); returns their dicts without the images.
        `floats` (float32 buffers for bg / fg_bg / mask): each row is also converted into them as
        `to_float` converts it (bit for bit), right after it is written, while it is in cache
        (a separate pass over the batch costs ~13% of a float dataset's throughput at 192 px). A bad sample raises DataError, or with `skip_bad` is counted in
        `bad_count` and None (its rows hold garbage).

        Decodes by kind: every fg_bg of the batch, then every mask, then every depth map (a
        decoder that runs many times in a row keeps its code and tables in cache: 8% less
        decoding time at 192 px than fg_bg, mask, depth per sample), then writes each sample
        into the output rows, after all decoding, so that those writes (1.2 MB of float32 per
        sample at 192 px) do not evict the decoders' caches in between."""
        for i in indices:
            if not 0 <= i < len(self.rows):
                raise IndexError(f"index {i} out of range for a dataset of {len(self.rows)} samples")
        rows = [int(self.rows[i]) for i in indices]
        errors: dict[int, DataError] = {}

        def each(decode) -> list:
            results: list = [None] * len(rows)
            for j, row in enumerate(rows):
                if j not in errors:
                    try:
                        results[j] = decode(row)
                    except DataError as exc:
                        if not skip_bad:
                            raise
                        errors[j] = exc
            return results

        fg_bgs = each(lambda row: self._decode(decode_rgb, FG_BG, row))
        bgs = each(self._background)
        masks = each(lambda row: self._decode(decode_mask_binary, MASK, row))
        depths = each(lambda row: self._decode(decode_depth_raw, DEPTH, row))

        items: list[dict[str, Any] | None] = []
        decoded: list[tuple[int, tuple]] = []
        for j, (i, row) in enumerate(zip(indices, rows)):
            try:
                if j in errors:
                    raise errors[j]
                item, images = self._assemble(int(i), row, fg_bgs[j], bgs[j], masks[j], depths[j], augment)
            except DataError as exc:
                if not skip_bad:
                    raise
                self.bad_count += 1
                log.warning("skipping bad sample %d: %s", i, exc)
                items.append(None)
                continue
            items.append(item)
            decoded.append((j, images))
        bg_out, fg_bg_out, mask_out, depth_out = (out[key].numpy() for key in IMAGE_KEYS)
        float_out = None if floats is None else {key: t.numpy() for key, t in floats.items()}
        for j, (bg, fg_bg, mask, depth, depth_scale, jitter) in decoded:
            if jitter is None:  # 0..255 as decoded
                np.copyto(bg_out[j], bg)
                np.copyto(fg_bg_out[j], fg_bg)
            else:  # jittered in [0, 1], rounded back to 8 bits
                bg_f, fg_bg_f = np.empty(bg.shape, np.float32), np.empty(fg_bg.shape, np.float32)
                _to_unit(bg, bg_f, 255.0)
                _to_unit(fg_bg, fg_bg_f, 255.0)
                _jitter(bg_f, fg_bg_f, *jitter)
                np.copyto(bg_out[j], np.rint(bg_f * 255), casting="unsafe")
                np.copyto(fg_bg_out[j], np.rint(fg_bg_f * 255), casting="unsafe")
            np.copyto(mask_out[j, 0], mask, casting="unsafe")  # uint8 0 / 1
            _to_unit(depth, depth_out[j, 0], depth_scale)
            if float_out is not None:
                _to_unit(bg_out[j], float_out["bg"][j], 255.0)
                _to_unit(fg_bg_out[j], float_out["fg_bg"][j], 255.0)
                np.copyto(float_out["mask"][j], mask_out[j], casting="unsafe")
        return items

    def _assemble(
        self, i: int, row: int, fg_bg: tuple, bg: tuple, mask: tuple, depth: tuple, augment: bool
    ) -> tuple[dict[str, Any], tuple]:
        """Check the decoded images of sample `i` (manifest row `row`) and pair them: (the item
        without its images, (bg uint8 [3, size, size], fg_bg uint8 [3, size, size], mask uint8
        {0, 1} [size, size], depth values [size, size], depth scale, colour jitter factors or
        None)), the images mirrored when augmentation says so. Raises DataError for an image
        whose stored size is not the dataset's."""
        m = self.manifest
        (fg_bg, fg_bg_stored), (bg, bg_stored), (mask, mask_stored) = fg_bg, bg, mask
        depth, depth_scale, depth_stored = depth
        if self._stored_size is not None:
            expected, reference = self._stored_size, "the dataset's size in dataset.json"
            checks = ((BG, bg_stored), (FG_BG, fg_bg_stored), (MASK, mask_stored), (DEPTH, depth_stored))
        else:
            expected, reference = bg_stored, f"its background {self._where(BG, row)}"
            checks = ((FG_BG, fg_bg_stored), (MASK, mask_stored), (DEPTH, depth_stored))
        for role, stored in checks:
            if stored != expected:
                raise DataError(
                    f"{self._where(role, row)}: image is {stored[0]}x{stored[1]} px but "
                    f"{reference} is {expected[0]}x{expected[1]}; re-create or remove this sample"
                )

        fg_bg_chw = fg_bg.transpose(2, 0, 1)
        jitter = None
        if augment:
            rng = np.random.default_rng((self.augment_seed, self.epoch, row))
            flip = rng.random() < 0.5
            brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
            jitter = (float(brightness), float(contrast), float(saturation))
            if flip:  # mirrored views, copied when converted
                bg, fg_bg_chw, mask, depth = bg[..., ::-1], fg_bg_chw[..., ::-1], mask[..., ::-1], depth[..., ::-1]

        entry = m.entry_name(FG_BG, row)
        item = {
            "index": i,
            "name": os.path.splitext(entry.rpartition("/")[2])[0],
            "bg_id": m.bg_ids[m.bg_code[row]],
            "fg_id": m.fg_ids[m.fg_code[row]],
        }
        return item, (bg, fg_bg_chw, mask, depth, depth_scale, jitter)


def _to_unit(values: np.ndarray, out: np.ndarray, scale: float) -> None:
    """out = values / scale as float32, computed as values * float32(1 / scale): a cast (uint8 ->
    float32 is a plain widening copy, the fastest numpy loop) and a multiply in place while the
    row is still in cache. Within one float32 ulp of the quotient, and exact at 0 and at
    `scale` (255 * float32(1 / 255) rounds to 1.0). Measured at 192 px: 30% less time than
    np.divide with a uint8 input, which casts through a buffer and divides."""
    np.copyto(out, values, casting="unsafe")
    if scale != 1.0:
        out *= np.float32(1.0 / scale)


def _gray(x: np.ndarray) -> np.ndarray:
    """[3, H, W] -> [1, H, W] luma (ITU-R 601 weights, as torchvision)."""
    return (np.float32(0.299) * x[0] + np.float32(0.587) * x[1] + np.float32(0.114) * x[2])[None]


def _jitter(bg: np.ndarray, fg_bg: np.ndarray, brightness: float, contrast: float, saturation: float) -> None:
    """The same colour change, in place, on both float32 [3, H, W] images. Contrast pivots on
    the background's mean gray for both, so pixels that bg and fg_bg share stay equal."""
    pivot = np.float32(_gray(bg).mean() * brightness)
    b, c, s = np.float32(brightness), np.float32(contrast), np.float32(saturation)
    for x in (bg, fg_bg):
        x *= b * c
        x += pivot * (1 - c)
        gray = _gray(x)
        x -= gray
        x *= s
        x += gray
        np.clip(x, 0.0, 1.0, out=x)


_UNPROBED = object()


class _Probed:
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
        warnings.warn(f"maskdepth: {self.what} does not work here ({reason}); {self.instead}", RuntimeWarning, stacklevel=3)


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


_MALLOPT = _Probed("glibc's mallopt (through ctypes)", _probe_mallopt, "freed batches go back to the OS as glibc decides")


def _reuse_freed_batch_memory(batch_bytes: int) -> None:
    """Let glibc's malloc reuse freed batch buffers instead of returning them to the OS (Linux
    with glibc only; elsewhere nothing). Called by the process that keeps the batches
    (num_workers=0); the settings are process-wide and only ever raised.

    By default glibc serves a buffer of this size with fresh mmap pages, or trims the freed top
    of the heap once about two buffers are free, so a batch can start as new pages whose page
    faults (kernel time) cost about a third of decoding it at 192 px in this VM. Here the mmap
    threshold is set to glibc's own dynamic maximum (32 MB: larger buffers stay mmapped) and the
    trim threshold to four batches (at least 64 MB, glibc's dynamic maximum; at most 1 GB): the
    process keeps up to that much freed memory for the next batches.
    `archive.release_free_memory` (malloc_trim) still hands free memory back on request.

    Kept because it pays for float32 batches (the default `open_dataset`), measured with
    `python scripts/bench_data.py --samples 200 --repeats 2 --sizes 192 --workers 0 1 2
    --index-samples 400000 --skip-throughput --ablate jpeg-scan png shared mallopt cd-parser`
    (0 workers, fresh processes, 2 shared CPU cores, torch 2.14, glibc): float32 batches 1.31x and
    1.35x the samples per CPU second without it (1,812 / 1,875 vs 1,385 / 1,389); uint8 batches
    (13 MB, what training uses) 0.97x and 1.02x: no gain, glibc's own thresholds suffice there.
    glibc's mallopt is reached through ctypes and probed once (`_MALLOPT`).
    """
    global _malloc_tuned_for
    if batch_bytes <= _malloc_tuned_for:
        return
    mallopt = _MALLOPT.get()
    if mallopt is None:
        _malloc_tuned_for = sys.maxsize  # nothing to do here, ever
        return
    _malloc_tuned_for = batch_bytes
    if mallopt(_M_TRIM_THRESHOLD, min(max(4 * batch_bytes, 2 * _MMAP_THRESHOLD_MAX), 1 << 30)) != 1:
        _MALLOPT.fail("mallopt(M_TRIM_THRESHOLD) returned 0")


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


_NEW_SHARED = _Probed(
    "torch's private _typed_storage()._new_shared", _probe_new_shared,
    "batches made by DataLoader workers are copied into shared memory when sent",
)


def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, *, shared: bool = True) -> torch.Tensor:
    """An uninitialised tensor; with `shared`, in shared memory inside a DataLoader worker, so
    that sending it to the main process does not copy it (as default_collate does).

    Allocated by torch's private `_typed_storage()._new_shared` (probed once, `_NEW_SHARED`;
    without it DataLoader copies each batch into shared memory when it sends it). Kept because
    it pays: `python scripts/bench_data.py --samples 200 --repeats 2 --sizes 192 --workers 0 1 2
    --index-samples 400000 --skip-throughput --ablate shared` (uint8 loader, batch 32): with one
    worker 1.11x, 1.19x and 1.10x the samples per second without it in three runs (e.g. 1,079 vs
    980); with two workers 0.70x to 1.85x, which on the 2 shared CPU cores measured is noise.
    """
    if shared and get_worker_info() is not None:
        new_shared = _NEW_SHARED.get()
        if new_shared is not None:
            return new_shared(shape, dtype)
    return torch.empty(shape, dtype=dtype)


def _rows_of_one_buffer(items: list[dict[str, Any]], key: str) -> torch.Tensor | None:
    """The buffer whose rows 0..B-1 are exactly items[*][key], or None."""
    base = items[0][key]._base
    if base is None or base.shape[0] != len(items):
        return None
    for j, item in enumerate(items):
        t = item[key]
        if t._base is not base or t.storage_offset() != base.storage_offset() + j * base.stride(0):
            return None
    return base


def to_float(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch (or item) of a `uint8=True` dataset with float32 images, on whatever device its
    tensors are: bg, fg_bg uint8 0..255 -> x * float32(1/255), the values a float dataset gives
    (bit for bit); mask uint8 {0, 1} -> float32 {0, 1}. Float tensors and other keys are passed
    on as they are; returns a new dict."""
    out = dict(batch)
    for key in UINT8_KEYS:
        x = out.get(key)
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
            x = x.to(torch.float32)
            out[key] = x.mul_(_UNIT) if key != "mask" else x
    return out


def collate(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Default-collate the items that are not None (bad samples under skip_bad).

    Items that `__getitems__` wrote into one batch buffer are returned as that buffer (no copy).
    Returns the batch with `batch["skipped"]` = how many items were dropped (an int), or None
    when every item was bad.
    """
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    buffers = {key: _rows_of_one_buffer(kept, key) for key in IMAGE_KEYS}
    if all(b is not None for b in buffers.values()):
        rest = default_collate([{k: v for k, v in item.items() if k not in IMAGE_KEYS} for item in kept])
        out = {**buffers, **rest}
    else:
        out = default_collate(kept)
    out["skipped"] = len(batch) - len(kept)
    return out


def open_dataset(
    path: str | os.PathLike,
    size: int,
    split: str = "train",
    *,
    split_mode: str = "bg",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    in_memory: bool = True,
    augment: bool = False,
    augment_seed: int = 0,
    skip_bad: bool = False,
    uint8: bool = False,
) -> MaskDepthDataset:
    """One split of a dataset.

    Args:
        path: a zip holding manifest.csv (what make-data writes), or a manifest CSV naming its
            archives (what `maskdepth index` writes).
        size: output side in pixels; images are resized to size x size.
        split: "train", "val", "test" or "all".
        split_mode: "bg" (hold out whole backgrounds) or "random" (per sample; warns: it leaks
            backgrounds into validation).
        fractions: train / val / test shares (of backgrounds, or of samples in random mode).
        split_seed: seed of the split; the same seed gives the same split.
        in_memory: read each zip whole into RAM (True) or memory-map it (False).
        augment, augment_seed: paired random flip and colour jitter (see module docstring).
        skip_bad: bad samples become None (dropped by `collate`) instead of raising DataError.
        uint8: bg and fg_bg as uint8 0..255 and mask as uint8 {0, 1} (depth stays float32);
            `to_float` turns a batch into what the default gives, bit for bit, on any device
            (augmented colours are rounded to 8 bits either way). A third of the bytes per sample: what the training loop uses, because
            batches from DataLoader workers travel through fresh shared memory, which costs per
            byte (~1 ms per MB in our VM: at 192 px one worker delivers 1,150 uint8 samples/s
            instead of 615 float ones), and a GPU converts them for free.

    Raises:
        ConfigError: an invalid size, split, split_mode or fractions.
        DataError: the dataset is missing or unreadable, names entries its archives lack (unless
            skip_bad), or has too few backgrounds for a background split.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"data.size must be a positive integer, got {size!r}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split_mode not in SPLIT_MODES:
        raise ConfigError(f"data.split_mode must be 'bg' or 'random', got {split_mode!r}")
    fractions = _check_fractions(fractions)
    manifest = load_manifest(path, in_memory=in_memory)
    if manifest.missing_count:
        listed = "\n  ".join(manifest.missing)
        more = manifest.missing_count - len(manifest.missing)
        tail = f"\n  ... and {more} more" if more else ""
        message = f"{manifest.missing_count} manifest entries are not in their archive:\n  {listed}{tail}"
        if not skip_bad:
            raise DataError(f"{manifest.source}: {message}\n(set data.skip_bad=true to skip these samples)")
        warnings.warn(f"{manifest.source}: {message}\n(skip_bad: these samples are skipped)", stacklevel=2)

    n = len(manifest)
    bg_names = np.asarray(manifest.bg_ids, dtype=object)
    if split_mode == "bg":
        try:
            splits = split_backgrounds(manifest.bg_ids, fractions, split_seed, source=manifest.source)
        except DataError:
            if split != "all":
                raise
            splits = {"train": sorted(manifest.bg_ids), "val": [], "test": []}
        if split == "all":
            rows = np.arange(n)
        else:
            chosen = set(splits[split])
            in_split = np.array([bg in chosen for bg in manifest.bg_ids], dtype=bool)
            rows = np.flatnonzero(in_split[manifest.bg_code])
    else:
        warnings.warn(
            "split_mode='random' splits samples, not backgrounds: validation and test scenes are also "
            "in training, which inflates their scores; use split_mode='bg' for honest figures",
            UserWarning,
            stacklevel=2,
        )
        order = np.random.default_rng(split_seed).permutation(n)
        n_train, n_val, _ = _split_counts(n, fractions)
        parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        splits = {name: sorted(set(bg_names[manifest.bg_code[p]])) for name, p in parts.items()}
        rows = np.arange(n) if split == "all" else np.sort(parts[split])
    if len(rows) == 0:
        raise DataError(f"{manifest.source}: split {split!r} has no samples (fractions {list(fractions)}); choose other fractions")
    return MaskDepthDataset(
        manifest,
        rows,
        size=int(size),
        split=split,
        splits=splits,
        augment=augment,
        augment_seed=augment_seed,
        skip_bad=skip_bad,
        uint8=uint8,
    )
