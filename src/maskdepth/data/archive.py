"""Zip archives read straight from RAM or from a memory map, indexed once into compact arrays.

The central directory is parsed by hand (zip64 included) into a handful of numpy arrays: per
folder a sorted fixed-width array of base names, and per entry the local-header offset, sizes,
CRC and method. Nothing per entry lives as a Python object, so a 1.6M-entry archive (400k
samples) indexes in a few seconds and its index costs 22 bytes + the base name per entry;
DataLoader workers forked from the process that built it share those pages copy-on-write and
never touch them (no refcounts), so they do not grow epoch after epoch.

Kept because it pays over zipfile.ZipFile (a ZipInfo object per entry, which forked workers
would also touch page by page) several times in time and memory on a 400k-sample zip (the
ablation, `python -m benchmarks.data --ablate cd-parser`, is in docs/results.md).

Entry data is located lazily: each read parses the entry's 30-byte local header to find where
its data starts, then slices the buffer (no file handle, no seek offset: safe to share).

Buffers and workers:
- `in_memory=True` reads the whole zip into one `bytes` object (the Colab way: the dataset lives
  in RAM, not on a slow Drive mount). Workers started by *fork* (Linux default before Python
  3.14) inherit it copy-on-write.
- `in_memory=False` memory-maps the file; the page cache is shared by every process.
- Pickling (what *spawn* / *forkserver* workers receive) drops the buffer: the archive bytes are
  never pickled. An unpickled archive memory-maps the file on first read, even if it was
  in_memory in the parent, so N spawned workers do not make N copies of the zip in RAM.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import weakref
import zlib
from array import array
from collections.abc import Iterable, Sequence

import numpy as np

from maskdepth.errors import DataError

STORED = 0
DEFLATED = 8

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL_SIG = 0x02014B50
_CENTRAL_SIZE = 46
_LOCAL = struct.Struct("<I22xHH")  # signature, then name and extra lengths at 26 and 28
_LOCAL_SIG = 0x04034B50
_LOCAL_SIZE = 30
_LENGTHS = struct.Struct("<3H")  # name, extra, comment lengths at offset 28 of a central header
_MAX_COMMENT = 0xFFFF
_CHUNK = 65536  # entries per batch when turning names into arrays (bounds the temporary lists)
# The most bytes an image entry may inflate to: an uncompressed 4096 x 4096 RGBA image (64 MB) is
# far more than any image of this dataset needs (192 px: ~110 kB), and a zip bomb (a 1.4 MB entry
# that inflates to 1 GB) stops here before it is inflated. Other entries (manifest.csv) pass
# their own limit to `ZipArchive.read`.
MAX_IMAGE_BYTES = 64 << 20
_LISTED = 20  # duplicate names kept for messages


class ZipArchive:
    """Read-only random access to the entries of one zip file.

    Entries are addressed by an integer index in [0, len(archive)); `find` / `lookup` map names
    to indices (-1 when absent), `name` maps back. Folder entries (names ending in "/") are not
    indexed. When a name occurs twice, the later entry wins (as in `zipfile`); `duplicates` counts
    the entries hidden that way, `duplicate_name_count` the names repeated, and `duplicate_names`
    lists the first 20 of them.

    Args:
        path: the zip file.
        in_memory: read the whole file into RAM (True) or memory-map it (False).

    Raises:
        DataError: the file is missing, is not a zip, is truncated, or spans several disks.
    """

    def __init__(self, path: str | os.PathLike, *, in_memory: bool = False) -> None:
        self.path = os.fspath(path)
        self.in_memory = bool(in_memory)
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise DataError(f"{self.path}: archive not found") from None
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open archive ({exc.strerror or exc})") from None
        self._stamp = (stat.st_size, stat.st_mtime_ns)
        self._buf: bytes | mmap.mmap | None = None
        self._build_index(self._load_buffer(first=True))
        release_free_memory()

    # ------------------------------------------------------------------ buffers and pickling

    def _load_buffer(self, first: bool = False) -> bytes | mmap.mmap:
        """Read (`in_memory`, first load only) or map the file. Later loads happen in a process
        that received the archive by pickling; they map, and check the file is unchanged."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                if not first and (stat.st_size, stat.st_mtime_ns) != self._stamp:
                    raise DataError(f"{self.path}: the archive changed after it was indexed; open the dataset again")
                if stat.st_size < _EOCD.size:
                    raise DataError(f"{self.path}: not a zip archive (only {stat.st_size} bytes)")
                if self.in_memory and first:
                    buf: bytes | mmap.mmap = f.read()
                else:
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise DataError(f"{self.path}: archive not found (removed after it was indexed?)") from None
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read archive ({exc.strerror or exc})") from None
        self._buf = buf
        return buf

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buf"] = None  # never pickle the archive bytes; the receiving process maps the file
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        """Release the buffer; a later read maps the file again."""
        buf, self._buf = self._buf, None
        if isinstance(buf, mmap.mmap):
            buf.close()

    def __repr__(self) -> str:
        mode = "in memory" if self.in_memory else "memory-mapped"
        return f"ZipArchive({self.path!r}, {len(self)} entries, {mode})"

    # ------------------------------------------------------------------ index

    def _build_index(self, buf: bytes | mmap.mmap) -> None:
        cd_start, cd_size, count, shift = _locate_central_directory(buf, self.path)
        if cd_start + cd_size > len(buf):
            raise DataError(f"{self.path}: truncated archive (central directory runs past the end)")
        view = memoryview(buf)
        cd = view[cd_start : cd_start + cd_size]  # no copy: 1.6M entries make a ~150 MB directory
        try:
            folders, fields = _parse_central_directory(cd, count, self.path)
        finally:
            cd.release()  # an mmap cannot be closed while views of it exist
            view.release()
        flags, method, crc, csize, usize, offset = fields
        # bit 0: encrypted; mark with an impossible method so that reading it fails clearly
        method[(flags & 1) != 0] = 0xFFFF
        offset = offset.astype(np.int64) + shift
        if len(offset) and (offset.min() < 0 or offset.max() >= len(buf)):
            raise DataError(f"{self.path}: corrupt central directory (entry offset outside the file)")

        # Per folder: base names sorted, entries in that order. Global index = folder start + rank.
        self._folders: list[str] = []
        self._folder_start = np.zeros(len(folders) + 1, dtype=np.int64)
        self._basenames: list[np.ndarray] = []
        order_parts: list[np.ndarray] = []
        self.duplicates = 0
        self.duplicate_names: list[str] = []
        self.duplicate_name_count = 0
        for k, (folder, (name_chunks, pos_chunks)) in enumerate(sorted(folders.items())):
            names = np.concatenate(name_chunks) if len(name_chunks) > 1 else name_chunks[0]
            pos = np.concatenate(pos_chunks) if len(pos_chunks) > 1 else pos_chunks[0]
            if len(names) > 1 and not np.all(names[1:] >= names[:-1]):  # zips are often written sorted
                order = np.argsort(names, kind="stable")
                names, pos = names[order], pos[order]
            if len(names) > 1:
                # a repeated name: keep the last one written (the stable sort kept file order)
                keep = np.append(names[1:] != names[:-1], True)
                if not keep.all():
                    self.duplicates += int((~keep).sum())
                    room = _LISTED - len(self.duplicate_names)
                    repeated = np.unique(names[~keep])
                    self.duplicate_name_count += len(repeated)
                    self.duplicate_names.extend(folder + b.decode("utf-8") for b in repeated[: max(room, 0)])
                    names, pos = names[keep], pos[keep]
            self._folders.append(folder)
            self._basenames.append(names)
            order_parts.append(pos)
            self._folder_start[k + 1] = self._folder_start[k] + len(names)
        self._folder_index = {folder: k for k, folder in enumerate(self._folders)}
        order = np.concatenate(order_parts) if order_parts else np.zeros(0, dtype=np.int64)
        self._offset = offset[order]
        self._csize = _compact(csize[order])
        self._usize = _compact(usize[order])
        self._crc = crc[order].astype(np.uint32)
        self._method = method[order].astype(np.uint16)

    @property
    def index_nbytes(self) -> int:
        """Bytes held by the index arrays (names included)."""
        arrays = [self._offset, self._csize, self._usize, self._crc, self._method, self._folder_start]
        return sum(a.nbytes for a in arrays + self._basenames)

    def __len__(self) -> int:
        return int(self._folder_start[-1])

    @property
    def folders(self) -> list[str]:
        """Folder prefixes that hold entries ("" for the top level; others end in "/")."""
        return list(self._folders)

    def folder_range(self, folder: str) -> range:
        """Indices of the entries directly inside `folder` ("" or a prefix ending in "/")."""
        k = self._folder_index.get(folder)
        if k is None:
            return range(0)
        return range(int(self._folder_start[k]), int(self._folder_start[k + 1]))

    def basenames(self, folder: str) -> np.ndarray:
        """Base names (UTF-8 bytes, sorted) of the entries in `folder`, in index order."""
        k = self._folder_index.get(folder)
        return self._basenames[k] if k is not None else np.zeros(0, dtype="S1")

    def name(self, index: int) -> str:
        """Full entry name of `index`."""
        k = int(np.searchsorted(self._folder_start, index, side="right")) - 1
        base = self._basenames[k][index - int(self._folder_start[k])]
        return self._folders[k] + base.decode("utf-8")

    def crcs(self, indices: np.ndarray) -> np.ndarray:
        """The CRC-32 (uint32) of entries `indices`, from the central directory: what the data
        fingerprint hashes, so two archives with the same names but other images differ."""
        return self._crc[np.asarray(indices, dtype=np.int64)]

    def names(self) -> Iterable[str]:
        """Every entry name, in index order."""
        for folder, base in zip(self._folders, self._basenames, strict=True):
            for b in base:
                yield folder + b.decode("utf-8")

    def find(self, name: str) -> int:
        """Index of entry `name`, or -1."""
        return int(self.lookup([name])[0])

    def lookup(self, names: Sequence[str] | Sequence[bytes]) -> np.ndarray:
        """Indices (int64 [len(names)]) of many entry names (str, or UTF-8 bytes) at once; -1
        where absent. Vectorised per folder: 400k names take well under a second."""
        out = np.full(len(names), -1, dtype=np.int64)
        if len(names) == 0:
            return out
        encoded: Sequence[bytes] = [n.encode("utf-8") for n in names] if isinstance(names[0], str) else names
        first = encoded[0]
        prefix = first[: first.rfind(b"/") + 1]
        cut = len(prefix)
        groups: dict[bytes, tuple[Sequence[int], list[bytes]]]
        if _one_folder(encoded, prefix):  # the usual case
            groups = {prefix: (range(len(encoded)), [n[cut:] for n in encoded])}
        else:
            groups = {}
            for i, name in enumerate(encoded):
                folder, slash, base = name.rpartition(b"/")
                group = groups.get(folder + slash)
                if group is None:
                    group = groups[folder + slash] = ([], [])
                group[0].append(i)  # type: ignore[union-attr]
                group[1].append(base)
        for folder, (where, bases) in groups.items():
            k = self._folder_index.get(folder.decode("utf-8", "replace"))
            if k is None or len(self._basenames[k]) == 0:
                continue
            table = self._basenames[k]
            query = np.array(bases, dtype=bytes)
            rank = np.minimum(np.searchsorted(table, query), len(table) - 1)
            hit = (table[rank] == query) & (query != b"")
            found = np.asarray(where)[hit]
            out[found] = rank[hit] + self._folder_start[k]
        return out

    # ------------------------------------------------------------------ reading

    def size_of(self, index: int) -> int:
        """Uncompressed size in bytes of entry `index`."""
        return int(self._usize[index])

    def read(self, index: int, limit: int = MAX_IMAGE_BYTES) -> bytes:
        """The uncompressed bytes of entry `index` (CRC checked), at most `limit` bytes.

        The size declared in the central directory is checked against `limit` before anything is
        inflated, and inflating stops one byte past the declared size, so an entry whose header
        lies about its size cannot inflate unbounded either.

        Raises:
            DataError: naming the archive and entry, when the entry is corrupt, truncated,
                encrypted, larger than `limit` (declared or inflated), or uses a compression
                method other than STORED / DEFLATED.
        """
        buf = self._buf if self._buf is not None else self._load_buffer()
        offset, csize, usize = int(self._offset[index]), int(self._csize[index]), int(self._usize[index])
        if usize > limit or (int(self._method[index]) == STORED and csize > limit):
            raise DataError(
                f"{self.path}: {self.name(index)}: entry declares {max(usize, csize) / 2**20:.0f} MB uncompressed, "
                f"over the {limit / 2**20:.0f} MB limit for one entry (a damaged archive or a zip bomb)"
            )
        try:
            sig, name_len, extra_len = _LOCAL.unpack_from(buf, offset)
        except struct.error:
            raise DataError(f"{self.path}: {self.name(index)}: truncated archive (local header missing)") from None
        if sig != _LOCAL_SIG:
            raise DataError(f"{self.path}: {self.name(index)}: corrupt archive (bad local header)")
        start = offset + _LOCAL_SIZE + name_len + extra_len
        data = buf[start : start + csize]
        if len(data) != csize:
            raise DataError(f"{self.path}: {self.name(index)}: truncated archive (entry data runs past the end)")
        method = int(self._method[index])
        if method == DEFLATED:
            try:
                # at most one byte more than declared: enough to tell that the header lied
                data = zlib.decompressobj(-15).decompress(data, usize + 1)
            except zlib.error as exc:
                raise DataError(f"{self.path}: {self.name(index)}: corrupt compressed data ({exc})") from None
            if len(data) > usize:
                raise DataError(
                    f"{self.path}: {self.name(index)}: corrupt entry: inflates past its declared size of {usize} bytes "
                    "(a damaged archive or a zip bomb)"
                )
        elif method == 0xFFFF:
            raise DataError(f"{self.path}: {self.name(index)}: entry is encrypted; "
                            "re-create the zip without a password")
        elif method != STORED:
            raise DataError(
                f"{self.path}: {self.name(index)}: compression method {method} is not supported; "
                "re-create the zip with STORED or DEFLATED entries (e.g. `zip -r` or Python's zipfile)"
            )
        if len(data) != usize or zlib.crc32(data) != int(self._crc[index]):
            raise DataError(f"{self.path}: {self.name(index)}: corrupt entry (CRC or size mismatch)")
        return data

    def read_name(self, name: str) -> bytes:
        """The bytes of entry `name`; DataError naming it when absent."""
        index = self.find(name)
        if index < 0:
            raise DataError(f"{self.path}: entry {name!r} not found")
        return self.read(index)


