"""Paired augmentation of a training batch, on whatever device the batch is on.

    batch = augment_batch(batch, seed=cfg.seed, step=step, flip=True, crop=0.3, photometric=0.3)

One random draw per sample is applied alike to bg, fg_bg, mask and depth (the geometry), as
BackgroundMattingV2's paired transforms do; the colour changes touch only bg and fg_bg:

- flip: mirror left-right with probability 1/2. Valid for depth: a mirrored scene is a scene.
- crop (0 = off): cut a square of side f * size, f uniform in [1 - crop, 1], at a uniformly
  random place, and resize it back to size (bilinear for the images and depth; the mask is
  resampled bilinearly too and thresholded at 1/2, so its edge stays where the image's is). A
  crop is what a longer focal length would have seen: depth values (camera z) stay as they are,
  while the horizon, the floor's slope in the image and the objects' sizes move, so the network
  cannot learn depth as a fixed function of the pixel row.
- photometric (0 = off, strength p): one shared draw per sample of brightness, contrast,
  saturation in [1 - p, 1 + p] and a colour cast (per-channel gains in [1 - p/4, 1 + p/4]) on
  both images, then separate small changes per image (brightness in [1 - p/5, 1 + p/5] and
  Gaussian noise of std p/25), so that fg_bg - bg is no longer exactly 0 off the object, as
  with a real camera that re-exposed between the two shots. Results are clipped to [0, 1].

The draws are a pure function of (seed, step), so a resumed run replays them exactly and there
is no augmentation state to checkpoint. With every option off the batch is returned unchanged.

Batch tensors: bg, fg_bg float [B,3,H,W] in [0,1]; mask float [B,1,H,W] in {0,1}; depth float
[B,1,H,W] in [0,1]. Returns new tensors of the same shapes, dtypes and ranges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA = (0.299, 0.587, 0.114)


def _generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2**63 - 1))
    return g


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=g, device=device) * (hi - lo) + lo


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def geometric(images: dict[str, Tensor], g: torch.Generator, *, flip: bool, crop: float) -> dict[str, Tensor]:
    """Flip and crop-resize every tensor of `images` ([B,C,H,W] each, same B, H, W) with one
    draw per sample, bilinearly; the key "mask" is thresholded at 1/2 afterwards."""
    ref = next(iter(images.values()))
    b, device = ref.shape[0], ref.device
    sign = torch.ones(b, device=device)
    if flip:
        sign = torch.where(torch.rand(b, generator=g, device=device) < 0.5, -1.0, 1.0)
    side = torch.ones(b, device=device)
    cx = torch.zeros(b, device=device)
    cy = torch.zeros(b, device=device)
    if crop > 0:
        side = _uniform(g, (b,), 1.0 - crop, 1.0, device)
        cx = _uniform(g, (b,), -1.0, 1.0, device) * (1 - side)
        cy = _uniform(g, (b,), -1.0, 1.0, device) * (1 - side)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = side * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = side, cy
    grid = F.affine_grid(theta, list(ref.shape[:1]) + [1] + list(ref.shape[-2:]), align_corners=False)
    out = {}
    for key, x in images.items():
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[key] = (y >= 0.5).to(x.dtype) if key == "mask" else y.to(x.dtype)
    return out


def photometric_jitter(bg: Tensor, fg_bg: Tensor, g: torch.Generator, strength: float) -> tuple[Tensor, Tensor]:
    """Shared colour change of both [B,3,H,W] images, then a small separate one per image."""
    b, device, p = bg.shape[0], bg.device, float(strength)
    shape = (b, 1, 1, 1)
    brightness = _uniform(g, shape, 1 - p, 1 + p, device)
    contrast = _uniform(g, shape, 1 - p, 1 + p, device)
    saturation = _uniform(g, shape, 1 - p, 1 + p, device)
    cast = _uniform(g, (b, 3, 1, 1), 1 - p / 4, 1 + p / 4, device)
    pivot = _gray(bg).mean(dim=(2, 3), keepdim=True)  # contrast pivots on the background, for both
    out = []
    for x in (bg, fg_bg):
        x = x * brightness * cast
        x = (x - pivot * brightness) * contrast + pivot * brightness
        gray = _gray(x)
        x = (x - gray) * saturation + gray
        own = _uniform(g, shape, 1 - p / 5, 1 + p / 5, device)
        noise = torch.randn(x.shape, generator=g, device=device, dtype=x.dtype) * (p / 25)
        out.append((x * own + noise).clamp(0.0, 1.0))
    return out[0], out[1]


def augment_batch(batch: dict[str, Tensor], *, seed: int, step: int, flip: bool = False, crop: float = 0.0,
                  photometric: float = 0.0) -> dict[str, Tensor]:
    """The batch with paired flip / crop and photometric jitter applied (see the module docstring).

    batch: at least bg, fg_bg, mask, depth as float tensors (other keys are passed through).
    crop in [0, 1), photometric in [0, 1]. Draws depend only on (seed, step) and the device type.
    """
    if not 0 <= crop < 1:
        raise ValueError(f"crop must be in [0, 1), got {crop}")
    if not 0 <= photometric <= 1:
        raise ValueError(f"photometric must be in [0, 1], got {photometric}")
    if not flip and not crop and not photometric:
        return batch
    keys = ("bg", "fg_bg", "mask", "depth")
    g = _generator(seed, step, batch["bg"].device)
    out = dict(batch)
    if flip or crop:
        out.update(geometric({k: batch[k] for k in keys}, g, flip=flip, crop=crop))
    if photometric:
        out["bg"], out["fg_bg"] = photometric_jitter(out["bg"], out["fg_bg"], g, photometric)
    return out


__all__ = ["augment_batch", "geometric", "photometric_jitter"]
