"""Which background goes with which composite: the (bg, fg_bg) file pairs that `maskdepth predict` reads.

    pairs = collect_pairs(bg="bg.jpg", fg_bg="shots/")          # one background, many composites
    pairs = collect_pairs(bg="bgs/", fg_bg="fgs/")              # two folders paired by file stem
    pairs = collect_pairs(pairs="pairs.csv")                    # a CSV with bg,fg_bg columns

It exists apart from the model so that the many ways a person names inputs (files, folders,
globs, a CSV) are settled, and every mistake named in one line, before a checkpoint is loaded.
Outputs are named after the fg_bg file's stem, so the stems must be unique.
"""

from __future__ import annotations

import csv
import glob
import os
from pathlib import Path

from maskdepth.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def collect_pairs(
    *,
    bg: str | os.PathLike[str] | None = None,
    fg_bg: str | os.PathLike[str] | None = None,
    pairs: str | os.PathLike[str] | None = None,
) -> list[tuple[Path, Path]]:
    """The (bg, fg_bg) pairs from either `bg` and `fg_bg` (`pair_inputs`) or a `pairs` CSV (`read_pairs_csv`).

    Raises:
        ConfigError: both or neither of `pairs` and (`bg`, `fg_bg`).
        DataError: what `pair_inputs` or `read_pairs_csv` refuse.
    """
    if pairs is not None:
        if bg is not None or fg_bg is not None:
            raise ConfigError("give either --pairs CSV or --bg/--fg-bg, not both")
        return read_pairs_csv(pairs)
    if bg is None or fg_bg is None:
        raise ConfigError("give --bg and --fg-bg (or --pairs CSV)")
    return pair_inputs(bg, fg_bg)


def read_pairs_csv(path: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """The (bg, fg_bg) pairs of a CSV file with a header row and (at least) `bg` and `fg_bg`
    columns, one pair per row, e.g. written by hand:

        bg,fg_bg
        street.jpg,street_with_dog.jpg
        /data/room.png,shots/room_cat.png

    Relative paths are relative to the CSV's folder. DataError (one line) for a missing or empty
    file, missing columns, files that are not there (all of them named), or fg_bg names that
    repeat (outputs are named after them).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--pairs {path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{**{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}, "": reader.line_num}
                    for row in reader]
    except UnicodeDecodeError:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:  # whole, for the line (a chunked decoder counts from its chunk)
            line = data[:exc.start].count(b"\n") + 1
            raise DataError(f"--pairs {path}: not UTF-8 text (line {line}, byte "
                            f"{exc.start}: {exc.reason}); save it as UTF-8 CSV") from None
        raise
    if not {"bg", "fg_bg"} <= set(columns):
        found = ",".join(columns) or "none"
        raise DataError(f"--pairs {path}: needs a header row with bg and fg_bg columns, found {found}")
    rows = [row for row in rows if row.get("bg") or row.get("fg_bg")]  # blank lines
    if not rows:
        raise DataError(f"--pairs {path}: no pairs (only a header row)")
    empty = [f"line {row['']}: empty {key} cell" for row in rows for key in ("bg", "fg_bg") if not row.get(key)]
    if empty:
        raise DataError(f"--pairs {path}: {_listing(empty)}; every row needs a bg and a fg_bg file")
    pairs = [(path.parent / row["bg"], path.parent / row["fg_bg"]) for row in rows]
    missing = [f"{p} (line {row['']})" for row, pair in zip(rows, pairs, strict=True) for p in pair if not p.is_file()]
    if missing:
        raise DataError(f"--pairs {path}: {len(missing)} file(s) not found: {_listing(missing)}")
    _check_unique_names(pairs, f"--pairs {path}")
    return pairs


def pair_inputs(bg: str | os.PathLike[str], fg_bg: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """The (bg, fg_bg) file pairs of two command-line arguments; DataError naming what does not pair.

    Each argument is a file, a folder (its images, IMAGE_SUFFIXES) or a glob. Two files make one
    pair; one bg file is shared by a folder or glob of composites; two folders or two globs pair
    by file stem, and the files of either without a partner are named.
    """
    bg_files, bg_kind = _expand(bg, "--bg")
    fg_files, fg_kind = _expand(fg_bg, "--fg-bg")
    if bg_kind == "file" and fg_kind != "file":
        pairs = [(bg_files[0], f) for f in fg_files]  # one background shared by many composites
    elif bg_kind == "file" or fg_kind == "file":
        if bg_kind != fg_kind:
            raise DataError(f"--bg {bg} is a {bg_kind} but --fg-bg {fg_bg} is a {fg_kind}; give two files, "
                            "two folders, two globs, or one bg file with a folder/glob of composites")
        pairs = [(bg_files[0], fg_files[0])]
    else:
        by_name_bg, by_name_fg = _by_stem(bg_files, "--bg"), _by_stem(fg_files, "--fg-bg")
        if set(by_name_bg) != set(by_name_fg):  # globs too: pairing by sorted order paired wrong files silently
            only_bg = sorted(set(by_name_bg) - set(by_name_fg))
            only_fg = sorted(set(by_name_fg) - set(by_name_bg))
            raise DataError(
                f"--bg {bg} and --fg-bg {fg_bg} do not pair by name: "
                f"{_listing(only_fg)} only in --fg-bg, {_listing(only_bg)} only in --bg"
                + (f" ({len(bg_files)} vs {len(fg_files)} files)" if bg_kind == "glob" else "")
            )
        pairs = [(by_name_bg[s], by_name_fg[s]) for s in sorted(by_name_fg)]
    _check_unique_names(pairs, f"--fg-bg {fg_bg}")
    return pairs


def _check_unique_names(pairs: list[tuple[Path, Path]], source: str) -> None:
    """DataError when two composites share a stem: their outputs would overwrite each other."""
    stems = [fg.stem for _, fg in pairs]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise DataError(f"{source}: several composites are named {_listing(dup)}; "
                        "outputs are named after the fg_bg file, so names must be unique")


def _expand(spec: str | os.PathLike[str], flag: str) -> tuple[list[Path], str]:
    """(files, "file" | "folder" | "glob") of one command-line argument."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return [path], "file"
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{flag} {text}: the folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        return files, "folder"
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not files:
            raise DataError(f"{flag} {text}: no file matches this pattern")
        return files, "glob"
    raise DataError(f"{flag} {text}: no such file or folder")


def _by_stem(files: list[Path], flag: str) -> dict[str, Path]:
    """{stem: file}; DataError for two files of one stem (a.jpg and a.png), which cannot be paired by name."""
    result: dict[str, Path] = {}
    for f in files:
        if f.stem in result:
            raise DataError(f"{flag}: {result[f.stem]} and {f} have the same name; cannot tell which to pair")
        result[f.stem] = f
    return result


def _listing(names: list[str], limit: int = 5) -> str:
    """The first `limit` names and a count of the rest, so that an error message stays one readable line."""
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
