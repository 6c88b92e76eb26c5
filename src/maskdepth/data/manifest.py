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
background by the key that `bg_pattern` captures from the fg_bg stem (default
`DEFAULT_BG_PATTERN`: everything before the first "_fg", so `bg192_001` <-> `bg_192/bg192_001.jpg`).
An entry that cannot be paired exactly is reported by name and left out; nothing is guessed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import weakref
from array import array
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterator

import numpy as np

from maskdepth.data.archive import ZipArchive, open_archive
from maskdepth.errors import ConfigError, DataError

ROLES = ("fg_bg", "bg", "mask", "depth")
ARCHIVE_COLUMNS = tuple(f"{role}_archive" for role in ROLES)
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "dataset.json"
DEFAULT_BG_PATTERN = r"^(.+?)_(fg[^_]*)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_ROWS_PER_CHUNK = 65536
_MAX_LISTED = 20


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
            raise DataError(f"{archive.path}: sample {row} of {self.source}: {ROLES[role]} entry is missing from the archive")
        return archive.read(index)


_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def load_manifest(path: str | os.PathLike, *, in_memory: bool = False, list_missing: int | None = _MAX_LISTED) -> Manifest:
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
        text = default_archive.read(index)
        base_dir = os.path.dirname(os.path.abspath(path))
        info_index = default_archive.find(INFO_NAME)
        info = _parse_info(default_archive.read(info_index), f"{path}: {INFO_NAME}") if info_index >= 0 else {}
    return _parse_manifest(text, path, base_dir, default_archive, in_memory, info, list_missing)


def _parse_info(data: bytes, where: str) -> dict:
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{where}: expected a JSON object")
    return info


def _parse_manifest(
    data: bytes,
    source: str,
    base_dir: str,
    default_archive: ZipArchive | None,
    in_memory: bool,
    info: dict,
    list_missing: int | None,
) -> Manifest:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{source}: {MANIFEST_NAME} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    absent = [c for c in ROLES if c not in header]
    if absent:
        raise DataError(f"{source}: manifest has no column {', '.join(absent)} (columns: {', '.join(header) or 'none'})")
    col = {name: i for i, name in enumerate(header)}
    archive_col = [col.get(c) for c in ARCHIVE_COLUMNS]
    if default_archive is None and None in archive_col:
        lacking = [c for c, i in zip(ARCHIVE_COLUMNS, archive_col) if i is None]
        raise DataError(
            f"{source}: a manifest outside a zip must name its archives; add the column(s) "
            f"{', '.join(lacking)} (paths relative to the manifest's folder), or build it with `maskdepth index`"
        )
    archives: list[ZipArchive] = [] if default_archive is None else [default_archive]
    archive_number: dict[str, int] = {} if default_archive is None else {"": 0}

    def archive_id(text: str, line: int) -> int:
        number = archive_number.get(text)
        if number is None:
            if not text:
                raise DataError(f"{source}: line {line}: empty archive column")
            target = text if os.path.isabs(text) else os.path.join(base_dir, text)
            if not os.path.isfile(target):
                raise DataError(f"{source}: line {line}: archive {text!r} not found (looked for {target})")
            archives.append(open_archive(target, in_memory=in_memory))
            number = archive_number[text] = len(archives) - 1
        return number

    bg_col, fg_col = col.get("bg_id"), col.get("fg_id")
    entries = [array("i") for _ in ROLES]
    archive_ids = [array("H") for _ in ROLES]
    bg_code, fg_code = array("i"), array("i")
    bg_number: dict[str, int] = {}
    fg_number: dict[str, int] = {}
    missing: list[str] = []
    missing_count = 0
    width = len(header)
    for numbered in _chunks(enumerate(reader, start=2), _ROWS_PER_CHUNK):
        lines = [line for line, _ in numbered]
        chunk = [row for _, row in numbered]
        for line, row in numbered:
            if len(row) < width:
                raise DataError(f"{source}: line {line}: {len(row)} fields, expected {width} ({', '.join(header)})")
        for k, role in enumerate(ROLES):
            names = [row[col[role]].strip() for row in chunk]
            if archive_col[k] is None:
                ids = np.zeros(len(chunk), dtype=np.int64)
            else:
                ids = np.fromiter((archive_id(row[archive_col[k]].strip(), line) for row, line in zip(chunk, lines)), np.int64, len(chunk))
            found = np.full(len(chunk), -1, dtype=np.int64)
            for number in np.unique(ids):
                rows = np.flatnonzero(ids == number)
                found[rows] = archives[number].lookup([names[i] for i in rows])
            for i in np.flatnonzero(found < 0):
                missing_count += 1
                if list_missing is None or len(missing) < list_missing:
                    what = f"{role} entry {names[i]!r}" if names[i] else f"empty {role} entry"
                    missing.append(f"{archives[ids[i]].path}: {what} (line {lines[i]} of {source}) is not in the archive")
            entries[k].extend(found.astype(np.int32))
            archive_ids[k].extend(ids.astype(np.uint16))
        for row in chunk:
            bg_id = row[bg_col].strip() if bg_col is not None else _stem(row[col["bg"]])
            bg_code.append(bg_number.setdefault(bg_id, len(bg_number)))
            fg_id = row[fg_col].strip() if fg_col is not None else ""
            fg_code.append(fg_number.setdefault(fg_id, len(fg_number)))
    if not bg_code:
        raise DataError(f"{source}: the manifest lists no samples")
    return Manifest(
        source=source,
        archives=archives,
        entries=np.stack([np.frombuffer(a, dtype=np.int32) for a in entries]),
        archive_ids=np.stack([np.frombuffer(a, dtype=np.uint16) for a in archive_ids]),
        bg_code=np.frombuffer(bg_code, dtype=np.int32).copy(),
        bg_ids=list(bg_number),
        fg_code=np.frombuffer(fg_code, dtype=np.int32).copy(),
        fg_ids=list(fg_number),
        info=info,
        missing=missing,
        missing_count=missing_count,
    )


