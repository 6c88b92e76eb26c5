"""maskdepth.baselines: Otsu, morphology, background subtraction, the mean-depth predictor and their
scoring, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskdepth.baselines import (
    background_subtraction,
    clean_mask,
    dilate,
    erode,
    mean_depth,
    opening_kernel,
    otsu_threshold,
    score_baselines,
)


def _square(size: int, rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., rows, cols] = 1
    return mask


def test_otsu_on_a_bimodal_array():
    # 4 bins over [0, 3]: edges 0, .75, 1.5, 2.25, 3; centres .375, 1.125, 1.875, 2.625; counts 3, 1, 0, 2.
    # cut after bin 0: 3 * 3 * (.375 - 2.125)^2 = 27.56; after bin 1: 4 * 2 * (.5625 - 2.625)^2 = 34.03;
    # after bin 2 (empty): the same 34.03, and the first maximum wins -> the upper edge of bin 1.
    assert otsu_threshold(np.array([0, 0, 0, 1, 3, 3]), bins=4) == 1.5
    # two spikes, 256 bins: every cut between them scores the same; the first is right after the low one
    assert otsu_threshold(np.array([0.0] * 100 + [1.0] * 50)) == 1 / 256
    assert otsu_threshold(torch.tensor([0.25, 0.25, 0.25])) == 0.25  # constant: no cut, nothing above


def test_erode_and_dilate_a_known_mask():
    square = _square(5, slice(1, 4), slice(1, 4))
    centre = _square(5, slice(2, 3), slice(2, 3))
    assert torch.equal(erode(square, 3), centre)
    assert torch.equal(dilate(centre, 3), square)
    # outside the image does not erode: a square in the corner keeps the pixels along the border
    corner = _square(5, slice(0, 3), slice(0, 3))
    assert torch.equal(erode(corner, 3), _square(5, slice(0, 2), slice(0, 2)))


def test_clean_mask_drops_specks_fills_pinholes_keeps_objects():
    square = _square(9, slice(2, 6), slice(2, 6))
    speck = square.clone()
    speck[..., 8, 8] = 1
    assert torch.equal(clean_mask(speck, 3), square)  # opening removes the one-pixel speck
    # the pixels outside the image take no part: a gap to the border narrower than the kernel closes
    near_border = _square(9, slice(1, 5), slice(1, 5))
    assert torch.equal(clean_mask(near_border, 3), _square(9, slice(0, 5), slice(0, 5)))
    holed = torch.ones(1, 1, 7, 7)
    holed[..., 3, 3] = 0
    assert torch.equal(clean_mask(holed, 3), torch.ones(1, 1, 7, 7))  # closing fills the pinhole
    bar = _square(7, slice(0, 7), slice(2, 4))  # 2 px wide: narrower than the 3x3 kernel
    assert clean_mask(bar, 3).sum() == 0
    assert torch.equal(clean_mask(bar, 1), bar)  # a 1x1 kernel changes nothing
    assert (opening_kernel(64), opening_kernel(96), opening_kernel(192)) == (3, 3, 5)


def test_background_subtraction_finds_a_square_and_drops_a_speck():
    bg = torch.zeros(2, 3, 16, 16)
    fg_bg = bg.clone()
    fg_bg[:, :, 4:10, 4:10] = 0.9  # the object
    fg_bg[0, :, 13, 1] = 0.9  # a one-pixel speck in the first image: removed by the 3x3 opening
    fg_bg[1] += 0.01  # a global shift in the second: below its Otsu threshold
    mask = background_subtraction(bg, fg_bg, kernel=3)
    expected = _square(16, slice(4, 10), slice(4, 10)).expand(2, 1, 16, 16)
    assert mask.shape == (2, 1, 16, 16) and torch.equal(mask, expected)


def test_mean_depth_is_the_per_pixel_mean():
    a = torch.tensor([[[0.2, 0.4], [0.6, 0.8]]])
    b = torch.tensor([[[0.4, 0.4], [0.2, 1.0]]])
    mean = mean_depth(iter([a, b]))
    assert mean.dtype == torch.float32 and mean.shape == (1, 2, 2)
    assert torch.allclose(mean, torch.tensor([[[0.3, 0.4], [0.4, 0.9]]]))
    with pytest.raises(ValueError):
        mean_depth([])


def test_score_baselines_by_hand():
    # depth: image A all 0.2, image B all 0.6, the predictor 0.4 everywhere.
    # RMSE 0.2 on both; abs_rel 0.2/0.2 = 1 and 0.2/0.6 = 1/3; ratios 2 and 1.5:
    # delta1 (< 1.25) 0 and 0, delta2 (< 1.5625) 0 and 1, delta3 (< 1.953) 0 and 1.
    # mask: A's object is found exactly (IoU 1); B's target is 6x6 but only a 6x3 half differs from
    # the background: IoU 18/36 = 0.5, Dice 2*18/(18+36) = 2/3.
    bg = torch.zeros(1, 3, 16, 16)
    fg_a, fg_b = bg.clone(), bg.clone()
    fg_a[..., 4:10, 4:10] = 0.9
    fg_b[..., 4:10, 4:7] = 0.9
    target = _square(16, slice(4, 10), slice(4, 10))
    batches = [  # one image a batch: the figures are per image, whatever the batching
        {"bg": bg, "fg_bg": fg_a, "mask": target, "depth": torch.full((1, 1, 16, 16), 0.2)},
        {"bg": bg, "fg_bg": fg_b, "mask": target, "depth": torch.full((1, 1, 16, 16), 0.6)},
    ]
    predictor = torch.full((1, 16, 16), 0.4)
    figures = score_baselines(batches, {"mean": predictor}, kernel=3)
    assert set(figures) == {"mean", "bgsub"}
    depth = figures["mean"]
    assert depth["rmse"] == pytest.approx(0.2)
    assert depth["abs_rel"] == pytest.approx((1 + 1 / 3) / 2)
    assert (depth["delta1"], depth["delta2"], depth["delta3"]) == pytest.approx((0.0, 0.5, 0.5))
    assert figures["bgsub"]["iou"] == pytest.approx(0.75)
    assert figures["bgsub"]["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert set(score_baselines(batches, {"mean": predictor}, kernel=None)) == {"mean"}


def test_baselines_import_nothing_of_data_or_training():
    import subprocess
    import sys

    code = ("import sys, maskdepth.baselines; "
            "bad = [m for m in sys.modules "
            "if m.startswith(('maskdepth.data', 'maskdepth.train', 'maskdepth.evaluate'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
