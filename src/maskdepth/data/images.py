"""Decoding archive entries into arrays at the training size, and image files for `predict`.

Every decoder takes the encoded bytes and the output side `size` (None: keep the stored size),
returns (array, stored (W, H)), and raises `ImageError` (a DataError) saying what is wrong; the
caller prefixes the archive and entry.

Resizing: RGB images and depth use PIL's bilinear filter, which widens its support when
shrinking (an area-like average, no aliasing); masks use nearest, then a threshold at 128 (so
JPEG masks with compression noise come out binary).

8-bit JPEGs with the expected channels (RGB for bg / fg_bg, gray for mask / depth) at the output
size or larger are decoded by `torchvision.io.decode_jpeg` instead of PIL: the same libjpeg-turbo,
but straight into a [C, H, W] array without PIL's image object and RGBX packing, which is
markedly faster (docs/results.md, data pipeline); a larger image is then shrunk by torch's uint8
antialiased bilinear (nearest for masks), which follows PIL's BILINEAR resize of the full decode
(within 1 of 255). Whether a JPEG qualifies is read from its SOF header; anything else, and any
JPEG torchvision refuses, takes the PIL path, which names the problem. (The PIL path still
shrinks JPEGs inside the DCT by 1/2, 1/4 or 1/8 first, never below `size`.)

PNG masks: torchvision's PNG decoder is not used, because it crashes the process (segfault) on
some corrupt data, which `check-data` and `skip_bad` must survive. Grayscale 1- and 8-bit PNGs
whose rows use the filters None / Sub / Up (make-data writes 1-bit masks with filter None, see
`encode_mask_png`) are read here with zlib and numpy (`png_rows`): every chunk's CRC checked,
the zlib stream inflated to exactly the size the header promises, nearest-neighbour resizing bit
for bit as PIL's. Any other PNG, and any damaged one, goes to PIL, which decodes it or names
the problem.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from maskdepth.errors import DataError

if TYPE_CHECKING:
    import torch

# Colour images that are stored as RGB but are meant to be grayscale (depth saved by a tool that
# writes 3 equal channels) are accepted when the channels differ by at most this (JPEG chroma noise).
GRAY_TOLERANCE = 12

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageError(DataError):
    """An entry that does not decode to a valid image of its kind (message without its location)."""


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise ImageError(f"not a readable image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def _load_jpeg_decoder():
    """torchvision.io.decode_jpeg, chosen once, at the first JPEG (importing this module does not
    import torch); None when torchvision (or its image extension) is missing: then PIL decodes
    every JPEG."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # noqa: BLE001 - torchvision absent or built without its image extension
        return None
    # torchvision 0.29 deprecates its decoders (for TorchCodec) with a DeprecationWarning on every
    # call; it says nothing about our input, so it is silenced here once rather than per image.
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    with warnings.catch_warnings():
        # torch warns once per process that a tensor on read-only bytes could be written to; it
        # is only read. Said here, outside the per-image path.
        warnings.simplefilter("ignore")
        torch.frombuffer(b"\0", dtype=torch.uint8)
    unchanged = ImageReadMode.UNCHANGED  # channels as stored

    def decode(data: bytes) -> torch.Tensor:
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), unchanged)

    return decode