def _chunks(rows: Iterator[tuple[int, list[str]]], n: int) -> Iterator[list[tuple[int, list[str]]]]:
    """Lists of up to n (line number, row) pairs; blank lines skipped."""
    while True:
        block = list(islice(rows, n))
        if not block:
            return
        chunk = [(line, row) for line, row in block if row]
        if chunk:
            yield chunk


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
    """

    out: str | None
    rows: int
    counts: dict[str, int]
    sources: dict[str, str]
    unpaired: list[str]
    ignored: int = 0

    @property
    def ok(self) -> bool:
        return self.out is not None and not self.unpaired

    def format(self) -> str:
        found = ", ".join(f"{self.counts[r]} {r} in {self.sources[r]}" for r in ROLES)
        lines = [f"index: found {found}."]
        if self.ignored:
            lines.append(f"skipped {self.ignored} entries that are not images (folders, macOS metadata, other files)")
        if self.out is not None:
            lines.append(f"paired {self.rows} samples; wrote {self.out}")
        else:
            lines.append("paired no sample; no manifest written (check the archives and --bg-pattern)")
        if self.unpaired:
            lines.append(f"{len(self.unpaired)} entries could not be paired and are not in the manifest:")
            lines.extend(f"  {line}" for line in self.unpaired)
        else:
            lines.append("every entry paired.")
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
                unpaired.append(f"{archive.path}: {name}: {role} stem {stem!r} occurs {len(names)} times ({', '.join(names)})")
    return unique, ignored


def build_manifest(
    *,
    bg: str | os.PathLike,
    fg_bg: str | os.PathLike,
    mask: str | os.PathLike,
    depth: str | os.PathLike,
    bg_pattern: str | None = None,
    out: str | os.PathLike,
) -> IndexReport:
    """Pair the entries of four archives that have no manifest and write `out` (a manifest CSV).

    fg_bg, mask and depth pair by file stem; fg_bg to bg by `bg_pattern`, a regex searched from
    the start of the fg_bg stem whose first group is the background's stem (a second group, if
    any, becomes fg_id). Default `DEFAULT_BG_PATTERN`. Each argument is a zip, or `ZIP::FOLDER/`
    to take one folder of a zip that holds several roles. The manifest stores the archive paths
    relative to its own folder. Samples are sorted by fg_bg name.

    Returns:
        IndexReport; `.ok` is False when any entry could not be paired (it is named in
        `.unpaired`; the manifest holds the paired samples).

    Raises:
        ConfigError: an invalid `bg_pattern`. DataError: an archive is missing or unreadable.
    """
    pattern_text = DEFAULT_BG_PATTERN if bg_pattern is None else bg_pattern
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise ConfigError(f"--bg-pattern {pattern_text!r} is not a valid regex ({exc})") from None
    if pattern.groups < 1:
        raise ConfigError(f"--bg-pattern {pattern_text!r} needs a group, e.g. '^(.+?)_fg', that captures the background key")
    specs = {"bg": bg, "fg_bg": fg_bg, "mask": mask, "depth": depth}
    unpaired: list[str] = []
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

    rows = []
    used_bg: set[str] = set()
    used: dict[str, set[str]] = {"mask": set(), "depth": set()}
    for stem in sorted(tables["fg_bg"], key=lambda s: tables["fg_bg"][s]):
        problems = []
        for role in ("mask", "depth"):
            if stem in tables[role]:
                used[role].add(stem)
            else:
                problems.append(f"no {role} with stem {stem!r} in {archives[role].path}")
        match = pattern.match(stem)
        bg_key = match.group(1) if match else None
        if match is None:
            problems.append(f"stem does not match --bg-pattern {pattern_text!r}")
        elif bg_key not in tables["bg"]:
            problems.append(f"no background with stem {bg_key!r} (captured by --bg-pattern) in {archives['bg'].path}")
        else:
            used_bg.add(bg_key)
        if problems:
            unpaired.append(f"{archives['fg_bg'].path}: {tables['fg_bg'][stem]}: {'; '.join(problems)}")
            continue
        fg_id = match.group(2) if pattern.groups >= 2 and match.group(2) else ""
        rows.append((tables["fg_bg"][stem], tables["bg"][bg_key], tables["mask"][stem], tables["depth"][stem], bg_key, fg_id))
    for role in ("mask", "depth"):
        for stem in sorted(set(tables[role]) - set(tables["fg_bg"])):
            unpaired.append(f"{archives[role].path}: {tables[role][stem]}: no fg_bg with stem {stem!r}")
    for key in sorted(set(tables["bg"]) - used_bg):
        unpaired.append(f"{archives['bg'].path}: {tables['bg'][key]}: no fg_bg refers to this background")

    out = os.fspath(out)
    written = None
    if rows:
        _write_manifest(out, rows, [archives[r].path for r in ROLES])
        written = out
    return IndexReport(
        out=written,
        rows=len(rows),
        counts={r: len(tables[r]) for r in ROLES},
        sources={r: archives[r].path for r in ROLES},
        unpaired=unpaired,
        ignored=ignored,
    )


def _write_manifest(out: str, rows: list[tuple], archive_paths: list[str]) -> None:
    """Write atomically (temp file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    relative = []
    for path in archive_paths:
        try:
            relative.append(os.path.relpath(path, folder).replace(os.sep, "/"))
        except ValueError:  # another drive on Windows
            relative.append(path)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(list(ROLES) + ["bg_id", "fg_id"] + list(ARCHIVE_COLUMNS))
            for row in rows:
                writer.writerow(list(row) + relative)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
