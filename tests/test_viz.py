"""Sample grids, curves and depth colour maps: sizes, fixed ranges, tolerance, atomic writes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from maskdepth.errors import DataError
from maskdepth.viz import (
    DEPTH_CMAP,
    colorize_depth,
    read_metrics,
    save_curves,
    save_sample_grid,
)


def _batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(bg, fg_bg, true_mask, pred_mask, true_depth, pred_depth) with a square object per image."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(n, 3, size, size, generator=g)
    true_mask = torch.zeros(n, 1, size, size)
    true_mask[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1.0
    fg_bg = torch.where(true_mask > 0, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1), bg)
    pred_mask = (true_mask * 0.7 + 0.2 * torch.rand(n, 1, size, size, generator=g)).clamp(0, 1)
    true_depth = torch.linspace(0.1, 1.0, size).view(1, 1, size, 1).expand(n, 1, size, size).clone()
    pred_depth = (true_depth + 0.05 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)
    return bg, fg_bg, true_mask, pred_mask, true_depth, pred_depth


# ---------------------------------------------------------------------------------------------
# colorize_depth


def test_colorize_depth_maps_range_ends_to_colormap_ends() -> None:
    lut = colormaps[DEPTH_CMAP]
    first = np.round(np.array(lut(0.0)[:3]) * 255).astype(np.uint8)
    last = np.round(np.array(lut(1.0)[:3]) * 255).astype(np.uint8)
    depth = np.array([[0.0, 1.0], [-0.5, 3.0]], dtype=np.float32)  # out of range values clip

    rgb = colorize_depth(depth)

    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[0, 0], first)
    np.testing.assert_array_equal(rgb[0, 1], last)
    np.testing.assert_array_equal(rgb[1, 0], first)
    np.testing.assert_array_equal(rgb[1, 1], last)


def test_colorize_depth_near_is_brighter_and_range_is_fixed() -> None:
    rgb = colorize_depth(torch.tensor([[[0.05, 0.95]]]))  # [1, H, W] tensors are accepted
    luminance = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert luminance[0, 0] > luminance[0, 1] + 100

    # Same value, same colour, whatever else is in the image (no per-image normalisation).
    alone = colorize_depth(np.full((1, 1), 0.5))
    mixed = colorize_depth(np.array([[0.5, 0.0, 1.0]]))
    np.testing.assert_array_equal(alone[0, 0], mixed[0, 0])


def test_colorize_depth_custom_range_and_bad_input() -> None:
    rgb = colorize_depth(np.array([[0.2, 0.4]]), vmin=0.2, vmax=0.4, cmap="gray")
    np.testing.assert_array_equal(rgb, [[[0, 0, 0], [255, 255, 255]]])
    with pytest.raises(ValueError, match="vmax"):
        colorize_depth(np.zeros((2, 2)), vmin=1.0, vmax=1.0)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        colorize_depth(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------------------------------------
# save_sample_grid


def test_sample_grid_size_grows_with_rows_and_pixels_are_crisp(tmp_path) -> None:
    size = 64
    batch = _batch(3, size)
    bg = batch[0].clone()
    bg[0] = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)  # a flat colour to find in the PNG

    one = save_sample_grid(tmp_path / "one.png", bg[:1], *(t[:1] for t in batch[1:]))
    three = save_sample_grid(tmp_path / "sub" / "three.png", bg, *batch[1:], title="epoch 7")

    w1, h1 = Image.open(one).size
    w3, h3 = Image.open(three).size
    assert w1 == w3 >= 7 * size * 2  # 64 px inputs are shown at 2x, seven columns
    assert h3 - h1 >= 2 * 2 * size  # two more rows of 2x cells (+ the title line)
    # The flat bg cell is an exact 2x nearest-neighbour upscale: a 128x128 block of one colour.
    pixels = np.asarray(Image.open(three).convert("RGB")).astype(int)
    close = np.abs(pixels - [51, 102, 153]).max(axis=-1) <= 1
    assert 128 * 128 <= close.sum() < 128 * 128 + 50


def test_sample_grid_192px_is_shown_at_native_size(tmp_path) -> None:
    path = save_sample_grid(tmp_path / "g.png", *_batch(2, 192))
    width, height = Image.open(path).size
    assert 7 * 192 <= width < 7 * 192 + 60
    assert 2 * 192 <= height < 2 * 192 + 120
    colours = np.unique(np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 1000  # images, not a blank canvas


def test_sample_grid_rejects_mismatched_inputs(tmp_path) -> None:
    bg, fg_bg, true_mask, pred_mask, true_depth, pred_depth = _batch(2, 32)
    with pytest.raises(ValueError, match="same N, H, W"):
        save_sample_grid(tmp_path / "g.png", bg, fg_bg, true_mask, pred_mask[:1], true_depth, pred_depth)
    with pytest.raises(ValueError, match="bg must have shape"):
        save_sample_grid(tmp_path / "g.png", bg[:, :1], fg_bg, true_mask, pred_mask, true_depth, pred_depth)
    assert not any(tmp_path.iterdir())


def test_sample_grid_replaces_atomically_and_accepts_odd_tensors(tmp_path) -> None:
    bg, fg_bg, true_mask, pred_mask, true_depth, pred_depth = _batch(2, 32)
    target = tmp_path / "samples" / "epoch_001.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    # bf16 predictions that require grad, masks without a channel axis: as a training loop has them.
    pred_depth = pred_depth.to(torch.bfloat16).requires_grad_()
    path = save_sample_grid(target, bg, fg_bg, true_mask[:, 0], pred_mask, true_depth, pred_depth)
    assert path == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["epoch_001.png"]  # no temp file left


def test_sample_grid_draws_degenerate_rows(tmp_path) -> None:
    # No valid depth pixel (RMSE is NaN), empty masks, predictions outside [0, 1].
    bg, fg_bg, true_mask, pred_mask, true_depth, pred_depth = _batch(2, 32)
    true_depth[0] = 0.0
    true_mask[1] = 0.0
    pred_depth[1] = 1.5
    path = save_sample_grid(tmp_path / "g.png", bg, fg_bg, true_mask, pred_mask * 0, true_depth, pred_depth)
    assert Image.open(path).size[0] >= 7 * 128


# ---------------------------------------------------------------------------------------------
# save_curves

_HEADER = (
    "epoch,train_loss,train_mask_loss,train_depth_loss,val_loss,val_mask_loss,val_depth_loss,"
    "val_iou,val_dice,val_rmse,val_abs_rel,val_sq_rel,val_rmse_log,val_log10,"
    "val_delta1,val_delta2,val_delta3,lr,seconds"
)


def test_curves_from_one_epoch(tmp_path) -> None:
    csv_path = tmp_path / "run" / "metrics.csv"
    csv_path.parent.mkdir()
    row = "1,1.2,0.6,0.6,1.3,0.7,0.6,0.5,0.6,0.12,0.2,0.02,0.2,0.08,0.6,0.8,0.9,0.001,12.5"
    csv_path.write_text(f"{_HEADER}\n{row}\n")

    path = save_curves(csv_path, tmp_path / "run" / "curves.png")

    image = Image.open(path)
    assert image.size == (1200, 640)
    assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 50


def test_curves_tolerate_missing_extra_and_repeated_rows(tmp_path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,train_loss,val_iou,my_extra\n"
        "1,2.0,0.1,x\n"
        "2,1.5,,y\n"  # an empty cell is a gap
        "2,1.4,0.3,z\n"  # epoch 2 re-logged after a resume: the last row wins
        "3,1.0,0.5,\n"
    )
    epochs, columns = read_metrics(csv_path)
    np.testing.assert_array_equal(epochs, [1, 2, 3])
    np.testing.assert_array_equal(columns["train_loss"], [2.0, 1.4, 1.0])
    np.testing.assert_array_equal(columns["val_iou"], [0.1, 0.3, 0.5])
    assert np.isnan(columns["my_extra"]).all()

    assert save_curves(csv_path, tmp_path / "curves.png").is_file()


def test_curves_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(DataError, match="missing.csv"):
        save_curves(tmp_path / "missing.csv", tmp_path / "c.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,2\n")
    with pytest.raises(DataError, match="bad.csv.*epoch"):
        save_curves(bad, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_viz_never_touches_pyplot_or_the_backend(tmp_path) -> None:
    # matplotlib.get_backend() itself imports pyplot, so read the raw rcParams entry instead.
    code = f"""
import sys, matplotlib, numpy as np
backend = dict.__getitem__(matplotlib.rcParams, "backend")
from maskdepth.viz import save_sample_grid
z = np.zeros((1, 1, 16, 16))
save_sample_grid({str(tmp_path / "g.png")!r}, np.zeros((1, 3, 16, 16)), np.zeros((1, 3, 16, 16)), z, z, z, z)
assert "matplotlib.pyplot" not in sys.modules
assert dict.__getitem__(matplotlib.rcParams, "backend") is backend
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "g.png").is_file()