def describe_duplicates(archive: ZipArchive) -> str | None:
    """One line naming and counting the repeated entry names of `archive`, or None."""
    if not archive.duplicates:
        return None
    more = ", ..." if archive.duplicate_name_count > len(archive.duplicate_names) else ""
    return (
        f"{archive.path}: {archive.duplicate_name_count} entry name(s) occur more than once "
        f"({archive.duplicates} earlier entries hidden; only the last of each is read): "
        f"{', '.join(archive.duplicate_names)}{more}; re-create the zip without them"
    )


def shared_names(first: ZipArchive, second: ZipArchive, limit: int = _LISTED) -> tuple[int, list[str]]:
    """(how many entry names occur in both archives, the first `limit` of them), compared per
    folder on the sorted name arrays."""
    count, names = 0, []
    for folder in sorted(set(first.folders) & set(second.folders)):
        common = np.intersect1d(first.basenames(folder), second.basenames(folder))
        count += len(common)
        names.extend(folder + b.decode("utf-8") for b in common[: max(limit - len(names), 0)])
    return count, sorted(names)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc only; a no-op elsewhere). Indexing a
    large archive leaves ~100 MB of freed temporaries that glibc keeps otherwise, and forked
    workers would start from that larger parent."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _one_folder(names: Sequence[bytes], prefix: bytes) -> bool:
    """Whether every name is `prefix` + a base name without "/", counted in C over one joined
    string (names holding a newline take the slow path)."""
    joined = b"\n" + b"\n".join(names)
    return (
        joined.count(b"\n") == len(names)
        and joined.count(b"\n" + prefix) == len(names)
        and joined.count(b"/") == len(names) * prefix.count(b"/")
    )


