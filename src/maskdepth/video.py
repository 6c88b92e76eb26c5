"""Predict mask and depth for every frame of a video shot in front of one background.

    maskdepth predict runs/quick/checkpoints/best.pt --bg empty_room.jpg --video clip.mp4 --out clip_pred.mp4

    predict_video("best.pt", bg="empty_room.jpg", video="clip.mp4", out="clip_pred.mp4", frames="clip_frames/")

The output video shows each frame side by side, H x 3W: input frame | mask (white = foreground)
| depth in the colour map of the sample grids (near = bright), at the input's frame rate and frame
size (an odd height or width is padded by one black row or column: H.264 needs even sizes).
Frames are resized to the checkpoint's training size (data.size x data.size, a multiple of the
model's stride, as `maskdepth predict` does for images), predicted in batches and the outputs
resized back to the frame size. `frames=DIR` also writes frame_NNNNNN_mask.png (0 / 255) and
frame_NNNNNN_depth.png (16-bit, depth * 65535) per frame, numbered from 0.

Video files are read and written with PyAV (`pip install av`, or `pip install 'maskdepth[video]'`),
an optional dependency; without it the command says so in one line.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maskdepth.errors import ConfigError, DataError, MaskDepthError
from maskdepth.fileio import atomic_open, refuse_overwrite
from maskdepth.inference import Predictor, check_batch_size, resize_bilinear, write_mask_depth
from maskdepth.viz import colorize_depth

# Output container by the suffix of --out; the codec is H.264 (libx264) where PyAV has it, else MPEG-4.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
INSTALL_HINT = "pip install av (or pip install 'maskdepth[video]')"


def require_av() -> Any:
    """The `av` module; MaskDepthError (one line, with the install command) when it is missing."""
    try:
        import av
    except ImportError:
        raise MaskDepthError(f"video prediction needs PyAV, which is not installed: {INSTALL_HINT}") from None
    return av


FRAME_FILE = re.compile(r"frame_\d{6}_(mask|depth)\.png")  # what --frames holds: this command's own files


def predict_video(
    checkpoint: str | os.PathLike[str],
    *,
    bg: str | os.PathLike[str],
    video: str | os.PathLike[str],
    out: str | os.PathLike[str],
    frames: str | os.PathLike[str] | None = None,
    device: str = "auto",
    batch_size: int = 8,
    amp: str = "auto",
    progress: bool = False,
    keep_going: bool = False,
) -> tuple[Path, int]:
    """Write the side-by-side video (frame | mask | depth colour map) of `video` to `out`.

    Args:
        bg: the background image, the scene without the object; the frame's size, or the same
            aspect ratio (then it is resized to the frame size).
        out: a .mp4, .mov, .mkv or .avi file, written to a temp file and renamed when complete.
        frames: a folder for per-frame frame_NNNNNN_mask.png and _depth.png (old ones removed), or None.
        device, batch_size, amp: as for `maskdepth.inference.predict_pairs`.
        keep_going: write what decodes of a video cut short (see `_check_complete`).
    Returns (out, the number of frames written).
    Raises:
        MaskDepthError: PyAV missing. DataError: an unreadable or truncated video or bg, a bg of
        another aspect ratio. ConfigError: an unsupported or input-destroying output, a bad device.
    """
    from maskdepth.data import read_image_file

    av = require_av()
    out = Path(out)
    container = CONTAINERS.get(out.suffix.lower())
    if container is None:
        raise ConfigError(f"--out {out}: the output video must end in {', '.join(CONTAINERS)}")
    refuse_overwrite(out, {"--video": video, "--bg": bg, "checkpoint": checkpoint})
    check_batch_size(batch_size)
    predictor = Predictor.load(checkpoint, device=device, amp=amp)
    bg_img = read_image_file(bg)
    count = 0
    _clear_frames(frames)
    with _open_input(av, video) as (source, stream), atomic_open(out, "wb") as f:
        height, width = stream.codec_context.height, stream.codec_context.width
        bg_img = _fit_background(bg_img, height, width, bg, video)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        with av.open(f, "w", format=container) as sink:
            writer = _add_stream(av, sink, rate, 3 * width + width % 2, height + height % 2)
            decoded = _decode(av, source, stream, video)
            with tqdm(total=stream.frames or None, desc="predict video", unit="frame", disable=not progress) as bar:
                for rgb, mask, depth in _predict_frames(predictor, bg_img, decoded, batch_size):
                    _encode(av, sink, writer, side_by_side(rgb, mask, depth), count)
                    if frames is not None:
                        write_mask_depth(Path(frames), f"frame_{count:06d}", mask, depth, color=False)
                    count += 1
                    bar.update(1)
            if count == 0:  # raised inside: nothing is written to `out`
                raise DataError(f"--video {video}: no frames could be decoded")
            _check_complete(stream, rate, count, video, keep_going)
            for packet in writer.encode():  # flush the encoder
                sink.mux(packet)
    return out, count


def _clear_frames(frames: str | os.PathLike[str] | None) -> None:
    """A reused --frames folder: remove this command's own frame files, so that no stale frame of an
    earlier, longer clip stays beside the new ones (anything else in the folder is left alone)."""
    for old in Path(frames).glob("frame_*_*.png") if frames is not None else ():
        if FRAME_FILE.fullmatch(old.name):
            old.unlink()


def _check_complete(stream: Any, rate: Fraction, count: int, video: Any, keep_going: bool) -> None:
    """DataError when fewer frames decoded than the container declares (its frame count, else its
    duration times the rate, within a frame): a truncated file decodes up to the cut without an
    error. With `keep_going` only a warning."""
    declared = int(stream.frames or 0)
    if not declared and stream.duration and stream.time_base:
        declared = int(float(stream.duration * stream.time_base * rate)) - 1
    if count >= declared:
        return
    message = (f"--video {video}: only {count} of the {declared} frames its container declares could be decoded "
               "(a truncated or damaged file)")
    if not keep_going:
        raise DataError(f"{message}; pass --keep-going to write the {count} frames that decode")
    warnings.warn(f"{message}; --keep-going: wrote those {count}", stacklevel=3)


def side_by_side(rgb: np.ndarray, mask: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """uint8 [H, 3W, 3] of frame | mask | depth colour map; rgb uint8 [H, W, 3], mask bool [H, W],
    depth float [H, W] in [0, 1]. Odd H or W are padded to even with black (H.264 needs even)."""
    mask_rgb = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    panel = np.concatenate([rgb, mask_rgb, colorize_depth(depth)], axis=1)
    height, width = rgb.shape[:2]
    return np.pad(panel, ((0, height % 2), (0, width % 2), (0, 0)))


@contextmanager
def _open_input(av: Any, path: str | os.PathLike[str]) -> Iterator[tuple[Any, Any]]:
    """`with _open_input(av, path) as (container, video stream)`: DataError for an unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--video {path}: no such file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise DataError(f"--video {path}: not a readable video ({exc})") from None
    try:
        if not container.streams.video:
            raise DataError(f"--video {path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _fit_background(bg_img: torch.Tensor, height: int, width: int, bg: Any, video: Any) -> torch.Tensor:
    """bg [3, h, w] resized to the frame size [3, height, width] if its aspect ratio matches (1%)."""
    h, w = bg_img.shape[-2:]
    if (h, w) == (height, width):
        return bg_img
    if abs(w / h - width / height) > 0.01 * width / height:
        raise DataError(f"--bg {bg} is {w}x{h} but the frames of {video} are {width}x{height}; "
                        "the background must be the same view (same size or aspect ratio)")
    return resize_bilinear(bg_img[None], (height, width))[0]


def _decode(av: Any, source: Any, stream: Any, video: Any) -> Iterator[np.ndarray]:
    """The frames of `stream` as uint8 [H, W, 3] RGB; DataError for a corrupt stream."""
    try:
        for frame in source.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise DataError(f"--video {video}: decoding failed ({exc})") from None


def _predict_frames(
    predictor: Predictor, bg_img: torch.Tensor, decoded: Iterator[np.ndarray], batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frame, mask, depth) per decoded frame, predicted `batch_size` frames per forward pass."""
    for batch in _batches(decoded, batch_size):
        frames_in = [torch.from_numpy(rgb).permute(2, 0, 1) / 255.0 for rgb in batch]  # [3, H, W] in [0, 1]
        masks, depths = predictor([bg_img] * len(batch), frames_in)
        yield from zip(batch, masks, depths, strict=True)


def _batches(items: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    """Lists of `size` items (the last one shorter) from a stream whose length is not known ahead."""
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _add_stream(av: Any, sink: Any, rate: Fraction, width: int, height: int) -> Any:
    """An H.264 stream (MPEG-4 where PyAV lacks libx264), yuv420p, at `rate` frames per second."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = sink.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = Fraction(1) / rate
    stream.options = {"crf": "18"} if codec == "libx264" else {"qscale": "2"}
    return stream


def _encode(av: Any, sink: Any, stream: Any, panel: np.ndarray, index: int) -> None:
    """Encode one side-by-side panel as frame `index` and write its packets."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(panel), format="rgb24")
    frame.pts = index  # in stream.time_base = 1 / rate: frame `index` at index / rate seconds
    for packet in stream.encode(frame):
        sink.mux(packet)
