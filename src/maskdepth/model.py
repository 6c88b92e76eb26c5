"""Networks: MaskDepthNet (the default) and the seed baseline, built by `build_model()`.

Both take the background and the composite and return the foreground mask as logits and a
dense depth map:

    pred_mask_logits, pred_depth = model(bg, fg_bg)

    bg, fg_bg          float [B,3,H,W] RGB in [0, 1]; H and W multiples of `model.stride`
    pred_mask_logits   float [B,1,H,W] logits (apply sigmoid for probabilities)
    pred_depth         float [B,1,H,W] in [0, 1] (a sigmoid), larger = farther

Inputs are normalised inside the model, `(x - input_mean) / input_std` per channel, with
buffers that travel in the state_dict (defaults 0.5 / 0.25; `set_normalization()` sets the
dataset's statistics), so a checkpoint carries everything needed to run it on raw images.

MaskDepthNet (about 3.0M parameters with the defaults):
- input: the normalised bg, fg_bg and their difference, 9 channels. The background is known,
  so the difference marks the foreground almost by itself; the network mostly has to clean it
  up (shadows, colours close to the background) and to reason about depth.
- shared encoder: a stride-2 stem, then `num_stages` levels (widths base_channels * 2**i, at
  1/2 ... 1/2**num_stages of the input), each a stride-2 conv and a residual block. Nothing
  wide runs at full resolution: that is where the seed network spends its time.
- two U-Net decoders (depth at the encoder's width, mask at half of it): bilinear upsampling,
  concatenation of the skip, two conv3x3 + BN + ReLU per level, down to 1/2 resolution.
- a light full-resolution head per output that sees the upsampled decoder features and the
  raw 9 input channels, so mask edges stay as sharp as the difference image.
- options for depth that must see the whole scene (issue 12's ablation, docs/results.md):
  `context="ppm"` adds a pyramid pooling block (PSPNet) at the bottleneck: the deepest features
  average-pooled to 1x1, 2x2 and 4x4, projected, upsampled and fused back, so every position
  knows the global layout (where the horizon and the floor are); `depth_sees_mask=True` gives
  the depth head the predicted mask probability as one more input; `coords=True` adds two
  channels of pixel coordinates in [-1, 1] to the input; `dropout` applies Dropout2d to the
  bottleneck features during training; `blocks` stacks more residual blocks per encoder level.

Seed baseline (3,165,170 parameters): the network of the original solution, rebuilt from its
layer list: two full-resolution stems (bg, fg_bg), two stride-2 residual stages, two decoders
with transposed convolutions. Convolutions followed by BatchNorm have no bias; decoder
convolutions (1x1, transposed, 3x3, final) have one. Its depth output also goes through a
sigmoid so that both networks share one contract.

The seed's decoder activation is ambiguous in its sources. The 2020 notebook's model summary
lists LeakyReLU(0.2) after each decoder convolution, but model_1.py (the file the write-up links)
builds them as `nn.ReLU(0.2)`: nn.ReLU's only argument is `inplace`, so that is a plain ReLU
(with inplace=0.2, i.e. true), not a leaky one. The code is what ran, so `activation="relu"` is
the default here; `activation="leaky_relu"` (config `model.seed_activation`) builds the network
the summary shows. Only the decoders change (the encoder's ReLUs are the same in both sources);
the parameters and the checkpoint keys are the same either way.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskdepth.errors import ConfigError

MODEL_NAMES = ("maskdepth", "seed")
CONTEXTS = ("none", "ppm")
ENCODERS = ("own", "resnet18", "resnet34", "efficientnet_b0")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SEED_ACTIVATIONS = ("relu", "leaky_relu")  # the seed decoders' activation, see the module docstring


class InputSizeError(ConfigError, ValueError):
    """An input whose H or W is not a positive multiple of the network's stride."""