_UNLOADED = object()
_decode_jpeg: Any = _UNLOADED  # what `_load_jpeg_decoder` chose (None: PIL)


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits per sample) from a JPEG's SOF header, or None when
    `data` is not a JPEG or its header cannot be found (then PIL decides).

    Kept because it pays: it lets 8-bit JPEGs of the expected channels and size skip PIL
    cheaply (against PIL's header parser, Image.open: the jpeg-scan rows of docs/results.md's
    ablation table).
    """
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data) - 9
    while pos < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        elif marker in _JPEG_SOF:
            width, height = (data[pos + 7] << 8) | data[pos + 8], (data[pos + 5] << 8) | data[pos + 6]
            return (width, height, data[pos + 9], data[pos + 4])
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        else:
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def _fast_jpeg(
    data: bytes, size: int | None, channels: int, *, nearest: bool = False
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(uint8 [channels, size, size], stored (W, H)) decoded by torchvision.io.decode_jpeg when
    `data` is an 8-bit JPEG with `channels` components at `size` or larger (then shrunk:
    antialiased bilinear, or nearest when `nearest`, as PIL's resize does); None otherwise (use
    PIL), also for a JPEG that torchvision refuses (PIL then names the problem).
    """
    frame = _jpeg_frame(data)
    if frame is None or frame[2] != channels or frame[3] != 8 or (size is not None and min(frame[:2]) < size):
        return None
    global _decode_jpeg
    if _decode_jpeg is _UNLOADED:
        _decode_jpeg = _load_jpeg_decoder()
    if _decode_jpeg is None:
        return None
    import torch

    try:
        image = _decode_jpeg(data)
    except RuntimeError:
        return None  # corrupt: PIL decodes it again and says what is wrong
    if image.shape != (channels, frame[1], frame[0]) or image.dtype != torch.uint8:
        return None
    if size is not None and frame[:2] != (size, size):
        # torch's uint8 antialiased bilinear follows PIL's BILINEAR resize of the full decode
        # (the same values on our 192 -> 64 px data; the tests allow 1) in less time than
        # PIL's draft + resize
        mode = "nearest-exact" if nearest else "bilinear"
        options = {} if nearest else {"antialias": True, "align_corners": False}
        image = torch.nn.functional.interpolate(image[None], size=(size, size), mode=mode, **options)[0]
    return image.numpy(), frame[:2]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_PIXELS = 1 << 26  # larger images take the PIL path (with its decompression-bomb check)


