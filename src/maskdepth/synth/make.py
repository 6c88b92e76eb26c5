"""Procedural (bg, fg_bg, mask, depth) dataset: `maskdepth make-data OUT.zip`.

    maskdepth make-data data/synth192.zip                      # 400,000 samples at 192 px
    maskdepth make-data /tmp/tiny.zip --size 64 --num-bg 4 --num-fg 4 --per-pair 2

Shape of the original dataset: `num_bg` background scenes x `num_fg` foreground objects x 2
(the object as drawn and mirrored) x `per_pair` random placements. The defaults (1000 x 100 x 2 x
2) give the original's 400,000 samples with ten times its 100 backgrounds: scene diversity is
what makes depth generalise to unseen scenes (docs/results.md), and scenes cost nothing here.
With `fg_per_bg=K` each scene gets only K of the `num_fg` objects (num_bg x K x 2 x per_pair
samples), dealt from one seeded shuffle of the pool so that every object appears in as many scenes
as any other (within one): many scenes and many objects in a small archive. A (scene, object)
pair's placements are the same whatever K, so such an archive is a subset of the full one. Backgrounds are 3D rooms,
halls, streets and yards ray cast with a pinhole camera (`scene.py`), so their depth is exact
geometry; objects are textured silhouettes with soft alpha (`objects.py`). A placement stands
the object on the floor: its foot is a floor pixel, its distance is the floor's depth there, its
pixel height is focal * real height / distance (lower in the image = nearer = larger), and it is
a billboard at that distance (bulging slightly nearer in its middle) that hides whatever of the
scene lies behind it. So the composite depth is min(scene, object) where the object is opaque,
and the mask is the object's visible pixels (alpha >= 0.5).

Determinism: every background, object and (background, object) chunk of placements draws from
its own `numpy.random.SeedSequence([seed, domain, index...])`; worker processes produce chunks
and the main process writes them in order, with fixed zip timestamps and encoder settings, so
the same arguments give a byte-identical archive whatever the number of workers.

Archive (zip, entries stored uncompressed: JPEG and PNG do not compress further):
    bg/<bg_id>.jpg                 e.g. bg/bg007.jpg
    fg_bg/<stem>.jpg               stem = <bg_id>_<fg_id>_<flip>_<k>, e.g. bg007_fg042_1_13
    mask/<stem>.png                1-bit grayscale PNG, white = object (0/255 as 8-bit gray)
    depth/<stem>.jpg               grayscale, value / 255 = z / 20 m (16-bit PNG / 65535 with png)
    manifest.csv                   one row per sample, columns MANIFEST_COLUMNS (below)
    scenes.csv                     one row per sample, columns SCENE_COLUMNS (below): a side table
    dataset.json                   sizes, seed, generator version, encodings, mean/std, statistics

Manifest columns: fg_bg, bg, mask, depth (entry names); bg_id, fg_id; flip (1 = mirrored);
x, y (the foot pixel: column, row); scale (object height in pixels / image size); distance
(metres from the camera along its axis, at the foot); height_m (the object's real height);
coverage (mask fraction); bg_kind (room | hall | street | yard); fg_kind (person, animal, ...).

scenes.csv, the side table: what made each scene, so that an evaluation can group its errors by
it (the depth scale of an unseen scene depends on the camera and on the objects' sizes). Never a
training input: the dataset and check-data ignore it; `maskdepth.data.read_scene_table` reads it.
One row per sample, in manifest order, keyed by the fg_bg entry name:
    fg_bg, bg_id, fg_id        the sample, as in manifest.csv
    scene_kind                 room | hall | street | yard
    camera_height_m            the camera's height above the floor (metres)
    camera_pitch_deg           how far the camera looks down from the horizontal (degrees)
    fov_deg                    the horizontal (= vertical: square images) field of view (degrees)
    focal_px                   the focal length in pixels at the archive's size
    horizon_row                image row of the horizon from the top edge (size / 2 - focal_px *
                               tan(pitch); negative: above the image)
    object_kind                person, animal, chair, ... (as fg_kind)
    object_height_m            the pasted object's real height (metres)
    object_distance_m          its distance along the optical axis, at its foot (metres)
    object_height_px           its height in the image (pixels, focal_px * height / distance;
                               the whole object, also where the image edge or the scene cuts it)
    object_foot_row            the image row its foot stands on
    object_coverage            its visible pixels / image pixels (the mask's fraction)
    median_depth_m             median of the sample's true depth (before quantisation; sky = 20 m)
    bg_median_depth_m          the same of its background alone
"""

from __future__ import annotations

import csv
import errno
import functools
import io
import json
import math
import multiprocessing
import os
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskdepth import __version__
from maskdepth.data.images import encode_mask_png
from maskdepth.data.manifest import SCENES_NAME
from maskdepth.errors import ConfigError, DataError
from maskdepth.synth.objects import Sprite, random_object, rasterize
from maskdepth.synth.scene import FAR_M, SceneSpec, random_scene, render_scene

