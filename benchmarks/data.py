"""python -m benchmarks.data [--data DATA.zip] [--samples 400] [--sizes 64 192] [--workers 0 1 2] [--repeats 2]
       [--index-samples 40000 400000] [--ablate PIECE ...] [--out docs/results/data.json]

Throughput of the data pipeline (samples/s), side by side with
  limit   the decode limit: one process decoding the same fg_bg, mask and depth bytes at full
          resolution in tight loops (every fg_bg, then every mask, then every depth map), nothing
          else, each image kind by the faster of PIL (Image.open + load) and torchvision.io's
          decode_jpeg / decode_png (on the bytes, no copy);
  strict  the same, also counting maskdepth's own decoder of each kind (`maskdepth.data.images`'
          decode_rgb / decode_mask_binary / decode_depth_raw), whose PNG reader reads make-data's
          1-bit masks faster than either library;
  ours    open_dataset(..., in_memory=True) through a DataLoader (batch 32, collate) with 0, 1, 2
          workers: zip reads (CRC checked), decoding (JPEGs by torchvision.io.decode_jpeg,
          make-data's PNG masks by maskdepth's reader, the rest by PIL), resizing, checks, cached
          backgrounds, float32 [0, 1] tensors (each decoded uint8 image converted as it is
          written into its row);
  naive   the files extracted to disk, every sample opening its four images with PIL and applying
          torchvision transforms (Resize, ToTensor), same DataLoader settings;
  ours uint8  open_dataset(uint8=True): bg, fg_bg and mask as uint8 (what training uses; the
          GPU makes them floats), which matters with workers (below);
at 64 and 192 px output. The one-process cells (the limits, dataset only, 0 workers) are timed in
interleaved rounds after a warm-up round, each keeping its best of `--repeats`, so that slow
drifts of a shared machine touch them alike; cells with workers afterwards, one by one. Torch
runs one intra-op thread per process. The one-process table counts samples per CPU second of the
process, which other load on the machine changes less than wall-clock time.

Then the cost of indexing a large archive: for 40k and 400k samples (3 entries per sample plus
100 backgrounds and a manifest.csv), a zip of empty STORED entries with the original's naming is
written directly (no image data, so it takes seconds) and, in a fresh process each, the time to
index its central directory and to resolve the manifest (what `open_dataset` does), the bytes
held by the index and the manifest arrays, and the process's peak RSS.

`bench_epoch_workers` (called by benchmarks/report.py, no command-line flag) times a MaskDepthNet
training epoch of a small archive against the number of DataLoader workers.

`--ablate PIECE ...` measures, in the same run, what one of maskdepth's own pieces buys over its
public alternative, through the package's public switches only (see ABLATIONS): the uint8 loader
(what training uses) at the last of `--sizes` with the piece and without it; cd-parser compares
the index of the `--index-samples` zips with zipfile.ZipFile's (time and memory, fresh processes).
A piece without a public switch is left out of the run with one line saying so (NO_SWITCH).

Without --data, a 192 px dataset of `--samples` samples is generated with make_dataset (~10 s).
Prints tables and writes the rows to `--out` (docs/results/data.json: `throughput`, `index`,
`ablations`).

Where the time goes (192 px, one process, perf + py-spy): libjpeg ~45% (the limit itself),
float32 conversion ~20% (1.2 MB written per sample; the fg_bg decoded by torchvision is HWC in
memory, so its conversion is also a transpose), Python ~15% spread over small calls, zlib and
CRCs ~3%. Decoding by kind per batch instead of sample by sample saves ~8% (a decoder that runs
many times in a row stays in cache), which is also why the limit loops by kind. DataLoader
workers hand each batch over in fresh shared memory, whose page faults cost ~1 ms per MB in this
VM: at 192 px a float32 batch of 32 (37 MB) costs a worker ~33 ms on top of decoding it, which
is why `uint8=True` (13 MB) roughly doubles what a worker delivers. A fresh 37 MB batch also
costs ~10 ms of page faults in the main process: there the dataset has glibc keep freed batches
for reuse (`open_dataset(tuned_memory=True)`, the default). That setting is process-wide, so
`naive`, timed in the same process, benefits from it too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, meta, module_env, rounded, write_results


class Clock:
    """Wall-clock and CPU seconds of this process (CPU time is what a shared machine cannot steal)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class Cell:
    """One measured pipeline: `run()` handles `count` samples; keeps the best rates seen."""

    def __init__(self, run, count: int) -> None:
        self.run, self.count = run, count
        self.wall = self.cpu = 0.0

    def measure(self) -> None:
        with Clock() as clock:
            self.run()
        self.wall = max(self.wall, self.count / clock.wall)
        self.cpu = max(self.cpu, self.count / max(clock.cpu, 1e-9))


