"""Use a trained checkpoint: evaluate it on a split, or predict mask and depth for image pairs.

    maskdepth evaluate runs/quick/checkpoints/best.pt --split test --out runs/quick/test.json
    maskdepth predict runs/quick/checkpoints/best.pt --bg bg.jpg --fg-bg fg_bg.jpg --out preds/

    model, cfg = load_model("runs/quick/checkpoints/best.pt")
    results = evaluate_checkpoint("runs/quick/checkpoints/best.pt", split="test")
    print(format_metrics(results))

A checkpoint carries its config (architecture, data path, image size, split settings) and the
model's input normalisation, so evaluation and prediction need nothing else; `data=` and
`key=value` overrides replace parts of that config.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from maskdepth.checkpoint import Checkpoint, load_weights, read_checkpoint
from maskdepth.config import Config, config_from_dict
from maskdepth.errors import CheckpointError, ConfigError, DataError
from maskdepth.metrics import DEPTH_KEYS, MASK_KEYS
from maskdepth.fileio import write_atomic
from maskdepth.runtime import resolve_device
from maskdepth.viz import colorize_depth

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
REGIONS = ("inside", "outside")  # depth metrics restricted to the true mask / its complement


# --------------------------------------------------------------------------------------------
# loading


def load_model(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the network a checkpoint was trained with and load its weights, in eval mode.

    Returns:
        (model on `device`, the checkpoint's Config).

    Raises:
        CheckpointError: missing or unreadable file, a config that is not valid, or weights that
            do not fit the architecture the config names.
    """
    model, cfg, _ = _load(checkpoint, device)
    return model, cfg


def _load(
    checkpoint: str | os.PathLike[str], device: str | torch.device, overrides: Iterable[str] = ()
) -> tuple[nn.Module, Config, Checkpoint]:
    """(model, config with overrides, the checkpoint)."""
    from maskdepth.model import build_model

    ck = read_checkpoint(checkpoint)
    saved = dict(ck.config)
    # Where the run trained (e.g. cuda) says nothing about where it is evaluated.
    saved["device"] = "auto"
    try:
        cfg = config_from_dict(saved)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {ck.path} holds a config this version cannot read: {exc}") from None
    cfg = config_from_dict(saved, overrides)  # a bad override is the user's ConfigError
    try:
        model = build_model(cfg.model.name, **cfg.model.options())
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {ck.path}: cannot build its model: {exc}") from None
    load_weights(model, ck)
    model.to(resolve_device(device))
    model.eval()
    return model, cfg, ck


