"""Networks: MaskDepthNet (the default) and the seed baseline, built by `build_model()`.

    from maskdepth.model import build_model
    model = build_model("maskdepth", encoder="resnet18")
    pred_mask_logits, pred_depth = model(bg, fg_bg)   # [B,1,H,W] logits, [B,1,H,W] depth in [0, 1]

Both take the background and the composite, float [B,3,H,W] RGB in [0, 1] with H and W multiples
of `model.stride`, normalise them inside (buffers `input_mean`, `input_std` in the state_dict) and
return the foreground mask as logits and a dense depth map (a sigmoid, larger = farther).

Where things are:
    encoders.py      THE encoder registry (name -> builder, stride, widths, normalisation, weights);
                     adding an encoder touches only this file
    backbones.py     the encoder networks it builds
    pretrained.py    `load_pretrained`: torchvision-format weights into a torchvision encoder
    maskdepthnet.py  MaskDepthNet: encoder, pyramid pooling, the two U-Net decoders and the heads
                     (the scale head and the object ruler of issue 22 among them)
    seed.py          SeedNet, the original solution's network
    common.py        what both nets share: the input contract and the conv blocks

The names below are imported on first use, so `import maskdepth.model.encoders` (what the config
reads) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from maskdepth.errors import ConfigError
from maskdepth.model.encoders import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, PRETRAINED_ENCODERS, REGISTRY, get_encoder

if TYPE_CHECKING:
    from torch import nn

    from maskdepth.model.backbones import OwnEncoder, TorchvisionEncoder
    from maskdepth.model.common import BasicBlock, InputSizeError, PairNet, nearest_valid_sizes
    from maskdepth.model.maskdepthnet import CONTEXTS, MaskDepthNet, PyramidPooling, ScaleHead, ruler_features
    from maskdepth.model.pretrained import load_pretrained
    from maskdepth.model.seed import SEED_ACTIVATIONS, SeedNet

MODEL_NAMES = ("maskdepth", "seed")
_OPTIONS = {"maskdepth": ("base_channels", "num_stages", "context", "depth_sees_mask", "coords", "dropout", "blocks",
                          "encoder", "scale_head", "ruler", "log_depth"),
            "seed": ("activation",)}

_EXPORTS = {
    "OwnEncoder": "maskdepth.model.backbones",
    "TorchvisionEncoder": "maskdepth.model.backbones",
    "load_pretrained": "maskdepth.model.pretrained",
    "BasicBlock": "maskdepth.model.common",
    "InputSizeError": "maskdepth.model.common",
    "PairNet": "maskdepth.model.common",
    "nearest_valid_sizes": "maskdepth.model.common",
    "CONTEXTS": "maskdepth.model.maskdepthnet",
    "MaskDepthNet": "maskdepth.model.maskdepthnet",
    "PyramidPooling": "maskdepth.model.maskdepthnet",
    "ScaleHead": "maskdepth.model.maskdepthnet",
    "ruler_features": "maskdepth.model.maskdepthnet",
    "SEED_ACTIVATIONS": "maskdepth.model.seed",
    "SeedNet": "maskdepth.model.seed",
}


def build_model(name: str = "maskdepth", **options: Any) -> nn.Module:
    """Build a network by name: "maskdepth" (MaskDepthNet) or "seed" (the seed baseline).

    Options of "maskdepth": base_channels (default 32), num_stages (default 4), context,
    depth_sees_mask, coords, dropout, blocks, encoder, scale_head, ruler, log_depth (see MaskDepthNet).
    Options of "seed": activation ("relu" or "leaky_relu", see SeedNet). An option that is None is
    ignored (so a config can leave it unset). Unknown names or options raise ConfigError naming the valid ones.
    """
    options = {key: value for key, value in options.items() if value is not None}
    if name not in _OPTIONS:
        raise ConfigError(f"unknown model.name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; valid options: {allowed}")
    if name == "seed":
        from maskdepth.model.seed import SeedNet

        return SeedNet(**options)
    from maskdepth.model.maskdepthnet import MaskDepthNet

    return MaskDepthNet(**options)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maskdepth.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "CONTEXTS", "ENCODERS", "IMAGENET_MEAN", "IMAGENET_STD", "MODEL_NAMES", "PRETRAINED_ENCODERS", "REGISTRY",
    "SEED_ACTIVATIONS", "BasicBlock", "InputSizeError", "MaskDepthNet", "OwnEncoder", "PairNet", "PyramidPooling",
    "ScaleHead", "SeedNet", "TorchvisionEncoder", "build_model", "count_parameters", "get_encoder", "load_pretrained",
    "nearest_valid_sizes", "ruler_features",
]
