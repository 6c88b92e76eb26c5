"""Use a trained checkpoint: evaluate it on a split, or predict mask and depth for image pairs.

    maskdepth evaluate runs/quick/checkpoints/best.pt --split test --out runs/quick/test.json
    maskdepth predict runs/quick/checkpoints/best.pt --bg bg.jpg --fg-bg fg_bg.jpg --out preds/
    maskdepth predict runs/quick/checkpoints/best.pt --bg bg.jpg --fg-bg shots/ --out preds/ --batch-size 32
    maskdepth predict runs/quick/checkpoints/best.pt --pairs pairs.csv --out preds/

    model, cfg = load_model("runs/quick/checkpoints/best.pt")
    results = evaluate_checkpoint("runs/quick/checkpoints/best.pt", split="test")
    print(format_metrics(results))

A checkpoint carries its config (architecture, data path, image size, split settings) and the
model's input normalisation, so evaluation and prediction need nothing else; `data=` and
`key=value` overrides replace parts of that config. Which files make a (bg, fg_bg) pair is
settled by `maskdepth.pairs` before a checkpoint is loaded; `Predictor` is the one batched,
resized, autocast forward pass that images (here) and video (`maskdepth.video`) share.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn
from tqdm.auto import tqdm

from maskdepth.checkpoint import Checkpoint, load_weights, read_checkpoint
from maskdepth.config import Config, config_from_dict, is_device_name
from maskdepth.errors import CheckpointError, ConfigError, DataError
from maskdepth.fileio import refuse_overwrite, write_atomic
from maskdepth.metrics import DEPTH_KEYS, MASK_KEYS
from maskdepth.pairs import collect_pairs
from maskdepth.rundir import check_same_data
from maskdepth.runtime import amp_dtype, autocast, resolve_device
from maskdepth.viz import colorize_depth

OUTPUT_SUFFIXES = ("_mask.png", "_depth.png", "_depth_color.png", "_overlay.png")  # per pair, after the fg_bg stem
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


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], *, data: str | os.PathLike[str] | None = None,
                        split: str = "test", out: str | os.PathLike[str] | None = None, batch_size: int | None = None,
                        overrides: Sequence[str] = (), other_data: bool = False,
                        report: str | os.PathLike[str] | None = None, worst: int = 8) -> dict[str, Any]:
    """The full metric set of a checkpoint on one split of its dataset, and optionally its failure report.

    The dataset, image size and split settings (split_mode, fractions, split_seed) come from the
    checkpoint's config, so `split="test"` is the split held out in training; `data` replaces
    data.path and `overrides` ("key=value", e.g. "data.size=64", "device=cpu") any other key.
    Data other than the checkpoint trained on (by its recorded fingerprint) is refused, with one
    line, unless `other_data` (the CLI's --data): then it is evaluated and "trained on A,
    evaluated on B" is printed and returned as "data_note".

    Returns (and writes as JSON to `out`, atomically) a dict:
        "checkpoint", "epoch" (epochs completed), "step", "split", "data", "size", "model",
        "count" (images), "split_matches_training" (whether the split has the same backgrounds as
        the one the checkpoint recorded; None if it recorded none),
        "metrics": {iou, dice, rmse, abs_rel, sq_rel, rmse_log, log10, delta1, delta2, delta3,
                    delta1_ms, abs_rel_ms, silog} (MASK_KEYS + DEPTH_KEYS, docs/metrics.md),
        "inside": {the depth metrics over pixels inside the true mask},
        "outside": {the depth metrics over pixels outside it}.
    Every image weighs the same; an image without foreground is skipped by the "inside" means.
    With `report` (a folder) the same pass writes the failure report there (`maskdepth.report`, the
    `worst` worst samples), and results["report"] is its index.md.
    """
    from maskdepth.evaluate import evaluate
    from maskdepth.report import FailureReport, scene_table, write_report

    overrides = [*overrides, *([f"data.path={data}"] if data is not None else [])]
    model, cfg, ck = _load(checkpoint, "cpu", overrides)
    device = resolve_device(cfg.device)
    model.to(device)
    note = check_same_data(ck, cfg.data.path, f"checkpoint {ck.path}", tqdm.write, refuse=not other_data,
                           advice=f"pass --data {cfg.data.path} (other_data=True) to evaluate on it anyway")
    dataset, loader = _split_loader(cfg, ck.path, data, split, batch_size, device)
    found = FailureReport(worst) if report is not None else None
    figures = evaluate(model, loader, device, regions=True, progress=True, on_batch=found)
    results: dict[str, Any] = {
        "checkpoint": str(ck.path),
        "epoch": ck.train.epoch,
        "step": ck.train.step,
        "split": split,
        "data": str(cfg.data.path),
        "size": cfg.data.size,
        "model": cfg.model.name,
        "count": int(figures.get("count", len(dataset))),
        "split_matches_training": _split_matches(ck.splits, dataset.splits, split),
        "data_note": note,
        "metrics": {k: _finite_or_none(figures.get(k)) for k in MASK_KEYS + DEPTH_KEYS},
    }
    for region in REGIONS:
        results[region] = {k: _finite_or_none(figures.get(f"{region}_{k}")) for k in DEPTH_KEYS}
    if found is not None:
        results["report"] = str(write_report(found, model, dataset, report, device, results=dict(results),
                                             scenes=scene_table(cfg.data.path)))
    if out is not None:
        write_atomic(out, (json.dumps(results, indent=2) + "\n").encode())
    return results


def _split_loader(
    cfg: Config,
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str] | None,
    split: str,
    batch_size: int | None,
    device: torch.device,
) -> tuple[Any, torch.utils.data.DataLoader]:
    """(dataset, loader) of one split of the config's dataset; one-line errors when there is none."""
    from maskdepth.data import collate, open_dataset

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
    return dataset, loader


def _split_matches(recorded: dict[str, list[Any]] | None, current: dict[str, list[Any]], split: str) -> bool | None:
    """Whether `split` holds the backgrounds training recorded for it (None if it recorded none).

    The split is recomputed from the config; a different dataset (--data) or split setting can
    put training backgrounds into it, which the backgrounds recorded in training reveal.
    """
    if not recorded:
        return None
    compared = ("train", "val", "test") if split == "all" else (split,)
    return all(sorted(current.get(k, [])) == sorted(recorded.get(k, [])) for k in compared)


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
    bg: str | os.PathLike[str] | None = None,
    fg_bg: str | os.PathLike[str] | None = None,
    pairs: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    device: str = "auto",
    batch_size: int = 8,
    amp: str = "auto",
    progress: bool = False,
) -> list[Path]:
    """Predict mask and depth for (bg, fg_bg) pairs and write them next to each other in `out`.

    The pairs come either from `bg` and `fg_bg` (two files; two folders paired by file stem; two
    globs; or one bg file shared by a folder/glob of composites) or from `pairs`, a CSV file with
    `bg` and `fg_bg` columns: see `maskdepth.pairs`. For each pair, named after the fg_bg stem:
        <name>_mask.png         8-bit grayscale, 0 / 255 (probability >= 0.5), at the input's size
        <name>_depth.png        16-bit grayscale, round(depth * 65535), at the input's size
                                (read back: depth = png / 65535, in [0, 1], larger = farther)
        <name>_depth_color.png  RGB, depth in the colour map of the sample grids (near = bright)
        <name>_overlay.png      RGB, fg_bg with the mask tinted and outlined
    Inputs are resized to the training size (data.size x data.size, a multiple of the model's
    stride), predicted `batch_size` pairs at a time on `device` (auto | cpu | cuda | cuda:N | mps)
    with autocast per `amp` (auto: bf16 or fp16 on CUDA, fp32 elsewhere; see
    maskdepth.runtime.amp_dtype), and the outputs resized back to each input's size.

    Returns:
        The paths written, four per pair, in pair order.

    Raises:
        DataError: a missing or unreadable file, no pairs, names that do not pair, or a bg and
            fg_bg of different sizes.
        ConfigError: both or neither of `pairs` and (`bg`, `fg_bg`), a bad device or batch size.
    """
    pair_list = collect_pairs(bg=bg, fg_bg=fg_bg, pairs=pairs)
    inputs = [("checkpoint", checkpoint), ("--pairs", pairs), *(("--bg", b) for b, _ in pair_list),
              *(("--fg-bg", f) for _, f in pair_list)]  # an output named like an input would overwrite it
    refuse_overwrite([Path(out) / f"{f.stem}{suffix}" for _, f in pair_list for suffix in OUTPUT_SUFFIXES], inputs,
                     "--out writes")
    predictor = Predictor.load(checkpoint, device=device, amp=amp)
    check_batch_size(batch_size)
    written: list[Path] = []
    with tqdm(total=len(pair_list), desc="predict", unit="pair", disable=not progress) as bar:
        for start in range(0, len(pair_list), batch_size):
            batch = pair_list[start:start + batch_size]
            written += _predict_batch(predictor, batch, Path(out))
            bar.update(len(batch))
    return written