def _compact(values: np.ndarray) -> np.ndarray:
    """uint32 when every value fits (the usual case), int64 otherwise."""
    if len(values) == 0 or int(values.max()) <= 0xFFFFFFFF:
        return values.astype(np.uint32)
    return values.astype(np.int64)


def _locate_central_directory(buf: bytes | mmap.mmap, path: str) -> tuple[int, int, int, int]:
    """(start, size, entry count, shift) of the central directory; shift = bytes prepended to the zip."""
    size = len(buf)
    tail_start = max(0, size - _EOCD.size - _MAX_COMMENT)
    tail = buf[tail_start:size]
    pos = tail.rfind(_EOCD_SIG)
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            fields = _EOCD.unpack_from(tail, pos)
            if pos + _EOCD.size + fields[7] == len(tail):  # its comment ends exactly at the end
                break
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    if pos < 0:
        raise DataError(f"{path}: not a zip archive (no end-of-central-directory record); re-download or re-create it")
    eocd_pos = tail_start + pos
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = fields
    record_pos = eocd_pos
    loc_pos = eocd_pos - _ZIP64_LOCATOR.size
    if loc_pos >= 0 and buf[loc_pos : loc_pos + 4] == _ZIP64_LOCATOR_SIG:
        _, _, z64_offset, disks = _ZIP64_LOCATOR.unpack_from(buf, loc_pos)
        if disks > 1:
            raise DataError(f"{path}: multi-disk (split) zip archives are not supported; join the parts first")
        # the record sits right before its locator; its stored offset may be shifted by prepended data
        z64_pos = loc_pos - _ZIP64_EOCD.size
        if z64_pos < 0 or buf[z64_pos : z64_pos + 4] != _ZIP64_EOCD_SIG:
            z64_pos = z64_offset
            if buf[z64_pos : z64_pos + 4] != _ZIP64_EOCD_SIG:
                raise DataError(f"{path}: corrupt zip64 end-of-central-directory record")
        (_, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset) = _ZIP64_EOCD.unpack_from(buf, z64_pos)
        record_pos = z64_pos
    if disk != 0 or cd_disk != 0:
        raise DataError(f"{path}: multi-disk (split) zip archives are not supported; join the parts first")
    shift = record_pos - cd_size - cd_offset
    if shift < 0:
        raise DataError(f"{path}: truncated or corrupt archive (central directory outside the file)")
    return cd_offset + shift, cd_size, count, shift


