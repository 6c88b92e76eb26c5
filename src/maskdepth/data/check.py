"""`maskdepth check-data`: decode every entry of a dataset, check pairing, sizes and values, and
compute the statistics that the original authors computed in a separate notebook.

A problem is anything that would make training fail on a sample, or read another sample than
meant (a missing, corrupt, wrongly sized or out-of-range entry, an unreadable manifest, an entry
name that occurs twice in one archive); each one is named by archive and entry.
Notes are things worth knowing that do not break training (image entries no sample uses, an
fg_bg listed in two rows, empty masks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskdepth.data.archive import describe_duplicates
from maskdepth.data.images import ImageError, decode_depth, decode_mask, decode_rgb
from maskdepth.data.manifest import IMAGE_EXTENSIONS, INFO_NAME, MANIFEST_NAME, ROLES, Manifest, load_manifest
from maskdepth.errors import DataError

FG_BG, BG, MASK, DEPTH = range(4)
_LISTED_NOTES = 10


class _Moments:
    """Per-channel running sums in float64, for a mean and std over many images."""

    def __init__(self, channels: int) -> None:
        self.total, self.squares, self.pixels = np.zeros(channels), np.zeros(channels), 0

    def add(self, image: np.ndarray) -> None:
        x = image.reshape(-1, self.total.shape[0]).astype(np.float64)
        self.total += x.sum(0)
        self.squares += np.square(x).sum(0)
        self.pixels += x.shape[0]

    def add_uint8(self, image: np.ndarray) -> None:
        """An 8-bit [H, W, C] image, as values / 255: a histogram per channel, exact and fast."""
        levels = np.arange(256) / 255.0
        for c in range(self.total.shape[0]):
            counts = np.bincount(image[..., c].ravel(), minlength=256)
            self.total[c] += counts @ levels
            self.squares[c] += counts @ np.square(levels)
        self.pixels += image.shape[0] * image.shape[1]

    def average(self, other: _Moments) -> _Moments:
        """Both weighted equally, as in training where each sample is one bg and one fg_bg
        (a background's pixels count once per sample that uses it, if backgrounds are used evenly)."""
        out = _Moments(len(self.total))
        if self.pixels and other.pixels:
            out.pixels = 2
            out.total = self.total / self.pixels + other.total / other.pixels
            out.squares = self.squares / self.pixels + other.squares / other.pixels
        return out

    def mean_std(self) -> tuple[list[float], list[float]]:
        if not self.pixels:
            return [], []
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.squares / self.pixels - mean**2, 0))
        return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


