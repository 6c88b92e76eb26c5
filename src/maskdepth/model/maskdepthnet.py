"""MaskDepthNet, the default network: an encoder from the registry, a mask and a depth U-Net decoder.

    pred_mask_logits, pred_depth = model(bg, fg_bg)

    bg, fg_bg          float [B,3,H,W] RGB in [0, 1]; H and W multiples of `model.stride`
    pred_mask_logits   float [B,1,H,W] logits (apply sigmoid for probabilities)
    pred_depth         float [B,1,H,W] in (0, 1] (a sigmoid by default), larger = farther

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
- options for depth that knows its scale (issue 22, docs/results.md "Depth scale"): on unseen
  scenes most of the depth error is one number per image. `scale_head=True` splits the depth
  into a relative map from the decoder (its per-image mean removed) and one log scale s per
  image from pooled bottleneck features (ScaleHead); `ruler=True` gives the depth head the
  predicted mask and two numbers measured on it, the object's pixel height and its foot row
  (also fed to the scale head when both are on): the pasted object is a ruler; `log_depth=True`
  makes the head's output log depth with a sharp ceiling at 0 (pair it with a larger
  loss.w_silog). The losses apply to pred_depth unchanged in every case.
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
RULER_FEATURES = 2  # what ruler_features measures: the object's pixel height and foot row
LOG_DEPTH_SHARPNESS = 8.0  # log_depth: ln pred = -softplus(-z, beta) is z (log depth) up to about -1/beta
LOG_DEPTH_START = -1.2  # log_depth: the head starts near depth exp(-1.2) = 0.3, the synthetic data's mean


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
        scale_head: pred = sigmoid(r + s) (or log_depth's ceiling): r the depth head's output less
            its per-image mean (the shape), s [B,1,1,1] one log scale per image from ScaleHead (the
            scale); below the ceiling, sigmoid(z) ~ exp(z), so s multiplies the depth by exp(s).
        ruler: the depth head sees the predicted mask and the object's soft pixel height and foot
            row (`ruler_features`) as constant planes; with scale_head, the scale head gets them too.
        log_depth: the head's output z is log depth: pred = exp(-softplus(-z, beta=8)), i.e. exp(z)
            below about 0.9 with a smooth ceiling at 1 (instead of sigmoid(z)).

    forward(bg, fg_bg): bg, fg_bg float [B,3,H,W] in [0,1], H and W multiples of `stride`.
    Returns (pred_mask_logits [B,1,H,W], pred_depth [B,1,H,W] in (0,1]: a sigmoid, or see above).
    """

    def __init__(self, base_channels: int = 32, num_stages: int = 4, context: str = "none",
                 depth_sees_mask: bool = False, coords: bool = False, dropout: float = 0.0,
                 blocks: int = 1, encoder: str = "own", scale_head: bool = False, ruler: bool = False,
                 log_depth: bool = False) -> None:
        super().__init__()
        encoder_spec(encoder)  # an unknown name: one line naming the registry's
        _check_options(base_channels, num_stages, context, dropout, blocks)
        self.base_channels, self.encoder_name = base_channels, encoder
        self.depth_sees_mask, self.coords = bool(depth_sees_mask), bool(coords)
        self.ruler, self.log_depth = bool(ruler), bool(log_depth)
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
        sees_mask = self.depth_sees_mask or self.ruler
        self.depth_head = FullResHead(depth_widths[0] + in_ch + sees_mask + RULER_FEATURES * self.ruler, head_ch)
        self.mask_head = FullResHead(depth_widths[0] // 2 + in_ch, head_ch)
        # registered only when on, so the default model's state_dict keys stay those of older checkpoints
        self.scale_head: ScaleHead | None = None
        if scale_head:
            self.scale_head = ScaleHead(widths[-1], RULER_FEATURES * self.ruler)
        if self.log_depth:
            with torch.no_grad():
                (self.scale_head.out.bias if self.scale_head is not None else self.depth_head.out.bias).fill_(
                    LOG_DEPTH_START)

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
        return pred_mask_logits, self.depth(skips, x, torch.sigmoid(pred_mask_logits))

    def depth(self, skips: list[Tensor], x: Tensor, mask_prob: Tensor) -> Tensor:
        """pred_depth [B,1,H,W] in (0, 1] from the encoder's skips, the input planes x [B,C,H,W] and
        the predicted mask probability [B,1,H,W]; see the class docstring for the options."""
        ruler = ruler_features(mask_prob) if self.ruler else None  # [B,2]
        planes = [x]
        if self.depth_sees_mask or self.ruler:
            planes.append(mask_prob)
        if ruler is not None:
            planes.append(ruler[:, :, None, None].expand(-1, -1, *x.shape[-2:]))
        z = self.depth_head(self.depth_decoder(skips), torch.cat(planes, dim=1) if len(planes) > 1 else x)
        if self.scale_head is not None:  # the shape from the decoder, the scale from the whole image
            z = z - z.mean(dim=(2, 3), keepdim=True) + self.scale_head(skips[-1], ruler)
        if self.log_depth:
            return torch.exp(-F.softplus(-z, beta=LOG_DEPTH_SHARPNESS))
        return torch.sigmoid(z)


def ruler_features(mask_prob: Tensor) -> Tensor:
    """The pasted object as a ruler: [B,2] (height, foot) in [0, 1] from mask_prob [B,1,H,W] in [0, 1].

    With row_h = max over the row h of the mask probability (1 where the row crosses the object):
    height = mean over rows of row_h (the soft fraction of rows the object spans: its pixel height / H)
    and foot = max over rows of row_h * h / (H - 1) (the lowest row it reaches, 0 top .. 1 bottom).
    Both are differentiable in the mask, and 0 when nothing is predicted. With the camera height,
    where an object stands and how tall it looks say how far it is.
    """
    rows = mask_prob.amax(dim=-1).flatten(1)  # [B,H]
    position = torch.linspace(0, 1, rows.shape[1], device=rows.device, dtype=rows.dtype)
    return torch.stack([rows.mean(dim=1), (rows * position).amax(dim=1)], dim=1)


class ScaleHead(nn.Module):
    """One log scale per image from the bottleneck features: global average and max pooling, then
    Linear(2C [+ extra], 64) + ReLU + Linear(64, 1).

    forward(feat [B,C,h,w], extra [B,E] or None) -> s [B,1,1,1], unbounded (the depth head's ceiling
    keeps pred_depth in (0, 1]). The last layer starts at zero weight, so s starts at its bias.
    """

    def __init__(self, channels: int, extra: int = 0, hidden: int = 64) -> None:
        super().__init__()
        self.extra = extra
        self.hidden = nn.Sequential(nn.Linear(2 * channels + extra, hidden), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feat: Tensor, extra: Tensor | None = None) -> Tensor:
        pooled = [feat.mean(dim=(2, 3)), feat.amax(dim=(2, 3))]
        if self.extra:
            if extra is None or extra.shape[1] != self.extra:
                raise ValueError(f"ScaleHead expects {self.extra} extra features, got "
                                 f"{None if extra is None else tuple(extra.shape)}")
            pooled.append(extra.to(feat.dtype))
        return self.out(self.hidden(torch.cat(pooled, dim=1))).view(-1, 1, 1, 1)


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
            for k, branch in zip(self.bins, self.branches, strict=True)
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
        for level, skip in zip(self.levels, reversed(skips[:-1]), strict=True):
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