# --------------------------------------------------------------------------------------------
# evaluate


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    split: str = "test",
    out: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The full metric set of a checkpoint on one split of its dataset.

    The dataset, image size and split settings (split_mode, fractions, split_seed) come from the
    checkpoint's config, so `split="test"` is the split held out in training; `data` replaces
    data.path and `overrides` ("key=value", e.g. "data.size=64", "device=cpu") any other key.

    Returns (and writes as JSON to `out`, atomically) a dict:
        "checkpoint", "epoch" (epochs completed), "step", "split", "data", "size", "model",
        "count" (images), "split_matches_training" (whether the split has the same backgrounds as
        the one the checkpoint recorded; None if it recorded none),
        "metrics": {iou, dice, rmse, abs_rel, sq_rel, rmse_log, log10, delta1, delta2, delta3},
        "inside": {the depth metrics over pixels inside the true mask},
        "outside": {the depth metrics over pixels outside it}.
    Every image weighs the same; an image without foreground is skipped by the "inside" means.
    """
    from maskdepth.data import collate, open_dataset
    from maskdepth.evaluate import evaluate

    overrides = list(overrides)
    if data is not None:
        overrides.append(f"data.path={data}")
    model, cfg, ck = _load(checkpoint, "cpu", overrides)
    device = resolve_device(cfg.device)
    model.to(device)
    if not cfg.data.path:
        raise ConfigError(f"checkpoint {checkpoint} records no data.path; pass --data PATH")
    if not Path(cfg.data.path).exists():
        source = "--data" if data is not None else "the checkpoint's data.path"
        raise DataError(f"dataset {cfg.data.path} ({source}) not found; pass --data PATH to evaluate on another copy")

    split_args = cfg.data.dataset_options()
    dataset = open_dataset(cfg.data.path, cfg.data.size, split, uint8=True, **split_args)  # floats on the device
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size or cfg.train.batch_size, shuffle=False, collate_fn=collate,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
    )
    figures = evaluate(model, loader, device, regions=True, progress=True)

    # The split is recomputed from the config; a different dataset (--data) or split setting can
    # put training backgrounds into it, which the backgrounds recorded in training reveal.
    recorded = ck.splits
    matches = None
    if recorded:
        compared = ("train", "val", "test") if split == "all" else (split,)
        matches = all(sorted(dataset.splits.get(k, [])) == sorted(recorded.get(k, [])) for k in compared)
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "epoch": ck.train.epoch,
        "step": ck.train.step,
        "split": split,
        "data": str(cfg.data.path),
        "size": cfg.data.size,
        "model": cfg.model.name,
        "count": int(figures.get("count", len(dataset))),
        "split_matches_training": matches,
        "metrics": {k: _finite_or_none(figures.get(k)) for k in MASK_KEYS + DEPTH_KEYS},
    }
    for region in REGIONS:
        results[region] = {k: _finite_or_none(figures.get(f"{region}_{k}")) for k in DEPTH_KEYS}
    if out is not None:
        write_atomic(out, (json.dumps(results, indent=2) + "\n").encode())
    return results


def _finite_or_none(value: Any) -> float | None:
    """JSON has no NaN: a metric without any valid pixel is null."""
    return float(value) if value is not None and math.isfinite(value) else None


def format_metrics(results: dict[str, Any]) -> str:
    """A readable table of `evaluate_checkpoint`'s results: one row per metric, columns for the
    whole image and for depth inside / outside the true mask."""
    head = (f"{results.get('checkpoint')} (epoch {results.get('epoch')}, {results.get('model')}) on the "
            f"{results.get('split')} split of {results.get('data')}: {results.get('count')} images at "
            f"{results.get('size')} px")
    lines = [head]
    if results.get("split_matches_training") is False:
        lines.append("note: this split's backgrounds differ from the ones recorded in training "
                     "(another dataset or split settings), so it may not be held out")
    columns = [("all", results.get("metrics", {})), ("inside mask", results.get("inside", {})),
               ("outside mask", results.get("outside", {}))]
    lines.append(f"{'':<10}" + "".join(f"{name:>14}" for name, _ in columns))
    for key in MASK_KEYS + DEPTH_KEYS:
        cells = [_cell(values, key) for _, values in columns]
        lines.append(f"{key:<10}" + "".join(cells).rstrip())
    return "\n".join(lines)


def _cell(values: dict[str, Any], key: str) -> str:
    """Blank where a column has no such metric (mask metrics by region), n/a where it had no pixel."""
    if key not in values:
        return " " * 14
    value = values[key]
    return f"{'n/a':>14}" if value is None else f"{value:>14.4f}"


# --------------------------------------------------------------------------------------------
# predict


def predict_pairs(
    checkpoint: str | os.PathLike[str],
    *,
    bg: str | os.PathLike[str],
    fg_bg: str | os.PathLike[str],
    out: str | os.PathLike[str],
    device: str = "auto",
) -> list[Path]:
    """Predict mask and depth for (bg, fg_bg) pairs and write them next to each other in `out`.

    `bg` and `fg_bg` are two files; two folders, paired by file name (stem); two globs, paired by
    name when the names match, else by sorted order when the counts match; or one bg file and a
    folder/glob of composites that all share it. For each pair, named after the fg_bg stem:
        <name>_mask.png         8-bit, 0 / 255 (probability >= 0.5), at the input's size
        <name>_depth.png        16-bit grayscale, depth * 65535, at the input's size
        <name>_depth_color.png  depth in the colour map of the sample grids (near = bright)
        <name>_overlay.png      fg_bg with the mask tinted and outlined
    Inputs are resized to the training size (data.size of the checkpoint), predicted, and the
    outputs resized back.

    Returns:
        The paths written, four per pair, in pair order.

    Raises:
        DataError: a missing or unreadable file, no pairs, names that do not pair, or a bg and
            fg_bg of different sizes.
    """
    from maskdepth.data import read_image_file

    pairs = pair_inputs(bg, fg_bg)
    model, cfg, _ = _load(checkpoint, "cpu")
    run_device = resolve_device(device)
    model.to(run_device)
    size = cfg.data.size
    out = Path(out)
    written: list[Path] = []
    for bg_path, fg_bg_path in pairs:
        bg_img = read_image_file(bg_path)
        fg_bg_img = read_image_file(fg_bg_path)
        if bg_img.shape != fg_bg_img.shape:
            raise DataError(f"{bg_path} is {_wh(bg_img)} but {fg_bg_path} is {_wh(fg_bg_img)}; "
                            "a bg and its fg_bg must have the same size")
        height, width = fg_bg_img.shape[-2:]
        with torch.no_grad():
            x_bg = _resize(bg_img[None], (size, size)).to(run_device)
            x_fg_bg = _resize(fg_bg_img[None], (size, size)).to(run_device)
            pred_logits, pred_depth = model(x_bg, x_fg_bg)
            # Back to the input's size; the mask is thresholded after resizing, so its edge is smooth.
            pred_prob = _resize(torch.sigmoid(pred_logits.float()).cpu(), (height, width))[0, 0]
            pred_depth = _resize(pred_depth.float().cpu(), (height, width))[0, 0].clamp(0.0, 1.0)
        mask = pred_prob.numpy() >= 0.5
        depth = pred_depth.numpy()
        name = Path(fg_bg_path).stem
        written += [
            _write_png(out / f"{name}_mask.png", Image.fromarray((mask * 255).astype(np.uint8))),
            _write_png(out / f"{name}_depth.png", Image.fromarray(np.rint(depth * 65535).astype(np.uint16))),
            _write_png(out / f"{name}_depth_color.png", Image.fromarray(colorize_depth(depth))),
            _write_png(out / f"{name}_overlay.png", _overlay(fg_bg_img, mask)),
        ]
    return written


def pair_inputs(bg: str | os.PathLike[str], fg_bg: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """The (bg, fg_bg) file pairs that `predict_pairs` documents; DataError naming what does not pair."""
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
        if set(by_name_bg) == set(by_name_fg):
            pairs = [(by_name_bg[s], by_name_fg[s]) for s in sorted(by_name_fg)]
        elif bg_kind == fg_kind == "glob" and len(bg_files) == len(fg_files):
            pairs = list(zip(bg_files, fg_files))  # globs with different names: documented sorted order
        else:
            only_bg = sorted(set(by_name_bg) - set(by_name_fg))
            only_fg = sorted(set(by_name_fg) - set(by_name_bg))
            raise DataError(
                f"--bg {bg} and --fg-bg {fg_bg} do not pair by name: "
                f"{_listing(only_fg)} only in --fg-bg, {_listing(only_bg)} only in --bg"
                + (f" ({len(bg_files)} vs {len(fg_files)} files, so not by order either)" if bg_kind == "glob" else "")
            )
    stems = [fg.stem for _, fg in pairs]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise DataError(f"--fg-bg {fg_bg}: several composites are named {_listing(dup)}; "
                        "outputs are named after the fg_bg file, so names must be unique")
    return pairs


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
    result: dict[str, Path] = {}
    for f in files:
        if f.stem in result:
            raise DataError(f"{flag}: {result[f.stem]} and {f} have the same name; cannot tell which to pair")
        result[f.stem] = f
    return result


def _listing(names: list[str], limit: int = 5) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _wh(image: torch.Tensor) -> str:
    return f"{image.shape[-1]}x{image.shape[-2]}"


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W]; antialiased when shrinking so small inputs see no aliasing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _overlay(fg_bg: torch.Tensor, mask: np.ndarray) -> Image.Image:
    """fg_bg [3, H, W] with the predicted foreground tinted green and outlined in yellow."""
    rgb = (fg_bg.permute(1, 2, 0).numpy() * 255).round().astype(np.float32)
    tint = np.array([0, 255, 0], dtype=np.float32)
    rgb[mask] = 0.6 * rgb[mask] + 0.4 * tint
    mask_img = Image.fromarray((mask * 255).astype(np.uint8))
    edge = np.asarray(mask_img.filter(ImageFilter.MinFilter(3))) == 0
    rgb[mask & edge] = [255, 255, 0]  # mask pixels with a background neighbour
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def _write_png(path: Path, image: Image.Image) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