def _predict_batch(predictor: Predictor, batch: list[tuple[Path, Path]], out: Path) -> list[Path]:
    """Read one batch of pairs, predict it, and write the four images of each pair."""
    from maskdepth.data import read_image_file

    images = [(read_image_file(b), read_image_file(f)) for b, f in batch]
    for (bg_path, fg_bg_path), (bg_img, fg_bg_img) in zip(batch, images, strict=True):
        if bg_img.shape != fg_bg_img.shape:
            raise DataError(f"{bg_path} is {_wh(bg_img)} but {fg_bg_path} is {_wh(fg_bg_img)}; "
                            "a bg and its fg_bg must have the same size")
    masks, depths = predictor([b for b, _ in images], [f for _, f in images])
    written: list[Path] = []
    for (_, fg_bg_path), (_, fg_bg_img), mask, depth in zip(batch, images, masks, depths, strict=True):
        name = Path(fg_bg_path).stem
        written += write_mask_depth(out, name, mask, depth, color=True)
        written.append(_write_png(out / f"{name}_overlay.png", _overlay(fg_bg_img, mask)))
    return written


@dataclass
class Predictor:
    """A checkpoint's model ready for inference: `predictor(bgs, fg_bgs) -> (masks, depths)`.

    Every input is resized to `size` x `size` (the training size, a multiple of the model's
    stride), the batch runs on `device` under autocast with `dtype` (None: fp32), and each output
    is resized back to its own input's size; the mask is thresholded after that resize, so its
    edge is smooth.
    """

    model: nn.Module
    size: int
    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def load(cls, checkpoint: str | os.PathLike[str], device: str = "auto", amp: str = "auto") -> Predictor:
        """The checkpoint's model on `device` (auto | cpu | cuda | cuda:N | mps) with `amp`
        (auto | fp32 | bf16 | fp16); ConfigError for a device or precision that is not there."""
        if not is_device_name(device):
            raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
        if amp not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--amp must be auto, fp32, bf16 or fp16; got {amp!r}")
        run_device = resolve_device(device)
        if amp == "fp16" and run_device.type != "cuda":
            raise ConfigError(f"--amp fp16 needs CUDA (device {run_device}); use --amp bf16 or fp32")
        model, cfg, _ = _load(checkpoint, "cpu")
        dtype, _ = amp_dtype(amp, run_device)
        return cls(model.to(run_device), cfg.data.size, run_device, dtype)

    def __call__(
        self, bgs: Sequence[torch.Tensor], fg_bgs: Sequence[torch.Tensor]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Predict a batch.

        Args:
            bgs, fg_bgs: float [3, H, W] in [0, 1] each, bg and fg_bg of a pair the same size
                (pairs may differ in size).
        Returns:
            (masks: bool [H, W] each, depths: float32 [H, W] in [0, 1] each), at each input's size.
        """
        square = (self.size, self.size)
        x_bg = torch.cat([resize_bilinear(b[None], square) for b in bgs]).to(self.device)
        x_fg_bg = torch.cat([resize_bilinear(f[None], square) for f in fg_bgs]).to(self.device)
        with torch.no_grad(), autocast(self.device, self.dtype):
            pred_logits, pred_depth = self.model(x_bg, x_fg_bg)
        # Resized back on CUDA; elsewhere on the CPU (MPS lacks antialiased interpolation in some torch versions).
        back = self.device if self.device.type == "cuda" else torch.device("cpu")
        pred_prob = torch.sigmoid(pred_logits.float()).to(back)  # [B, 1, S, S]
        pred_depth = pred_depth.float().to(back)
        masks, depths = [], []
        for i, image in enumerate(fg_bgs):
            height, width = image.shape[-2:]
            masks.append((resize_bilinear(pred_prob[i:i + 1], (height, width))[0, 0] >= 0.5).cpu().numpy())
            depth = resize_bilinear(pred_depth[i:i + 1], (height, width))[0, 0].clamp(0.0, 1.0)
            depths.append(depth.cpu().numpy())
        return masks, depths


def write_mask_depth(out: Path, name: str, mask: np.ndarray, depth: np.ndarray, color: bool) -> list[Path]:
    """Write <name>_mask.png (0 / 255), <name>_depth.png (16-bit, depth * 65535) and, with
    `color`, <name>_depth_color.png into `out`; mask bool [H, W], depth float [H, W] in [0, 1]."""
    written = [
        _write_png(out / f"{name}_mask.png", Image.fromarray((mask * 255).astype(np.uint8))),
        _write_png(out / f"{name}_depth.png", Image.fromarray(np.rint(depth * 65535).astype(np.uint16))),
    ]
    if color:
        written.append(_write_png(out / f"{name}_depth_color.png", Image.fromarray(colorize_depth(depth))))
    return written


def check_batch_size(batch_size: int) -> int:
    """`batch_size`, or ConfigError: the library functions take it from callers other than the CLI's parser."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
    return batch_size


def _wh(image: torch.Tensor) -> str:
    """An image's size as people write it, width x height."""
    return f"{image.shape[-1]}x{image.shape[-2]}"


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W] to `size` (H, W), antialiased so that a large input shrunk
    to the training size shows no aliasing; the one resize of inputs and outputs, for images and video."""
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
    """Encode in memory and write atomically: an interrupted run leaves no truncated PNG behind."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