def _rounds(cells: list[Cell], repeats: int) -> None:
    """One warm-up call of every cell, then `repeats` rounds that call every cell once in turn:
    slow drifts of a shared machine then touch all cells alike, and each keeps its best round."""
    for cell in cells:
        cell.run()
    for _ in range(repeats):
        for cell in cells:
            cell.measure()


KINDS = ("fg_bg", "mask", "depth")
# what the figures depend on (tests/test_figures.py: a newer commit of one of them marks them stale)
SOURCES = ("benchmarks/data.py", "src/maskdepth/data/archive.py", "src/maskdepth/data/manifest.py",
           "src/maskdepth/data/images.py", "src/maskdepth/data/dataset.py", "src/maskdepth/data/_buffers.py")


def _decoders() -> dict[str, dict[str, Any]]:
    """kind -> name -> decode(bytes) at full resolution, the candidates of the decode limits:
    PIL, torchvision.io, and maskdepth's own public decoder of that kind."""
    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg, decode_png

    from maskdepth.data.images import decode_depth_raw, decode_mask_binary, decode_rgb

    def pil(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as img:
            img.load()

    def tv(data: bytes) -> None:
        # torchvision.io's public decoders, as the dataset calls decode_jpeg
        decode = decode_jpeg if data[:2] == b"\xff\xd8" else decode_png
        decode(torch.frombuffer(data, dtype=torch.uint8))

    own = {"fg_bg": lambda data: decode_rgb(data, None), "mask": lambda data: decode_mask_binary(data, None),
           "depth": lambda data: decode_depth_raw(data, None)}
    return {kind: {"PIL": pil, "torchvision": tv, "maskdepth": own[kind]} for kind in KINDS}


def _rates(blobs: list[bytes], candidates: dict[str, Any], repeats: int) -> dict[str, float]:
    """Samples per CPU second of each candidate decoder that decodes every blob."""
    rates = {}
    for name, decode in candidates.items():
        try:
            decode(blobs[0])
        except Exception:  # noqa: BLE001 - e.g. torchvision on an image format it does not read
            continue
        cell = Cell(lambda decode=decode: [decode(b) for b in blobs], len(blobs))
        _rounds([cell], repeats)
        rates[name] = cell.cpu
    return rates


def _limit_cells(samples: list[tuple[bytes, bytes, bytes]], repeats: int) -> tuple[Cell, Cell, Cell, str]:
    """The decode limits: one process decoding the samples' fg_bg, mask and depth bytes at full
    resolution in tight loops (every fg_bg, then every mask, then every depth map), nothing else.
    `library`: per image kind the faster of PIL and torchvision (the issue's limit); `strict`:
    also counting maskdepth's own decoder of that kind (faster than both on make-data's masks);
    `pil`: PIL alone. Returns the three cells and a line saying which decoder each limit uses."""
    import warnings

    decoders = _decoders()
    warnings.simplefilter("ignore")  # torch.frombuffer: the bytes are not writable (only read)
    library, strict, notes = [], [], []
    for kind, blobs in zip(KINDS, zip(*samples, strict=True), strict=True):
        rates = _rates(list(blobs), decoders[kind], repeats)
        best_library = max(("PIL", "torchvision"), key=lambda name: rates.get(name, 0.0))
        best_any = max(rates, key=rates.__getitem__)
        library.append(decoders[kind][best_library])
        strict.append(decoders[kind][best_any])
        notes.append(f"{kind}: " + ", ".join(f"{k} {v:.0f}/CPU-s" for k, v in rates.items()))

    kinds = list(zip(*samples, strict=True))

    def loop(*chosen) -> None:
        # by kind, as the dataset decodes a batch: a decoder that runs many times in a row is
        # faster than fg_bg, mask, depth in turn per sample (~8% at 192 px)
        for decode, blobs in zip(chosen, kinds, strict=True):
            for blob in blobs:
                decode(blob)

    pil = [decoders[kind]["PIL"] for kind in KINDS]
    cells = tuple(Cell(lambda ds=ds: loop(*ds), len(samples)) for ds in (library, strict, pil))
    return (*cells, "; ".join(notes))


def _loader_cell(dataset, workers: int) -> tuple[Cell, Any]:
    from torch.utils.data import DataLoader

    from maskdepth.data import collate

    loader = DataLoader(dataset, batch_size=32, shuffle=False, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)

    def run() -> None:
        for _ in loader:
            pass

    return Cell(run, len(dataset)), loader


def _getitem_cell(dataset) -> Cell:
    def run() -> None:
        for i in range(len(dataset)):
            dataset[i]

    return Cell(run, len(dataset))


class NaiveDataset:
    """What older solutions did: files on disk, PIL opens, torchvision transforms."""

    def __init__(self, root: Path, rows: list[tuple[str, str, str, str]], size: int) -> None:
        from torchvision import transforms as T

        self.root, self.rows = root, rows
        self.rgb = T.Compose([T.Resize((size, size)), T.ToTensor()])
        self.nearest = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.NEAREST), T.ToTensor()])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        fg_bg, bg, mask, depth = (self.root / name for name in self.rows[i])
        return {
            "bg": self.rgb(Image.open(bg).convert("RGB")),
            "fg_bg": self.rgb(Image.open(fg_bg).convert("RGB")),
            "mask": (self.nearest(Image.open(mask).convert("L")) > 0.5).float(),
            "depth": self.rgb(Image.open(depth).convert("L")),
        }


