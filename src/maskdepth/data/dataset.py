"""The training dataset: samples read from zip archives as tensors, splits that hold out backgrounds.

    ds = open_dataset("data.zip", size=64, split="train")
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, collate_fn=collate)

Each item is a dict:
    bg, fg_bg   float32 [3, size, size] in [0, 1]
    mask        float32 [1, size, size] in {0, 1}
    depth       float32 [1, size, size] in [0, 1], > 0 where valid (larger = farther)
    index       int, the item's position in this dataset
    name        str, the fg_bg entry's stem;  bg_id, fg_id  str

Splits (`split_mode="bg"`, the default) hold out whole backgrounds (`maskdepth.data.splits`);
the result is saved in each run (`dataset.splits`).

Bad data: a corrupt or missing entry, an image whose stored size differs from dataset.json's
`size` (or from its background's size when there is no dataset.json), or an out-of-range depth
raises DataError naming the archive and entry. With `skip_bad=True` such an item is None instead,
and `collate` drops it and counts the dropped items of each batch in `batch["skipped"]` (a batch
of bad items only is None); `bad_count` counts them per process (per worker: sum "skipped").

Workers: the dataset pickles without archive bytes (see `maskdepth.data.archive`): with *fork*
workers share the parent's in-RAM zip copy-on-write; with *spawn* / *forkserver* each worker
memory-maps the zip file instead of copying it. Decoded backgrounds are cached per process
(bounded LRU, `bg_cache_size`).

Batches: DataLoader calls `__getitems__`, which decodes the batch by kind (every fg_bg, then
every mask, then every depth map: a decoder that runs many times in a row stays in cache) as
uint8 and writes each sample straight into rows of one [B, ...] buffer per image key, which
`collate` passes on: nothing is stacked again. `ds[i]` is a batch of one. Where the buffers'
memory comes from is `_buffers.py`'s business (`tuned_memory=False` switches its tricks off).

uint8 batches (`uint8=True`, what training, evaluation and inference use): bg and fg_bg as uint8
0..255 and mask as uint8 {0, 1}, depth float32 as always; `to_float(batch)` gives the float batch,
bit for bit, on whatever device the batch is. Images are always decoded as uint8; a float dataset
(the default, `uint8=False`) converts each one into its float32 row as it writes it, with the
arithmetic of `to_float` (no uint8 row is written and read back; no separate float32 decoder).

No augmentation here: training augments whole batches on its device (`maskdepth.data.augment`,
config keys data.flip, data.crop, data.photometric), one path for every run.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from maskdepth.data._buffers import batch_buffer, probe_shared_memory, reuse_freed_batch_memory
from maskdepth.data.archive import describe_duplicates
from maskdepth.data.images import ImageError, decode_depth_raw, decode_mask_binary, decode_rgb
from maskdepth.data.manifest import Manifest, load_manifest
from maskdepth.data.splits import SPLIT_MODES, SPLITS, check_fractions, split_rows
from maskdepth.errors import ConfigError, DataError

FG_BG, BG, MASK, DEPTH = range(4)  # roles, in manifest.ROLES order
IMAGE_KEYS = {"bg": 3, "fg_bg": 3, "mask": 1, "depth": 1}  # item key -> channels
UINT8_KEYS = ("bg", "fg_bg", "mask")  # uint8 with uint8=True (depth stays float32: 16-bit maps)
_DTYPES = {key: torch.uint8 if key in UINT8_KEYS else torch.float32 for key in IMAGE_KEYS}  # as decoded
_UNIT = 1.0 / 255.0  # uint8 -> [0, 1]: x * float32(1/255), in numpy and torch alike
_STATS_SAMPLES = 64

log = logging.getLogger(__name__)


class MaskDepthDataset(Dataset):
    """Samples of one split of a manifest as tensors (see the module docstring for the item).

    Build it with `open_dataset`. Attributes: `size`, `split`, `splits` ({split: bg ids}),
    `info` (dataset.json; mean/std estimated if absent), `bad_count`, `manifest`.
    """

    bg_cache_size = 128  # decoded backgrounds kept per process (uint8: 110 kB each at 192 px)

    def __init__(self, manifest: Manifest, rows: np.ndarray, *, size: int, split: str, splits: dict[str, list[str]],
                 skip_bad: bool = False, uint8: bool = False, tuned_memory: bool = True) -> None:
        self.manifest, self.rows, self.size = manifest, np.asarray(rows, dtype=np.int64), int(size)
        self.split, self.splits = split, splits
        self.skip_bad, self.uint8, self.tuned_memory = bool(skip_bad), bool(uint8), bool(tuned_memory)
        self.bad_count = 0
        self._info = dict(manifest.info)
        stored = self._info.get("size")
        self._stored_size = (int(stored), int(stored)) if isinstance(stored, (int, float)) else None
        self._bg_cache: OrderedDict = OrderedDict()
        if self.tuned_memory:
            probe_shared_memory()

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_bg_cache"] = OrderedDict()  # rebuilt per worker; the archives drop their bytes themselves
        return state

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
        total, squares, pixels = np.zeros(3), np.zeros(3), 0
        for i in picks:
            out = {key: torch.empty(shape, dtype=_DTYPES[key]) for key, shape in self._shapes(1).items()}
            try:
                self._load_batch([int(i)], out, skip_bad=False)
            except DataError:
                continue  # reported when training reaches it
            for key in ("fg_bg", "bg"):
                x = out[key].numpy().reshape(3, -1).astype(np.float64) / 255.0
                total += x.sum(1)
                squares += np.square(x).sum(1)
                pixels += x.shape[1]
        if not pixels:
            raise DataError(f"{self.manifest.source}: none of {len(picks)} samples of split {self.split!r} "
                            "could be read")
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
        (`uint8=False`) writes float32 rows, converted as `to_float` converts."""
        shapes = self._shapes(len(indices))
        dtypes = {key: _DTYPES[key] if self.uint8 else torch.float32 for key in IMAGE_KEYS}
        tuned = self.tuned_memory
        if tuned and get_worker_info() is None:
            reuse_freed_batch_memory(sum(dtypes[key].itemsize * math.prod(shape) for key, shape in shapes.items()))
        # a float dataset writes its images straight as float32: it has no uint8 buffers
        buffers = {key: batch_buffer(shape, dtypes[key], shared=tuned) for key, shape in shapes.items()}
        items = self._load_batch(indices, buffers, skip_bad=self.skip_bad)
        rows = {key: buffer.unbind(0) for key, buffer in buffers.items()}  # views, as buffer[j]
        for j, item in enumerate(items):
            if item is not None:
                item.update({key: rows[key][j] for key in IMAGE_KEYS})
        return items

    def _decode(self, decoder, role: int, row: int):
        data = self.manifest.read(role, row)
        try:
            return decoder(data, self.size)
        except ImageError as exc:
            raise DataError(f"{self.manifest.where(role, row)}: {exc}") from None

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
        self, indices: Sequence[int], out: dict[str, torch.Tensor], *, skip_bad: bool,
    ) -> list[dict[str, Any] | None]:
        """Samples `indices` written into the rows of `out` ([B, C, size, size] per image key:
        uint8 for bg / fg_bg / mask, or float32 for a float dataset, converted from the decoded
        uint8 images as `to_float` converts them, bit for bit; depth float32 always); returns
        their dicts without the images. A bad sample raises DataError, or with `skip_bad` is
        counted in `bad_count` and None (its rows hold garbage). Every image is decoded before
        any row is written, so that those writes do not evict the decoders' code and tables from
        the cache in between."""
        for i in indices:
            if not 0 <= i < len(self.rows):
                raise IndexError(f"index {i} out of range for a dataset of {len(self.rows)} samples")
        rows = [int(self.rows[i]) for i in indices]
        errors: dict[int, DataError] = {}
        decoded = self._decode_by_kind(rows, errors, skip_bad)
        items, ready = self._pair(indices, rows, decoded, errors, skip_bad)
        _write_rows(ready, out)
        return items

    def _decode_by_kind(self, rows: list[int], errors: dict[int, DataError], skip_bad: bool) -> list[list]:
        """[fg_bgs, bgs, masks, depths] of `rows`, each kind decoded for every row in turn (a
        decoder that runs many times in a row keeps its code and tables in cache). A row that
        fails raises DataError, or with `skip_bad` goes into `errors` and is not decoded further."""

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
        return [fg_bgs, bgs, masks, depths]

    def _pair(
        self, indices: Sequence[int], rows: list[int], decoded: list[list], errors: dict[int, DataError], skip_bad: bool
    ) -> tuple[list[dict[str, Any] | None], list[tuple]]:
        """(the items without their images, None for a bad one; (batch row, bg uint8 [3, S, S], fg_bg
        uint8 [3, S, S], mask uint8 {0, 1} [S, S], depth [S, S], depth scale) of each good one)."""
        items: list[dict[str, Any] | None] = []
        ready: list[tuple] = []
        for j, (i, row) in enumerate(zip(indices, rows, strict=True)):
            try:
                if j in errors:
                    raise errors[j]
                (fg_bg, fg_bg_stored), (bg, bg_stored), (mask, mask_stored), (depth, scale, depth_stored) = (
                    kind[j] for kind in decoded)
                self._check_sizes(row, fg_bg_stored, bg_stored, mask_stored, depth_stored)
            except DataError as exc:
                if not skip_bad:
                    raise
                self.bad_count += 1
                log.warning("skipping bad sample %d: %s", i, exc)
                items.append(None)
                continue
            items.append(self._item(int(i), row))
            ready.append((j, bg, fg_bg.transpose(2, 0, 1), mask, depth, scale))
        return items, ready

    def _check_sizes(self, row: int, fg_bg: tuple, bg: tuple, mask: tuple, depth: tuple) -> None:
        """DataError for an image of sample `row` whose stored size (W, H) is not the dataset's."""
        if self._stored_size is not None:
            expected, reference = self._stored_size, "the dataset's size in dataset.json"
            checks = ((BG, bg), (FG_BG, fg_bg), (MASK, mask), (DEPTH, depth))
        else:
            expected, reference = bg, f"its background {self.manifest.where(BG, row)}"
            checks = ((FG_BG, fg_bg), (MASK, mask), (DEPTH, depth))
        for role, stored in checks:
            if stored != expected:
                raise DataError(
                    f"{self.manifest.where(role, row)}: image is {stored[0]}x{stored[1]} px but "
                    f"{reference} is {expected[0]}x{expected[1]}; re-create or remove this sample"
                )

    def _item(self, i: int, row: int) -> dict[str, Any]:
        m = self.manifest
        entry = m.entry_name(FG_BG, row)
        return {"index": i, "name": os.path.splitext(entry.rpartition("/")[2])[0],
                "bg_id": m.bg_ids[m.bg_code[row]], "fg_id": m.fg_ids[m.fg_code[row]]}


