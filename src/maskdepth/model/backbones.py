"""The encoder networks the registry (maskdepth.model.encoders) builds.

Every encoder maps the 9 (or 11) input planes [B,C,H,W] to a list of skips, finest first, the
first at 1/2 of the input and each next one at half the size of the one before; it says its skip
widths in `out_channels` and its total stride in `stride`. MaskDepthNet's decoders take any such list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maskdepth.model.common import BasicBlock, conv_bn_relu


def run_levels(stem: nn.Module, levels: Sequence[nn.Module], x: Tensor) -> list[Tensor]:
    """The own encoder's forward: the stem, then each level; every level's output is a skip."""
    skips = []
    feat = stem(x)
    for level in levels:
        feat = level(feat)
        skips.append(feat)
    return skips


class OwnEncoder(nn.Module):
    """A stride-2 stem, then `num_stages` levels (widths base_channels * 2**i, at 1/2 ... 1/2**num_stages
    of the input), each a stride-2 conv (none on the first) and `blocks` residual blocks that start as the
    identity. Nothing wide runs at full resolution: that is where the seed network spends its time."""

    def __init__(self, in_channels: int, base_channels: int = 32, num_stages: int = 4, blocks: int = 1) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(num_stages)]
        self.out_channels, self.stride = tuple(widths), 2**num_stages
        self.stem = conv_bn_relu(in_channels, widths[0], stride=2)
        self.levels = nn.ModuleList()
        for i, width in enumerate(widths):
            down = nn.Identity() if i == 0 else conv_bn_relu(widths[i - 1], width, stride=2)
            self.levels.append(nn.Sequential(down, *(BasicBlock(width, width, zero_init=True) for _ in range(blocks))))

    def forward(self, x: Tensor) -> list[Tensor]:
        return run_levels(self.stem, self.levels, x)


class TorchvisionEncoder(nn.Module):
    """A torchvision classification network as a U-Net encoder over the 9 (or 11) input planes.

    `stages`: per skip, the dotted names of the submodules of the network that run, in order, to
    produce it; `drop`: the submodules it does not need (the classifier), deleted; `stem`: the
    first convolution, widened to `in_ch` input channels. The widths and the stride are measured
    once, on a small input, when it is built.

    The 3-channel stem meets the 9 input planes (bg, fg_bg, fg_bg - bg) by widening its first
    convolution. `load_pretrained` puts the pretrained RGB kernel in the fg_bg slot and zeros in the
    others: at step 0 the encoder computes exactly the pretrained features of fg_bg (the image whose
    depth is predicted, the kind of input the weights were trained on), and training learns how much
    of bg and the difference to mix in. Running the encoder on bg and fg_bg separately would keep the
    stem as it is, at twice the cost.
    """

    def __init__(self, arch: str, in_ch: int, stem: str, stages: Sequence[Sequence[str]],
                 drop: Sequence[str] = ()) -> None:
        super().__init__()
        import torchvision

        net = torchvision.models.get_model(arch, weights=None)
        for name in drop:
            parent, _, child = name.rpartition(".")
            delattr(net.get_submodule(parent), child)
        parent, _, child = stem.rpartition(".")
        setattr(net.get_submodule(parent), child, _widened(net.get_submodule(stem), in_ch))
        self.name, self.net, self.drop = arch, net, tuple(drop)
        self.stem_key, self.stages = f"{stem}.weight", tuple(tuple(s) for s in stages)
        was_training = net.training
        with torch.no_grad():  # eval mode: the BatchNorm statistics stay as they were
            skips = self.eval()(torch.zeros(1, in_ch, 64, 64))
        self.train(was_training)
        self.out_channels = tuple(int(s.shape[1]) for s in skips)
        self.stride = 64 // int(skips[-1].shape[-1])

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for stage in self.stages:
            for name in stage:
                x = self.net.get_submodule(name)(x)
            skips.append(x)
        return skips


def _widened(conv: nn.Module, in_ch: int) -> nn.Conv2d:
    """`conv` with `in_ch` input channels (same kernel, stride, padding, bias)."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"an encoder's stem must be a Conv2d, got {type(conv).__name__}")
    return nn.Conv2d(in_ch, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     bias=conv.bias is not None)
