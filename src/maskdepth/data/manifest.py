"""Manifests: which fg_bg, bg, mask and depth entries form one sample.

A manifest is a CSV with a header and one row per sample:

    fg_bg,bg,mask,depth,bg_id,fg_id[,fg_bg_archive,bg_archive,mask_archive,depth_archive][,...]

The first four columns are entry names inside zip archives. Inside a zip made by `make-data`
(`manifest.csv` at the top level) they name entries of that zip. A manifest file on disk (what
`maskdepth index` writes) names its archives in the `*_archive` columns, relative paths resolved
from the manifest's folder, so DATA can be either the zip or the manifest. `bg_id` defaults to the
bg entry's stem, `fg_id` to "". Other columns are ignored.

Loaded manifests are integer arrays (entry index and archive number per role, codes into small
lists of bg / fg ids), never per-sample Python strings: workers forked from the process that
loaded them do not copy them page by page through reference counting.

`build_manifest` pairs the original S15 layout, which has no manifest: fg_bg, mask and depth by
file stem (`fg_bg/bg192_001_fg001_05.jpg` <-> `mask/bg192_001_fg001_05.jpg` <->
`fg_bg_depth_full/bg192_001_fg001_05.jpg`, any folders and image extensions) and fg_bg to its
background by the key that `bg_pattern` captures from both stems (default `DEFAULT_BG_PATTERN`:
everything before the first "_fg", so `bg192_001` <-> `bg_192/bg192_001.jpg`; a background stem
that the pattern does not match is its own key, see `build_manifest`).
An entry that cannot be paired exactly is reported by name and left out; nothing is guessed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskdepth.data.archive import ZipArchive, describe_duplicates, open_archive, release_free_memory, shared_names
from maskdepth.errors import ConfigError, DataError
from maskdepth.fileio import atomic_open, refuse_overwrite

ROLES = ("fg_bg", "bg", "mask", "depth")
ARCHIVE_COLUMNS = tuple(f"{role}_archive" for role in ROLES)
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "dataset.json"
SCENES_NAME = "scenes.csv"  # make-data's side table (what made each scene): never a training input
DEFAULT_BG_PATTERN = r"^(.+?)_(fg[^_]*)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_BLOCK_ROWS = 32768  # manifest rows resolved per block
_MAX_LISTED = 20
_MAX_MANIFEST_BYTES = 1 << 30  # manifest.csv / dataset.json inside a zip (400k rows: ~50 MB)


@dataclass(eq=False)
class Manifest:
    """The samples of one dataset, as arrays.

    Attributes:
        source: the manifest's location, for messages ("data.zip" or "path/manifest.csv").
        archives: the zips that the entries live in.
        entries: int32 [4, N], entry index per role (ROLES order) and sample; -1 = not found.
        archive_ids: uint16 [4, N], index into `archives` per role and sample.
        bg_code, fg_code: int32 [N], indices into `bg_ids` / `fg_ids`.
        info: dataset.json (empty when there is none).
        missing: messages naming the first entries that are not in their archive; missing_count: all.
        fingerprint: {"samples": N, "sha1": ...}, a hash of the rows' entry names and bg ids: what
            identifies the data a run trained on, the same for a copy of the archive at another path.
    """

    source: str
    archives: list[ZipArchive]
    entries: np.ndarray
    archive_ids: np.ndarray
    bg_code: np.ndarray
    bg_ids: list[str]
    fg_code: np.ndarray
    fg_ids: list[str]
    info: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    missing_count: int = 0
    fingerprint: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.entries.shape[1]

    def archive(self, role: int, row: int) -> ZipArchive:
        return self.archives[self.archive_ids[role, row]]

    def entry_name(self, role: int, row: int) -> str:
        """The entry name of `role` (index into ROLES) in sample `row` ("?" if missing)."""
        index = int(self.entries[role, row])
        return self.archive(role, row).name(index) if index >= 0 else "?"

    def where(self, role: int, row: int) -> str:
        """'archive: entry' of `role` in sample `row`, for error messages."""
        return f"{self.archive(role, row).path}: {self.entry_name(role, row)}"

    def read(self, role: int, row: int) -> bytes:
        """The bytes of `role` in sample `row`; DataError naming the entry when it is missing."""
        index = int(self.entries[role, row])
        archive = self.archive(role, row)
        if index < 0:
            raise DataError(f"{archive.path}: sample {row} of {self.source}: {ROLES[role]} entry "
                            "is missing from the archive")
        return archive.read(index)


_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def load_manifest(path: str | os.PathLike, *, in_memory: bool = False,
                  list_missing: int | None = _MAX_LISTED) -> Manifest:
    """The manifest of a dataset: `path` is a zip holding manifest.csv (and dataset.json), a
    manifest CSV naming its archives, or a folder holding manifest.csv.

    Entries that are not in their archive do not raise here: they are -1 in `entries` and listed
    in `missing`, the first `list_missing` of them (None: all; the dataset decides whether that
    is fatal). Loads are shared while in use.

    Raises:
        DataError: missing file, not a zip, no manifest, bad columns, unknown archive.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, MANIFEST_NAME)):
            raise DataError(f"{path}: a folder without {MANIFEST_NAME}; give a zip or a manifest.csv")
        path = os.path.join(path, MANIFEST_NAME)
    if not os.path.exists(path):
        raise DataError(f"{path}: dataset not found (expected a zip with {MANIFEST_NAME}, or a manifest.csv)")
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns, bool(in_memory))
    if list_missing != _MAX_LISTED:
        return _load(path, in_memory, list_missing)
    manifest = _LOADED.get(key)
    if manifest is None:
        manifest = _load(path, in_memory, list_missing)
        _LOADED[key] = manifest
    return manifest