@dataclass
class CheckReport:
    """Outcome of `check_data`: `.ok`, `.problems` (one line each, archive and entry named),
    `.notes`, and `.stats` {dataset path: statistics dict}."""

    paths: list[str]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, dict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = []
        for path, s in self.stats.items():
            lines.append(f"{path}:")
            checked = f"{s['checked']} of {s['samples']} checked" if s["checked"] != s["samples"] else "all checked"
            lines.append(
                f"  samples {s['samples']} ({checked}), backgrounds {s['backgrounds']}, "
                f"foregrounds {s['foregrounds']}, archives {', '.join(s['archives'])}"
            )
            if s.get("image_size"):
                lines.append(f"  image size {s['image_size'][0]}x{s['image_size'][1]} px")
            for key in ("fg_bg", "bg", "fg_bg+bg"):
                if s.get(f"{key}_mean"):
                    lines.append(f"  {key:9s} mean {_fmt(s[f'{key}_mean'])}  std {_fmt(s[f'{key}_std'])}  (RGB, 0-1)")
            cov = s.get("mask_coverage")
            if cov:
                lines.append(
                    f"  mask coverage mean {100 * cov['mean']:.2f}%  min {100 * cov['min']:.2f}%  "
                    f"max {100 * cov['max']:.2f}%  (empty masks: {cov['empty']})"
                )
            depth = s.get("depth")
            if depth:
                lines.append(
                    f"  depth min {depth['min']:.4f}  max {depth['max']:.4f}  mean {depth['mean']:.4f}  "
                    f"std {depth['std']:.4f}  (0-1, larger = farther; zero pixels {100 * depth['zero_fraction']:.3f}%)"
                )
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.ok:
            lines.append("OK: no problems found.")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def check_data(paths: Sequence[str | os.PathLike] | str | os.PathLike, *, size: int | None = None,
               limit: int | None = None, progress: bool = True) -> CheckReport:
    """Decode every entry of each dataset (a zip with manifest, or a manifest CSV) and check it.

    Args:
        paths: one or several datasets.
        size: the expected stored image side; default dataset.json's "size", else the size of
            the first background decoded.
        limit: check only the first `limit` samples of each dataset.
        progress: show a tqdm bar.

    Returns:
        CheckReport; it never raises for a problem in the data (each one is listed instead).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    report = CheckReport(paths=[os.fspath(p) for p in paths])
    for path in report.paths:
        try:
            manifest = load_manifest(path, in_memory=False, list_missing=None)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        for archive in manifest.archives:  # which of two equally named entries a row means is unknowable
            line = describe_duplicates(archive)
            if line is not None and line not in report.problems:
                report.problems.append(line)
        _check_one(manifest, path, size, limit, progress, report)
    return report


def _check_one(manifest: Manifest, path: str, size: int | None, limit: int | None, progress: bool,
               report: CheckReport) -> None:
    from tqdm import tqdm

    report.problems.extend(manifest.missing)
    n = len(manifest)
    count = n if limit is None else max(0, min(n, int(limit)))
    checker = _Checker(manifest, size, report.problems)
    for row in tqdm(range(count), desc=f"check {os.path.basename(path)}", unit="sample", disable=not progress):
        checker.check_row(row)
    report.stats[path] = {
        "samples": n, "checked": count,
        "backgrounds": len(set(manifest.bg_code[:count].tolist())),
        "foregrounds": len(set(manifest.fg_code[:count].tolist())),
        "archives": [f"{a.path} ({len(a)} entries)" for a in manifest.archives],
        "image_size": list(checker.expected) if checker.expected else None, **checker.summary()}
    empty = sum(c == 0 for c in checker.coverage)
    if empty:
        report.notes.append(f"{path}: {empty} sample(s) have an empty mask")
    if count == n:
        _note_pairing(manifest, path, report)


class _Checker:
    """Decodes a dataset's images one sample at a time (each background once), listing every
    problem in `problems` and keeping running statistics of what decodes (RGB moments, mask
    coverage, depth range). The expected stored size is --size, else dataset.json's, else the
    first image's."""

    def __init__(self, manifest: Manifest, size: int | None, problems: list[str]) -> None:
        self.manifest, self.problems = manifest, problems
        stored = manifest.info.get("size") if size is None else size
        self.expected = (int(stored), int(stored)) if isinstance(stored, (int, float)) else None
        self.reference = f"{size} (--size)" if size is not None else f"{stored} ({INFO_NAME})"
        self.bg_seen: set[tuple[int, int]] = set()
        self.moments = {"fg_bg": _Moments(3), "bg": _Moments(3)}
        self.depth = _Moments(1)
        self.depth_min, self.depth_max, self.depth_zero, self.depth_pixels = np.inf, -np.inf, 0, 0
        self.coverage: list[float] = []

    def check_row(self, row: int) -> None:
        m = self.manifest
        if m.entries[BG, row] >= 0:
            key = (int(m.archive_ids[BG, row]), int(m.entries[BG, row]))
            if key not in self.bg_seen:
                self.bg_seen.add(key)
                self.check_image(decode_rgb, BG, row)
        for role, decoder in ((FG_BG, decode_rgb), (MASK, decode_mask), (DEPTH, decode_depth)):
            if m.entries[role, row] >= 0:  # a missing one is listed already
                self.check_image(decoder, role, row)

    def check_image(self, decoder, role: int, row: int) -> None:
        m = self.manifest
        try:
            image, got = decoder(m.read(role, row), None)
        except ImageError as exc:
            self.problems.append(f"{m.where(role, row)}: {exc}")
            return
        except DataError as exc:
            self.problems.append(str(exc))
            return
        if self.expected is None:  # no --size, no dataset.json: the first image sets the size
            self.expected, self.reference = got, f"{got[0]}x{got[1]} (the first background, {m.where(role, row)})"
        if got != self.expected:
            self.problems.append(
                f"{m.where(role, row)}: image is {got[0]}x{got[1]} px, expected {self.expected[0]}x{self.expected[1]} "
                f"from {self.reference}"
            )
        self.add(role, image)

    def add(self, role: int, image: np.ndarray) -> None:
        if role in (FG_BG, BG):
            self.moments[ROLES[role]].add_uint8(image)
        elif role == MASK:
            self.coverage.append(float(image.mean()))
        else:
            valid = image[image > 0]
            self.depth_zero += image.size - valid.size
            self.depth_pixels += image.size
            self.depth.add(valid)
            self.depth_min = min(self.depth_min, float(valid.min()))
            self.depth_max = max(self.depth_max, float(valid.max()))

    def summary(self) -> dict:
        out: dict = {}
        for key, m in list(self.moments.items()) + [("fg_bg+bg", self.moments["fg_bg"].average(self.moments["bg"]))]:
            out[f"{key}_mean"], out[f"{key}_std"] = m.mean_std()
        if self.coverage:
            cov = np.asarray(self.coverage)
            out["mask_coverage"] = {"mean": float(cov.mean()), "min": float(cov.min()), "max": float(cov.max()),
                                    "empty": int((cov == 0).sum())}
        if self.depth_pixels:
            mean, std = self.depth.mean_std()
            seen = bool(self.depth.pixels)
            out["depth"] = {"min": self.depth_min if seen else 0.0, "max": self.depth_max if seen else 0.0,
                            "mean": mean[0] if mean else 0.0, "std": std[0] if std else 0.0,
                            "zero_fraction": self.depth_zero / self.depth_pixels}
        return out


