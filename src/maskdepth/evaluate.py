"""Run a network over data: validation figures (training, `maskdepth evaluate`) and the per-epoch grid.

    tensors = to_device(batch, device)                 # (bg, fg_bg, mask, depth), float32
    logits, depth = forward(model, bg, fg_bg, amp)     # the one autocast forward pass
    figures = evaluate(model, loader, device)          # {"iou": ..., "rmse": ..., "count": ...}
    evaluate(model, loader, device, on_batch=observer) # observer(batch, per-image values, tensors) per batch
    draw_epoch_grid(run, model, fixed_samples(val_set, 4), device, row)   # training's per-epoch grid
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from maskdepth import viz
from maskdepth.data import collate, to_float
from maskdepth.metrics import MetricAccumulator, depth_metrics, mask_metrics
from maskdepth.runtime import autocast

# what `evaluate` hands an observer per batch: the batch (its "index" and "name" say which samples),
# the per-image values {key: float64 [B]} and the tensors {true_mask, pred_mask (probability),
# true_depth, pred_depth}, each float32 [B,1,H,W] on the device
BatchObserver = Callable[[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]], None]


def to_device(batch: dict[str, Any], device: torch.device,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bg, fg_bg [B,3,H,W], mask [B,1,H,W] in {0,1}, depth [B,1,H,W] in (0,1]) of a batch on
    `device` as float32. The loaders give uint8 images (`open_dataset(uint8=True)`), a third of
    the bytes to copy: they become floats here, after the copy (on a GPU, for free)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    moved = to_float({key: batch[key].to(device, non_blocking=True) for key in ("bg", "fg_bg", "mask", "depth")})
    return (moved["bg"].contiguous(memory_format=fmt), moved["fg_bg"].contiguous(memory_format=fmt),
            moved["mask"], moved["depth"])


def forward(model: nn.Module, bg: torch.Tensor, fg_bg: torch.Tensor,
            amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """model(bg, fg_bg) under autocast for `amp_dtype` (None: fp32): (mask logits, depth)."""
    with autocast(bg.device, amp_dtype):
        return model(bg, fg_bg)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    mask_loss: nn.Module | None = None,
    depth_loss: nn.Module | None = None,
    loss_weights: tuple[float, float] = (1.0, 1.0),
    amp_dtype: torch.dtype | None = None,
    regions: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    on_batch: BatchObserver | None = None,
) -> dict[str, float]:
    """Mask and depth metrics over `loader`, every image weighted equally (definitions: docs/metrics.md).

    Returns MASK_KEYS and DEPTH_KEYS (iou, dice, rmse, abs_rel, sq_rel, rmse_log, log10, delta1..3,
    delta1_ms, abs_rel_ms, silog), and `count` (images);
    with losses given also loss, mask_loss, depth_loss; with `regions` also depth metrics
    inside and outside the true mask as `inside_<name>` / `outside_<name>`. Under
    torch.distributed each rank passes its own shard and all ranks get the global figures.
    `on_batch` (`BatchObserver`) sees every batch of this rank's shard, for figures per image
    (`maskdepth.report`) without a second pass.
    """
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        if batch is None:
            continue
        bg, fg_bg, true_mask, true_depth = to_device(batch, device, channels_last)
        pred_logits, pred_depth = forward(model, bg, fg_bg, amp_dtype)
        pred_logits, pred_depth = pred_logits.float(), pred_depth.float()
        pred_mask, n = torch.sigmoid(pred_logits), bg.shape[0]
        values: dict[str, torch.Tensor] = {}
        values.update(mask_metrics(pred_mask, true_mask, reduction="none"))
        values.update(depth_metrics(pred_depth, true_depth, reduction="none"))
        if regions:
            inside = true_mask >= 0.5
            for prefix, region in (("inside_", inside), ("outside_", ~inside)):
                for k, v in depth_metrics(pred_depth, true_depth, region=region, reduction="none").items():
                    values[prefix + k] = v
        if mask_loss is not None and depth_loss is not None:
            m = mask_loss(pred_logits, true_mask).detach()
            d = depth_loss(pred_depth, true_depth).detach()
            total = loss_weights[0] * m + loss_weights[1] * d
            for k, v in (("loss", total), ("mask_loss", m), ("depth_loss", d)):
                values[k] = v.double().expand(n).cpu()
        values = {k: v.detach().double().cpu() for k, v in values.items()}
        acc.update(values)
        if on_batch is not None:
            on_batch(batch, values, {"true_mask": true_mask, "pred_mask": pred_mask,
                                     "true_depth": true_depth, "pred_depth": pred_depth})
    acc.all_reduce()
    results = acc.compute()
    results["count"] = float(acc.count("iou"))  # one IoU per image, never NaN
    model.train(was_training)
    return results


__all__ = ["BatchObserver", "draw_epoch_grid", "evaluate", "fixed_samples", "forward", "predict_batch", "to_device"]


def fixed_samples(dataset: Any, n: int) -> dict[str, Any] | None:
    """The same `n` validation samples every epoch, spread evenly over the split, as one batch:
    the per-epoch grids then show one set of pictures getting better (None when `n` <= 0)."""
    if n <= 0 or len(dataset) == 0:
        return None
    picks = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int)
    return collate([dataset[int(i)] for i in dict.fromkeys(picks.tolist())])


@torch.no_grad()  # the grid's forward pass builds no graph, so it costs no activation memory
def draw_epoch_grid(run_dir: Path, model: nn.Module, batch: dict[str, Any] | None, device: torch.device,
                    row: dict[str, Any], *, amp_dtype: torch.dtype | None = None) -> Path | None:
    """RUN/samples/epoch_NNN.png: the `fixed_samples` batch through `model` (the evaluated one), titled
    with the epoch's metrics.csv `row`; the model's train/eval mode is left as it was."""
    if batch is None:
        return None
    batch, pred_mask, pred_depth = predict_batch(model, batch, device, amp_dtype)
    title = (f"{run_dir.name}  epoch {row['epoch']}  val IoU {row.get('val_iou', math.nan):.3f}  "
             f"δ1 {row.get('val_delta1', math.nan):.3f} (median-scaled {row.get('val_delta1_ms', math.nan):.3f})  "
             f"RMSE {row.get('val_rmse', math.nan):.4f}")
    return viz.save_sample_grid(run_dir / "samples" / f"epoch_{row['epoch']:03d}.png", batch["bg"], batch["fg_bg"],
                                batch["mask"], pred_mask, batch["depth"], pred_depth, title=title)


@torch.no_grad()
def predict_batch(model: nn.Module, batch: dict[str, Any], device: torch.device,
                  amp_dtype: torch.dtype | None = None) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """(the batch with float images, mask probability, depth) of `model` in eval mode on one
    (collated) batch, predictions float32 [B,1,H,W] on the CPU: what a sample grid shows. The
    model's train/eval mode is left as it was."""
    was_training = model.training
    model.eval()
    batch = to_float(batch)
    bg, fg_bg, _, _ = to_device(batch, device)
    pred_logits, pred_depth = forward(model, bg, fg_bg, amp_dtype)
    model.train(was_training)
    return batch, torch.sigmoid(pred_logits.float()).cpu(), pred_depth.float().cpu()


__all__ = ["BatchObserver", "draw_epoch_grid", "evaluate", "fixed_samples", "forward", "predict_batch", "to_device"]