def _parse_central_directory(cd: memoryview, count: int, path: str) -> tuple[dict, tuple[np.ndarray, ...]]:
    """Names grouped by folder (see `_group_names`) and per-entry (flags, method, crc,
    compressed size, size, local header offset), zip64 values filled in."""
    starts = _walk_central_directory(cd, count, path)
    cdv = np.frombuffer(cd, dtype=np.uint8)
    try:
        if len(starts) and not np.all(_header_field(cdv, starts, 0, 4) == _CENTRAL_SIG):
            raise DataError(f"{path}: corrupt central directory (bad entry signature)")
        flags, method, name_len = (_header_field(cdv, starts, at, 2) for at in (8, 10, 28))
        crc, csize, usize, offset = (_header_field(cdv, starts, at, 4) for at in (16, 20, 24, 42))
        folders = _group_names(cd, cdv, starts, name_len.astype(np.int64), (flags & 0x800) != 0)
        need64 = np.flatnonzero((csize == 0xFFFFFFFF) | (usize == 0xFFFFFFFF) | (offset == 0xFFFFFFFF))
        if len(need64):
            csize, usize, offset = csize.astype(np.int64), usize.astype(np.int64), offset.astype(np.int64)
        for i in need64:
            usize[i], csize[i], offset[i] = _zip64_extra(cd, int(starts[i]), int(usize[i]), int(csize[i]),
                                                         int(offset[i]), path)
    finally:
        del cdv  # a live view of `cd` (kept by a traceback, say) would make the caller's cd.release() fail
    return folders, (flags, method, crc, csize, usize, offset)