def bench_throughput(data: Path, sizes: list[int], workers: list[int], repeats: int, tmp: Path) -> list[dict]:
    """Rows {size, workers, limit, limit_strict, limit_pil, ours, naive, dataset_only (per wall
    second) and the same with _cpu (per CPU second of this process)}. The one-process cells (the
    limits, dataset only, 0 workers) are measured in interleaved rounds (`_rounds`); cells with
    workers, whose CPU time is spent elsewhere, one by one afterwards."""
    import torch

    from maskdepth.data import open_dataset

    torch.set_num_threads(1)
    probe = open_dataset(data, size=sizes[0], split="all")
    m = probe.manifest
    rows = [tuple(m.entry_name(k, int(r)) for k in range(4)) for r in probe.rows]
    samples = [(m.read(0, int(r)), m.read(2, int(r)), m.read(3, int(r))) for r in probe.rows]
    limit, strict, pil, chosen = _limit_cells(samples, repeats)
    print(f"  decoders alone: {chosen}", flush=True)
    extracted = tmp / "extracted"
    with zipfile.ZipFile(data) as z:
        z.extractall(extracted)
    datasets = {size: (open_dataset(data, size=size, split="all", in_memory=True), NaiveDataset(extracted, rows, size),
                       open_dataset(data, size=size, split="all", in_memory=True, uint8=True))
                for size in sizes}
    one = {size: {"dataset_only": _getitem_cell(ours_ds),
                  "ours": _loader_cell(ours_ds, 0)[0],
                  "naive": _loader_cell(naive_ds, 0)[0],
                  "ours_uint8": _loader_cell(uint8_ds, 0)[0]}
           for size, (ours_ds, naive_ds, uint8_ds) in datasets.items()}
    _rounds([limit, strict, pil] + [cell for cells in one.values() for cell in cells.values()], repeats)
    print(f"  decode limit: {limit.cpu:.0f} per CPU second (strict: {strict.cpu:.0f}, PIL alone: {pil.cpu:.0f})",
          flush=True)
    results = []
    for size, (ours_ds, naive_ds, uint8_ds) in datasets.items():
        for w in workers:
            if w == 0:
                cells = one[size]
            else:
                cells = {}
                for name, ds in (("ours", ours_ds), ("naive", naive_ds), ("ours_uint8", uint8_ds)):
                    cell, loader = _loader_cell(ds, w)
                    _rounds([cell], repeats)
                    cells[name] = cell
                    del loader  # its workers exit
                cells["dataset_only"] = one[size]["dataset_only"]
            row = {"size": size, "workers": w}
            for name, cell in (("limit", limit), ("limit_strict", strict), ("limit_pil", pil), *cells.items()):
                row[name], row[f"{name}_cpu"] = cell.wall, cell.cpu
            results.append(row)
            print(f"  {size:4d} px  {w} workers: limit {limit.wall:6.0f}/s  ours {row['ours']:6.0f}/s  "
                  f"naive {row['naive']:6.0f}/s  ours uint8 {row['ours_uint8']:6.0f}/s", flush=True)
    return results