GENERATOR = "maskdepth.synth"
GENERATOR_VERSION = "1.2"  # 1.2: scenes.csv; 1.1: masks are 1-bit PNGs (1.0: 8-bit)
JPEG_QUALITY = 90
DEPTH_JPEG_QUALITY = 95  # the depth target gets a little more fidelity than the inputs
DEPTH_MIN = 2.0 / 255.0  # every depth value is at least this, so JPEG noise cannot reach 0
MIN_SIZE = 32
MANIFEST_COLUMNS = (
    "fg_bg", "bg", "mask", "depth", "bg_id", "fg_id", "flip", "x", "y", "scale", "distance",
    "height_m", "coverage", "bg_kind", "fg_kind",
)
SCENE_COLUMNS = (
    "fg_bg", "bg_id", "fg_id", "scene_kind", "camera_height_m", "camera_pitch_deg", "fov_deg", "focal_px",
    "horizon_row", "object_kind", "object_height_m", "object_distance_m", "object_height_px", "object_foot_row",
    "object_coverage", "median_depth_m", "bg_median_depth_m",
)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_COVERAGE_RANGE = (0.01, 1.6)  # placements aim at a log-uniform mask coverage in this range
_MIN_VISIBLE = 0.001  # a placement must show at least this fraction of the image (and 3 pixels)
_TRIES = 12


@dataclass(frozen=True)
class _Job:
    """What every worker needs to know (small and picklable)."""

    size: int
    seed: int
    per_pair: int
    image_format: str
    bg_width: int
    fg_width: int
    k_width: int
    fg_per_bg: int  # objects per scene (num_fg: every object with every scene)

    def bg_id(self, b: int) -> str:
        return f"bg{b:0{self.bg_width}d}"

    def fg_id(self, f: int) -> str:
        return f"fg{f:0{self.fg_width}d}"


@dataclass
class MakeDataSummary:
    """What `make_dataset` wrote."""

    path: Path
    count: int
    size: int
    num_bg: int
    num_fg: int
    per_pair: int
    seed: int
    image_format: str
    bytes: int
    seconds: float  # wall time of the whole run
    prepare_seconds: float  # of which rendering the backgrounds and drawing the objects
    info: dict = field(repr=False)  # the dataset.json contents

    def _objects(self) -> str:
        k = self.info.get("fg_per_bg", self.num_fg)
        return f"{self.num_fg} fg" if k == self.num_fg else f"{k} of {self.num_fg} fg"

    def format(self) -> str:
        cov = self.info["mask_coverage"]
        depth = self.info["depth"]
        mb = self.bytes / 1e6
        rate = self.count / max(self.seconds, 1e-9)
        return (
            f"wrote {self.path}: {self.count} samples ({self.num_bg} bg x {self._objects()} x 2 flips x "
            f"{self.per_pair} placements) at {self.size}x{self.size} px, {self.image_format}, "
            f"{mb:.1f} MB in {self.seconds:.1f} s ({rate:.0f} samples/s). Mask coverage mean "
            f"{100 * cov['mean']:.1f}% (min {100 * cov['min']:.2f}%, max {100 * cov['max']:.1f}%); depth mean "
            f"{depth['mean']:.3f}, 1st-99th percentile {depth['p01']:.3f}-{depth['p99']:.3f}; fg_bg+bg mean "
            f"{_fmt3(self.info['mean'])} std {_fmt3(self.info['std'])}."
        )