def _load(path: str, in_memory: bool, list_missing: int | None) -> Manifest:
    if path.lower().endswith(".csv"):
        with open(path, "rb") as f:
            text = f.read()
        base_dir = os.path.dirname(os.path.abspath(path))
        default_archive = None
        info_path = os.path.join(base_dir, INFO_NAME)
        info = {}
        if os.path.isfile(info_path):
            with open(info_path, "rb") as f:
                info = _parse_info(f.read(), info_path)
    else:
        default_archive = open_archive(path, in_memory=in_memory)
        index = default_archive.find(MANIFEST_NAME)
        if index < 0:
            raise DataError(
                f"{path}: no {MANIFEST_NAME} in the archive. For archives without one (the original "
                "bg / fg_bg / mask / depth zips) run `maskdepth index --bg BG.zip --fg-bg FG_BG.zip "
                "--mask MASK.zip --depth DEPTH.zip --out manifest.csv` and use the manifest as DATA"
            )
        text = default_archive.read(index, _MAX_MANIFEST_BYTES)
        base_dir = os.path.dirname(os.path.abspath(path))
        info_index = default_archive.find(INFO_NAME)
        info = (_parse_info(default_archive.read(info_index, _MAX_MANIFEST_BYTES), f"{path}: {INFO_NAME}")
                if info_index >= 0 else {})
    manifest = _parse_manifest(text, path, base_dir, default_archive, in_memory, info, list_missing)
    release_free_memory()
    return manifest