def png_rows(data: bytes) -> tuple[np.ndarray, int, int, int] | None:
    """(the unfiltered scanlines uint8 [H, row bytes], width, height, bit depth) of a
    non-interlaced 1- or 8-bit grayscale PNG whose rows use the filters None, Sub or Up (what
    make-data's 1-bit masks and most other tools' binary masks use); None for anything else,
    and for any damage (a chunk's CRC, a truncated file, a zlib stream that fails or does not
    give exactly the rows the header promises): then PIL decodes it and names the problem.

    Pure Python + zlib + numpy, so no input can crash the process (torchvision's PNG decoder
    can, see the module docstring), and several times faster than PIL on a small mask, which
    pays in the loader (the png rows of docs/results.md's ablation table).
    """
    chunks = _png_chunks(data)
    if chunks is None:
        return None
    header, idat = chunks
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    bits = header[8]
    # colour type 0 (gray), compression 0, filter method 0, no interlace
    if bits not in (1, 8) or header[9:13] != b"\0\0\0\0" or not 0 < width * height <= _PNG_MAX_PIXELS:
        return None
    stride = (width * bits + 7) // 8
    expected = height * (stride + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof:
        return None
    rows = _unfilter(np.frombuffer(raw, np.uint8).reshape(height, stride + 1))
    return None if rows is None else (rows, width, height, bits)


def _png_chunks(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """(IHDR body, IDAT bodies) of a PNG whose every chunk up to IEND is whole with a good CRC."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    crc32 = zlib.crc32
    pos, end = 8, len(data)
    header = None
    idat: list[bytes] = []
    while True:
        if pos + 12 > end:
            return None  # truncated before IEND
        length = int.from_bytes(data[pos : pos + 4], "big")
        stop = pos + 8 + length
        if stop + 4 > end or crc32(data[pos + 4 : stop]) != int.from_bytes(data[stop : stop + 4], "big"):
            return None
        kind = data[pos + 4 : pos + 8]
        if header is None:
            if kind != b"IHDR" or length != 13:
                return None
            header = data[pos + 8 : stop]
        elif kind == b"IDAT":
            idat.append(data[pos + 8 : stop])
        elif kind == b"IEND":
            return header, idat
        pos = stop + 4


def _unfilter(scan: np.ndarray) -> np.ndarray | None:
    """The rows of scanlines [H, 1 + row bytes] (filter type first) that use None, Sub or Up;
    None for Average or Paeth (sequential per pixel: left to PIL)."""
    filters = scan[:, 0]
    rows = scan[:, 1:]
    if not np.count_nonzero(filters):
        return rows
    if filters.max() > 2:
        return None
    rows = rows.copy()
    sub = filters == 1
    if sub.any():  # each byte adds the reconstructed byte to its left (1 byte per pixel or less)
        rows[sub] = np.cumsum(rows[sub], axis=1, dtype=np.uint8)
    up = filters == 2
    if up.any():
        # each Up row adds the reconstructed row above (zeros above the first): a running sum
        # down the rows, restarted at every other row, which is already reconstructed
        total = np.cumsum(rows, axis=0, dtype=np.uint8)
        start = np.where(up, -1, np.arange(len(rows)))
        start = np.maximum.accumulate(start)  # the last non-Up row at or above each row
        before = np.zeros_like(rows)
        has_start = start > 0
        before[has_start] = total[start[has_start] - 1]
        rows = total - before
    return rows


def _fast_png_mask(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(uint8 {0, 1} [size, size], 1 = foreground (gray >= 128), stored (W, H)) of a PNG that
    `png_rows` reads, shrunk or enlarged by nearest neighbour as PIL's NEAREST does; None
    otherwise."""
    decoded = png_rows(data)
    if decoded is None:
        return None
    rows, width, height, bits = decoded
    if size is not None and (width, height) != (size, size):
        ys, xs = _nearest_index(height, size), _nearest_index(width, size)
    else:
        ys = xs = slice(None)
    if bits == 1:
        mask = np.unpackbits(rows, axis=1, count=width)[ys][:, xs]  # 0 / 1 as stored
    else:
        mask = (rows[ys][:, xs] >= 128).view(np.uint8)
    return mask, (width, height)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A binary mask (bool or 0/1 [H, W]) as a 1-bit grayscale PNG: white (255 when read as
    8-bit gray) = foreground. Every row uses filter None, which `png_rows` reads without
    unfiltering; zlib level 6. ~230 bytes for a 192 px object mask (an 8-bit PNG from PIL: ~450).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not mask.size:
        raise ValueError(f"mask must be a non-empty [H, W] array, got shape {mask.shape}")
    height, width = mask.shape
    packed = np.packbits(mask.astype(bool), axis=1)
    scan = np.zeros((height, packed.shape[1] + 1), np.uint8)  # column 0: filter type 0 (None)
    scan[:, 1:] = packed

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((1, 0, 0, 0, 0))
    body = zlib.compress(scan.tobytes(), 6)
    return b"".join((_PNG_SIGNATURE, chunk(b"IHDR", header), chunk(b"IDAT", body), chunk(b"IEND", b"")))


@functools.lru_cache(maxsize=64)
def _nearest_index(stored: int, size: int) -> np.ndarray | slice:
    """The source pixel under each output pixel's centre, bit for bit as PIL's NEAREST resize
    finds it: a position that starts at half a step and adds the step (stored / size, a double)
    once per pixel, truncated. A slice when the pixels are evenly spaced (any whole-number
    shrink, e.g. 192 -> 64 px), else an intp array [size]."""
    step = stored / size
    positions = np.full(size, step)
    positions[0] = step * 0.5
    index = np.minimum(np.cumsum(positions).astype(np.intp), stored - 1)
    if size > 1:
        spacing = int(index[1] - index[0])
        if spacing > 0 and (np.diff(index) == spacing).all():
            return slice(int(index[0]), int(index[-1]) + 1, spacing)
    index.flags.writeable = False  # cached: shared by every call
    return index


def _shrink_in_decoder(img: Image.Image, mode: str, size: int | None) -> None:
    if size is not None and img.format == "JPEG" and 2 * size <= min(img.size):  # else scale 1: nothing to do
        img.draft(mode, (size, size))


def decode_rgb(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB image: uint8 [size, size, 3] (or the stored size when `size` is None; possibly a
    non-contiguous view of a [3, H, W] array)."""
    fast = _fast_jpeg(data, size, 3)
    if fast is not None:
        return fast[0].transpose(1, 2, 0), fast[1]
    img = _open(data)
    stored = img.size
    try:
        _shrink_in_decoder(img, "RGB", size)
        if img.mode != "RGB":
            img = to_rgb(img)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img), stored
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt image ({_reason(exc)})") from None


def decode_mask_binary(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask as uint8 {0, 1} [size, size]: 1 where the stored gray value is >= 128 (for 16-bit
    masks >= 32768, for float masks >= 0.5; JPEG masks with compression noise come out binary)."""
    fast_png = _fast_png_mask(data, size)
    if fast_png is not None:
        return fast_png
    fast = _fast_jpeg(data, size, 1, nearest=True)
    if fast is not None:
        return (fast[0][0] >= 128).view(np.uint8), fast[1]
    img = _open(data)
    stored = img.size
    try:
        _shrink_in_decoder(img, "L", size)
        if img.mode.startswith("I") or img.mode == "F":
            threshold = 0.5 if img.mode == "F" else 32768
            img = Image.fromarray(((np.asarray(img) >= threshold) * 255).astype(np.uint8))
        elif img.mode != "L":
            img = img.convert("L")  # "1", "P", "RGB", "LA": masks saved by other tools
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.NEAREST)
        return (np.asarray(img) >= 128).view(np.uint8), stored
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt image ({_reason(exc)})") from None


def decode_mask(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask: float32 {0, 1} [size, size]; 1 where the stored gray value is >= 128 (or >= 32768
    for 16-bit masks, >= 0.5 for float masks)."""
    mask, stored = decode_mask_binary(data, size)
    return mask.astype(np.float32), stored


def decode_depth_raw(data: bytes, size: int | None) -> tuple[np.ndarray, float, tuple[int, int]]:
    """A depth map as stored: (values [size, size], scale, stored size); depth = values / scale.
    8-bit maps give uint8 values and scale 255, 16-bit and float maps float32 values already
    divided (scale 1). Checked as `decode_depth` says."""
    fast = _fast_jpeg(data, size, 1)
    if fast is not None:
        values, scale, stored = fast[0][0], 255.0, fast[1]
    else:
        values, scale, stored = _depth_with_pil(data, size)
    if not np.count_nonzero(values):
        raise ImageError("depth has no valid pixel (all 0); depth must be > 0 where defined")
    return values, scale, stored


def _depth_with_pil(data: bytes, size: int | None) -> tuple[np.ndarray, float, tuple[int, int]]:
    img = _open(data)
    stored = img.size
    try:
        _shrink_in_decoder(img, img.mode, size)  # not "L": a colour depth map must stay detectable
        if img.mode == "L":
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img), 255.0, stored
        if img.mode.startswith("I") or img.mode == "F":
            values = np.asarray(img)
            scale = 65535.0 if img.mode.startswith("I") else 1.0
            low, high = float(values.min()), float(values.max())
            if low < 0 or high > scale:
                raise ImageError(f"depth values {low:g}..{high:g} are outside 0..{scale:g} ({img.mode} image)")
            depth = values.astype(np.float32) / np.float32(scale)
            if size is not None and depth.shape != (size, size):
                depth = np.array(Image.fromarray(depth).resize((size, size), Image.BILINEAR))  # float32: mode F
            return depth, 1.0, stored
        rgb = np.asarray(img.convert("RGB")).astype(np.int16)
        spread = int((rgb.max(axis=2) - rgb.min(axis=2)).max())
        if spread > GRAY_TOLERANCE:
            raise ImageError(
                f"depth is a colour image (channels differ by up to {spread}); expected "
                "grayscale (8-bit, value/255, or 16-bit PNG, value/65535)"
            )
        gray = Image.fromarray(np.round(rgb.mean(axis=2)).astype(np.uint8))
        if size is not None and gray.size != (size, size):
            gray = gray.resize((size, size), Image.BILINEAR)
        return np.asarray(gray), 255.0, stored
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt image ({_reason(exc)})") from None


def decode_depth(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A depth map: float32 [size, size] in [0, 1] (8-bit / 255, 16-bit / 65535, float as is).

    Raises:
        ImageError: a colour (non-gray) image, values outside the encoding's range, or a map
            with no valid pixel (all 0).
    """
    values, scale, stored = decode_depth_raw(data, size)
    if values.dtype == np.float32:
        return values, stored
    depth = values.astype(np.float32)
    depth /= np.float32(scale)
    return depth, stored


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as 8-bit RGB. A 16-bit grayscale PNG (PIL's "I;16" or "I") is scaled to 8 bits
    (value / 257): PIL's own convert clips it, so every pixel above 255 of 65535 came out white."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB") if img.mode != "RGB" else img


def read_image_file(path: str | os.PathLike) -> torch.Tensor:
    """An image file (any format PIL reads; EXIF rotation applied) as float32 [3, H, W] in [0, 1].

    Raises:
        DataError: the file is missing or is not a readable image.
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: image not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = to_rgb(ImageOps.exif_transpose(img))
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: not a readable image ({_reason(exc)}); expected a JPEG or PNG file") from None
    array = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
    return torch.from_numpy(array).float().mul_(1.0 / 255.0)  # x * float32(1/255), as the dataset
