"""Small hand-built archives for the data tests: tiny images, zips in both layouts, a zip64 writer."""

from __future__ import annotations

import csv
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

ROLES = ("fg_bg", "bg", "mask", "depth")


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def scene(size: int, bg: int, k: int) -> dict[str, np.ndarray]:
    """A background (smooth colour ramp), the same with a square pasted, its mask and depth.
    uint8 arrays: bg/fg_bg [size, size, 3], mask 0/255 [size, size], depth 1..255 [size, size]."""
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([(x * 255 // size + 40 * bg) % 256, (y * 255 // size) % 256, np.full_like(x, 60 + 30 * bg)],
                    axis=-1)
    bg_img = base.astype(np.uint8)
    lo = 2 + (3 * k) % max(size // 2, 1)
    hi = min(size, lo + size // 3)
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    fg_bg = bg_img.copy()
    fg_bg[lo:hi, lo:hi] = (250 - 20 * k) % 256, 20, 200
    depth = (40 + (y * 200) // size).astype(np.uint8)
    depth[lo:hi, lo:hi] = 30
    return {"bg": bg_img, "fg_bg": fg_bg, "mask": mask, "depth": depth}


def write_dataset_zip(
    path: str | Path,
    *,
    num_bg: int = 4,
    per_bg: int = 3,
    size: int = 32,
    compression: int = zipfile.ZIP_STORED,
    replace: dict[str, bytes | None] | None = None,
    manifest: bool = True,
    dataset_json: bool = True,
    extra_rows: list[list[str]] | None = None,
) -> list[dict[str, str]]:
    """A dataset zip in the make-data layout (bg/, fg_bg/, mask/ PNG, depth/ JPEG, manifest.csv,
    dataset.json). `replace` maps entry names to other bytes (None: leave the entry out).
    Returns the manifest rows."""
    replace = replace or {}
    rows = []
    with zipfile.ZipFile(path, "w", compression=compression) as z:

        def put(name: str, data: bytes) -> None:
            data = replace.get(name, data)
            if data is not None:
                z.writestr(name, data)

        for b in range(num_bg):
            bg_id = f"bg{b:03d}"
            put(f"bg/{bg_id}.jpg", jpeg_bytes(scene(size, b, 0)["bg"]))
            for k in range(per_bg):
                images = scene(size, b, k)
                stem = f"{bg_id}_fg{k:03d}"
                row = {
                    "fg_bg": f"fg_bg/{stem}.jpg",
                    "bg": f"bg/{bg_id}.jpg",
                    "mask": f"mask/{stem}.png",
                    "depth": f"depth/{stem}.jpg",
                    "bg_id": bg_id,
                    "fg_id": f"fg{k:03d}",
                }
                put(row["fg_bg"], jpeg_bytes(images["fg_bg"]))
                put(row["mask"], png_bytes(images["mask"]))
                put(row["depth"], jpeg_bytes(images["depth"]))
                rows.append(row)
        if manifest:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            for extra in extra_rows or []:
                text.write(",".join(extra) + "\n")
            z.writestr("manifest.csv", text.getvalue())
        if dataset_json:
            info = {"size": size, "count": len(rows), "mean": [0.5] * 3, "std": [0.25] * 3}
            z.writestr("dataset.json", json.dumps(info))
    return rows


def write_original_layout(
    folder: Path, *, num_bg: int = 3, per_bg: int = 2, size: int = 32, drop: tuple[str, ...] = (),
    add: dict | None = None,
) -> dict[str, Path]:
    """The S15 layout without a manifest: four zips bg.zip (bg_192/bg192_001.jpg), fg_bg.zip,
    mask.zip (JPEG masks) and depth.zip (fg_bg_depth_full/), names paired by stem.
    `drop` leaves entries out; `add` maps (role, entry name) -> bytes to add."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {role: folder / f"{role}.zip" for role in ROLES}
    files: dict[str, dict[str, bytes]] = {role: {} for role in ROLES}
    for b in range(1, num_bg + 1):
        key = f"bg192_{b:03d}"
        files["bg"][f"bg_192/{key}.jpg"] = jpeg_bytes(scene(size, b, 0)["bg"])
        for k in range(1, per_bg + 1):
            images = scene(size, b, k)
            stem = f"{key}_fg{k:03d}_pos{k:02d}"
            files["fg_bg"][f"fg_bg/{stem}.jpg"] = jpeg_bytes(images["fg_bg"])
            files["mask"][f"mask/{stem}.jpg"] = jpeg_bytes(images["mask"])
            files["depth"][f"fg_bg_depth_full/{stem}.jpg"] = jpeg_bytes(images["depth"])
    for (role, name), data in (add or {}).items():
        files[role][name] = data
    for role in ROLES:
        with zipfile.ZipFile(paths[role], "w") as z:
            for name, data in files[role].items():
                if name not in drop:
                    z.writestr(name, data)
    return paths


def write_zip64(
    path: str | Path, entries: dict[str, bytes], *, deflate: bool = False, prefix: bytes = b"", encoding: str = "utf-8"
) -> None:
    """A zip where every entry carries zip64 extra fields (sizes and offset all 0xFFFFFFFF in
    the central directory) and the end record is zip64, as writers do past 4 GB / 65535 entries.
    `prefix` is written before the zip (a self-extracting stub), offsets stay zip-relative.
    Names are stored in `encoding` without the UTF-8 flag (cp437: the legacy zip encoding)."""
    local = io.BytesIO()
    central = io.BytesIO()
    for name, data in entries.items():
        raw = name.encode(encoding)
        body = zlib.compress(data)[2:-4] if deflate else data
        method = 8 if deflate else 0
        crc = zlib.crc32(data)
        offset = local.tell()
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(body))
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                                len(raw), len(extra)))
        local.write(raw + extra + body)
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(body), offset)
        central.write(
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                        len(raw), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
        )
        central.write(raw + extra)
    cd_offset, cd = local.tell(), central.getvalue()
    n = len(entries)
    with open(path, "wb") as f:
        f.write(prefix)
        f.write(local.getvalue())
        f.write(cd)
        z64 = cd_offset + len(cd)
        f.write(struct.pack("<4sQHHLLQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), cd_offset))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, z64, 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


# The original dataset's four zips: file name, top folder inside, and the manifest column they hold.
S15_ZIPS = (("bg_192.zip", "bg_192", "bg"), ("fg_bg.zip", "fg_bg", "fg_bg"), ("mask.zip", "mask", "mask"),
            ("fg_bg_depth_full.zip", "fg_bg_depth_full", "depth"))


def s15_folder(archive: Path, folder: Path, names: dict[str, str] | None = None) -> Path:
    """`folder` holding make-data's `archive` repacked in the original S15 layout: four zips, no
    manifest, each with its own top folder (bg_192/bg000.jpg, fg_bg/..., mask/...,
    fg_bg_depth_full/...). `names` renames zips (role -> file name), e.g. to names that do not
    tell the kind, so only the top folder does."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        rows = list(csv.DictReader(io.StringIO(z.read("manifest.csv").decode())))
        for zip_name, top, role in S15_ZIPS:
            entries = sorted({row[role] for row in rows})
            with zipfile.ZipFile(folder / (names or {}).get(role, zip_name), "w") as out:
                for entry in entries:
                    out.writestr(f"{top}/{PurePosixPath(entry).name}", z.read(entry))
    return folder