def read_scene_table(path: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The rows of the scenes.csv side table of a zip made by make-data (its columns are listed in
    `maskdepth.synth.make`), numbers as int or float; None when the zip has none (another
    dataset, or one made before the table existed). For grouping evaluation errors by what made
    each scene. Raises DataError for a missing or unreadable zip."""
    archive = open_archive(path, in_memory=False)
    index = archive.find(SCENES_NAME)
    if index < 0:
        return None
    text = archive.read(index, _MAX_MANIFEST_BYTES).decode("utf-8")
    return [{key: value if key in _TEXT_COLUMNS else _number(value) for key, value in row.items()}
            for row in csv.DictReader(io.StringIO(text))]


_TEXT_COLUMNS = ("fg_bg", "bg_id", "fg_id")  # ids stay text even when they look like numbers


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def _parse_info(data: bytes, where: str) -> dict:
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{where}: expected a JSON object")
    return info


def _parse_manifest(data: bytes, source: str, base_dir: str, default_archive: ZipArchive | None, in_memory: bool,
                    info: dict, list_missing: int | None) -> Manifest:
    """Resolve every row to entry indices, `_BLOCK_ROWS` rows at a time (read by the csv module),
    so that a 400k-row manifest never exists as 1.6M Python strings at once."""
    # decoded a chunk at a time as the csv module reads (a whole decoded copy of a 400k-row
    # manifest would cost ~250 MB as a StringIO); a BOM (Excel's "CSV UTF-8") is dropped
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    try:
        return _resolve_rows(reader, source, base_dir, default_archive, in_memory, info, list_missing)
    except UnicodeDecodeError:
        try:
            data.decode("utf-8-sig")  # again, whole, for the position (rare)
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: {MANIFEST_NAME} is not UTF-8 text (byte {exc.start})") from None
        raise


def _resolve_rows(reader: Any, source: str, base_dir: str, default_archive: ZipArchive | None, in_memory: bool,
                  info: dict, list_missing: int | None) -> Manifest:
    header = [h.strip() for h in next(reader, [])]
    absent = [c for c in ROLES if c not in header]
    if absent:
        raise DataError(f"{source}: manifest has no column {', '.join(absent)} "
                        f"(columns: {', '.join(header) or 'none'})")
    col = {name: i for i, name in enumerate(header)}
    archive_col = [col.get(c) for c in ARCHIVE_COLUMNS]
    if default_archive is None and None in archive_col:
        lacking = [c for c, i in zip(ARCHIVE_COLUMNS, archive_col, strict=True) if i is None]
        raise DataError(
            f"{source}: a manifest outside a zip must name its archives; add the column(s) "
            f"{', '.join(lacking)} (paths relative to the manifest's folder), or build it with `maskdepth index`"
        )
    resolver = _Resolver(source, base_dir, default_archive, in_memory, list_missing)
    entries: list[list[np.ndarray]] = [[] for _ in ROLES]
    archive_ids: list[list[np.ndarray]] = [[] for _ in ROLES]
    bg_parts: list[np.ndarray] = []
    fg_parts: list[np.ndarray] = []
    digest = hashlib.sha1()
    for numbers, columns in _row_blocks(reader, header, source):
        for k, role in enumerate(ROLES):
            values = columns[archive_col[k]] if archive_col[k] is not None else None
            found, ids = resolver.resolve(role, columns[col[role]], values, numbers)
            entries[k].append(found.astype(np.int32))
            archive_ids[k].append(ids.astype(np.uint16))
        bg_ids = columns[col["bg_id"]] if "bg_id" in col else [_stem(name) for name in columns[col["bg"]]]
        bg_parts.append(_as_bytes(bg_ids))
        for values in [*(columns[col[role]] for role in ROLES), bg_ids]:
            digest.update(("\n".join(values) + "\0").encode("utf-8"))
        fg_parts.append(_as_bytes(columns[col["fg_id"]]) if "fg_id" in col else np.zeros(len(numbers), dtype="S1"))
    if not bg_parts:
        raise DataError(f"{source}: the manifest lists no samples")
    bg_ids, bg_code = np.unique(np.concatenate(bg_parts), return_inverse=True)
    fg_ids, fg_code = np.unique(np.concatenate(fg_parts), return_inverse=True)
    found = np.stack([np.concatenate(parts) for parts in entries])
    which = np.stack([np.concatenate(parts) for parts in archive_ids])
    _hash_contents(digest, found, which, resolver.archives)
    return Manifest(source=source, archives=resolver.archives, entries=found, archive_ids=which,
                    bg_code=bg_code.astype(np.int32), bg_ids=[b.decode("utf-8") for b in bg_ids],
                    fg_code=fg_code.astype(np.int32), fg_ids=[f.decode("utf-8") for f in fg_ids], info=info,
                    missing=resolver.missing, missing_count=resolver.missing_count,
                    fingerprint={"samples": int(len(bg_code)), "sha1": digest.hexdigest()[:16]})


def _hash_contents(digest: Any, entries: np.ndarray, archive_ids: np.ndarray, archives: list[ZipArchive]) -> None:
    """Add every resolved entry's CRC-32 to the fingerprint: synthetic archives made with other
    seeds share every name and bg id; their images differ. Missing entries count as 0."""
    crcs = np.zeros(entries.shape, dtype=np.uint32)
    for a, archive in enumerate(archives):
        at = (archive_ids == a) & (entries >= 0)
        crcs[at] = archive.crcs(entries[at])
    digest.update(crcs.astype("<u4").tobytes())


def _as_bytes(values: list[str]) -> np.ndarray:
    """UTF-8 byte strings in a fixed-width array (a quarter of numpy's unicode arrays)."""
    return np.array([v.encode("utf-8") for v in values], dtype=bytes)


class _Resolver:
    """Turns manifest rows into entry indices and archive numbers, opening each archive that the
    `*_archive` columns name once, and collecting the entries that are not in their archive."""

    def __init__(self, source: str, base_dir: str, default: ZipArchive | None, in_memory: bool,
                 list_missing: int | None) -> None:
        self.source, self.base_dir, self.in_memory, self.list_missing = source, base_dir, in_memory, list_missing
        self.archives: list[ZipArchive] = [] if default is None else [default]
        self.numbers: dict[str, int] = {} if default is None else {"": 0}
        self.missing: list[str] = []
        self.missing_count = 0

    def archive_id(self, value: str, line: int) -> int:
        number = self.numbers.get(value)
        if number is None:
            if not value:
                raise DataError(f"{self.source}: line {line}: empty archive column")
            target = value if os.path.isabs(value) else os.path.join(self.base_dir, value)
            if not os.path.isfile(target):
                raise DataError(f"{self.source}: line {line}: archive {value!r} not found (looked for {target})")
            self.archives.append(open_archive(target, in_memory=self.in_memory))
            number = self.numbers[value] = len(self.archives) - 1
        return number

    def resolve(self, role: str, names: list[str], values: list[str] | None,
                numbers: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(entry index per row, -1 where missing; archive number per row) of one role's column."""
        n = len(names)
        if values is None:
            ids = np.zeros(n, dtype=np.int64)
        else:
            number = {v: self.archive_id(v, numbers[values.index(v)]) for v in set(values)}
            if len(number) == 1:
                ids = np.full(n, next(iter(number.values())), dtype=np.int64)
            else:
                ids = np.fromiter((number[v] for v in values), np.int64, n)
        found = np.full(n, -1, dtype=np.int64)
        for a in np.unique(ids):
            rows = np.flatnonzero(ids == a)
            found[rows] = self.archives[a].lookup(names if len(rows) == n else [names[i] for i in rows])
        for i in np.flatnonzero(found < 0):
            self.missing_count += 1
            if self.list_missing is None or len(self.missing) < self.list_missing:
                what = f"{role} entry {names[i]!r}" if names[i] else f"empty {role} entry"
                where = self.archives[ids[i]].path
                self.missing.append(f"{where}: {what} (line {numbers[i]} of {self.source}) is not in the archive")
        return found, ids


def _row_blocks(reader: Any, header: list[str], source: str) -> Iterator[tuple[list[int], list[list[str]]]]:
    """(line numbers, columns: one list of str per header column) of up to `_BLOCK_ROWS` rows at a
    time; blank lines are left out, a row with another number of fields is a DataError."""
    width = len(header)
    while True:
        numbers: list[int] = []
        rows: list[list[str]] = []
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                raise DataError(f"{source}: line {reader.line_num}: {len(row)} fields, "
                                f"expected {width} ({', '.join(header)})")
            numbers.append(reader.line_num)
            rows.append(row)
            if len(rows) == _BLOCK_ROWS:
                break
        if not rows:
            return
        yield numbers, [list(column) for column in zip(*rows, strict=True)]


def _stem(name: str) -> str:
    return os.path.splitext(name.strip().rpartition("/")[2])[0]


# ---------------------------------------------------------------------- build_manifest


@dataclass
class IndexReport:
    """What `build_manifest` paired and what it could not.

    Attributes:
        out: the manifest written (None when nothing could be paired).
        rows: samples written.
        counts: image entries found per role.
        unpaired: one line per entry left out: "archive: entry: why".
        ignored: entries that are not images (or macOS metadata), skipped silently.
        duplicates: one line per archive in which an entry name occurs twice (named and counted;
            only the last of each is read, so the pairing is ambiguous: `ok` is False).
        shared: one line per two archives that hold the same entry names (named and counted; a
            note, as zips of flat file names may legitimately share them).
    """

    out: str | None
    rows: int
    counts: dict[str, int]
    sources: dict[str, str]
    unpaired: list[str]
    ignored: int = 0
    duplicates: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.out is not None and not self.unpaired and not self.duplicates

    def format(self) -> str:
        found = ", ".join(f"{self.counts[r]} {r} in {self.sources[r]}" for r in ROLES)
        lines = [f"index: found {found}."]
        if self.ignored:
            lines.append(f"skipped {self.ignored} entries that are not images (folders, macOS metadata, other files)")
        if self.out is not None:
            lines.append(f"paired {self.rows} samples; wrote {self.out}")
        elif self.rows and self.duplicates:
            lines.append(f"paired {self.rows} samples, but wrote no manifest: an archive repeats entry names (below)")
        else:
            lines.append("paired no sample; no manifest written (check the archives and --bg-pattern)")
        if self.unpaired:
            lines.append(f"{len(self.unpaired)} entries could not be paired and are not in the manifest:")
            lines.extend(f"  {line}" for line in self.unpaired)
        else:
            lines.append("every entry paired.")
        lines.extend(self.duplicates)
        lines.extend(f"note: {line}" for line in self.shared)
        return "\n".join(lines)


def _split_spec(spec: str | os.PathLike) -> tuple[str, str]:
    """'data.zip' -> (data.zip, ''); 'data.zip::fg_bg/' -> (data.zip, 'fg_bg/') for one zip with several folders."""
    spec = os.fspath(spec)
    path, sep, folder = spec.rpartition("::")
    if not sep:
        return spec, ""
    return path, folder if not folder or folder.endswith("/") else folder + "/"


def _images_by_stem(archive: ZipArchive, folder: str, role: str, unpaired: list[str]) -> tuple[dict[str, str], int]:
    """stem -> entry name for the images of one role; a stem found twice is ambiguous: reported, dropped."""
    by_stem: dict[str, list[str]] = {}
    ignored = 0
    for name in archive.names():
        if folder and not name.startswith(folder):
            continue
        base = name.rpartition("/")[2]
        stem, ext = os.path.splitext(base)
        if ext.lower() not in IMAGE_EXTENSIONS or base.startswith(".") or name.startswith("__MACOSX/"):
            ignored += 1
            continue
        by_stem.setdefault(stem, []).append(name)
    unique: dict[str, str] = {}
    for stem, names in by_stem.items():
        if len(names) == 1:
            unique[stem] = names[0]
        else:
            for name in names:
                unpaired.append(f"{archive.path}: {name}: {role} stem {stem!r} occurs {len(names)} times "
                                f"({', '.join(names)})")
    return unique, ignored


def build_manifest(*, bg: str | os.PathLike, fg_bg: str | os.PathLike, mask: str | os.PathLike,
                   depth: str | os.PathLike, bg_pattern: str | None = None, out: str | os.PathLike) -> IndexReport:
    r"""Pair the entries of four archives that have no manifest and write `out` (a manifest CSV).

    fg_bg, mask and depth pair by file stem; fg_bg to bg by a key: `bg_pattern` is a regex matched
    from the start of each stem, and its first group is the key (a second group, if any, becomes
    fg_id). It is applied to the fg_bg stem and to each background's stem; a background stem that
    it does not match is its own key. So `bg192_(\d+)` (keys '001') and `(bg192_\d+)` (keys
    'bg192_001') pair `fg_bg/bg192_001_fg001_05.jpg` with `bg_192/bg192_001.jpg` alike. Default
    `DEFAULT_BG_PATTERN` (everything before "_fg": it matches no background stem, so the key is
    the whole background stem). bg_id is the background's stem. Each argument is a zip, or `ZIP::FOLDER/`
    to take one folder of a zip that holds several roles. The manifest stores the archive paths
    relative to its own folder. Samples are sorted by fg_bg name.

    Returns:
        IndexReport; `.ok` is False when any entry could not be paired (it is named in
        `.unpaired`; the manifest holds the paired samples) or an archive holds an entry name
        twice (`.duplicates`; then no manifest is written, as it would read hidden copies).
        Names found in two of the archives are noted in `.shared`.

    Raises:
        ConfigError: an invalid `bg_pattern`. DataError: an archive is missing or unreadable.
    """
    pattern_text = DEFAULT_BG_PATTERN if bg_pattern is None else bg_pattern
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise ConfigError(f"--bg-pattern {pattern_text!r} is not a valid regex ({exc})") from None
    if pattern.groups < 1:
        raise ConfigError(f"--bg-pattern {pattern_text!r} needs a group, e.g. '^(.+?)_fg', "
                          "that captures the background key")
    specs = {"bg": bg, "fg_bg": fg_bg, "mask": mask, "depth": depth}
    unpaired: list[str] = []
    archives, tables, ignored = _open_roles(specs, unpaired)
    rows = _pair_entries(archives, tables, pattern, pattern_text, unpaired)
    out = os.fspath(out)
    refuse_overwrite(out, {f"--{r.replace('_', '-')}": archives[r].path for r in ROLES})
    written, lines = None, _duplicate_lines(list(archives.values()))
    if rows and not lines["duplicates"]:  # a repeated name hides an entry: no manifest that would read it
        _write_manifest(out, rows, [archives[r].path for r in ROLES])
        written = out
    return IndexReport(out=written, rows=len(rows), counts={r: len(tables[r]) for r in ROLES},
                       sources={r: archives[r].path for r in ROLES}, unpaired=unpaired, ignored=ignored, **lines)


def _pair_entries(
    archives: dict[str, ZipArchive], tables: dict[str, dict[str, str]], pattern: re.Pattern, pattern_text: str,
    unpaired: list[str],
) -> list[tuple]:
    """The manifest rows (fg_bg, bg, mask, depth, bg_id, fg_id) of `build_manifest`, sorted by
    fg_bg name; every entry that cannot be paired exactly goes to `unpaired`, with the reason."""
    bg_by_key = _backgrounds_by_key(tables["bg"], pattern, archives["bg"].path, unpaired)
    rows = []
    used_bg: set[str] = set()
    for stem in sorted(tables["fg_bg"], key=lambda s: tables["fg_bg"][s]):
        problems = [f"no {role} with stem {stem!r} in {archives[role].path}"
                    for role in ("mask", "depth") if stem not in tables[role]]
        match = pattern.match(stem)
        bg_key = match.group(1) if match else None
        if match is None:
            problems.append(f"stem does not match --bg-pattern {pattern_text!r}")
        elif bg_key not in bg_by_key:
            problems.append(f"no background whose key is {bg_key!r} (captured by --bg-pattern) "
                            f"in {archives['bg'].path}")
        else:
            used_bg.add(bg_by_key[bg_key])
        if problems:
            unpaired.append(f"{archives['fg_bg'].path}: {tables['fg_bg'][stem]}: {'; '.join(problems)}")
            continue
        fg_id = match.group(2) if pattern.groups >= 2 and match.group(2) else ""
        bg_stem = bg_by_key[bg_key]
        rows.append((tables["fg_bg"][stem], tables["bg"][bg_stem], tables["mask"][stem], tables["depth"][stem],
                     bg_stem, fg_id))
    for role in ("mask", "depth"):
        for stem in sorted(set(tables[role]) - set(tables["fg_bg"])):
            unpaired.append(f"{archives[role].path}: {tables[role][stem]}: no fg_bg with stem {stem!r}")
    for stem in sorted(set(bg_by_key.values()) - used_bg):
        unpaired.append(f"{archives['bg'].path}: {tables['bg'][stem]}: no fg_bg refers to this background")
    return rows


def _backgrounds_by_key(stems: dict[str, str], pattern: re.Pattern, path: str, unpaired: list[str]) -> dict[str, str]:
    """key -> background stem. A background's key is what `pattern` captures from its stem (group
    1, matched from the start, as for fg_bg stems), or its whole stem when the pattern does not
    match it; two backgrounds with one key are ambiguous: reported in `unpaired`, left out."""
    by_key: dict[str, list[str]] = {}
    for stem in stems:
        match = pattern.match(stem)
        by_key.setdefault(match.group(1) if match else stem, []).append(stem)
    unique = {}
    for key, found in by_key.items():
        if len(found) == 1:
            unique[key] = found[0]
            continue
        names = ", ".join(stems[stem] for stem in sorted(found))
        unpaired.extend(f"{path}: {stems[stem]}: {len(found)} backgrounds have the key {key!r} ({names})"
                        for stem in sorted(found))
    return unique


def _open_roles(
    specs: dict[str, str | os.PathLike], unpaired: list[str]
) -> tuple[dict[str, ZipArchive], dict[str, dict[str, str]], int]:
    """(archive per role, stem -> entry name per role, entries that are not images) of the
    `build_manifest` arguments; stems found twice in a role go to `unpaired`."""
    ignored = 0
    tables: dict[str, dict[str, str]] = {}
    archives: dict[str, ZipArchive] = {}
    seen: dict[tuple[str, str], str] = {}
    for role in ROLES:
        path, folder = _split_spec(specs[role])
        archive = archives[role] = open_archive(path, in_memory=False)
        other = seen.get((archive.path, folder))
        if other is not None:
            raise DataError(
                f"{path}: given for both --{other.replace('_', '-')} and --{role.replace('_', '-')}; "
                f"for one zip holding several folders write e.g. {path}::fg_bg/"
            )
        seen[(archive.path, folder)] = role
        tables[role], skipped = _images_by_stem(archive, folder, role, unpaired)
        ignored += skipped
    return archives, tables, ignored


def _duplicate_lines(archives: list[ZipArchive]) -> dict[str, list[str]]:
    """{"duplicates": names repeated inside an archive, "shared": names found in two of the
    archives}, one line per archive or pair, each naming and counting them."""
    distinct = list({archive.path: archive for archive in archives}.values())  # ZIP::FOLDER specs share one
    duplicates = [line for line in map(describe_duplicates, distinct) if line is not None]
    shared = []
    for i, first in enumerate(distinct):
        for second in distinct[i + 1 :]:
            count, names = shared_names(first, second)
            if count:
                more = ", ..." if count > len(names) else ""
                shared.append(f"{count} entry name(s) occur in both {first.path} and {second.path}: "
                              f"{', '.join(names)}{more}")
    return {"duplicates": duplicates, "shared": shared}


def _write_manifest(out: str, rows: list[tuple], archive_paths: list[str]) -> None:
    """Write atomically (a reader or a dying runtime sees the old file or the whole new one)."""
    folder = os.path.dirname(os.path.abspath(out))
    relative = []
    for path in archive_paths:
        try:
            relative.append(os.path.relpath(path, folder).replace(os.sep, "/"))
        except ValueError:  # another drive on Windows
            relative.append(path)
    with atomic_open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(list(ROLES) + ["bg_id", "fg_id"] + list(ARCHIVE_COLUMNS))
        for row in rows:
            writer.writerow(list(row) + relative)