def _fmt3(v: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"


# ---------------------------------------------------------------------------------- encoding


def _encode_rgb(img: np.ndarray, fmt: str) -> bytes:
    """uint8 [H,W,3] -> JPEG (quality 90, 4:4:4) or PNG bytes."""
    buf = io.BytesIO()
    pil = Image.fromarray(img)  # uint8 [H,W,3]: RGB
    if fmt == "jpg":
        pil.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    else:
        pil.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _encode_depth(depth: np.ndarray, fmt: str) -> tuple[bytes, np.ndarray]:
    """depth float [H,W] in (0,1] -> (file bytes, the integer codes written)."""
    buf = io.BytesIO()
    if fmt == "png":
        codes = np.clip(np.round(depth * 65535), math.ceil(DEPTH_MIN * 65535), 65535).astype(np.uint16)
        Image.fromarray(codes).save(buf, "PNG", compress_level=6)  # mode I;16: a 16-bit grayscale PNG
        return buf.getvalue(), codes
    codes = np.clip(np.round(depth * 255), round(DEPTH_MIN * 255), 255).astype(np.uint8)
    floor = int(codes.min())
    while True:
        buf = io.BytesIO()
        Image.fromarray(np.maximum(codes, floor)).save(buf, "JPEG", quality=DEPTH_JPEG_QUALITY, subsampling=0)
        data = buf.getvalue()
        # JPEG ringing next to a strong edge could push a near value to 0: check the few near maps.
        if floor >= 24 or int(np.asarray(Image.open(io.BytesIO(data))).min()) > 0:
            return data, np.maximum(codes, floor)
        floor += 4


# --------------------------------------------------------------------------------- rendering


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


_DOMAIN_BG, _DOMAIN_FG, _DOMAIN_PLACE, _DOMAIN_DEAL = 1, 2, 3, 4


def scene_objects(num_bg: int, num_fg: int, fg_per_bg: int | None = None, *, seed: int = 0) -> list[list[int]]:
    """The object indices each scene is paired with: [num_bg][K], K = fg_per_bg (default num_fg).

    Without fg_per_bg (or with K = num_fg) every scene gets every object, in order. Otherwise the
    pool is shuffled once with `seed` and dealt round: scene b gets positions b*K .. b*K+K-1 of the
    shuffled pool, modulo num_fg, sorted. So a scene's K objects are distinct and each object
    appears in floor(num_bg*K/num_fg) or one more scenes.
    """
    k = num_fg if fg_per_bg is None else fg_per_bg
    if k == num_fg:
        return [list(range(num_fg)) for _ in range(num_bg)]
    order = _rng(seed, _DOMAIN_DEAL).permutation(num_fg)
    return [sorted(int(order[(b * k + j) % num_fg]) for j in range(k)) for b in range(num_bg)]


def background_scene(bg_index: int, *, seed: int = 0) -> SceneSpec:
    """The layout of background `bg_index` of the dataset made with `seed` (any size): what
    `make_dataset` renders, so a test or a notebook can look at one scene without making an archive."""
    return random_scene(_rng(seed, _DOMAIN_BG, bg_index))


@dataclass
class _Backdrop:
    """A rendered background as the placements need it (sent to workers with each chunk)."""

    rgb: np.ndarray  # uint8 [S,S,3]: exactly the pixels written as bg, so fg_bg matches outside the object
    depth_m: np.ndarray  # float32 [S,S] metres
    floor: np.ndarray  # bool [S,S]
    floor_idx: np.ndarray  # int32 [K] flat indices of floor pixels nearer than 0.9 FAR_M, sorted by depth
    floor_depth: np.ndarray  # float32 [K] their depths
    focal: float
    light: np.ndarray
    kind: str
    camera: list[str]  # the scene columns of scenes.csv from camera_height_m to horizon_row, formatted
    median_m: float  # bg_median_depth_m


def _prepare_background(job: _Job, b: int) -> dict:
    """Render background b: its encoded image, pixel statistics and the backdrop for placements."""
    spec = background_scene(b, seed=job.seed)
    scene = render_scene(spec, job.size)
    img = _to_uint8(scene.rgb)
    depth = scene.depth_m.ravel()
    flat = np.flatnonzero(scene.floor.ravel() & (depth < 0.9 * FAR_M))
    order = np.argsort(depth[flat], kind="stable")
    horizon = job.size / 2 - scene.focal * math.tan(spec.pitch)
    camera = [f"{float(spec.cam_pos[1]):.3f}", f"{math.degrees(spec.pitch):.2f}", f"{math.degrees(spec.hfov):.2f}",
              f"{scene.focal:.2f}", f"{horizon:.2f}"]
    backdrop = _Backdrop(rgb=img, depth_m=scene.depth_m, floor=scene.floor, floor_idx=flat[order].astype(np.int32),
                         floor_depth=depth[flat[order]], focal=scene.focal, light=scene.light, kind=scene.kind,
                         camera=camera, median_m=float(np.median(scene.depth_m)))
    return {"b": b, "data": _encode_rgb(img, job.image_format), "stats": _pixel_stats(img), "backdrop": backdrop}


def render_background(bg_index: int, *, size: int = 192, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background `bg_index` of the dataset made with `seed` and `size`, with its exact depth.

    Returns (rgb uint8 [S,S,3] as written to bg/, depth float32 [S,S] in (0,1] before quantisation
    (z / FAR_M, larger = farther), floor bool [S,S]: the pixels where an object may stand).
    """
    job = _Job(size=size, seed=seed, per_pair=1, image_format="png", bg_width=3, fg_width=3, k_width=2, fg_per_bg=1)
    bd = _prepare_background(job, bg_index)["backdrop"]
    return bd.rgb, np.clip(bd.depth_m / FAR_M, DEPTH_MIN, 1.0).astype(np.float32), bd.floor


def _prepare_object(job: _Job, f: int) -> Sprite:
    # Drawn a little taller than the image: the nearest objects are about that tall.
    return rasterize(random_object(_rng(job.seed, _DOMAIN_FG, f)), max(48, int(round(1.2 * job.size))))


def _flipped(sprite: Sprite) -> Sprite:
    return Sprite(rgba=np.ascontiguousarray(sprite.rgba[:, ::-1]), relief=np.ascontiguousarray(sprite.relief[:, ::-1]),
                  foot_x=sprite.rgba.shape[1] - sprite.foot_x, fill=sprite.fill, height_m=sprite.height_m,
                  thickness_m=sprite.thickness_m, kind=sprite.kind)


def _render_chunk(job: _Job, b: int, f: int, backdrop: _Backdrop, sprite: Sprite) -> dict:
    """All 2 * per_pair samples of background b with object f, encoded, with their statistics."""
    rng = _rng(job.seed, _DOMAIN_PLACE, b, f)
    bg_id, fg_id = job.bg_id(b), job.fg_id(f)
    ext = job.image_format
    out: dict[str, Any] = {"entries": [], "rows": [], "scenes": [], "coverage": [], "stats": np.zeros((2, 3), np.int64),
                           "depth_hist": np.zeros(256, np.int64)}
    for flip, spr in ((0, sprite), (1, _flipped(sprite))):
        for k in range(job.per_pair):
            img, mask, depth, place = _place(backdrop, spr, rng)
            stem = f"{bg_id}_{fg_id}_{flip}_{k:0{job.k_width}d}"
            depth_bytes, codes = _encode_depth(depth, ext)
            names = (f"fg_bg/{stem}.{ext}", f"mask/{stem}.png", f"depth/{stem}.{ext}")
            out["entries"] += [(names[0], _encode_rgb(img, ext)), (names[1], encode_mask_png(mask)),
                               (names[2], depth_bytes)]
            coverage = float(np.count_nonzero(mask)) / mask.size
            out["rows"].append([names[0], f"bg/{bg_id}.{ext}", names[1], names[2], bg_id, fg_id, flip,
                                place["x"], place["y"], f"{place['scale']:.4f}", f"{place['distance']:.3f}",
                                f"{place['height_m']:.3f}", f"{coverage:.5f}", backdrop.kind, spr.kind])
            out["scenes"].append([names[0], bg_id, fg_id, backdrop.kind, *backdrop.camera, spr.kind,
                                  f"{place['height_m']:.3f}", f"{place['distance']:.3f}",
                                  f"{place['scale'] * job.size:.2f}", place["y"], f"{coverage:.5f}",
                                  f"{float(np.median(depth)) * FAR_M:.3f}", f"{backdrop.median_m:.3f}"])
            out["coverage"].append(coverage)
            out["stats"] += _pixel_stats(img)
            hist_codes = codes if ext == "jpg" else (codes.astype(np.uint32) * 255 + 32767) // 65535
            out["depth_hist"] += np.bincount(hist_codes.ravel(), minlength=256)
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


_LEVELS = np.arange(256, dtype=np.int64)


def _pixel_stats(img: np.ndarray) -> np.ndarray:
    """[2,3] int64: per-channel sum and sum of squares of uint8 values (exact, order-free)."""
    flat = img.reshape(-1, 3)
    counts = np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)])  # [3,256]
    return np.stack([counts @ _LEVELS, counts @ (_LEVELS * _LEVELS)])


def _place(bd: _Backdrop, sprite: Sprite, rng: np.random.Generator):
    """Stand `sprite` somewhere on the floor of `bd`; returns (rgb, mask, depth, placement).

    rgb uint8 [S,S,3]; mask bool [S,S]; depth float32 [S,S] in (0,1] (z / FAR_M, larger = farther).
    """
    size = bd.rgb.shape[0]
    n = len(bd.floor_depth)
    best = None
    for _ in range(_TRIES):
        # Aim at a coverage drawn log-uniformly, which sets a pixel height, which sets the distance
        # (h = focal * H / z); then stand on a floor pixel at about that distance.
        target = float(np.exp(rng.uniform(np.log(_COVERAGE_RANGE[0]), np.log(_COVERAGE_RANGE[1]))))
        height_m = sprite.height_m * float(rng.uniform(0.9, 1.15))
        z_target = bd.focal * height_m / (size * math.sqrt(target / sprite.fill))
        if n == 0:  # no visible floor at all: stand at the bottom centre (the scenes always have some)
            x, y = size // 2, size - 1
        else:
            i0 = int(np.searchsorted(bd.floor_depth, z_target * 0.93))
            i1 = int(np.searchsorted(bd.floor_depth, z_target * 1.07))
            if i1 <= i0:  # nothing at that distance: the nearest (or farthest) band there is
                band = max(40, n // 20)
                i0 = min(max(i0 - band // 2, 0), max(n - band, 0))
                i1 = min(i0 + band, n)
            y, x = divmod(int(bd.floor_idx[rng.integers(i0, i1)]), size)
        z = float(bd.depth_m[y, x])
        h_px = bd.focal * height_m / z
        result = _composite(bd, sprite, x, y, z, h_px)
        visible = int(np.count_nonzero(result[1]))
        place = {"x": x, "y": y, "scale": h_px / size, "distance": z, "height_m": height_m}
        if visible >= max(3, _MIN_VISIBLE * size * size):
            return (*result, place)
        if best is None or visible > best[0]:
            best = (visible, result, place)
    return (*best[1], best[2])


def _composite(bd: _Backdrop, sprite: Sprite, x: int, y: int, z: float, h_px: float):
    """Paste `sprite`, h_px pixels tall, as a billboard at distance z with its foot on pixel (x, y)."""
    size = bd.rgb.shape[0]
    sh, sw = sprite.rgba.shape[:2]
    k = h_px / sh
    h = max(1, int(round(h_px)))
    w = max(1, int(round(sw * k)))
    # Premultiplied resize (mode RGBa) so that soft edges do not pick up a dark fringe.
    src = Image.frombuffer("RGBa", (sw, sh), sprite.rgba.tobytes(), "raw", "RGBa", 0, 1)
    rgba = np.asarray(src.resize((w, h), Image.BILINEAR), np.float32) / 255.0
    relief = np.asarray(Image.fromarray(sprite.relief).resize((w, h), Image.BILINEAR), np.float32) / 255.0
    top = y + 1 - h
    left = int(round(x + 0.5 - sprite.foot_x * k))
    rgb = bd.rgb.copy()
    depth_m = bd.depth_m.copy()
    mask = np.zeros((size, size), bool)
    _contact_shadow(rgb, bd.floor, x, y, 0.5 * w)
    r0, r1, c0, c1 = max(top, 0), min(top + h, size), max(left, 0), min(left + w, size)
    if r1 > r0 and c1 > c0:
        region = (slice(r0, r1), slice(c0, c1))
        sl = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
        # The object bulges nearer in its thick middle; where the scene is nearer still, it hides the object.
        obj_z = z - min(sprite.thickness_m, 0.5 * z) * relief[sl]
        in_front = obj_z < bd.depth_m[region]
        alpha = rgba[sl][..., 3] * in_front
        prem = rgba[sl][..., :3] * bd.light[None, None, :] * in_front[..., None]
        under = rgb[region].astype(np.float32) / 255.0
        rgb[region] = _to_uint8(prem + under * (1 - alpha[..., None]))
        visible = alpha >= 0.5
        mask[region] = visible
        depth_m[region] = np.where(visible, obj_z, depth_m[region])
    depth = np.clip(depth_m / FAR_M, DEPTH_MIN, 1.0).astype(np.float32)
    return rgb, mask, depth


def _contact_shadow(rgb: np.ndarray, floor: np.ndarray, x: int, y: int, half_w: float) -> None:
    """Darken the floor under the foot point with a soft flat ellipse (in place, uint8 image)."""
    size = rgb.shape[0]
    rx = max(half_w * 0.9, 1.0)
    ry = max(rx * 0.18, 0.75)
    r0, r1 = max(int(y - 2 * ry), 0), min(int(y + 2 * ry) + 2, size)
    c0, c1 = max(int(x - 1.5 * rx), 0), min(int(x + 1.5 * rx) + 2, size)
    if r1 <= r0 or c1 <= c0:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1]
    d2 = ((xx - x) / rx) ** 2 + ((yy - y) / ry) ** 2
    dark = 0.45 * np.exp(-2.0 * d2) * floor[r0:r1, c0:c1]
    rgb[r0:r1, c0:c1] = _to_uint8(rgb[r0:r1, c0:c1].astype(np.float32) / 255.0 * (1 - dark)[..., None])


# ------------------------------------------------------------------------- worker processes

_JOB: _Job | None = None  # set in each worker process by _init_worker


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job


def _prepare(job: _Job, task: tuple[str, int]) -> Any:
    kind, i = task
    return _prepare_background(job, i) if kind == "bg" else _prepare_object(job, i)


def _work_prepare(task: tuple[str, int]) -> Any:
    return _prepare(_JOB, task)


def _work_chunk(task: tuple) -> dict:
    return _render_chunk(_JOB, *task)


def _ordered(func, tasks: Iterator, pool, inflight: int) -> Iterator:
    """func over tasks, results in order, with at most `inflight` tasks queued or unread."""
    if pool is None:
        for task in tasks:
            yield func(task)
        return
    window: deque = deque()
    for task in tasks:
        window.append(pool.apply_async(func, (task,)))
        if len(window) >= inflight:
            yield window.popleft().get()
    while window:
        yield window.popleft().get()


# ------------------------------------------------------------------------------ the archive


class _Sink:
    """The file a zip is written to, until `cut()`: after that, writes go nowhere (only the
    position is kept), so closing the ZipFile of an aborted archive, or its finaliser, writes
    no central directory into the file."""

    def __init__(self, fileobj) -> None:
        self.fileobj, self.pos = fileobj, 0

    def write(self, data: bytes) -> int:
        if self.fileobj is None:
            self.pos += len(data)
            return len(data)
        return self.fileobj.write(data)

    def tell(self) -> int:
        return self.fileobj.tell() if self.fileobj is not None else self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.fileobj is not None:
            return self.fileobj.seek(offset, whence)
        self.pos = offset if whence == 0 else self.pos + offset
        return self.pos

    def flush(self) -> None:
        if self.fileobj is not None:
            self.fileobj.flush()

    def cut(self) -> None:
        self.pos, self.fileobj = self.tell(), None


class ArchiveWriter:
    """A zip written entry by entry with fixed metadata, so equal inputs give equal bytes."""

    def __init__(self, fileobj):
        self.sink = _Sink(fileobj)
        self.zip = zipfile.ZipFile(self.sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def write(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 3
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, data)

    def close(self) -> None:
        self.zip.close()

    def abort(self) -> None:
        """Give up: cut the file off, then close the zip (its central directory goes nowhere)."""
        self.sink.cut()
        try:
            self.zip.close()
        except Exception:  # noqa: BLE001 - already handling the error that made us abort
            pass


def _check_args(size, num_bg, num_fg, per_pair, seed, workers, image_format, fg_per_bg) -> None:
    for name, value, low in (("size", size, MIN_SIZE), ("num_bg", num_bg, 1), ("num_fg", num_fg, 1),
                             ("per_pair", per_pair, 1), ("fg_per_bg", 1 if fg_per_bg is None else fg_per_bg, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"make-data: {name} must be an integer, got {value!r}")
        if value < low:
            what = f"at least {low}" if low > 1 else "a positive integer"
            raise ConfigError(f"make-data: {name} must be {what}, got {value}")
    if fg_per_bg is not None and fg_per_bg > num_fg:
        raise ConfigError(f"make-data: fg_per_bg ({fg_per_bg}) cannot exceed num_fg ({num_fg}): a scene gets "
                          "distinct objects from the pool of num_fg")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"make-data: seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise ConfigError(f"make-data: workers must be a positive integer (or None for all cores), got {workers!r}")
    if image_format not in ("jpg", "png"):
        raise ConfigError(f"make-data: image_format must be 'jpg' or 'png', got {image_format!r}")


def _open_temp(out: Path, overwrite: bool):
    """Check OUT and create the temp file next to it; raise DataError before any work is done."""
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    if out.is_dir():
        raise DataError(f"{out} is a directory; give the path of a .zip file to write")
    parent = out.parent
    if not parent.exists():
        raise DataError(f"folder {parent} does not exist; create it first or choose another path for {out.name}")
    if not parent.is_dir():
        raise DataError(f"{parent} is not a folder; cannot write {out}")
    for n in range(100):
        tmp = parent / f".{out.name}.{os.getpid()}.{n}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise DataError(
                f"cannot write to {parent} ({exc.strerror}); choose a writable path for {out.name}"
            ) from exc
        return tmp, os.fdopen(fd, "wb")
    raise DataError(f"cannot create a temp file for {out} in {parent}; remove stale .{out.name}.*.tmp files")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def make_dataset(
    out: str | os.PathLike,
    *,
    size: int = 192,
    num_bg: int = 1000,
    num_fg: int = 100,
    per_pair: int = 2,
    seed: int = 0,
    fg_per_bg: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    image_format: str = "jpg",
    progress: bool = True,
) -> MakeDataSummary:
    """Render num_bg * fg_per_bg * 2 * per_pair samples into the zip `out` (see the module docstring).

    Args:
        out: the archive to write. Written to a temp file in the same folder and renamed when
            complete; an existing `out` is kept untouched unless the new archive is complete.
        size: image side in pixels (>= 32). num_bg, num_fg, per_pair: positive counts.
        seed: the same seed and arguments give a byte-identical archive.
        fg_per_bg: objects per scene, dealt from the pool of num_fg (`scene_objects`); default
            (None) num_fg: every scene with every object.
        workers: processes (default: all cores; 1 runs in this process).
        image_format: "jpg" (quality 90, 8-bit depth) or "png" (lossless, 16-bit depth).
        progress: show a tqdm progress bar.

    Raises:
        ConfigError: a bad argument. DataError: `out` exists (without overwrite), its folder is
            missing or not writable, or the disk filled up while writing.
    """
    _check_args(size, num_bg, num_fg, per_pair, seed, workers, image_format, fg_per_bg)
    out = Path(out)
    size, num_bg, num_fg, per_pair, seed = int(size), int(num_bg), int(num_fg), int(per_pair), int(seed)
    k = num_fg if fg_per_bg is None else int(fg_per_bg)
    count = num_bg * k * 2 * per_pair
    job = _Job(size=size, seed=seed, per_pair=per_pair, image_format=image_format,
               bg_width=max(3, len(str(num_bg - 1))), fg_width=max(3, len(str(num_fg - 1))),
               k_width=max(2, len(str(per_pair - 1))), fg_per_bg=k)
    n_workers = min(workers or _default_workers(), num_bg * k)
    tmp, fileobj = _open_temp(out, overwrite)
    start = time.perf_counter()
    pool = None
    try:
        if n_workers > 1:
            pool = multiprocessing.get_context().Pool(n_workers, initializer=_init_worker, initargs=(job,))
        info, prepare_seconds = _write_archive(fileobj, job, num_bg, num_fg, count, pool, n_workers, progress)
        if pool is not None:
            pool.close()
            pool.join()
        fileobj.flush()
        os.fsync(fileobj.fileno())
        fileobj.close()
        os.replace(tmp, out)
    except OSError as exc:
        _discard(tmp, fileobj, pool)
        if exc.errno == errno.ENOSPC:
            raise DataError(f"no space left on device while writing {out}; free some space (the archive needs about "
                            f"{size_text(_estimate_bytes(size, count, image_format))}) and run again") from exc
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:  # including KeyboardInterrupt: never leave the temp file behind
        _discard(tmp, fileobj, pool)
        raise
    seconds = time.perf_counter() - start
    return MakeDataSummary(path=out, count=count, size=size, num_bg=num_bg, num_fg=num_fg, per_pair=per_pair,
                           seed=seed, image_format=image_format, bytes=out.stat().st_size, seconds=seconds,
                           prepare_seconds=prepare_seconds, info=info)


def _discard(tmp: Path, fileobj, pool) -> None:
    if pool is not None:
        pool.terminate()
        pool.join()
    try:
        fileobj.close()
    except OSError:
        pass
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def size_text(n_bytes: float) -> str:
    """A file size for a message: GB from 1 GB on, else MB (never "0.0 GB" for a small archive)."""
    if n_bytes >= 1e9:
        return f"{n_bytes / 1e9:.1f} GB"
    mb = n_bytes / 1e6
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB" if mb >= 1 else f"{max(mb, 0.01):.2f} MB"


def _estimate_bytes(size: int, count: int, image_format: str) -> float:
    per_pixel = 0.45 if image_format == "jpg" else 2.0  # fg_bg + depth + mask per image pixel, measured
    return count * (size * size * per_pixel + 400)


def _write_archive(fileobj, job: _Job, num_bg: int, num_fg: int, count: int, pool, n_workers: int,
                   progress: bool) -> tuple[dict, float]:
    """Write the whole archive to `fileobj`; returns (dataset.json contents, seconds of phase 1)."""
    start = time.perf_counter()
    archive = ArchiveWriter(fileobj)
    try:
        backdrops, sprites, bg_stats = _write_backgrounds(archive, job, num_bg, num_fg, pool, n_workers)
        prepare_seconds = time.perf_counter() - start
        info = _write_samples(archive, job, backdrops, sprites, bg_stats, count, pool, n_workers, progress)
        archive.close()
    except BaseException:
        archive.abort()
        raise
    return info, prepare_seconds


def _write_backgrounds(archive: ArchiveWriter, job: _Job, num_bg: int, num_fg: int, pool, n_workers: int):
    """Phase 1: render every background and draw every object once; write the bg entries."""
    backdrops: list[_Backdrop] = []
    sprites: list[Sprite] = []
    bg_stats = np.zeros((2, 3), np.int64)
    tasks = [("bg", b) for b in range(num_bg)] + [("fg", f) for f in range(num_fg)]
    func = _work_prepare if pool is not None else functools.partial(_prepare, job)
    for res in _ordered(func, iter(tasks), pool, 4 * n_workers):
        if isinstance(res, Sprite):
            sprites.append(res)
            continue
        archive.write(f"bg/{job.bg_id(res['b'])}.{job.image_format}", res["data"])
        bg_stats += res["stats"]
        backdrops.append(res["backdrop"])
    return backdrops, sprites, bg_stats


def _write_samples(archive: ArchiveWriter, job: _Job, backdrops: list[_Backdrop], sprites: list[Sprite],
                   bg_stats: np.ndarray, count: int, pool, n_workers: int, progress: bool) -> dict:
    """Phase 2: the samples, (bg, fg) chunk by chunk in order; then manifest.csv, scenes.csv and
    dataset.json."""
    from tqdm.auto import tqdm

    rows, scenes = io.StringIO(), io.StringIO()
    writer, scene_writer = csv.writer(rows, lineterminator="\n"), csv.writer(scenes, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    scene_writer.writerow(SCENE_COLUMNS)
    coverage = np.zeros(count, np.float32)
    fg_stats = np.zeros((2, 3), np.int64)
    depth_hist = np.zeros(256, np.int64)
    n = 0
    pairs = scene_objects(len(backdrops), len(sprites), job.fg_per_bg, seed=job.seed)
    tasks = ((b, f, backdrops[b], sprites[f]) for b in range(len(backdrops)) for f in pairs[b])
    func = _work_chunk if pool is not None else (lambda task: _render_chunk(job, *task))
    with tqdm(total=count, unit="sample", desc="make-data", disable=not progress, smoothing=0.05) as bar:
        for res in _ordered(func, tasks, pool, 4 * n_workers):
            for name, data in res["entries"]:
                archive.write(name, data)
            writer.writerows(res["rows"])
            scene_writer.writerows(res["scenes"])
            k = len(res["coverage"])
            coverage[n:n + k] = res["coverage"]
            n += k
            fg_stats += res["stats"]
            depth_hist += res["depth_hist"]
            bar.update(k)
    archive.write("manifest.csv", rows.getvalue().encode("utf-8"))
    archive.write(SCENES_NAME, scenes.getvalue().encode("utf-8"))
    info = _dataset_info(job, len(backdrops), len(sprites), count, bg_stats, fg_stats, coverage, depth_hist)
    archive.write("dataset.json", (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    return info


def _mean_std(stats: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    mean = stats[0] / pixels / 255.0
    var = stats[1] / pixels / 255.0**2 - mean**2
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in np.sqrt(np.maximum(var, 0))]


def _dataset_info(job: _Job, num_bg, num_fg, count, bg_stats, fg_stats, coverage, depth_hist) -> dict:
    px = job.size * job.size
    fg_mean, fg_std = _mean_std(fg_stats, count * px)
    bg_mean, bg_std = _mean_std(bg_stats, num_bg * px)
    # Every sample pairs one fg_bg with one bg and each bg appears equally often, so the inputs'
    # joint statistics weight the two halves equally.
    both = fg_stats / (count * px) + bg_stats / (num_bg * px)
    mean, std = _mean_std(both, 2)
    codes = np.arange(256) / 255.0
    total = depth_hist.sum()
    cdf = np.cumsum(depth_hist) / total
    pct = lambda q: round(float(codes[np.searchsorted(cdf, q)]), 4)  # noqa: E731
    ext = job.image_format
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "maskdepth_version": __version__,
        "size": job.size,
        "count": count,
        "seed": job.seed,
        "num_bg": num_bg,
        "num_fg": num_fg,
        "fg_per_bg": job.fg_per_bg,
        "flips": 2,
        "per_pair": job.per_pair,
        "image_format": ext,
        "jpeg_quality": JPEG_QUALITY if ext == "jpg" else None,
        "entries": {"bg": f"bg/<bg_id>.{ext}", "fg_bg": f"fg_bg/<stem>.{ext}", "mask": "mask/<stem>.png",
                    "depth": f"depth/<stem>.{ext}", "stem": "<bg_id>_<fg_id>_<flip>_<k>"},
        "columns": list(MANIFEST_COLUMNS),
        "scene_table": SCENES_NAME,  # a side table, never a training input (see maskdepth.synth.make)
        "scene_columns": list(SCENE_COLUMNS),
        "depth_encoding": (
            f"grayscale {'8-bit JPEG' if ext == 'jpg' else '16-bit PNG'}; depth = value / "
            f"{255 if ext == 'jpg' else 65535} = z / {FAR_M:g} m, where z is the distance along the camera's "
            f"optical axis; larger = farther; 1 = {FAR_M:g} m or farther (sky), 0 = at the camera (never "
            f"written: every value is at least {DEPTH_MIN:.4f})"
        ),
        "depth_divisor": 255 if ext == "jpg" else 65535,
        "depth_far_m": FAR_M,
        "depth_min": round(DEPTH_MIN, 6),
        "mask_encoding": "1-bit grayscale PNG (0 / 255 when read as 8-bit gray), "
        "255 = object (its visible pixels with alpha >= 0.5), 0 = background",
        "mean": mean,
        "std": std,
        "fg_bg_mean": fg_mean,
        "fg_bg_std": fg_std,
        "bg_mean": bg_mean,
        "bg_std": bg_std,
        "mask_coverage": {
            "mean": round(float(coverage.mean()), 5),
            "std": round(float(coverage.std()), 5),
            "min": round(float(coverage.min()), 5),
            "p01": round(float(np.quantile(coverage, 0.01)), 5),
            "p50": round(float(np.quantile(coverage, 0.5)), 5),
            "p99": round(float(np.quantile(coverage, 0.99)), 5),
            "max": round(float(coverage.max()), 5),
            "empty": int((coverage == 0).sum()),
        },
        "depth": {
            "mean": round(float((depth_hist * codes).sum() / total), 4),
            "p01": pct(0.01),
            "p50": pct(0.5),
            "p99": pct(0.99),
            "histogram_fraction_by_tenth": [round(float(x), 4) for x in
                                            np.add.reduceat(depth_hist, np.r_[0, 26, 51, 77, 102, 128, 153, 179,
                                                                              204, 230]) / total],
        },
    }
