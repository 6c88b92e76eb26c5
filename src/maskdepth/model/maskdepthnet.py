"""MaskDepthNet, the default network: an encoder from the registry, a mask and a depth U-Net decoder.

    pred_mask_logits, pred_depth = model(bg, fg_bg)

    bg, fg_bg          float [B,3,H,W] RGB in [0, 1]; H and W multiples of `model.stride`
    pred_mask_logits   float [B,1,H,W] logits (apply sigmoid for probabilities)
    pred_depth         float [B,1,H,W] in [0, 1] (a sigmoid), larger = farther

About 3.0M parameters with the defaults:
- input: the normalised bg, fg_bg and their difference, 9 channels. The background is known,
  so the difference marks the foreground almost by itself; the network mostly has to clean it
  up (shadows, colours close to the background) and to reason about depth.
- shared encoder, `encoder=` a name of the registry (maskdepth.model.encoders): "own" (a
  stride-2 stem and `num_stages` residual levels) or a torchvision network.
- two U-Net decoders (depth at the encoder's width, mask at half of it): bilinear upsampling,
  concatenation of the skip, two conv3x3 + BN + ReLU per level, down to 1/2 resolution.
- a light full-resolution head per output that sees the upsampled decoder features and the
  raw 9 input channels, so mask edges stay as sharp as the difference image.
- options for depth that must see the whole scene (issue 12's ablation, docs/results.md):
  `context="ppm"` adds a pyramid pooling block (PSPNet) at the bottleneck so every position
  knows the global layout (where the horizon and the floor are); `depth_sees_mask=True` gives
  the depth head the predicted mask probability as one more input; `coords=True` adds two
  channels of pixel coordinates in [-1, 1] to the input; `dropout` applies Dropout2d to the
  bottleneck features during training; `blocks` stacks more residual blocks per encoder level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskdepth.errors import ConfigError
from maskdepth.model.backbones import OwnEncoder, run_levels
from maskdepth.model.common import PairNet, conv_bn_relu
from maskdepth.model.encoders import encoder_spec, get_encoder

CONTEXTS = ("none", "ppm")


def _check_options(base_channels: int, num_stages: int, context: str, dropout: float, blocks: int) -> None:
    if context not in CONTEXTS:
        raise ConfigError(f"model.context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout!r}")
    if not isinstance(blocks, int) or not 1 <= blocks <= 4:
        raise ConfigError(f"model.blocks must be an integer from 1 to 4, got {blocks!r}")
    if not isinstance(base_channels, int) or base_channels < 4 or base_channels % 2:
        raise ConfigError(f"model.base_channels must be an even integer >= 4, got {base_channels!r}")
    if not isinstance(num_stages, int) or not 2 <= num_stages <= 6:
        raise ConfigError(f"model.num_stages must be an integer from 2 to 6, got {num_stages!r}")


class MaskDepthNet(PairNet):
    """Shared encoder over (bg, fg_bg, fg_bg - bg), a mask and a depth U-Net decoder.

    Args:
        base_channels: width of the own encoder's first level (level i: base_channels * 2**i), and
            twice the width of the full-resolution heads.
        num_stages: the own encoder's stride-2 levels; its stride is 2**num_stages.
        context: "none" or "ppm" (pyramid pooling at the bottleneck).
        depth_sees_mask: feed sigmoid(mask logits) to the depth head.
        coords: two extra input channels with the pixel's (x, y) in [-1, 1].
        dropout: Dropout2d probability on the bottleneck features (0: none).
        blocks: residual blocks per own encoder level (a deeper encoder; pair with fewer
            base_channels to keep the FLOPs).
        encoder: a name of the registry, maskdepth.model.encoders.REGISTRY: "own" or a torchvision
            architecture (stride 32; num_stages and blocks do not apply). Its weights start
            random; `load_pretrained` puts ImageNet (or any torchvision-format) weights in.

    forward(bg, fg_bg): bg, fg_bg float [B,3,H,W] in [0,1], H and W multiples of `stride`.
    Returns (pred_mask_logits [B,1,H,W], pred_depth [B,1,H,W] in [0,1] via a sigmoid).
    """

    def __init__(self, base_channels: int = 32, num_stages: int = 4, context: str = "none",
                 depth_sees_mask: bool = False, coords: bool = False, dropout: float = 0.0,
                 blocks: int = 1, encoder: str = "own") -> None:
        super().__init__()
        encoder_spec(encoder)  # an unknown name: one line naming the registry's
        _check_options(base_channels, num_stages, context, dropout, blocks)
        self.base_channels, self.encoder_name = base_channels, encoder
        self.depth_sees_mask, self.coords = bool(depth_sees_mask), bool(coords)
        in_ch = 9 + 2 * self.coords  # bg, fg_bg, fg_bg - bg (, x, y)
        widths = self._attach_encoder(get_encoder(encoder, in_ch, base_channels=base_channels, num_stages=num_stages,
                                                  blocks=blocks))
        # lean decoders over a wide pretrained encoder
        depth_widths = widths if encoder == "own" else [min(w, 128) for w in widths]
        self.context: nn.Module = PyramidPooling(widths[-1]) if context == "ppm" else nn.Identity()
        self.dropout: nn.Module = nn.Dropout2d(dropout) if dropout else nn.Identity()

        self.depth_decoder = UNetDecoder(widths, depth_widths)
        self.mask_decoder = UNetDecoder(widths, [w // 2 for w in depth_widths])
        head_ch = max(base_channels // 2, 8)
        self.depth_head = FullResHead(depth_widths[0] + in_ch + self.depth_sees_mask, head_ch)
        self.mask_head = FullResHead(depth_widths[0] // 2 + in_ch, head_ch)

    def _attach_encoder(self, encoder: nn.Module) -> list[int]:
        """Register the encoder where checkpoints have always had it: the own encoder's parts on the
        net itself (state_dict keys stem.*, encoder.*), any other encoder as `backbone`. Returns its
        skip widths."""
        self.stride, self.num_stages = encoder.stride, len(encoder.out_channels)
        self.backbone: nn.Module | None = None
        if isinstance(encoder, OwnEncoder):
            self.stem, self.encoder = encoder.stem, encoder.levels
        else:
            self.backbone = encoder
        return list(encoder.out_channels)

    def encode(self, x: Tensor) -> list[Tensor]:
        """The encoder's skips of the input planes `x`, finest first."""
        return self.backbone(x) if self.backbone is not None else run_levels(self.stem, self.encoder, x)

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        self.check_inputs(bg, fg_bg)
        bg_n = self.normalize(bg)
        fg_n = self.normalize(fg_bg)
        planes = [bg_n, fg_n, fg_n - bg_n]
        if self.coords:
            b, _, h, w = bg.shape
            ys = torch.linspace(-1, 1, h, device=bg.device, dtype=bg_n.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=bg.device, dtype=bg_n.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            planes += [xs, ys]
        x = torch.cat(planes, dim=1)  # [B,9 or 11,H,W]

        skips = self.encode(x)
        skips[-1] = self.dropout(self.context(skips[-1]))

        pred_mask_logits = self.mask_head(self.mask_decoder(skips), x)
        depth_in = torch.cat([x, torch.sigmoid(pred_mask_logits)], dim=1) if self.depth_sees_mask else x
        pred_depth = torch.sigmoid(self.depth_head(self.depth_decoder(skips), depth_in))
        return pred_mask_logits, pred_depth


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: x + fuse([x, up(proj(avgpool_k(x))) for k in bins]).

    Each bin size k pools the [B,C,h,w] features to k x k, projects them to C/4 channels
    (1x1 conv + BN + ReLU) and upsamples them back; a 1x1 conv + BN fuses everything to C and
    is added to x (its BN starts at zero, so the block starts as the identity).
    """

    def __init__(self, channels: int, bins: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.bins = tuple(bins)
        branch = max(channels // 4, 8)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True))
            for _ in self.bins
        )
        self.fuse = nn.Sequential(nn.Conv2d(channels + branch * len(self.bins), channels, 1, bias=False),
                                  nn.BatchNorm2d(channels))
        nn.init.zeros_(self.fuse[1].weight)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(F.adaptive_avg_pool2d(x, k)), size=size, mode="bilinear", align_corners=False)
            for k, branch in zip(self.bins, self.branches)
        ]
        return F.relu(x + self.fuse(torch.cat([x, *pooled], dim=1)))


class UNetDecoder(nn.Module):
    """From the deepest skip up to 1/2 resolution: upsample, concat skip, two conv3x3+BN+ReLU."""

    def __init__(self, enc_widths: Sequence[int], dec_widths: Sequence[int]) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        in_ch = enc_widths[-1]
        for i in range(len(enc_widths) - 2, -1, -1):
            self.levels.append(
                nn.Sequential(
                    conv_bn_relu(in_ch + enc_widths[i], dec_widths[i]),
                    conv_bn_relu(dec_widths[i], dec_widths[i]),
                )
            )
            in_ch = dec_widths[i]

    def forward(self, skips: Sequence[Tensor]) -> Tensor:
        x = skips[-1]
        for level, skip in zip(self.levels, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = level(torch.cat([x, skip], dim=1))
        return x


class FullResHead(nn.Module):
    """Upsample 1/2-res features to full size, add the raw inputs, conv3x3+BN+ReLU, conv3x3 -> 1."""

    def __init__(self, in_ch: int, mid_ch: int) -> None:
        super().__init__()
        self.refine = conv_bn_relu(in_ch, mid_ch)
        self.out = nn.Conv2d(mid_ch, 1, 3, padding=1)

    def forward(self, feat: Tensor, x: Tensor) -> Tensor:
        feat = F.interpolate(feat, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.refine(torch.cat([feat, x], dim=1)))
