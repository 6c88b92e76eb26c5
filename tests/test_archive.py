"""The zip reader: entries byte-identical to zipfile's, zip64, bad archives named, cheap to pickle."""

from __future__ import annotations

import os
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from maskdepth.data.archive import ZipArchive, open_archive
from maskdepth.errors import DataError

from data_helpers import write_zip64


def _random_entries(n: int, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    entries = {}
    for i in range(n):
        compressible = bytes(rng.integers(0, 4, size=200 + 37 * i, dtype=np.uint8))
        entries[f"{['fg_bg', 'mask', 'depth'][i % 3]}/img_{i:03d}.jpg"] = compressible
    entries["manifest.csv"] = b"fg_bg,bg,mask,depth\n"
    entries["empty.bin"] = b""
    return entries


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_entries_match_zipfile(tmp_path, in_memory, compression):
    path = tmp_path / "a.zip"
    entries = _random_entries(12)
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        z.writestr("folder/", b"")  # a folder entry: not indexed
    archive = ZipArchive(path, in_memory=in_memory)
    assert len(archive) == len(entries)
    assert sorted(archive.names()) == sorted(entries)
    for name, data in entries.items():
        index = archive.find(name)
        assert archive.name(index) == name
        assert archive.read(index) == data
        assert archive.size_of(index) == len(data)
    assert isinstance(archive._buf, bytes) == in_memory


def test_lookup_many_names_with_missing(tmp_path):
    path = tmp_path / "a.zip"
    entries = _random_entries(9)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    archive = ZipArchive(path)
    query = ["mask/img_004.jpg", "nope/img_004.jpg", "mask/img_999.jpg", "manifest.csv", "mask/"]
    found = archive.lookup(query)
    assert found[1] == found[2] == found[4] == -1
    assert archive.name(int(found[0])) == "mask/img_004.jpg"
    assert archive.name(int(found[3])) == "manifest.csv"
    assert archive.folders == ["", "depth/", "fg_bg/", "mask/"]
    assert [archive.name(i) for i in archive.folder_range("mask/")] == [f"mask/img_{i:03d}.jpg" for i in (1, 4, 7)]


def test_duplicate_name_keeps_the_later_entry(tmp_path):
    path = tmp_path / "dup.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x/a.txt", b"first")
            z.writestr("x/b.txt", b"other")
            z.writestr("x/a.txt", b"second")
    archive = ZipArchive(path)
    assert len(archive) == 2 and archive.duplicates == 1
    assert archive.read_name("x/a.txt") == b"second" == zipfile.ZipFile(path).read("x/a.txt")


@pytest.mark.parametrize("deflate", [False, True])
def test_zip64_extra_fields_and_end_record(tmp_path, deflate):
    path = tmp_path / "z64.zip"
    entries = _random_entries(5)
    write_zip64(path, entries, deflate=deflate, prefix=b"#!stub\n" * 3)
    with zipfile.ZipFile(path) as z:  # the hand-written file is a valid zip64 archive
        assert {n: z.read(n) for n in z.namelist()} == entries
    archive = ZipArchive(path, in_memory=True)
    assert {archive.name(i): archive.read(i) for i in range(len(archive))} == entries


def test_legacy_cp437_names(tmp_path):
    path = tmp_path / "old.zip"
    entries = {"fg_bg/caf\u00e9_\u00fc.jpg": b"x" * 10, "fg_bg/plain.jpg": b"y"}
    write_zip64(path, entries, encoding="cp437")
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == list(entries)  # zipfile decodes them as cp437 too
    archive = ZipArchive(path)
    assert archive.read_name("fg_bg/caf\u00e9_\u00fc.jpg") == b"x" * 10
    assert sorted(archive.names()) == sorted(entries)
    archive.close()  # no view of the map is left behind
    assert archive.read_name("fg_bg/plain.jpg") == b"y"  # maps again


def test_zip64_local_headers_from_zipfile(tmp_path):
    path = tmp_path / "force.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("a/1.jpg", "a/2.jpg"):
            with z.open(name, "w", force_zip64=True) as f:  # local header gets a zip64 extra field
                f.write(name.encode() * 50)
    archive = ZipArchive(path)
    assert archive.read_name("a/2.jpg") == b"a/2.jpg" * 50


def test_more_than_65535_entries(tmp_path):
    path = tmp_path / "many.zip"
    n = 65_600  # zipfile switches to the zip64 end record past 65535 entries
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            z.writestr(f"e/{i:06d}.bin", i.to_bytes(3, "little"))
    archive = ZipArchive(path)
    assert len(archive) == n
    probe = [0, 65_535, 65_536, n - 1]
    found = archive.lookup([f"e/{i:06d}.bin" for i in probe])
    assert [archive.read(int(j)) for j in found] == [i.to_bytes(3, "little") for i in probe]
    # compact: offsets, sizes, CRC, method and the base name (10 bytes here) per entry
    assert archive.index_nbytes < n * 40


def test_pickle_carries_no_archive_bytes(tmp_path):
    path = tmp_path / "big.zip"
    blob = np.random.default_rng(0).integers(0, 256, size=2_000_000, dtype=np.uint8).tobytes()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fg_bg/big.bin", blob)
    archive = ZipArchive(path, in_memory=True)
    data = pickle.dumps(archive)
    assert len(data) < 10_000
    clone = pickle.loads(data)
    assert clone._buf is None
    assert clone.read(0) == blob  # maps the file on first use
    assert archive._buf is not None  # pickling did not drop the original's copy


