"""Evaluation metrics: per image over its valid pixels, then averaged over images.

    mask_metrics(prob, target)         -> {"iou", "dice"}                       (MASK_KEYS)
    depth_metrics(pred, target)        -> {"rmse", "abs_rel", "sq_rel", "rmse_log", "log10",
                                           "delta1", "delta2", "delta3",
                                           "delta1_ms", "abs_rel_ms", "silog"}  (DEPTH_KEYS)
    MetricAccumulator                  per-image values over batches (and DDP ranks) -> epoch figures

Definitions (docs/metrics.md has them with the reasons, and why they differ from the seed notebook's):
- mask: P = prob >= threshold, T = target >= 0.5; iou = |P n T| / |P u T|,
  dice = 2 |P n T| / (|P| + |T|); an image whose union is empty scores 1.0 on both.
- depth: valid = target > min_depth (and `region`, when given); pred clamped to
  [min_depth, max_depth]; over the valid pixels of each image:
  rmse = sqrt(mean((t - p)^2)), abs_rel = mean(|t - p| / t), sq_rel = mean((t - p)^2 / t),
  rmse_log = sqrt(mean((ln t - ln p)^2)), log10 = mean(|log10 t - log10 p|),
  delta_k = mean(max(t / p, p / t) < 1.25**k). An image without valid pixels gives NaN, which
  the means skip.
- shape apart from scale: delta1_ms and abs_rel_ms are delta1 and abs_rel of the median-scaled
  prediction p * median(t) / median(p) (monodepth2's evaluation protocol), clamped again to
  [min_depth, max_depth]; silog = 100 * sqrt(mean(d^2) - mean(d)^2), d = ln p - ln t (AdaBins).
All arithmetic is float64, so the per-image sums do not drift at 192 x 192 pixels.

The key names below are shared with metrics.csv's columns (maskdepth.history) and evaluate's
JSON. torch is imported inside the functions, so that reading the names (history, the notebook
helpers) does not pull it in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

MASK_KEYS = ("iou", "dice")
# the metric figures, then the scale-invariant ones (median-scaled delta1 and abs_rel, SILog)
DEPTH_KEYS = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3",
              "delta1_ms", "abs_rel_ms", "silog")


def _per_image(x: Tensor) -> Tensor:
    """[B,...] -> [B,N] float64."""
    return x.detach().reshape(x.shape[0], -1).double()


def _reduce(values: dict[str, Tensor], reduction: str) -> dict[str, Tensor] | dict[str, float]:
    if reduction == "none":
        return values
    if reduction == "mean":
        return {key: _nanmean(value) for key, value in values.items()}
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _nanmean(value: Tensor) -> float:
    import torch

    finite = value[~torch.isnan(value)]
    return float(finite.mean()) if finite.numel() else math.nan


def mask_metrics(
    prob: Tensor, target: Tensor, threshold: float = 0.5, reduction: str = "mean"
) -> dict[str, Tensor] | dict[str, float]:
    """IoU and Dice of thresholded masks, per image.

    Args:
        prob: [B,1,H,W] (or [B,H,W]) foreground probabilities in [0,1] (not logits).
        target: same shape, true mask in {0,1}.
        threshold: P = prob >= threshold; the target is thresholded at 0.5.
        reduction: "mean" -> python floats, the mean over images; "none" -> float64 tensors [B].
    """
    import torch

    if prob.shape != target.shape:
        raise ValueError(f"prob {tuple(prob.shape)} and target {tuple(target.shape)} differ in shape")
    pred_fg = _per_image(prob) >= threshold
    true_fg = _per_image(target) >= 0.5
    intersection = (pred_fg & true_fg).sum(1).double()
    union = (pred_fg | true_fg).sum(1).double()
    total = pred_fg.sum(1).double() + true_fg.sum(1).double()
    empty = union == 0
    iou = torch.where(empty, 1.0, intersection / union.clamp_min(1))
    dice = torch.where(empty, 1.0, 2 * intersection / total.clamp_min(1))
    return _reduce({"iou": iou, "dice": dice}, reduction)


def depth_metrics(
    pred: Tensor,
    target: Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 1.0,
    region: Tensor | None = None,
    reduction: str = "mean",
) -> dict[str, Tensor] | dict[str, float]:
    """The standard monocular-depth metrics and the scale-invariant ones, per image over its valid pixels.

    Args:
        pred: [B,1,H,W] (or [B,H,W]) predicted depth in [0,1]; clamped to [min_depth, max_depth]
            (a NaN counts as min_depth: a broken prediction scores badly instead of vanishing).
        target: same shape, true depth; pixels with target <= min_depth (or not finite) are invalid.
        region: optional bool tensor of the same shape; only pixels where it is True count
            (e.g. `true_mask > 0.5` for the foreground, its negation for the background); the
            median scaling then uses the region's pixels only.
        reduction: "mean" -> python floats, mean over the images that have valid pixels (NaN if
            none has); "none" -> float64 tensors [B], NaN for an image without valid pixels.

    The keys are DEPTH_KEYS. delta1_ms and abs_rel_ms measure the shape of the depth map apart
    from its scale, as monodepth2 evaluates: each image's clamped prediction is multiplied by
    median(target) / median(pred) over its valid pixels (the mean of the two middle values for
    an even count, as numpy's median) and then clamped to [min_depth, max_depth] again, as
    monodepth2 clamps after scaling to its depth range. silog (AdaBins' metric) is
    100 * sqrt(mean(d^2) - mean(d)^2) with d = ln(pred) - ln(target) on the clamped prediction,
    unscaled: it is invariant to the scale by construction.
    """
    import torch

    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if region is not None and region.shape != target.shape:
        raise ValueError(f"region {tuple(region.shape)} and target {tuple(target.shape)} differ in shape")
    true_d = _per_image(target)
    pred_d = _per_image(pred).nan_to_num(nan=min_depth).clamp(min_depth, max_depth)
    valid = torch.isfinite(true_d) & (true_d > min_depth)
    if region is not None:
        valid &= _per_image(region).bool()
    # Invalid pixels get t = p = 1 so that every term there is exactly 0 (no inf * 0 = NaN).
    true_d = torch.where(valid, true_d, 1.0)
    pred_d = torch.where(valid, pred_d, 1.0)
    log_diff = true_d.log() - pred_d.log()
    values = _metric_errors(true_d, pred_d, valid, log_diff)
    scale = _median(true_d, valid) / _median(pred_d, valid)  # [B], NaN without valid pixels
    scaled = torch.where(valid, (pred_d * scale.unsqueeze(1)).clamp(min_depth, max_depth), 1.0)
    count = valid.sum(1).double()
    ratio = (true_d / scaled).maximum(scaled / true_d)
    values["delta1_ms"] = ((ratio < 1.25) & valid).sum(1) / count
    values["abs_rel_ms"] = ((true_d - scaled).abs() / true_d).sum(1) / count
    values["silog"] = _silog(log_diff, valid)
    return _reduce(values, reduction)


def _metric_errors(true_d: Tensor, pred_d: Tensor, valid: Tensor, log_diff: Tensor) -> dict[str, Tensor]:
    """rmse ... delta3 per image [B]; `true_d` and `pred_d` are 1 where `valid` is False, `log_diff` is
    ln t - ln p."""
    count = valid.sum(1).double()

    def mean(x: Tensor) -> Tensor:
        return x.sum(1) / count  # NaN (0 / 0) where an image has no valid pixel

    diff = true_d - pred_d
    ratio = (true_d / pred_d).maximum(pred_d / true_d)
    values = {
        "rmse": mean(diff**2).sqrt(),
        "abs_rel": mean(diff.abs() / true_d),
        "sq_rel": mean(diff**2 / true_d),
        "rmse_log": mean(log_diff**2).sqrt(),
        "log10": mean((true_d.log10() - pred_d.log10()).abs()),
    }
    for k in (1, 2, 3):
        values[f"delta{k}"] = mean(((ratio < 1.25**k) & valid).double())
    return values


def _median(x: Tensor, valid: Tensor) -> Tensor:
    """The median of each row's valid values [B] (the mean of the two middle ones for an even count,
    as numpy's; NaN for a row without any). torch.median (a selection, faster than a sort) gives a
    row's lower middle value, so each row is padded to make that its valid values' lower middle one:
    of its invalid entries the first (N - 1) // 2 - (n - 1) // 2 become -inf, the others +inf. The
    upper middle value is minus the lower middle one of -x."""
    import torch

    count = valid.sum(1, keepdim=True)
    below = (x.shape[1] - 1) // 2 - (count - 1) // 2
    pad = torch.where((~valid).cumsum(1) <= below, -math.inf, math.inf)

    def lower_middle(v: Tensor) -> Tensor:
        return torch.where(valid, v, pad).median(dim=1).values

    middle = (lower_middle(x) - lower_middle(-x)) / 2
    return torch.where(count.squeeze(1) > 0, middle, math.nan)


def _silog(log_diff: Tensor, valid: Tensor) -> Tensor:
    """100 * sqrt(mean(d^2) - mean(d)^2) per image over its valid pixels (d = ln p - ln t = -log_diff,
    0 where not valid), computed as the root of the mean of (d - mean(d))^2: the same value, without
    the cancellation."""
    count = valid.sum(1).double()
    centred = (log_diff - (log_diff.sum(1) / count).unsqueeze(1)) * valid
    return 100 * ((centred**2).sum(1) / count).sqrt()


class MetricAccumulator:
    """Sums of per-image metric values and their counts, so every image weighs the same.

    update({"iou": Tensor[B], ...}) adds a batch (NaNs skipped, per key); add(key, total, count)
    adds a sum of `count` values at once (a batch-mean loss times the batch size); compute() gives
    the means as python floats (NaN for a key with no value), total(key) a sum. state_dict() /
    load_state_dict() carry an epoch in progress through a checkpoint. In DDP, call all_reduce() once on
    every rank before compute(): it sums values and counts over the ranks (all ranks must call
    it; keys seen on any rank are included). Note that a DistributedSampler pads the dataset
    with repeated samples so that ranks get equal shares; those repeats are counted.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def update(self, values: Mapping[str, Tensor | float]) -> None:
        import torch

        for key, value in values.items():
            flat = torch.as_tensor(value).detach().double().flatten().cpu()
            flat = flat[~torch.isnan(flat)]
            self._sums[key] = self._sums.get(key, 0.0) + float(flat.sum())
            self._counts[key] = self._counts.get(key, 0) + int(flat.numel())

    def add(self, key: str, total: float, count: int = 1) -> None:
        """Add the sum `total` of `count` values to `key`."""
        self._sums[key] = self._sums.get(key, 0.0) + float(total)
        self._counts[key] = self._counts.get(key, 0) + int(count)

    def total(self, key: str) -> float:
        """The sum of the values `key` has gathered (0.0 for none)."""
        return self._sums.get(key, 0.0)

    def state_dict(self) -> dict[str, dict[str, float | int]]:
        return {"sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float | int]]) -> MetricAccumulator:
        self._sums = {k: float(v) for k, v in state.get("sums", {}).items()}
        self._counts = {k: int(v) for k, v in state.get("counts", {}).items()}
        return self

    def compute(self) -> dict[str, float]:
        return {
            key: (self._sums[key] / self._counts[key]) if self._counts[key] else math.nan for key in self._sums
        }

    def count(self, key: str) -> int:
        """How many (non-NaN) values `key` has gathered, e.g. the number of images for "iou"."""
        return self._counts.get(key, 0)

    def all_reduce(self) -> MetricAccumulator:
        """Sum (value, count) over torch.distributed ranks; a no-op when it is not initialised."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        gathered: list[list[str] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, sorted(self._sums))
        keys = sorted({key for rank_keys in gathered for key in (rank_keys or [])})
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.tensor(
            [[self._sums.get(key, 0.0), float(self._counts.get(key, 0))] for key in keys],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed = packed.cpu()
        self._sums = {key: float(packed[i, 0]) for i, key in enumerate(keys)}
        self._counts = {key: int(round(float(packed[i, 1]))) for i, key in enumerate(keys)}
        return self


__all__ = ["DEPTH_KEYS", "MASK_KEYS", "MetricAccumulator", "depth_metrics", "mask_metrics"]