def nearest_valid_sizes(size: int, stride: int) -> tuple[int, ...]:
    """The multiples of `stride` just below and just above `size` (only positive ones)."""
    below = (size // stride) * stride
    above = below + stride
    return tuple(s for s in (below, above) if s > 0)


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
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


class _PairNet(nn.Module):
    """Shared plumbing: input normalisation buffers and the input-size check."""

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
            raise ConfigError(f"normalisation std must be > 0 and values finite, got mean={mean_t.tolist()} std={std_t.tolist()}")
        with torch.no_grad():
            self.input_mean.copy_(mean_t)
            self.input_std.copy_(std_t)

    def _normalize(self, x: Tensor) -> Tensor:
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


class MaskDepthNet(_PairNet):
    """Shared encoder over (bg, fg_bg, fg_bg - bg), a mask and a depth U-Net decoder.

    Args:
        base_channels: width of the first level; level i has base_channels * 2**i channels.
        num_stages: number of stride-2 levels; the network's stride is 2**num_stages.
        context: "none" or "ppm" (pyramid pooling at the bottleneck).
        depth_sees_mask: feed sigmoid(mask logits) to the depth head.
        coords: two extra input channels with the pixel's (x, y) in [-1, 1].
        dropout: Dropout2d probability on the bottleneck features (0: none).
        blocks: residual blocks per encoder level (a deeper encoder; pair with fewer
            base_channels to keep the FLOPs).
        encoder: "own" (the encoder above) or a torchvision architecture, "resnet18",
            "resnet34" or "efficientnet_b0" (`TorchvisionEncoder`; stride 32, and base_channels,
            num_stages and blocks do not apply). Its weights start random; `load_pretrained`
            puts ImageNet (or any torchvision-format) weights in.

    forward(bg, fg_bg): bg, fg_bg float [B,3,H,W] in [0,1], H and W multiples of `stride`.
    Returns (pred_mask_logits [B,1,H,W], pred_depth [B,1,H,W] in [0,1] via a sigmoid).
    """

    def __init__(self, base_channels: int = 32, num_stages: int = 4, context: str = "none",
                 depth_sees_mask: bool = False, coords: bool = False, dropout: float = 0.0,
                 blocks: int = 1, encoder: str = "own") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ConfigError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
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
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.stride = 2**num_stages
        self.depth_sees_mask, self.coords = bool(depth_sees_mask), bool(coords)
        in_ch = 9 + 2 * self.coords  # bg, fg_bg, fg_bg - bg (, x, y)
        widths = [base_channels * 2**i for i in range(num_stages)]

        self.encoder_name = encoder
        self.backbone: TorchvisionEncoder | None = None
        if encoder == "own":  # level i runs at 1/2**(i+1) of the input
            self.stem = _conv_bn_relu(in_ch, widths[0], stride=2)
            self.encoder = nn.ModuleList()
            for i, width in enumerate(widths):
                down = nn.Identity() if i == 0 else _conv_bn_relu(widths[i - 1], width, stride=2)
                self.encoder.append(nn.Sequential(down, *(BasicBlock(width, width, zero_init=True) for _ in range(blocks))))
            depth_widths = widths
        else:
            self.backbone = TorchvisionEncoder(encoder, in_ch)
            widths, self.stride, self.num_stages = list(self.backbone.widths), 32, 5
            depth_widths = [min(w, 128) for w in widths]  # lean decoders over a wide pretrained encoder
        self.context: nn.Module = _PyramidPooling(widths[-1]) if context == "ppm" else nn.Identity()
        self.dropout: nn.Module = nn.Dropout2d(dropout) if dropout else nn.Identity()

        self.depth_decoder = _UNetDecoder(widths, depth_widths)
        self.mask_decoder = _UNetDecoder(widths, [w // 2 for w in depth_widths])
        head_ch = max(base_channels // 2, 8)
        self.depth_head = _FullResHead(depth_widths[0] + in_ch + self.depth_sees_mask, head_ch)
        self.mask_head = _FullResHead(depth_widths[0] // 2 + in_ch, head_ch)

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        self.check_inputs(bg, fg_bg)
        bg_n = self._normalize(bg)
        fg_n = self._normalize(fg_bg)
        planes = [bg_n, fg_n, fg_n - bg_n]
        if self.coords:
            b, _, h, w = bg.shape
            ys = torch.linspace(-1, 1, h, device=bg.device, dtype=bg_n.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=bg.device, dtype=bg_n.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            planes += [xs, ys]
        x = torch.cat(planes, dim=1)  # [B,9 or 11,H,W]

        if self.backbone is not None:
            skips = self.backbone(x)
        else:
            skips = []
            feat = self.stem(x)
            for level in self.encoder:
                feat = level(feat)
                skips.append(feat)
        skips[-1] = self.dropout(self.context(skips[-1]))

        pred_mask_logits = self.mask_head(self.mask_decoder(skips), x)
        depth_in = torch.cat([x, torch.sigmoid(pred_mask_logits)], dim=1) if self.depth_sees_mask else x
        pred_depth = torch.sigmoid(self.depth_head(self.depth_decoder(skips), depth_in))
        return pred_mask_logits, pred_depth


class _PyramidPooling(nn.Module):
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


class _UNetDecoder(nn.Module):
    """From the deepest skip up to 1/2 resolution: upsample, concat skip, two conv3x3+BN+ReLU."""

    def __init__(self, enc_widths: Sequence[int], dec_widths: Sequence[int]) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        in_ch = enc_widths[-1]
        for i in range(len(enc_widths) - 2, -1, -1):
            self.levels.append(
                nn.Sequential(
                    _conv_bn_relu(in_ch + enc_widths[i], dec_widths[i]),
                    _conv_bn_relu(dec_widths[i], dec_widths[i]),
                )
            )
            in_ch = dec_widths[i]

    def forward(self, skips: Sequence[Tensor]) -> Tensor:
        x = skips[-1]
        for level, skip in zip(self.levels, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = level(torch.cat([x, skip], dim=1))
        return x


class _FullResHead(nn.Module):
    """Upsample 1/2-res features to full size, add the raw inputs, conv3x3+BN+ReLU, conv3x3 -> 1."""

    def __init__(self, in_ch: int, mid_ch: int) -> None:
        super().__init__()
        self.refine = _conv_bn_relu(in_ch, mid_ch)
        self.out = nn.Conv2d(mid_ch, 1, 3, padding=1)

    def forward(self, feat: Tensor, x: Tensor) -> Tensor:
        feat = F.interpolate(feat, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.refine(torch.cat([feat, x], dim=1)))


class SeedNet(_PairNet):
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
        self.mask_decoder = _SeedDecoder(64, activation)
        self.depth_decoder = _SeedDecoder(128, activation)

    @staticmethod
    def _stem() -> nn.Sequential:
        return nn.Sequential(_conv_bn_relu(3, 32), BasicBlock(32, 32), BasicBlock(32, 32))

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        self.check_inputs(bg, fg_bg)
        full = torch.cat([self.bg_stem(self._normalize(bg)), self.fg_stem(self._normalize(fg_bg))], dim=1)
        half = self.stage1(full)
        quarter = self.stage2(half)
        pred_mask_logits = self.mask_decoder(quarter, half, full)
        pred_depth = torch.sigmoid(self.depth_decoder(quarter, half, full))
        return pred_mask_logits, pred_depth


class _SeedDecoder(nn.Module):
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


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TorchvisionEncoder(nn.Module):
    """A torchvision classification network as a U-Net encoder over the 9 (or 11) input planes.

    forward(x [B,in_ch,H,W]) -> five skips at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input, widths
    `self.widths`: resnet18/34 (64, 64, 128, 256, 512), efficientnet_b0 (16, 24, 40, 112, 320).
    The classifier (and efficientnet's final 1x1 conv to 1280) is dropped.

    The 3-channel stem meets the 9 input planes (bg, fg_bg, fg_bg - bg) by widening its first
    convolution to `in_ch` input channels. `load_pretrained` puts the pretrained RGB kernel in
    the fg_bg slot and zeros in the others: at step 0 the encoder computes exactly the pretrained
    features of fg_bg (the image whose depth is predicted, the kind of input the weights were
    trained on), and training learns how much of bg and the difference to mix in. Running the
    encoder on bg and fg_bg separately would keep the stem as it is, at twice the cost.
    """

    def __init__(self, name: str, in_ch: int) -> None:
        super().__init__()
        import torchvision

        net = torchvision.models.get_model(name, weights=None)
        self.name = name
        if name.startswith("resnet"):
            del net.fc
            self.stem_key, self.widths = "conv1.weight", (64, 64, 128, 256, 512)
            net.conv1 = _widened(net.conv1, in_ch)
        else:
            del net.classifier, net.avgpool
            net.features = net.features[:8]  # up to the 320-wide stage, without the 1x1 conv to 1280
            self.stem_key, self.widths = "features.0.0.weight", (16, 24, 40, 112, 320)
            net.features[0][0] = _widened(net.features[0][0], in_ch)
        self.net = net

    def forward(self, x: Tensor) -> list[Tensor]:
        net = self.net
        if self.name.startswith("resnet"):
            s2 = net.relu(net.bn1(net.conv1(x)))
            s4 = net.layer1(net.maxpool(s2))
            s8 = net.layer2(s4)
            s16 = net.layer3(s8)
            return [s2, s4, s8, s16, net.layer4(s16)]
        skips, f = [], net.features
        for stage, keep in zip(f, (False, True, True, True, False, True, False, True)):
            x = stage(x)
            if keep:
                skips.append(x)
        return skips


def _widened(conv: nn.Conv2d, in_ch: int) -> nn.Conv2d:
    """`conv` with `in_ch` input channels (same kernel, stride, padding, bias)."""
    return nn.Conv2d(in_ch, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     bias=conv.bias is not None)


def load_pretrained(model: nn.Module, source: str) -> str:
    """Put pretrained weights into `model`'s torchvision encoder; returns a one-line report.

    `source`: "imagenet" (torchvision's default weights for the architecture, downloaded on
    first use to torch's cache: meant for Colab, never used by the tests or the demo) or the
    path of a local file holding the architecture's torchvision state_dict (e.g. saved with
    `torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), PATH)`; a dict
    with a "state_dict" or "model" entry holding it is accepted too). The classifier's weights
    are ignored; the stem is widened as `TorchvisionEncoder` describes. The input
    normalisation becomes ImageNet's mean and std, the statistics those weights expect.

    Raises:
        ConfigError (one line): no torchvision encoder, a missing or unreadable file, or a
            state_dict of another architecture.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, TorchvisionEncoder):
        raise ConfigError(f"model.pretrained={source!r} needs a torchvision encoder (model.encoder: "
                          f"{', '.join(ENCODERS[1:])})")
    if source == "imagenet":
        import torchvision

        state = torchvision.models.get_model_weights(backbone.name).DEFAULT.get_state_dict(progress=True)
        where = f"torchvision's ImageNet weights for {backbone.name}"
    else:
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"model.pretrained={source}: cannot read a state_dict ({str(exc).splitlines()[0]})") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        where = source
    ours = backbone.net.state_dict()
    kept = {k: v for k, v in state.items() if k in ours and k != backbone.stem_key}
    rgb = state.get(backbone.stem_key)
    wrong = [k for k, v in kept.items() if tuple(v.shape) != tuple(ours[k].shape)]
    missing = [k for k in ours if k not in kept and k != backbone.stem_key]
    dropped = ("fc.", "classifier.", "features.8.")  # the heads TorchvisionEncoder does not have
    extra = [k for k in state if k not in ours and not k.startswith(dropped)]
    if rgb is None or rgb.shape[1] != 3 or missing or wrong or extra:
        problem = (f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else
                   f"shape of {wrong[0]} differs" if wrong else
                   f"{len(extra)} weights it does not have (e.g. {extra[0]})" if extra else
                   f"no 3-channel {backbone.stem_key}")
        raise ConfigError(f"model.pretrained={where}: not a {backbone.name} state_dict ({problem})")
    stem = torch.zeros_like(ours[backbone.stem_key])
    stem[:, 3:6] = rgb  # the fg_bg slot; bg, difference (and coordinates) start at zero
    backbone.net.load_state_dict({**kept, backbone.stem_key: stem})
    model.set_normalization(IMAGENET_MEAN, IMAGENET_STD)
    return f"encoder {backbone.name}: {len(kept) + 1} tensors from {where}; input normalisation ImageNet's"


def build_model(name: str = "maskdepth", **options: Any) -> nn.Module:
    """Build a network by name: "maskdepth" (MaskDepthNet) or "seed" (the seed baseline).

    Options of "maskdepth": base_channels (default 32), num_stages (default 4), context,
    depth_sees_mask, coords, dropout, blocks, encoder (see MaskDepthNet). Options of "seed": activation
    ("relu" or "leaky_relu", see SeedNet). An option that is None is ignored (so a config can
    leave it unset). Unknown names or options raise ConfigError naming the valid ones.
    """
    options = {key: value for key, value in options.items() if value is not None}
    valid = {"maskdepth": ("base_channels", "num_stages", "context", "depth_sees_mask", "coords", "dropout", "blocks",
                           "encoder"),
             "seed": ("activation",)}
    if name not in valid:
        raise ConfigError(f"unknown model.name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(options) - set(valid[name]))
    if unknown:
        allowed = ", ".join(valid[name]) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; valid options: {allowed}")
    if name == "seed":
        return SeedNet(**options)
    return MaskDepthNet(**options)


__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_NAMES",
    "SEED_ACTIVATIONS",
    "InputSizeError",
    "MaskDepthNet",
    "SeedNet",
    "TorchvisionEncoder",
    "build_model",
    "load_pretrained",
    "count_parameters",
    "nearest_valid_sizes",
]