def _header_field(cdv: np.ndarray, starts: np.ndarray, offset: int, width: int) -> np.ndarray:
    """The little-endian 2- or 4-byte field at `offset` of every central header starting at `starts`."""
    kind = np.uint16 if width == 2 else np.uint32
    out = cdv[starts + offset].astype(kind)
    for k in range(1, width):
        out |= cdv[starts + offset + k].astype(kind) << kind(8 * k)
    return out


def _walk_central_directory(cd: memoryview, count: int, path: str) -> np.ndarray:
    """Start offsets of the `count` headers in `cd`.

    Headers have variable length, so one tight Python pass finds where each starts; everything
    else is gathered with numpy from these offsets.
    """
    starts = array("q")
    add_start = starts.append
    unpack_lengths = _LENGTHS.unpack_from
    pos = 0
    try:
        for _ in range(count):
            name_len, extra_len, comment_len = unpack_lengths(cd, pos + 28)
            add_start(pos)
            pos += _CENTRAL_SIZE + name_len + extra_len + comment_len
    except struct.error:
        raise DataError(f"{path}: corrupt or truncated central directory") from None
    if pos > len(cd):
        raise DataError(f"{path}: corrupt or truncated central directory")
    return np.frombuffer(starts, dtype=np.int64)


def _group_names(cd: memoryview, cdv: np.ndarray, starts: np.ndarray, name_lens: np.ndarray, utf8: np.ndarray) -> dict:
    """Per folder ("" or "dir/"): (base names as fixed-width byte arrays, entry positions).

    Works on `_CHUNK` entries at a time as a [chunk, longest name] byte matrix: the last "/" of
    each row splits folder from base name, rows are grouped by folder with np.unique. Names in
    the legacy cp437 encoding with non-ASCII bytes are converted to UTF-8 one by one (rare).
    """
    folders: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def add(folder: str, bases: np.ndarray, positions: np.ndarray) -> None:
        group = folders.setdefault(folder, ([], []))
        group[0].append(bases)
        group[1].append(positions)

    for lo in range(0, len(starts), _CHUNK):
        s, n = starts[lo : lo + _CHUNK], name_lens[lo : lo + _CHUNK]
        width = int(n.max())
        if width == 0:
            continue
        cols = np.arange(width)
        inside = cols[None, :] < n[:, None]
        mat = cdv[np.minimum(s[:, None] + _CENTRAL_SIZE + cols[None, :], len(cdv) - 1)]
        mat[~inside] = 0
        rows = np.arange(lo, lo + len(s))
        legacy = ~utf8[lo : lo + _CHUNK] & (mat >= 0x80).any(axis=1)
        for i in np.flatnonzero(legacy):
            name = bytes(cd[s[i] + _CENTRAL_SIZE : s[i] + _CENTRAL_SIZE + n[i]]).decode("cp437")
            folder, slash, base = name.rpartition("/")
            if base:
                add(folder + slash, np.array([base.encode("utf-8")]), rows[i : i + 1])
        cut = np.where(mat == ord("/"), cols[None, :] + 1, 0).max(axis=1)  # folder length
        keep = (cut < n) & ~legacy  # drop folder entries ("dir/") and the legacy rows done above
        mat, cut, n, rows = mat[keep], cut[keep], n[keep], rows[keep]
        prefix = np.where(cols[None, :] < cut[:, None], mat, 0)
        prefix = np.ascontiguousarray(prefix[:, : max(int(cut.max(initial=0)), 1)])
        keys, inverse = np.unique(prefix.view(f"V{prefix.shape[1]}").ravel(), return_inverse=True)
        for g, key in enumerate(keys):
            members = np.flatnonzero(inverse == g)
            c = int(cut[members[0]])
            folder = bytes(key)[:c].decode("utf-8")
            bases = np.ascontiguousarray(mat[members, c:]).view(f"S{width - c}").ravel()
            add(folder, bases, rows[members])
    return folders


