"""What both networks share: the input contract (normalisation buffers, the size check) and the
convolution blocks their encoders are made of."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskdepth.errors import ConfigError


class InputSizeError(ConfigError, ValueError):
    """An input whose H or W is not a positive multiple of the network's stride."""


def nearest_valid_sizes(size: int, stride: int) -> tuple[int, ...]:
    """The multiples of `stride` just below and just above `size` (only positive ones)."""
    below = (size // stride) * stride
    above = below + stride
    return tuple(s for s in (below, above) if s > 0)


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN projection on the shortcut when shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, zero_init: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        if zero_init:
            # Each block starts as the identity: trains from scratch without warm-up tricks.
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class PairNet(nn.Module):
    """Base of both networks: input normalisation buffers and the input-size check.

    The normalisation is `(x - input_mean) / input_std` per channel, with buffers that travel in the
    state_dict, so a checkpoint carries everything needed to run it on raw [0, 1] images.
    """

    stride: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.full((3,), 0.5))
        self.register_buffer("input_std", torch.full((3,), 0.25))

    def set_normalization(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        """Set the per-channel mean and std (3 values each, std > 0) used to normalise inputs."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != 3 or std_t.numel() != 3:
            raise ConfigError(
                f"normalisation needs 3 values (R, G, B) for mean and std, got mean={list(mean_t.tolist())} "
                f"std={list(std_t.tolist())}"
            )
        if not bool(torch.isfinite(mean_t).all()) or not bool((std_t > 0).all()):
            raise ConfigError(f"normalisation std must be > 0 and values finite, got mean={mean_t.tolist()} "
                              f"std={std_t.tolist()}")
        with torch.no_grad():
            self.input_mean.copy_(mean_t)
            self.input_std.copy_(std_t)

    def normalize(self, x: Tensor) -> Tensor:
        """`x` [B,3,H,W] in [0, 1] normalised with the network's buffers."""
        mean = self.input_mean.to(x.dtype).view(1, 3, 1, 1)
        std = self.input_std.to(x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def check_inputs(self, bg: Tensor, fg_bg: Tensor) -> None:
        """Raise InputSizeError (a ConfigError) for inputs this network cannot take."""
        if bg.dim() != 4 or bg.shape[1] != 3 or bg.shape != fg_bg.shape:
            raise InputSizeError(
                f"{type(self).__name__} expects bg and fg_bg of the same shape [B,3,H,W], "
                f"got {tuple(bg.shape)} and {tuple(fg_bg.shape)}"
            )
        height, width = int(bg.shape[-2]), int(bg.shape[-1])
        bad = [(name, s) for name, s in (("height", height), ("width", width)) if s % self.stride or s <= 0]
        if bad:
            hints = "; ".join(
                f"{name} {s} -> use {' or '.join(map(str, nearest_valid_sizes(s, self.stride)))}" for name, s in bad
            )
            raise InputSizeError(
                f"input size {height}x{width} is not a multiple of the network stride {self.stride} "
                f"({hints}); resize the images (data.size) to a multiple of {self.stride}"
            )
