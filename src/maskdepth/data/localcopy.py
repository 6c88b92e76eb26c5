"""A dataset on a slow mount (Google Drive), made ready on local disk once: copied, and indexed.

    data = prepare_dataset("/content/drive/MyDrive/s15", "/content/data")  # -> local manifest.csv
    data = prepare_dataset(".../s15.zip", "/content/data")                  # -> local copy of the zip

`prepare_dataset` takes the three forms a dataset comes in:

- a zip with a manifest.csv inside (what `make-data` writes): copied, and the copy returned;
- a manifest CSV naming its archives (what `maskdepth index` writes): the manifest and every
  archive it names (relative paths inside the manifest's folder) copied, the copied manifest
  returned;
- a folder holding the original four zips (bg, fg_bg, mask, depth) and no manifest: each zip's
  kind recognised (`find_kinds`), the four copied, then paired once by `build_manifest` into a
  manifest.csv next to the copies, which later calls reuse.

Copies are made with large sequential reads (what a FUSE mount is fast at), into a `.partial`
file renamed when complete, so an interrupted copy is never mistaken for a whole one, and the
next call continues it where it stopped. A copy whose size matches the source is reused.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from maskdepth.data.manifest import ARCHIVE_COLUMNS, MANIFEST_NAME, ROLES, build_manifest
from maskdepth.errors import DataError

_CHUNK = 16 << 20  # bytes per read when copying

# What a zip's file name or its top folder says about its kind, tried in this order (a depth zip
# of the original is "fg_bg_depth_full", which also contains "fg_bg" and "bg").
_KIND_WORDS = (("depth", re.compile(r"depth")), ("mask", re.compile(r"mask")),
               ("fg_bg", re.compile(r"fg[_-]?bg")), ("bg", re.compile(r"(^|[^a-z])bg")))


def copy_once(src: str | os.PathLike[str], dst_dir: str | os.PathLike[str], *, progress: bool = True,
              name: str | None = None) -> Path:
    """Copy file `src` into `dst_dir` (as `name`, default its own) unless a copy of the same size
    is already there; return the copy. A `.partial` file left by an interrupted copy of the same
    source (written after the source last changed) is continued, not restarted."""
    src, dst_dir = Path(src), Path(dst_dir)
    if not src.is_file():
        raise DataError(f"{src} not found; check the path (on Colab, is Drive mounted and the file in MyDrive?)")
    dst = dst_dir / (name or src.name)
    stat = src.stat()
    if dst.is_file() and dst.stat().st_size == stat.st_size:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    done = 0
    if partial.is_file() and partial.stat().st_mtime >= stat.st_mtime and partial.stat().st_size <= stat.st_size:
        done = partial.stat().st_size
    from tqdm.auto import tqdm

    with open(src, "rb") as fin, open(partial, "ab" if done else "wb") as fout, tqdm(
        total=stat.st_size, initial=done, unit="B", unit_scale=True, desc=f"copy {src.name}", disable=not progress
    ) as bar:
        fin.seek(done)
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(partial, dst)
    return dst


def kind_of(text: str) -> str | None:
    """The dataset role (bg | fg_bg | mask | depth) a zip's name or top folder names, or None."""
    lowered = text.lower()
    for kind, pattern in _KIND_WORDS:
        if pattern.search(lowered):
            return kind
    return None