def _zip64_extra(cd: memoryview, pos: int, usize: int, csize: int, offset: int, path: str) -> tuple[int, int, int]:
    """Replace the 0xFFFFFFFF fields of one central header from its zip64 extra field."""
    name_len, extra_len, _ = _LENGTHS.unpack_from(cd, pos + 28)
    extra = bytes(cd[pos + _CENTRAL_SIZE + name_len : pos + _CENTRAL_SIZE + name_len + extra_len])
    k = 0
    while k + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, k)
        if tag == 0x0001:
            values = extra[k + 4 : k + 4 + length]
            j = 0
            try:
                if usize == 0xFFFFFFFF:
                    (usize,) = struct.unpack_from("<Q", values, j)
                    j += 8
                if csize == 0xFFFFFFFF:
                    (csize,) = struct.unpack_from("<Q", values, j)
                    j += 8
                if offset == 0xFFFFFFFF:
                    (offset,) = struct.unpack_from("<Q", values, j)
            except struct.error:
                break
            return usize, csize, offset
        k += 4 + length
    name = bytes(cd[pos + _CENTRAL_SIZE : pos + _CENTRAL_SIZE + name_len]).decode("utf-8", "replace")
    raise DataError(f"{path}: {name}: corrupt zip64 extra field")


_OPEN: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def open_archive(path: str | os.PathLike, *, in_memory: bool = False) -> ZipArchive:
    """A shared `ZipArchive` for `path`: the train, val and test datasets of one run reuse one
    index and one in-RAM copy instead of loading the zip three times. A changed file (size or
    modification time) is indexed again."""
    path = os.path.realpath(os.fspath(path))
    try:
        stat = os.stat(path)
    except OSError:
        return ZipArchive(path, in_memory=in_memory)  # raises the DataError
    key = (path, stat.st_size, stat.st_mtime_ns, bool(in_memory))
    archive = _OPEN.get(key)
    if archive is None:
        archive = ZipArchive(path, in_memory=in_memory)
        _OPEN[key] = archive
    return archive