def test_open_archive_is_shared_until_the_file_changes(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.txt", b"1")
    first = open_archive(path, in_memory=True)
    assert open_archive(path, in_memory=True) is first
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.txt", b"22")
    os.utime(path, ns=(1, 1))
    assert open_archive(path, in_memory=True).read_name("x.txt") == b"22"


def test_missing_file_and_not_a_zip(tmp_path):
    with pytest.raises(DataError, match="nothere.zip: archive not found"):
        ZipArchive(tmp_path / "nothere.zip")
    text = tmp_path / "notes.zip"
    text.write_text("this is not a zip archive, but it is long enough to be one " * 3)
    with pytest.raises(DataError, match=r"notes.zip: not a zip archive"):
        ZipArchive(text)
    tiny = tmp_path / "tiny.zip"
    tiny.write_bytes(b"PK")
    with pytest.raises(DataError, match="tiny.zip: not a zip archive"):
        ZipArchive(tiny)


def test_truncated_archive(tmp_path):
    path = tmp_path / "cut.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/x.bin", b"x" * 5000)
    data = path.read_bytes()
    path.write_bytes(data[:3000])  # the end record is gone
    with pytest.raises(DataError, match="cut.zip: not a zip archive"):
        ZipArchive(path)


def test_corrupt_entry_is_named(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fg_bg/good.jpg", b"g" * 100)
        z.writestr("fg_bg/bad.jpg", b"b" * 100)
    data = bytearray(path.read_bytes())
    at = data.index(b"b" * 100)
    data[at + 50] ^= 0xFF  # flip a byte of the STORED data: the CRC no longer matches
    path.write_bytes(bytes(data))
    archive = ZipArchive(path)
    assert archive.read_name("fg_bg/good.jpg") == b"g" * 100
    with pytest.raises(DataError, match=r"bad.zip: fg_bg/bad.jpg: corrupt entry \(CRC"):
        archive.read_name("fg_bg/bad.jpg")
    with pytest.raises(DataError, match="entry 'fg_bg/none.jpg' not found"):
        archive.read_name("fg_bg/none.jpg")


def test_corrupt_deflate_stream_is_named(tmp_path):
    path = tmp_path / "bad.zip"
    payload = bytes(range(256)) * 40
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("d/x.bin", payload)
    data = bytearray(path.read_bytes())
    data[40:60] = b"\xff" * 20  # inside the compressed stream (local header is 30 + 7 bytes)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad.zip: d/x.bin: corrupt"):
        ZipArchive(path).read_name("d/x.bin")


def test_unsupported_compression_is_named(tmp_path):
    path = tmp_path / "bz.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as z:
        z.writestr("m/x.png", b"x" * 100)
    with pytest.raises(DataError, match=r"bz.zip: m/x.png: compression method 12 is not supported"):
        ZipArchive(path).read_name("m/x.png")


def _write_one_deflated(path, name: str, stream: bytes, crc: int, declared: int) -> None:
    """A zip with one DEFLATED entry whose headers declare `declared` bytes uncompressed."""
    raw = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream), declared, len(raw), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(stream), declared,
                          len(raw), 0, 0, 0, 0, 0, 0)
    body = local + raw + stream
    cd = central + raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), len(body), 0)
    path.write_bytes(body + cd + end)


def _zeros_deflated(total: int) -> bytes:
    """A raw deflate stream of `total` zero bytes, made 1 MB at a time (never `total` in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(total >> 20)]
    return b"".join(parts) + packer.flush()


def test_zip_bombs_are_refused_naming_the_entry(tmp_path):
    """An entry declared over the cap is refused before inflating; one declared small that inflates
    to 256 MB stops one byte past its declared size. Either way memory stays bounded."""
    stream = _zeros_deflated(256 << 20)
    assert len(stream) < 1 << 20
    honest, liar = tmp_path / "honest.zip", tmp_path / "liar.zip"
    _write_one_deflated(honest, "fg_bg/bomb.jpg", stream, 0, 256 << 20)
    _write_one_deflated(liar, "fg_bg/small.jpg", stream, zlib.crc32(bytes(1000)), 1000)
    tracemalloc.start()
    try:
        with pytest.raises(DataError,
                           match=r"honest.zip: fg_bg/bomb.jpg: entry declares 256 MB .* over the 64 MB limit"):
            ZipArchive(honest).read_name("fg_bg/bomb.jpg")
        with pytest.raises(DataError, match=r"liar.zip: fg_bg/small.jpg: corrupt entry: "
                                            r"inflates past its declared size of 1000 bytes"):
            ZipArchive(liar).read_name("fg_bg/small.jpg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the buffers above, not the 256 MB the entry inflates to
    # a caller may allow more (the manifest reader does), and the same bytes below the cap read fine
    small = tmp_path / "small.zip"
    _write_one_deflated(small, "m/a.png", zlib.compress(bytes(5000))[2:-4], zlib.crc32(bytes(5000)), 5000)
    assert ZipArchive(small).read_name("m/a.png") == bytes(5000)
    with pytest.raises(DataError, match=r"small.zip: m/a.png: entry declares 0 MB uncompressed, over the 0 MB limit"):
        ZipArchive(small).read(0, limit=4096)
