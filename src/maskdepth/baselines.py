"""Classical baselines that the networks must beat, and their scoring: a learned model is worth
its cost only by its margin over these (the benchmarks report both; figures in docs/results.md).

    mask = background_subtraction(bg, fg_bg, kernel=opening_kernel(size))   # [B,1,H,W] in {0,1}
    mean = mean_depth(sample["depth"] for sample in train_set)             # [1,H,W] in (0,1]
    figures = score_baselines(test_batches, {"mean_depth": mean}, kernel)  # per image, then mean

- Mask: |fg_bg - bg| summed over RGB, thresholded per image by Otsu's method, then a morphological
  opening (drops specks of JPEG noise) and a closing (fills pinholes inside the object).
- Depth: the per-pixel mean depth of a training split, predicted for every image.

Scoring uses `maskdepth.metrics` (per image, then averaged over images), as the networks'
evaluation does. Like model/losses/metrics, this module imports nothing of data or training:
callers hand it tensors or an iterable of batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskdepth.metrics import MetricAccumulator, depth_metrics, mask_metrics


def otsu_threshold(values: np.ndarray | Tensor, bins: int = 256) -> float:
    """Otsu's threshold of `values` (any shape, any range): the cut between two histogram bins
    that maximises the between-class variance w0 * w1 * (mean0 - mean1)^2.

    The histogram has `bins` equal bins over [min, max]; the result is the upper edge of the last
    bin of the lower class, so `values > threshold` is the upper class. Constant input returns
    that constant (no cut: nothing is above it).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    weight = hist.astype(np.float64)
    w0 = np.cumsum(weight)  # pixels at or below each candidate cut
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centers)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    k = int(np.argmax(between[:-1]))  # cutting after the last bin leaves class 1 empty
    return float(edges[k + 1])


def erode(mask: Tensor, kernel: int) -> Tensor:
    """Binary erosion by a `kernel` x `kernel` square (odd). mask: [B,C,H,W] in {0,1}, same shape
    out. Pixels outside the image take no part (max-pool padding), so the border does not eat an
    object that touches it."""
    return -F.max_pool2d(-mask, kernel, stride=1, padding=kernel // 2)


def dilate(mask: Tensor, kernel: int) -> Tensor:
    """Binary dilation by a `kernel` x `kernel` square (odd). mask: [B,C,H,W] in {0,1}."""
    return F.max_pool2d(mask, kernel, stride=1, padding=kernel // 2)


def clean_mask(mask: Tensor, kernel: int) -> Tensor:
    """Opening then closing by a `kernel` x `kernel` square: foreground parts narrower than the
    kernel go, then background holes narrower than the kernel are filled. [B,C,H,W] in {0,1}.
    Pixels outside the image take no part in either, so a gap narrower than the kernel between
    an object and the image border is filled too."""
    opened = dilate(erode(mask, kernel), kernel)
    return erode(dilate(opened, kernel), kernel)


def opening_kernel(size: int) -> int:
    """The morphology kernel the reports use at `size` px: 3 up to 96 px, 5 above."""
    return 3 if size <= 96 else 5


def background_subtraction(bg: Tensor, fg_bg: Tensor, kernel: int = 3) -> Tensor:
    """Classical foreground mask: |fg_bg - bg| summed over RGB, Otsu per image, `clean_mask`.

    bg, fg_bg: [B,3,H,W] in [0,1]. Returns float {0,1} [B,1,H,W].
    """
    diff = (fg_bg - bg).abs().sum(dim=1, keepdim=True)
    thresholds = torch.tensor([otsu_threshold(d.numpy()) for d in diff], dtype=diff.dtype).view(-1, 1, 1, 1)
    return clean_mask((diff > thresholds).float(), kernel)


def mean_depth(depths: Iterable[Tensor]) -> Tensor:
    """Per-pixel mean of depth maps ([1,H,W] each, in (0,1]), summed in float64: [1,H,W] float32."""
    total: Tensor | None = None
    count = 0
    for depth in depths:
        total = depth.double() if total is None else total + depth.double()
        count += 1
    if total is None:
        raise ValueError("mean_depth needs at least one depth map")
    return (total / count).float()


def score_baselines(batches: Iterable[Mapping[str, Tensor]], mean_depths: Mapping[str, Tensor],
                    kernel: int | None = 3) -> dict[str, dict[str, float]]:
    """Metrics of the baselines in one pass over `batches` (dicts with float `bg`, `fg_bg`
    [B,3,H,W] in [0,1], `mask` [B,1,H,W] in {0,1}, `depth` [B,1,H,W] in (0,1]).

    Returns {"bgsub": iou, dice of `background_subtraction(..., kernel)`} (left out when kernel
    is None) and, for every (name, [1,H,W] map) of `mean_depths`, {name: depth metrics of that
    map predicted for every image}. Every image weighs the same (`MetricAccumulator`).
    """
    accumulators = {name: MetricAccumulator() for name in mean_depths}
    bgsub = MetricAccumulator()
    for batch in batches:
        if kernel is not None:
            pred_mask = background_subtraction(batch["bg"], batch["fg_bg"], kernel)
            bgsub.update(mask_metrics(pred_mask, batch["mask"], reduction="none"))
        for name, depth_map in mean_depths.items():
            pred_depth = depth_map.expand_as(batch["depth"])
            accumulators[name].update(depth_metrics(pred_depth, batch["depth"], reduction="none"))
    out = {name: acc.compute() for name, acc in accumulators.items()}
    if kernel is not None:
        out["bgsub"] = bgsub.compute()
    return out


__all__ = ["background_subtraction", "clean_mask", "dilate", "erode", "mean_depth", "opening_kernel",
           "otsu_threshold", "score_baselines"]
