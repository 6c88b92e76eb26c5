"""The seed baseline: the network of the original solution, rebuilt from its layer list, for comparison.

Two full-resolution stems (bg, fg_bg), two stride-2 residual stages, two decoders with transposed
convolutions (3,165,170 parameters). Convolutions followed by BatchNorm have no bias; decoder
convolutions (1x1, transposed, 3x3, final) have one. Its depth output also goes through a sigmoid
so that both networks share one contract (see maskdepth.model.maskdepthnet).

The seed's decoder activation is ambiguous in its sources. The 2020 notebook's model summary
lists LeakyReLU(0.2) after each decoder convolution, but model_1.py (the file the write-up links)
builds them as `nn.ReLU(0.2)`: nn.ReLU's only argument is `inplace`, so that is a plain ReLU
(with inplace=0.2, i.e. true), not a leaky one. The code is what ran, so `activation="relu"` is
the default here; `activation="leaky_relu"` (config `model.seed_activation`) builds the network
the summary shows. Only the decoders change (the encoder's ReLUs are the same in both sources);
the parameters and the checkpoint keys are the same either way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskdepth.errors import ConfigError
from maskdepth.model.common import BasicBlock, PairNet, conv_bn_relu

SEED_ACTIVATIONS = ("relu", "leaky_relu")  # the seed decoders' activation, see the module docstring


class SeedNet(PairNet):
    """The seed solution's network (3,165,170 parameters), for comparison.

    Encoder: per image a full-resolution stem (conv3x3 3->32 + BN + ReLU, two BasicBlocks of
    32); the two are concatenated to 64 channels; then two stride-2 stages of two BasicBlocks
    (64->128, 128->256). Decoders (mask 64 wide, depth 128 wide): 1x1 conv 256->f, two
    up-stages of [ConvTranspose2d(k2, s2), concat skip (128, then 64), conv3x3+act,
    conv3x3+act] halving the width, a final conv3x3 to 1. Stride 4. `activation`: "relu" (what
    model_1.py runs, the default) or "leaky_relu" (slope 0.2, what the notebook's summary shows).

    forward(bg, fg_bg) -> (pred_mask_logits [B,1,H,W], pred_depth [B,1,H,W] in [0,1], sigmoid).
    """

    stride = 4

    def __init__(self, activation: str = "relu") -> None:
        super().__init__()
        if activation not in SEED_ACTIVATIONS:
            raise ConfigError(f"unknown seed activation {activation!r}; valid: {', '.join(SEED_ACTIVATIONS)}")
        self.activation = activation
        self.bg_stem = self._stem()
        self.fg_stem = self._stem()
        self.stage1 = nn.Sequential(BasicBlock(64, 128, stride=2), BasicBlock(128, 128))
        self.stage2 = nn.Sequential(BasicBlock(128, 256, stride=2), BasicBlock(256, 256))
        self.mask_decoder = SeedDecoder(64, activation)
        self.depth_decoder = SeedDecoder(128, activation)

    @staticmethod
    def _stem() -> nn.Sequential:
        return nn.Sequential(conv_bn_relu(3, 32), BasicBlock(32, 32), BasicBlock(32, 32))

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        self.check_inputs(bg, fg_bg)
        full = torch.cat([self.bg_stem(self.normalize(bg)), self.fg_stem(self.normalize(fg_bg))], dim=1)
        half = self.stage1(full)
        quarter = self.stage2(half)
        pred_mask_logits = self.mask_decoder(quarter, half, full)
        pred_depth = torch.sigmoid(self.depth_decoder(quarter, half, full))
        return pred_mask_logits, pred_depth


class SeedDecoder(nn.Module):
    """1x1 reduce, then two up-stages (transposed conv, concat skip, two conv3x3 + activation), conv3x3 -> 1."""

    def __init__(self, width: int, activation: str = "relu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(256, width, 1)
        self.up1 = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.conv1 = self._double_conv(width + 128, width // 2, activation)
        self.up2 = nn.ConvTranspose2d(width // 2, width // 2, 2, stride=2)
        self.conv2 = self._double_conv(width // 2 + 64, width // 4, activation)
        self.out = nn.Conv2d(width // 4, 1, 3, padding=1)

    @staticmethod
    def _double_conv(in_ch: int, out_ch: int, activation: str) -> nn.Sequential:
        def act() -> nn.Module:
            return nn.LeakyReLU(0.2, inplace=True) if activation == "leaky_relu" else nn.ReLU(inplace=True)

        return nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            act(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            act(),
        )

    def forward(self, quarter: Tensor, half: Tensor, full: Tensor) -> Tensor:
        x = self.up1(self.reduce(quarter))
        x = self.conv1(torch.cat([x, half], dim=1))
        x = self.up2(x)
        x = self.conv2(torch.cat([x, full], dim=1))
        return self.out(x)