def _note_pairing(manifest: Manifest, path: str, report: CheckReport) -> None:
    """Notes on fg_bg entries listed twice and on image entries that no sample uses."""
    for role in (FG_BG, MASK, DEPTH):
        keys = manifest.archive_ids[role].astype(np.int64) << 32 | manifest.entries[role].astype(np.int64)
        keys = keys[manifest.entries[role] >= 0]
        unique, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            repeated = unique[counts > 1][:_LISTED_NOTES]
            owners = [manifest.archives[int(k >> 32)] for k in repeated]
            names = [f"{a.path}: {a.name(int(k & 0xFFFFFFFF))}" for a, k in zip(owners, repeated, strict=True)]
            report.notes.append(f"{path}: {int((counts > 1).sum())} {ROLES[role]} entries appear in several samples, "
                                f"e.g. {'; '.join(names)}")
    for number, archive in enumerate(manifest.archives):
        used = np.zeros(len(archive), dtype=bool)
        for role in range(len(ROLES)):
            mine = (manifest.archive_ids[role] == number) & (manifest.entries[role] >= 0)
            used[manifest.entries[role][mine]] = True
        unused = [
            archive.name(int(i))
            for i in np.flatnonzero(~used)
            if archive.name(int(i)) not in (MANIFEST_NAME, INFO_NAME)
            and os.path.splitext(archive.name(int(i)))[1].lower() in IMAGE_EXTENSIONS
        ]
        if unused:
            shown = ", ".join(unused[:_LISTED_NOTES]) + (", ..." if len(unused) > _LISTED_NOTES else "")
            report.notes.append(f"{archive.path}: {len(unused)} image entries are in no sample: {shown}")