# ---------------------------------------------------------------------- ablations: what each piece buys

ABLATIONS = {
    "shared": "DataLoader workers build each batch in shared memory -> plain tensors, copied when sent "
              "(open_dataset(tuned_memory=False))",
    "mallopt": "glibc's malloc keeps freed batches for reuse -> glibc's defaults (open_dataset(tuned_memory=False)); "
               "0 workers, fresh processes, uint8 and float (f32) batches",
    "cd-parser": "maskdepth's central-directory parser -> zipfile.ZipFile, on the --index-samples zips",
}
# Pieces that have no public switch: measuring them would mean patching private functions of
# maskdepth.data.images, which no benchmark does. Each is left out with this line.
NO_SWITCH = {
    "jpeg-scan": "maskdepth's JPEG SOF scanner vs PIL's header parser: maskdepth.data.images has no public switch "
                 "for it (the old ablation replaced the private images._jpeg_frame)",
    "png": "maskdepth's PNG mask reader vs PIL: maskdepth.data.images has no public switch for it (the old "
           "ablation replaced the private images._fast_png_mask)",
}


def left_out(pieces: list[str]) -> dict[str, str]:
    """The pieces asked for that this run cannot measure through a public switch, and why."""
    return {p: NO_SWITCH[p] for p in pieces if p in NO_SWITCH}


def _loader_child(data: str, size: int, mode: str, repeats: int) -> None:
    """Runs in a fresh process: the 0-worker loader's rate (`mode` "on-uint8", "off-float", ...:
    "off" opens the dataset with tuned_memory=False; uint8 or float batches); prints JSON."""
    import torch

    from maskdepth.data import open_dataset

    torch.set_num_threads(1)
    ds = open_dataset(data, size=size, split="all", in_memory=True, uint8=mode.endswith("uint8"),
                      tuned_memory=not mode.startswith("off"))
    cell = _loader_cell(ds, 0)[0]
    _rounds([cell], repeats)
    print(json.dumps({"wall": cell.wall, "cpu": cell.cpu}))


def bench_ablations(data: Path, size: int, workers: list[int], repeats: int, pieces: list[str]) -> list[dict]:
    """Rows {piece, workers, with, without, ratio, per} (samples/s of the uint8 loader, batch 32,
    the piece in place and switched off, measured in one run). shared: per wall second,
    interleaved rounds of two loaders with persistent workers; mallopt: 0 workers, per CPU
    second, alternating fresh processes."""
    import torch

    from maskdepth.data import open_dataset

    torch.set_num_threads(1)
    rows = []

    def add(piece: str, w: int, base: Cell, other: Cell, per: str) -> None:
        got, lost = (base.cpu, other.cpu) if per == "cpu" else (base.wall, other.wall)
        rows.append({"piece": piece, "batches": "float32" if piece.endswith("/f32") else "uint8", "workers": w,
                     "with": rounded(got, 1), "without": rounded(lost, 1), "ratio": rounded(got / lost, 3), "per": per})
        print(f"  {piece}: {w} workers: {got:.0f} with, {lost:.0f} without per {per} second ({got / lost:.2f}x)",
              flush=True)

    if "shared" in pieces:
        ds = open_dataset(data, size=size, split="all", in_memory=True, uint8=True)
        plain = open_dataset(data, size=size, split="all", in_memory=True, uint8=True, tuned_memory=False)
        for w in [w for w in workers if w > 0]:
            (base, loader), (other, other_loader) = _loader_cell(ds, w), _loader_cell(plain, w)
            _rounds([base, other], repeats)
            add("shared", w, base, other, "wall")
            del loader, other_loader  # their workers exit
    for kind in ("uint8", "float") if "mallopt" in pieces else ():
        best = {"on": Cell(None, 0), "off": Cell(None, 0)}
        for mode in ("on", "off", "on", "off"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.data", "--loader-child", str(data), str(size),
                                  f"{mode}-{kind}", str(repeats)], capture_output=True, text=True, check=True,
                                 env=module_env())
            rate = json.loads(out.stdout)
            best[mode].wall, best[mode].cpu = max(best[mode].wall, rate["wall"]), max(best[mode].cpu, rate["cpu"])
        add("mallopt" if kind == "uint8" else "mallopt/f32", 0, best["on"], best["off"], "cpu")
    return rows