def _top_folders(path: Path) -> set[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {PurePosixPath(n).parts[0] for n in zf.namelist() if "/" in n.strip("/")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path} is not a readable zip ({exc})") from None


def find_kinds(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """{role: zip} for the four zips of the original layout in `folder`.

    A zip's kind is read from its file name (`bg.zip`, `fg_bg_192.zip`, `mask.zip`, `depth.zip`,
    ...); a name that says nothing is decided by the zip's top folder (`bg_192/`, `fg_bg/`,
    `mask/`, `fg_bg_depth_full/`). Zips of no kind are ignored.

    Raises:
        DataError (one line): a kind that no zip or more than one zip holds, naming the zips.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    claims: dict[str, list[str]] = {role: [] for role in ROLES}
    zips = sorted(folder.glob("*.zip"))
    found: dict[str, Path] = {}
    for path in zips:
        kind = kind_of(path.stem)
        if kind is None:
            kinds = {k for k in map(kind_of, _top_folders(path)) if k is not None}
            kind = kinds.pop() if len(kinds) == 1 else None
        if kind is not None:
            claims[kind].append(path.name)
            found[kind] = path
    kinds = [next((k for k, v in claims.items() if p.name in v), "no kind") for p in zips]
    seen = ", ".join(f"{p.name} ({kind})" for p, kind in zip(zips, kinds, strict=True)) or "no zips"
    doubles = [f"{kind}: {' and '.join(names)}" for kind, names in claims.items() if len(names) > 1]
    if doubles:
        raise DataError(f"{folder}: more than one zip of a kind ({'; '.join(doubles)}); keep one of each of bg, "
                        f"fg_bg, mask, depth in the folder (it has {seen})")
    missing = [kind for kind, names in claims.items() if not names]
    if missing:
        raise DataError(f"{folder}: no {', '.join(missing)} zip; the folder must hold the four zips bg, fg_bg, mask "
                        f"and depth (named so, or with top folders bg_192/, fg_bg/, mask/, fg_bg_depth_full/); "
                        f"it has {seen}")
    return found


def manifest_archives(manifest: Path) -> list[str]:
    """The archive paths a manifest CSV names (relative to its folder), in order of appearance."""
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c for c in ARCHIVE_COLUMNS if c in (reader.fieldnames or [])]
        if not columns:
            raise DataError(f"{manifest} names no archives (no {', '.join(ARCHIVE_COLUMNS)} columns); "
                            "pass the zip that holds it instead")
        names = dict.fromkeys(row[c] for row in reader for c in columns if row.get(c))
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if PurePosixPath(name).is_absolute() or ".." in parts:
            raise DataError(f"{manifest} names archive {name!r} outside its folder; put the archives next to the "
                            "manifest (or in folders below it) to copy them")
    return list(names)


def dataset_files(data_path: str | os.PathLike[str]) -> list[Path]:
    """The files that `data.path` = `data_path` reads: the zip, or a manifest CSV and its archives."""
    path = Path(data_path)
    if path.suffix.lower() == ".csv":
        return [path, *(path.parent / name for name in manifest_archives(path))]
    return [path]


def prepare_dataset(dataset: str | os.PathLike[str], local_dir: str | os.PathLike[str], *, progress: bool = True,
                    log: Callable[[str], object] = print) -> Path:
    """The dataset `dataset` (zip, manifest CSV or folder of the four original zips, see the
    module docstring) on local disk under `local_dir`; returns what `data.path` takes (the
    zip's copy, or a manifest CSV). Unpaired entries of a folder are all listed through `log`."""
    source, local_dir = Path(dataset), Path(local_dir)
    if source.is_dir():
        if (source / MANIFEST_NAME).is_file():
            return prepare_dataset(source / MANIFEST_NAME, local_dir, progress=progress, log=log)
        kinds = find_kinds(source)
        target = local_dir / source.name
        copies = {role: copy_once(kinds[role], target, progress=progress) for role in ROLES}
        manifest = target / MANIFEST_NAME
        if manifest.is_file() and all(manifest.stat().st_mtime >= p.stat().st_mtime for p in copies.values()):
            log(f"{manifest}: indexed before, reused")
            return manifest
        report = build_manifest(**{role: copies[role] for role in ROLES}, out=manifest)
        if report.out is None and report.duplicates:
            raise DataError(f"{source}: no manifest written: {report.duplicates[0]}")
        if report.out is None:
            raise DataError(f"{source}: no sample could be paired; {report.format().splitlines()[0]}")
        log(report.format())  # every unpaired entry, by name
        return manifest
    if not source.is_file():
        raise DataError(f"DATASET {source} not found; give a zip, a manifest.csv or a folder of the four zips "
                        "(on Colab, is Drive mounted?)")
    if source.suffix.lower() == ".zip":
        return copy_once(source, local_dir, progress=progress)
    if source.suffix.lower() == ".csv":
        target = local_dir / source.parent.name
        for name in manifest_archives(source):
            copy_once(source.parent / name, target / PurePosixPath(name).parent, progress=progress)
        return copy_once(source, target, progress=False)
    raise DataError(f"DATASET {source} is neither a zip, a manifest .csv nor a folder")


__all__ = ["copy_once", "dataset_files", "find_kinds", "kind_of", "manifest_archives", "prepare_dataset"]
