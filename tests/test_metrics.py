"""Metrics against hand-computed tiny tensors; the accumulator, alone and over torch.distributed."""

from __future__ import annotations

import math
import multiprocessing

import pytest
import torch
import torch.distributed as dist

from maskdepth.metrics import DEPTH_KEYS, MetricAccumulator, depth_metrics, mask_metrics


def _images(*rows: list[float]) -> torch.Tensor:
    """One image of shape [1, N] per row -> [B,1,1,N]."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(1).unsqueeze(1)


# ---------------------------------------------------------------- mask


def test_mask_metrics_hand_computed_per_image():
    prob = _images([0.9, 0.5, 0.4, 0.1], [0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.7, 0.7])
    target = _images([1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0])
    values = mask_metrics(prob, target, reduction="none")
    # image 0: P = {0, 1} (0.5 counts), T = {0, 1, 2}: |P n T| = 2, |P u T| = 3
    # image 1: both empty -> 1.0; image 2: P everything, T empty -> 0.0
    assert values["iou"].dtype == torch.float64 and values["iou"].shape == (3,)
    assert values["iou"].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert values["dice"].tolist() == pytest.approx([4 / 5, 1.0, 0.0])
    means = mask_metrics(prob, target)
    assert isinstance(means["iou"], float)
    assert means["iou"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert means["dice"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)


def test_mask_metrics_threshold():
    prob, target = _images([0.9, 0.5, 0.4, 0.1]), _images([1, 1, 1, 0])
    assert mask_metrics(prob, target, threshold=0.35)["iou"] == pytest.approx(1.0)
    assert mask_metrics(prob, target, threshold=0.95)["iou"] == pytest.approx(0.0)


def test_mask_metrics_good_better_than_bad():
    target = (torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    good = mask_metrics(target * 0.8 + 0.1, target)
    bad = mask_metrics(1 - target, target)
    assert good == {"iou": 1.0, "dice": 1.0}
    assert bad == {"iou": 0.0, "dice": 0.0}


def test_mask_metrics_rejects_bad_arguments():
    with pytest.raises(ValueError, match="differ in shape"):
        mask_metrics(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="reduction"):
        mask_metrics(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), reduction="sum")


# ---------------------------------------------------------------- depth

# image 0: pixel 2 is invalid (target 0); valid pairs (t, p) = (0.5, 0.5), (0.25, 0.5), (1.0, 0.75)
# image 1: no valid pixel at all
PRED = _images([0.5, 0.5, 0.3, 0.75], [0.4, 0.4, 0.4, 0.4])
TARGET = _images([0.5, 0.25, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0])
HAND = {
    "rmse": math.sqrt((0 + 0.0625 + 0.0625) / 3),
    "abs_rel": (0 + 0.25 / 0.25 + 0.25 / 1.0) / 3,
    "sq_rel": (0 + 0.0625 / 0.25 + 0.0625 / 1.0) / 3,
    "rmse_log": math.sqrt((0 + math.log(2) ** 2 + math.log(4 / 3) ** 2) / 3),
    "log10": (0 + math.log10(2) + math.log10(4 / 3)) / 3,
    # ratios max(t/p, p/t) = 1, 2, 4/3 against 1.25, 1.5625, 1.953125
    "delta1": 1 / 3,
    "delta2": 2 / 3,
    "delta3": 2 / 3,
    # median(t) = median(0.5, 0.25, 1.0) = 0.5 = median(0.5, 0.5, 0.75) = median(p): the scale is 1
    "delta1_ms": 1 / 3,
    "abs_rel_ms": (0 + 0.25 / 0.25 + 0.25 / 1.0) / 3,
    # d = ln p - ln t = 0, ln 2, ln 0.75
    "silog": 100 * math.sqrt((math.log(2) ** 2 + math.log(0.75) ** 2) / 3 - ((math.log(2) + math.log(0.75)) / 3) ** 2),
}


def test_depth_metrics_hand_computed_with_invalid_pixels():
    values = depth_metrics(PRED, TARGET, reduction="none")
    assert set(values) == set(DEPTH_KEYS)
    for key, expected in HAND.items():
        assert values[key].dtype == torch.float64 and values[key].shape == (2,)
        assert values[key][0].item() == pytest.approx(expected, rel=1e-12), key
        assert math.isnan(values[key][1].item()), key  # no valid pixel
    means = depth_metrics(PRED, TARGET)
    assert means == pytest.approx(HAND, rel=1e-12)  # the NaN image is skipped


def test_depth_metrics_clamps_predictions():
    # 1.5 is clamped to 1.0 (exact); -0.2 and NaN to min_depth = 1e-3.
    pred, target = _images([1.5, -0.2, float("nan")]), _images([1.0, 0.5, 0.5])
    values = depth_metrics(pred, target, reduction="none")
    assert values["abs_rel"][0].item() == pytest.approx((0 + 0.499 / 0.5 + 0.499 / 0.5) / 3)
    assert depth_metrics(_images([1.5]), _images([1.0]))["rmse"] == 0.0
    assert depth_metrics(_images([0.9]), _images([1.0]), max_depth=0.5)["rmse"] == pytest.approx(0.5)


def test_depth_metrics_min_depth_and_region():
    # min_depth 0.3 also drops the pixel with target 0.25
    values = depth_metrics(PRED, TARGET, min_depth=0.3)
    assert values["rmse"] == pytest.approx(math.sqrt(0.0625 / 2))
    region = torch.tensor([True, False, True, False]).view(1, 1, 1, 4).expand(2, 1, 1, 4)
    values = depth_metrics(PRED, TARGET, region=region, reduction="none")
    assert values["rmse"][0].item() == 0.0 and values["delta1"][0].item() == 1.0
    outside = depth_metrics(PRED, TARGET, region=~region, reduction="none")
    assert outside["rmse"][0].item() == pytest.approx(0.25)  # pixels (0.25, 0.5) and (1.0, 0.75)
    assert depth_metrics(PRED[1:], TARGET[1:])["rmse"] != depth_metrics(PRED[1:], TARGET[1:])["rmse"]  # NaN
    with pytest.raises(ValueError, match="region"):
        depth_metrics(PRED, TARGET, region=region[:1])


def test_depth_metrics_good_better_than_bad():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 16, 16, generator=gen) * 0.9 + 0.1
    good = depth_metrics(target * 1.05, target)
    bad = depth_metrics(1.1 - target, target)
    assert good["delta1"] == 1.0 and bad["delta1"] < 0.6
    for key in ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10"):
        assert good[key] < bad[key], key


def test_scale_invariant_metrics_of_a_prediction_twice_too_far():
    target = _images([0.1, 0.2, 0.3, 0.5], [0.25, 0.125, 0.4, 0.05])
    values = depth_metrics(2 * target, target, reduction="none")
    # the shape is perfect, the scale is not: every metric figure fails, every scale-invariant one is perfect
    assert values["delta1"].tolist() == [0.0, 0.0] and values["abs_rel"].tolist() == pytest.approx([1.0, 1.0])
    assert values["delta1_ms"].tolist() == [1.0, 1.0] and values["abs_rel_ms"].tolist() == [0.0, 0.0]
    assert values["silog"].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)


def test_median_scaling_hand_computed():
    # image 0, four valid pixels: median(t) = (0.2 + 0.3) / 2 = 0.25, median(p) = (0.3 + 0.5) / 2 = 0.4 (numpy's
    # median: the mean of the two middle values), scale 0.625 -> p' = 0.1875, 0.125, 0.3125, 0.375
    # image 1: median(t) = 0.9, median(p) = 0.3, scale 3 -> p' = 0.6, 0.9, 1.5 clamped to 1.0 (monodepth2 clamps
    # after scaling); its fourth pixel is invalid (target 0) and takes no part in either median
    pred = _images([0.3, 0.2, 0.5, 0.6], [0.2, 0.3, 0.5, 0.01])
    target = _images([0.1, 0.2, 0.3, 0.4], [0.5, 0.9, 1.0, 0.0])
    values = depth_metrics(pred, target, reduction="none")
    assert values["abs_rel_ms"].tolist() == pytest.approx(
        [(0.0875 / 0.1 + 0.075 / 0.2 + 0.0125 / 0.3 + 0.025 / 0.4) / 4, (0.1 / 0.5 + 0 + 0) / 3], rel=1e-6)
    # ratios max(t/p', p'/t): 1.875, 1.6, 1.0417, 1.0667 | 1.2, 1, 1
    assert values["delta1_ms"].tolist() == pytest.approx([2 / 4, 3 / 3])
    assert values["delta1"].tolist() == pytest.approx([1 / 4, 0 / 3])  # metric: ratios 3, 1, 1.67, 1.5 | 2.5, 3, 2
    d0 = [math.log(p / t) for p, t in ((0.3, 0.1), (0.2, 0.2), (0.5, 0.3), (0.6, 0.4))]
    silog0 = 100 * math.sqrt(sum(x * x for x in d0) / 4 - (sum(d0) / 4) ** 2)
    assert values["silog"][0].item() == pytest.approx(silog0, rel=1e-6)
    # a region restricts the median too: pixels 0 and 1 of image 0 alone, scale 0.15 / 0.25 = 0.6
    region = torch.tensor([True, True, False, False]).view(1, 1, 1, 4).expand(2, 1, 1, 4)
    inside = depth_metrics(pred, target, region=region, reduction="none")
    assert inside["abs_rel_ms"][0].item() == pytest.approx((0.08 / 0.1 + 0.08 / 0.2) / 2, rel=1e-6)


def test_scale_invariant_metrics_go_through_the_accumulator():
    # two batches; images with 3 and 1 valid pixels weigh the same, the image without any is skipped
    acc = MetricAccumulator()
    first = depth_metrics(_images([0.4, 0.2, 0.8], [0.3, 0.3, 0.3]), _images([0.2, 0.1, 0.2], [0.0, 0.0, 0.0]),
                          reduction="none")
    second = depth_metrics(_images([0.6, 0.6, 0.6]), _images([0.3, 0.0, 0.0]), reduction="none")
    acc.update(first)
    acc.update(second)
    out = acc.compute()
    # image 0: median(t) 0.2, median(p) 0.4, p' = 0.2, 0.1, 0.4: abs_rel_ms = (0 + 0 + 1) / 3, delta1_ms = 2/3
    # image 2: one pixel, p' = t exactly: abs_rel_ms 0, delta1_ms 1
    assert out["abs_rel_ms"] == pytest.approx((1 / 3 + 0) / 2)
    assert out["delta1_ms"] == pytest.approx((2 / 3 + 1) / 2)
    assert acc.count("delta1_ms") == acc.count("silog") == 2
    assert out["silog"] == pytest.approx((first["silog"][0].item() + 0.0) / 2)


# ---------------------------------------------------------------- accumulator


def test_accumulator_weights_every_image_equally():
    acc = MetricAccumulator()
    acc.update({"iou": torch.tensor([0.5, 1.0]), "rmse": torch.tensor([0.2, float("nan")])})
    acc.update({"iou": torch.tensor([0.0]), "rmse": torch.tensor([0.4])})
    out = acc.compute()
    assert out["iou"] == pytest.approx(0.5)  # a mean of batch means would give 0.375
    assert out["rmse"] == pytest.approx(0.3)  # the NaN image is skipped
    acc.update({"abs_rel": torch.tensor([float("nan")])})
    assert math.isnan(acc.compute()["abs_rel"])
    acc.reset()
    assert acc.compute() == {}


def test_accumulator_all_reduce_is_noop_without_process_group():
    acc = MetricAccumulator()
    acc.update({"iou": torch.tensor([0.25, 0.75])})
    assert acc.all_reduce() is acc
    assert acc.compute() == {"iou": 0.5}


def _all_reduce_worker(rank: int, world_size: int, store_path: str, queue) -> None:
    store = dist.FileStore(store_path, world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    try:
        acc = MetricAccumulator()
        if rank == 0:
            acc.update({"iou": torch.tensor([1.0, 1.0])})
        else:
            acc.update({"iou": torch.tensor([0.0]), "rmse": torch.tensor([0.3, float("nan")])})
        queue.put((rank, acc.all_reduce().compute()))
    finally:
        dist.destroy_process_group()


def test_accumulator_all_reduce_single_process_group(tmp_path):
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        acc = MetricAccumulator()
        acc.update({"iou": torch.tensor([0.25, 0.75]), "rmse": torch.tensor([float("nan")])})
        out = acc.all_reduce().compute()
    finally:
        dist.destroy_process_group()
    assert out["iou"] == 0.5
    assert math.isnan(out["rmse"])


def test_accumulator_all_reduce_two_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_all_reduce_worker, args=(rank, 2, str(tmp_path / "store"), queue)) for rank in (0, 1)]
    for proc in procs:
        proc.start()
    try:
        results = dict(queue.get(timeout=120) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert [proc.exitcode for proc in procs] == [0, 0]
    for rank in (0, 1):
        # iou: (1 + 1 + 0) / 3 images; rmse only seen on rank 1, still known to rank 0
        assert results[rank]["iou"] == pytest.approx(2 / 3)
        assert results[rank]["rmse"] == pytest.approx(0.3)


def test_accumulator_counts_values_per_key_skipping_nans():
    acc = MetricAccumulator()
    acc.update({"iou": torch.tensor([0.5, 1.0]), "inside_rmse": torch.tensor([0.1, float("nan")])})
    acc.update({"iou": torch.tensor([0.0]), "inside_rmse": torch.tensor([0.3])})
    assert acc.count("iou") == 3 and acc.count("inside_rmse") == 2 and acc.count("missing") == 0