def _write_rows(ready: list[tuple], out: dict[str, torch.Tensor]) -> None:
    """Write each decoded sample into its row of the batch buffers: uint8 images copied, or, in
    float32 buffers, converted on the way (one pass: no uint8 copy is written and read back)."""
    bg_out, fg_bg_out, mask_out, depth_out = (out[key].numpy() for key in IMAGE_KEYS)
    scale = 1.0 if bg_out.dtype == np.uint8 else 255.0
    for j, bg, fg_bg, mask, depth, depth_scale in ready:
        to_unit(bg, bg_out[j], scale)
        to_unit(fg_bg, fg_bg_out[j], scale)
        np.copyto(mask_out[j, 0], mask, casting="unsafe")  # 0 / 1
        to_unit(depth, depth_out[j, 0], depth_scale)


def to_unit(values: np.ndarray, out: np.ndarray, scale: float) -> None:
    """out = values / scale as float32, computed as values * float32(1 / scale): a cast (uint8 ->
    float32 is a plain widening copy, the fastest numpy loop) and a multiply in place while the
    row is still in cache, which is quicker than np.divide with a uint8 input (that casts through
    a buffer and divides). Within one float32 ulp of the quotient, and exact at 0 and at `scale`
    (255 * float32(1 / 255) rounds to 1.0), so it agrees with `to_float` bit for bit."""
    np.copyto(out, values, casting="unsafe")
    if scale != 1.0:
        out *= np.float32(1.0 / scale)


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
    path: str | os.PathLike, size: int, split: str = "train", *, split_mode: str = "bg",
    fractions: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0, in_memory: bool = True, skip_bad: bool = False,
    uint8: bool = False, tuned_memory: bool = True,
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
        skip_bad: bad samples become None (dropped by `collate`) instead of raising DataError.
        uint8: uint8 bg, fg_bg and mask (see the module docstring): a third of the bytes, which
            matters because batches from workers travel through fresh shared memory, which costs
            per byte, while a GPU converts them for free (docs/results.md, data pipeline).
        tuned_memory: allocate batches in shared memory inside workers and let glibc keep freed
            batches for reuse (see `maskdepth.data._buffers`); False gives plain `torch.empty`
            buffers and glibc's defaults, the same batches: for measuring what the tuning buys.

    Raises:
        ConfigError: an invalid size, split, split_mode or fractions.
        DataError: the dataset is missing or unreadable, names entries its archives lack (unless
            skip_bad), or has too few backgrounds for a background split.
    """
    fractions = _check_options(size, split, split_mode, fractions)
    manifest = load_manifest(path, in_memory=in_memory)
    _report_missing(manifest, skip_bad)
    _report_duplicates(manifest, skip_bad)
    rows, splits = split_rows(manifest, split, split_mode, fractions, split_seed)
    if len(rows) == 0:
        raise DataError(f"{manifest.source}: split {split!r} has no samples (fractions {list(fractions)}); "
                        "choose other fractions")
    return MaskDepthDataset(manifest, rows, size=int(size), split=split, splits=splits, skip_bad=skip_bad, uint8=uint8,
                            tuned_memory=tuned_memory)


def _check_options(size: Any, split: str, split_mode: str, fractions: Sequence[float]) -> tuple[float, float, float]:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"data.size must be a positive integer, got {size!r}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split_mode not in SPLIT_MODES:
        raise ConfigError(f"data.split_mode must be 'bg' or 'random', got {split_mode!r}")
    return check_fractions(fractions)


def _report_duplicates(manifest: Manifest, skip_bad: bool) -> None:
    """An archive that holds an entry name twice hides the earlier copy: which one a sample
    means cannot be told. DataError (one line), or with skip_bad a warning that says so."""
    lines = [line for line in map(describe_duplicates, manifest.archives) if line is not None]
    if lines and not skip_bad:
        raise DataError(f"{lines[0]} (or set data.skip_bad=true to read the last copy of each)")
    if lines:
        warnings.warn(f"{lines[0]} (data.skip_bad: the last copy of each is read)", stacklevel=3)


def _report_missing(manifest: Manifest, skip_bad: bool) -> None:
    """Entries the manifest names but its archives lack: DataError, or with skip_bad a warning."""
    if not manifest.missing_count:
        return
    listed = "\n  ".join(manifest.missing)
    more = manifest.missing_count - len(manifest.missing)
    tail = f"\n  ... and {more} more" if more else ""
    message = f"{manifest.missing_count} manifest entries are not in their archive:\n  {listed}{tail}"
    if not skip_bad:
        raise DataError(f"{manifest.source}: {message}\n(set data.skip_bad=true to skip these samples)")
    warnings.warn(f"{manifest.source}: {message}\n(skip_bad: these samples are skipped)", stacklevel=3)
