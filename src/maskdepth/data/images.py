"""Decoding archive entries into arrays at the training size, and image files for `predict`.

Every decoder takes the encoded bytes and the output side `size` (None: keep the stored size),
returns (array, stored (W, H)), and raises `ImageError` (a DataError) saying what is wrong; the
caller prefixes the archive and entry.

Resizing: RGB images and depth use PIL's bilinear filter, which widens its support when
shrinking (an area-like average, no aliasing); masks use nearest, then a threshold at 128 (so
JPEG masks with compression noise come out binary).

8-bit JPEGs with the expected channels (RGB for bg / fg_bg, gray for mask / depth) at the output
size or larger are decoded by torchvision's JPEG op instead of PIL: the same libjpeg-turbo, but
straight into a [C, H, W] array without PIL's image object and RGBX packing; a larger image is
then shrunk by torch's uint8 antialiased bilinear (nearest for masks), which follows PIL's
BILINEAR resize of the full decode (within 1 of 255). Measured at 192 px: 225 us instead of 370 us
for an RGB fg_bg, 90 us instead of 135 us for a gray depth map; at 64 px from 192 px sources
310 us instead of 360 us (PIL with a 1/2-scale `Image.draft` decode) for fg_bg. Whether a JPEG
qualifies is read from its SOF header; anything else, and any JPEG the op refuses, takes the
PIL path, which names the problem. (The PIL path still shrinks JPEGs inside the DCT by 1/2, 1/4
or 1/8 first, never below `size`.) PNGs always go through PIL: torchvision's PNG decoder crashes
the process (segfault) on some corrupt data, which `check-data` and `skip_bad` must survive.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import TYPE_CHECKING

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
_decode_jpeg = None  # torch.ops.image.decode_jpeg, looked up on first use (False: unavailable)


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits per sample) from a JPEG's SOF header, or None when
    `data` is not a JPEG or its header cannot be found (then PIL decides)."""
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
            return ((data[pos + 7] << 8) | data[pos + 8], (data[pos + 5] << 8) | data[pos + 6], data[pos + 9], data[pos + 4])
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        else:
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def _jpeg_op():
    """torchvision's registered JPEG decoding op, or None when torchvision lacks it."""
    global _decode_jpeg
    if _decode_jpeg is None:
        try:
            import torch
            import torchvision.io  # noqa: F401  (registers torch.ops.image)

            _decode_jpeg = torch.ops.image.decode_jpeg
            with warnings.catch_warnings():
                # torch warns once per process that a tensor on read-only bytes could be written
                # to; it is only read. Said here, outside the per-image path.
                warnings.simplefilter("ignore")
                torch.frombuffer(b"\0", dtype=torch.uint8)
        except (ImportError, AttributeError, RuntimeError):
            _decode_jpeg = False
    return _decode_jpeg or None


def _fast_jpeg(
    data: bytes, size: int | None, channels: int, *, nearest: bool = False
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(uint8 [channels, size, size], stored (W, H)) decoded by torchvision when `data` is an
    8-bit JPEG with `channels` components at `size` or larger (then shrunk: antialiased
    bilinear, or nearest when `nearest`, as PIL's resize does); None otherwise (use PIL).

    Calls the op `torch.ops.image.decode_jpeg` rather than `torchvision.io.decode_jpeg`: the
    wrapper costs ~20 us a call (usage logging and, since torchvision 0.29, a deprecation
    warning: torchvision's image decoders are to move to TorchCodec). Should the op go away or
    change, this returns None and PIL decodes everything.
    """
    global _decode_jpeg
    frame = _jpeg_frame(data)
    if frame is None or frame[2] != channels or frame[3] != 8 or (size is not None and min(frame[:2]) < size):
        return None
    op = _jpeg_op()
    if op is None:
        return None
    import torch

    try:
        # mode 0: channels as stored (ImageReadMode.UNCHANGED); False: no EXIF rotation, as PIL here
        image = op(torch.frombuffer(data, dtype=torch.uint8), 0, False)
    except RuntimeError:
        return None  # corrupt: PIL decodes it again and says what is wrong
    except Exception:  # noqa: BLE001 - the op's signature changed: stop using it
        _decode_jpeg = False
        return None
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
            img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img), stored
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt image ({_reason(exc)})") from None


def decode_mask_gray(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask as uint8 gray values [size, size]: foreground where >= 128 (16-bit masks are
    thresholded at 32768 and float masks at 0.5 first, giving 0 / 255)."""
    fast = _fast_jpeg(data, size, 1, nearest=True)
    if fast is not None:
        return fast[0][0], fast[1]
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
        return np.asarray(img), stored
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt image ({_reason(exc)})") from None


def decode_mask(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask: float32 {0, 1} [size, size]; 1 where the stored gray value is >= 128 (or >= 32768
    for 16-bit masks, >= 0.5 for float masks)."""
    gray, stored = decode_mask_gray(data, size)
    return (gray >= 128).astype(np.float32), stored


def decode_depth_raw(data: bytes, size: int | None) -> tuple[np.ndarray, float, tuple[int, int]]:
    """A depth map as stored: (values [size, size], scale, stored size); depth = values / scale.
    8-bit maps give uint8 values and scale 255, 16-bit and float maps float32 values already
    divided (scale 1). Checked as `decode_depth` says."""
    fast = _fast_jpeg(data, size, 1)
    if fast is not None:
        values, scale, stored = fast[0][0], 255.0, fast[1]
    else:
        values, scale, stored = _depth_with_pil(data, size)
    if not values.any():
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
                depth = np.array(Image.fromarray(depth, "F").resize((size, size), Image.BILINEAR))
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


def read_image_file(path: str | os.PathLike) -> "torch.Tensor":
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
                img = ImageOps.exif_transpose(img).convert("RGB")
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: not a readable image ({_reason(exc)}); expected a JPEG or PNG file") from None
    array = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
    return torch.from_numpy(array).float().div_(255)
