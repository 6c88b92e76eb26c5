"""Paired augmentation: one draw moves bg, fg_bg, mask and depth alike; colours touch only the
images; the draws are a pure function of (seed, step)."""

from __future__ import annotations

import pytest
import torch

from maskdepth.data.augment import augment_batch


def _batch(b: int = 6, size: int = 16) -> dict[str, torch.Tensor]:
    """Every tensor shows the same scene: a ramp along x plus a blob, so any geometric change
    made to one and not to the others shows up."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    field = (0.2 + 0.6 * xs + 0.1 * ys).expand(b, 1, size, size).clone()
    field += torch.arange(b).view(b, 1, 1, 1) * 0.01
    mask = (field > 0.6).float()
    bg = field.expand(b, 3, size, size).clone()
    fg_bg = torch.where(mask.bool(), torch.full_like(bg, 0.9), bg)
    return {"bg": bg, "fg_bg": fg_bg, "mask": mask, "depth": field.clone(), "name": ["x"] * b}


def test_everything_off_returns_the_batch_itself():
    batch = _batch()
    assert augment_batch(batch, seed=0, step=0) is batch


def test_one_flip_hits_all_four_tensors():
    batch = _batch(b=8)
    out = augment_batch(batch, seed=0, step=3, flip=True)
    flipped = []
    for i in range(8):
        is_flipped = torch.allclose(out["depth"][i], batch["depth"][i].flip(-1), atol=1e-6)
        is_same = torch.allclose(out["depth"][i], batch["depth"][i], atol=1e-6)
        assert is_flipped != is_same
        ref = {k: batch[k][i].flip(-1) if is_flipped else batch[k][i] for k in ("bg", "fg_bg", "mask", "depth")}
        for key, want in ref.items():
            assert torch.allclose(out[key][i], want, atol=1e-6), key
        flipped.append(is_flipped)
    assert any(flipped) and not all(flipped)  # both outcomes among 8 draws with this seed
    assert out["name"] is batch["name"]  # other keys pass through


def test_crop_moves_images_mask_and_depth_together():
    batch = _batch()
    out = augment_batch(batch, seed=1, step=0, flip=True, crop=0.4)
    assert not torch.allclose(out["depth"], batch["depth"])
    # bg (bilinear) and depth (bilinear) were the same picture, so they still are
    assert torch.allclose(out["bg"][:, :1], out["depth"], atol=1e-6)
    # the mask (nearest) still marks where the resampled depth is above the threshold
    agree = ((out["depth"] > 0.6) == out["mask"].bool()).float().mean().item()
    assert agree > 0.9
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    # zooming in never widens the range of values
    assert out["depth"].min() >= batch["depth"].min() - 1e-6 and out["depth"].max() <= batch["depth"].max() + 1e-6


def test_photometric_changes_only_the_images_and_each_a_little_differently():
    batch = _batch()
    out = augment_batch(batch, seed=2, step=5, photometric=0.4)
    assert torch.equal(out["mask"], batch["mask"]) and torch.equal(out["depth"], batch["depth"])
    assert not torch.allclose(out["bg"], batch["bg"])
    off_object = ~batch["mask"].bool().expand_as(batch["bg"])
    assert torch.equal(batch["bg"][off_object], batch["fg_bg"][off_object])
    assert not torch.allclose(out["bg"][off_object], out["fg_bg"][off_object])  # drawn apart
    assert out["bg"].min() >= 0 and out["bg"].max() <= 1


def test_draws_are_a_pure_function_of_seed_and_step():
    batch = _batch()
    opts = dict(flip=True, crop=0.3, photometric=0.3)
    a = augment_batch(batch, seed=4, step=7, **opts)
    b = augment_batch(batch, seed=4, step=7, **opts)
    c = augment_batch(batch, seed=4, step=8, **opts)
    assert all(torch.equal(a[k], b[k]) for k in ("bg", "fg_bg", "mask", "depth"))
    assert not torch.equal(a["bg"], c["bg"])


@pytest.mark.parametrize("kwargs", [dict(crop=1.0), dict(crop=-0.1), dict(photometric=1.5)])
def test_out_of_range_strengths(kwargs):
    with pytest.raises(ValueError):
        augment_batch(_batch(), seed=0, step=0, **kwargs)