# ---------------------------------------------------------------------- index of a large archive


def _local_header(crc: int, size: int, name_length: int) -> bytes:
    """A STORED entry's local file header (version 2.0, DOS date 0x21: 1980-01-01)."""
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, size, size, name_length, 0)


def _central_header(crc: int, size: int, name_length: int, offset: int) -> bytes:
    """The same entry's central-directory record, its local header at `offset`."""
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, size, size, name_length,
                       0, 0, 0, 0, 0, offset)


def write_index_zip(path: Path, samples: int) -> int:
    """A zip with the original's naming, 3 empty STORED entries per sample, 100 backgrounds and
    a manifest.csv, written with numpy (fixed-length names per folder). Returns the entry count."""
    num_bg = 100
    per_bg = -(-samples // num_bg)
    stems = [f"bg192_{b + 1:03d}_fg{(k % 100) + 1:03d}_{k // 100:04d}"
             for b in range(num_bg) for k in range(per_bg)][:samples]
    folders = {
        "bg_192/": [f"bg192_{b + 1:03d}.jpg" for b in range(num_bg)],
        "fg_bg/": [f"{s}.jpg" for s in stems],
        "mask/": [f"{s}.jpg" for s in stems],
        "fg_bg_depth_full/": [f"{s}.jpg" for s in stems],
    }
    manifest = io.StringIO()
    manifest.write("fg_bg,bg,mask,depth,bg_id,fg_id\n")
    for s in stems:
        manifest.write(f"fg_bg/{s}.jpg,bg_192/{s[:9]}.jpg,mask/{s}.jpg,fg_bg_depth_full/{s}.jpg,{s[:9]},{s[10:16]}\n")
    manifest_bytes = manifest.getvalue().encode()

    local_parts, central_parts = [], []
    offset = 0
    count = 0
    for folder, names in folders.items():
        encoded = np.array([(folder + n).encode() for n in names])
        width, n = encoded.dtype.itemsize, len(names)
        name_bytes = np.frombuffer(encoded.tobytes(), np.uint8).reshape(n, width)
        local = np.zeros((n, 30 + width), np.uint8)
        local[:, :30] = np.frombuffer(_local_header(0, 0, width), np.uint8)
        local[:, 30:] = name_bytes
        offsets = offset + np.arange(n, dtype=np.int64) * (30 + width)
        central = np.zeros((n, 46 + width), np.uint8)
        central[:, :46] = np.frombuffer(_central_header(0, 0, width, 0), np.uint8)
        central[:, 42:46] = offsets.astype("<u4").view(np.uint8).reshape(n, 4)
        central[:, 46:] = name_bytes
        local_parts.append(local.tobytes())
        central_parts.append(central.tobytes())
        offset += local.size
        count += n
    name = b"manifest.csv"
    crc = zlib.crc32(manifest_bytes)
    local_parts.append(_local_header(crc, len(manifest_bytes), len(name)) + name + manifest_bytes)
    central_parts.append(_central_header(crc, len(manifest_bytes), len(name), offset) + name)
    offset += len(local_parts[-1])
    count += 1
    cd = b"".join(central_parts)
    with open(path, "wb") as f:
        for part in local_parts:
            f.write(part)
        f.write(cd)
        f.write(struct.pack("<4sQHHLLQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(cd), offset))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(cd), 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return count


def _status_mb(*keys: str) -> dict[str, float]:
    """Fields of /proc/self/status in MB: RssAnon (private memory in use), VmHWM (peak RSS of this
    process image; unlike ru_maxrss it is not inherited across exec)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0]) / 1024
    return out


def _index_child(path: str) -> None:
    """Runs in a fresh process: prints JSON with times and sizes."""
    import pickle

    from maskdepth.data import ZipArchive, load_manifest

    base = _status_mb("RssAnon")["RssAnon"]
    start = time.perf_counter()
    archive = ZipArchive(path, in_memory=False)
    index_s = time.perf_counter() - start
    index_mb = archive.index_nbytes / 2**20
    del archive
    start = time.perf_counter()
    manifest = load_manifest(path, in_memory=False)
    manifest_s = time.perf_counter() - start
    archive = manifest.archives[0]
    arrays = [manifest.entries, manifest.archive_ids, manifest.bg_code, manifest.fg_code]
    status = _status_mb("RssAnon", "VmHWM")
    print(json.dumps({
        "entries": len(archive),
        "index_s": index_s,
        "open_s": manifest_s,
        "index_mb": index_mb,
        "manifest_mb": sum(a.nbytes for a in arrays) / 2**20,
        "anon_after_open_mb": status["RssAnon"] - base,
        "peak_rss_mb": status["VmHWM"],
        "pickle_mb": len(pickle.dumps(manifest)) / 2**20,
        "missing": manifest.missing_count,
    }))


def _zipfile_child(path: str) -> None:
    """Runs in a fresh process: the public alternative to maskdepth's index, zipfile.ZipFile
    (a ZipInfo object per entry); prints JSON with its time and memory."""
    base = _status_mb("RssAnon")["RssAnon"]
    start = time.perf_counter()
    archive = zipfile.ZipFile(path)
    index_s = time.perf_counter() - start
    status = _status_mb("RssAnon", "VmHWM")
    print(json.dumps({"entries": len(archive.infolist()), "index_s": index_s,
                      "anon_after_open_mb": status["RssAnon"] - base, "peak_rss_mb": status["VmHWM"]}))


def _child(*args: str) -> dict[str, Any]:
    """Run this module in a fresh process with `args`; the JSON it prints."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.data", *args], capture_output=True, text=True, check=True,
                         env=module_env())
    return json.loads(out.stdout)


def bench_index(counts: list[int], tmp: Path, with_zipfile: bool = False) -> list[dict]:
    """Rows {samples, entries, index_s, open_s, index_mb, manifest_mb, anon_after_open_mb,
    peak_rss_mb, pickle_mb, missing, write_s, zip_mb} of synthetic archives (empty entries), each
    indexed in a fresh process; with `with_zipfile`, zipfile.ZipFile's index of the same zip too."""
    results = []
    for samples in counts:
        path = tmp / f"index{samples}.zip"
        start = time.perf_counter()
        write_index_zip(path, samples)
        written = time.perf_counter() - start
        out = _child("--index-child", str(path))
        result = {"samples": samples, "write_s": written, "zip_mb": path.stat().st_size / 2**20, **out}
        print(f"  {samples} samples: {result['entries']} entries indexed in {result['index_s']:.2f} s, "
              f"opened (index + manifest) in {result['open_s']:.2f} s", flush=True)
        if with_zipfile:
            result["zipfile"] = _child("--zipfile-child", str(path))
            print(f"  {samples} samples: zipfile.ZipFile indexed them in {result['zipfile']['index_s']:.2f} s, "
                  f"{result['zipfile']['anon_after_open_mb']:.0f} MB", flush=True)
        results.append(result)
        path.unlink()
    return results


def bench_epoch_workers(archive: Path, size: int, batch: int, samples: int, workers: list[int]) -> list[dict]:
    """A MaskDepthNet training epoch (AdamW, DiceBCELoss + DepthLoss) over the first `samples`
    samples of `archive` at `size` px, batch `batch`, for each DataLoader worker count: rows of
    {workers, loader_s (the loader alone), epoch_s, img_s (samples / epoch_s)}. Batches are uint8
    as training loads them (`open_dataset(uint8=True)`, made float by `to_float`); workers start
    inside the timing (no persistent workers), since an epoch pays for them."""
    import torch

    from maskdepth.data import collate, open_dataset, to_float
    from maskdepth.losses import DepthLoss, DiceBCELoss
    from maskdepth.model import build_model

    dataset = torch.utils.data.Subset(open_dataset(archive, size, "all", uint8=True), range(samples))
    torch.manual_seed(0)
    model = build_model("maskdepth")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mask_loss, depth_loss = DiceBCELoss(), DepthLoss()

    def step(b: dict[str, Any]) -> None:
        b = to_float(b)
        pred_logits, pred_depth = model(b["bg"], b["fg_bg"])
        loss = mask_loss(pred_logits, b["mask"]) + depth_loss(pred_depth, b["depth"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # one untimed step first: the first backward of a new model pays one-off set-up costs
    step(collate([dataset[i] for i in range(min(batch, len(dataset)))]))
    rows = []
    for count in workers:
        times = {}
        for kind in ("loader_s", "epoch_s"):
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=count,
                                                 collate_fn=collate, generator=torch.Generator().manual_seed(0))
            start = time.perf_counter()
            for b in loader:
                if kind == "epoch_s":
                    step(b)
            times[kind] = time.perf_counter() - start
        print(f"  epoch vs workers: {count} workers: loader {times['loader_s']:.2f} s, "
              f"epoch {times['epoch_s']:.2f} s", flush=True)
        rows.append({"workers": count, **times, "img_s": samples / times["epoch_s"]})
    return rows


def print_throughput(rows: list[dict]) -> None:
    print("\nthrough a DataLoader (batch 32, collate), samples per wall-clock second:")
    print(" size  workers   limit/s   ours/s  naive/s   ours/limit  ours/naive   ours uint8/s")
    for r in rows:
        print(f" {r['size']:4d}  {r['workers']:7d}  {r['limit']:8.0f}  {r['ours']:7.0f}  {r['naive']:7.0f}"
              f"   {r['ours'] / r['limit']:10.2f}  {r['ours'] / r['naive']:10.1f}   {r['ours_uint8']:12.0f}")
    print("\none process, samples per CPU second of that process (robust to other load on the machine):")
    print(" size   limit  strict  PIL-only  dataset only  ours (loader)  naive (loader)   ours/limit  ours/strict"
          "  ours/PIL-only  ours/naive")
    for r in rows:
        if r["workers"] == 0:
            print(f" {r['size']:4d}  {r['limit_cpu']:6.0f}  {r['limit_strict_cpu']:6.0f}  {r['limit_pil_cpu']:8.0f}"
                  f"  {r['dataset_only_cpu']:12.0f}  {r['ours_cpu']:13.0f}  {r['naive_cpu']:14.0f}"
                  f"   {r['ours_cpu'] / r['limit_cpu']:10.2f}  {r['ours_cpu'] / r['limit_strict_cpu']:11.2f}"
                  f"  {r['ours_cpu'] / r['limit_pil_cpu']:13.2f}  {r['ours_cpu'] / r['naive_cpu']:10.1f}")
    print("(limit: full-resolution decode of the same fg_bg + mask + depth bytes, nothing else, by the faster "
          "of PIL and torchvision per image kind; strict: the fastest of PIL, torchvision and maskdepth's own "
          "decoder of each kind; dataset only: ds[i] without a DataLoader; ours uint8: open_dataset(uint8=True), "
          "the batches training uses, converted to float on the device)")


def print_index(rows: list[dict]) -> None:
    print("\n samples   entries  index s  open s  index MB  manifest MB  private MB after open  peak RSS MB  pickle MB")
    for r in rows:
        print(f" {r['samples']:7d}  {r['entries']:8d}  {r['index_s']:7.2f}  {r['open_s']:6.2f}  {r['index_mb']:8.1f}"
              f"  {r['manifest_mb']:11.1f}  {r['anon_after_open_mb']:21.0f}  {r['peak_rss_mb']:11.0f}"
              f"  {r['pickle_mb']:9.1f}")
    for r in rows:
        if "zipfile" in r:
            z = r["zipfile"]
            print(f" cd-parser ablation, {r['samples']} samples: ours {r['index_s']:.2f} s, "
                  f"index {r['index_mb']:.0f} MB; "
                  f"zipfile.ZipFile {z['index_s']:.2f} s, {z['anon_after_open_mb']:.0f} MB private after open, "
                  f"peak RSS {z['peak_rss_mb']:.0f} MB (ours: {r['peak_rss_mb']:.0f} MB)")
    print("(open = index + manifest resolution, what open_dataset does; private MB: anonymous memory held "
          "after open, beyond the fresh process; peak RSS: whole process incl. interpreter and the mapped zip; "
          "pickle: what each spawn worker receives)")


def _kept(rows: list[dict], digits: int = 1) -> list[dict]:
    """Rows as the data file keeps them: floats rounded (nested dicts too)."""
    def keep(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: keep(x) for k, x in v.items()}
        return rounded(v, digits if abs(v) >= 1 else 4) if isinstance(v, float) else v

    return [keep(r) for r in rows]


def cd_parser_rows(rows: list[dict]) -> list[dict]:
    """The cd-parser ablation: maskdepth's index and zipfile.ZipFile's, per archive size."""
    out = []
    for r in rows:
        z = r["zipfile"]
        out += [{"samples": r["samples"], "parser": "maskdepth", "index_s": r["index_s"], "index_mb": r["index_mb"],
                 "private_mb": r["anon_after_open_mb"], "peak_rss_mb": r["peak_rss_mb"]},
                {"samples": r["samples"], "parser": "zipfile.ZipFile", "index_s": z["index_s"],
                 "private_mb": z["anon_after_open_mb"], "peak_rss_mb": z["peak_rss_mb"]}]
    return out


def _per_cpu_alone(row: dict) -> dict:
    """A throughput row without its per-CPU-second figures when DataLoader workers did the work:
    their CPU time is not this process's, so only the wall-clock rates mean anything there. A
    one-process row gets its rates over the decode limit, per CPU second (`NAME_per_limit`)."""
    if row["workers"] == 0:
        return {**row, **{f"{name}_per_limit": row[f"{name}_cpu"] / row["limit_cpu"]
                          for name in ("ours", "ours_uint8", "dataset_only")}}
    return {k: v for k, v in row.items() if not k.endswith("_cpu")}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="dataset zip (default: generate one)")
    parser.add_argument("--samples", type=int, default=400, help="samples of the generated dataset (default 400)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per cell (best counts)")
    parser.add_argument("--index-samples", type=int, nargs="*", default=[40_000, 400_000])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "data.json", help="the data file (default %(default)s)")
    parser.add_argument("--ablate", nargs="+", default=[], choices=sorted({*ABLATIONS, *NO_SWITCH}), metavar="PIECE",
                        help="also measure each PIECE against its public alternative, in this run: "
                        + "; ".join(f"{k}: {v}" for k, v in ABLATIONS.items())
                        + ". Not measurable through a public switch (left out with a line): " + ", ".join(NO_SWITCH))
    parser.add_argument("--index-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--zipfile-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--loader-child", nargs=4, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.index_child:
        return _index_child(args.index_child)
    if args.zipfile_child:
        return _zipfile_child(args.zipfile_child)
    if args.loader_child:
        data, size, mode, repeats = args.loader_child
        return _loader_child(data, int(size), mode, int(repeats))

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs seen, {platform.machine()}")
    report: dict[str, Any] = {}
    skipped = left_out(args.ablate)
    for piece, why in skipped.items():
        print(f"ablation {piece}: left out of this run: {why}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp_name:
        tmp = Path(tmp_name)
        pieces = [p for p in args.ablate if p != "cd-parser" and p not in skipped]
        data = args.data
        if data is None and (pieces or not args.skip_throughput):
            from maskdepth.synth import make_dataset

            data = tmp / "bench192.zip"
            num_fg = max(1, args.samples // 40)
            make_dataset(data, size=192, num_bg=10, num_fg=num_fg, per_pair=2, seed=0, progress=False)
        if not args.skip_throughput:
            print(f"throughput on {data}:")
            rows = bench_throughput(data, args.sizes, args.workers, args.repeats, tmp)
            report["throughput"] = _kept([_per_cpu_alone(r) for r in rows])
            print_throughput(report["throughput"])
        if pieces:
            print(f"\nablations at {args.sizes[-1]} px (uint8 loader, batch 32):")
            report["ablations"] = bench_ablations(data, args.sizes[-1], args.workers, args.repeats, pieces)
            print("(" + "; ".join(f"{p}: {ABLATIONS[p]}" for p in pieces) + ")")
        if args.index_samples:
            print("\nindex of a large archive (synthetic central directory, empty entries):")
            rows = bench_index(args.index_samples, tmp, with_zipfile="cd-parser" in args.ablate)
            report["index"] = _kept([{k: v for k, v in r.items() if k != "zipfile"} for r in rows], 3)
            print_index(rows)
            if "cd-parser" in args.ablate:
                report["cd_parser"] = _kept(cd_parser_rows(rows), 3)
    if skipped:
        report["ablations_left_out"] = skipped
    archive = str(args.data) if args.data else f"made by the benchmark: {args.samples} samples at 192 px"
    write_results(args.out, meta("data", argv, archive=archive, sources=list(SOURCES)), report)
    return report


if __name__ == "__main__":
    main()
