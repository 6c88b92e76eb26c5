"""THE encoder registry: every encoder MaskDepthNet can use, in one dict. Adding one touches this file.

    from maskdepth.model.encoders import REGISTRY, get_encoder
    encoder = get_encoder("resnet18", in_channels=9)   # forward(x) -> skips, finest first
    REGISTRY["resnet18"].stride, REGISTRY["resnet18"].out_channels, REGISTRY["resnet18"].mean

Each entry (an `EncoderSpec`, in the spirit of segmentation_models_pytorch's `encoders` dict and
`get_encoder`) says how to build the encoder, its stride and skip widths, the input normalisation
its pretrained weights expect and where those weights come from. The config's `model.encoder`
choices, the model, `load_pretrained` and docs/encoders.md (a test checks it) all read this dict.

A torchvision classification network is one entry with `builder=torchvision_encoder`: name the
architecture, its first convolution (widened to the 9 input planes) and, per skip, the submodules
that run in order to produce it. An encoder of another kind needs a builder returning an
nn.Module with `forward(x) -> list of skips` (finest first) and the attributes `out_channels` and
`stride`; its skips must halve in size each level, the first at 1/2 of the input.

This module imports neither torch nor torchvision (the builders do, when called): the config
reads the names, and `import maskdepth.config` stays as quick as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maskdepth.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def own_encoder(in_channels: int, base_channels: int = 32, num_stages: int = 4, blocks: int = 1) -> nn.Module:
    """The encoder MaskDepthNet was designed with (maskdepth.model.backbones.OwnEncoder)."""
    from maskdepth.model.backbones import OwnEncoder

    return OwnEncoder(in_channels, base_channels=base_channels, num_stages=num_stages, blocks=blocks)


def torchvision_encoder(in_channels: int, arch: str, stem: str, stages: tuple[tuple[str, ...], ...],
                        drop: tuple[str, ...] = ()) -> nn.Module:
    """A torchvision network cut into skips (maskdepth.model.backbones.TorchvisionEncoder)."""
    from maskdepth.model.backbones import TorchvisionEncoder

    return TorchvisionEncoder(arch, in_channels, stem=stem, stages=stages, drop=drop)


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    builder(in_channels, **params, **options) -> nn.Module; `options` are the build_model options
    this encoder takes (the others, e.g. base_channels for a resnet, do not apply to it).
    stride, out_channels: the total stride and the skip widths (finest first), with the default
    options. mean, std: the input normalisation the pretrained weights expect (None: the dataset's
    own statistics, as for any encoder trained from scratch). weights: where `model.pretrained=imagenet`
    gets them, "torchvision:<arch>" (torchvision's DEFAULT weights), or None (no pretrained weights).
    """

    builder: Callable[..., Any]
    stride: int
    out_channels: tuple[int, ...]
    summary: str
    params: Mapping[str, Any] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    weights: str | None = None


_RESNET = dict(stem="conv1", drop=("fc",),
               stages=(("conv1", "bn1", "relu"), ("maxpool", "layer1"), ("layer2",), ("layer3",), ("layer4",)))


def _resnet(arch: str, widths: tuple[int, ...], summary: str) -> EncoderSpec:
    return EncoderSpec(torchvision_encoder, 32, widths, summary, params=dict(arch=arch, **_RESNET),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, weights=f"torchvision:{arch}")


REGISTRY: dict[str, EncoderSpec] = {
    "own": EncoderSpec(
        own_encoder, 16, (32, 64, 128, 256),
        "a stride-2 stem, then num_stages levels of a stride-2 conv and `blocks` residual blocks, "
        "base_channels * 2**i wide (stride 2**num_stages); trained from scratch",
        options=("base_channels", "num_stages", "blocks")),
    "resnet18": _resnet("resnet18", (64, 64, 128, 256, 512), "torchvision ResNet-18 without its classifier"),
    "resnet34": _resnet("resnet34", (64, 64, 128, 256, 512), "torchvision ResNet-34 without its classifier"),
    "efficientnet_b0": EncoderSpec(
        torchvision_encoder, 32, (16, 24, 40, 112, 320),
        "torchvision EfficientNet-B0 up to its 320-wide stage (without the 1x1 conv to 1280)",
        params=dict(arch="efficientnet_b0", stem="features.0.0",
                    stages=(("features.0", "features.1"), ("features.2",), ("features.3",),
                            ("features.4", "features.5"), ("features.6", "features.7")),
                    drop=("classifier", "avgpool", "features.8")),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, weights="torchvision:efficientnet_b0"),
}

ENCODERS: tuple[str, ...] = tuple(REGISTRY)  # the names, "own" first
PRETRAINED_ENCODERS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if spec.weights)


def encoder_spec(name: str) -> EncoderSpec:
    """The registry entry of `name`; ConfigError naming the valid ones for an unknown name."""
    if name not in REGISTRY:
        raise ConfigError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {name!r}")
    return REGISTRY[name]


def get_encoder(name: str, in_channels: int, **options: Any) -> nn.Module:
    """Build encoder `name` over `in_channels` input planes. Options it does not take are ignored."""
    spec = encoder_spec(name)
    taken = {key: value for key, value in options.items() if key in spec.options}
    return spec.builder(in_channels, **spec.params, **taken)


def pretrained_state(name: str) -> dict[str, Any]:
    """The pretrained state_dict of encoder `name` from its `weights` source (downloaded on first use)."""
    source = encoder_spec(name).weights
    if source is None:
        raise ConfigError(f"model.encoder={name} has no pretrained weights "
                          f"(those that do: {', '.join(PRETRAINED_ENCODERS)})")
    kind, arch = source.split(":", 1)
    if kind != "torchvision":
        raise ConfigError(f"model.encoder={name}: unknown weights source {source!r}")
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT.get_state_dict(progress=True)


__all__ = ["ENCODERS", "IMAGENET_MEAN", "IMAGENET_STD", "PRETRAINED_ENCODERS", "REGISTRY", "EncoderSpec",
           "encoder_spec", "get_encoder", "own_encoder", "pretrained_state", "torchvision_encoder"]
