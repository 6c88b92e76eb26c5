"""`load_pretrained`: torchvision-format weights into a MaskDepthNet's torchvision encoder.

Apart from backbones.py because it reads the registry (the weights and the normalisation that go
with them), and the registry builds the backbones: keeping it here keeps that one-way.
"""

from __future__ import annotations

import re
import sys

import torch
from torch import Tensor, nn

from maskdepth.errors import ConfigError
from maskdepth.model.backbones import TorchvisionEncoder
from maskdepth.model.encoders import PRETRAINED_ENCODERS, encoder_spec, pretrained_state


def _not_weights(source: str, what: str, name: str) -> ConfigError:
    """The one line for a file that is not the weights: what it is, and what was expected."""
    return ConfigError(f"model.pretrained={source}: {what}; expected a torchvision {name} state_dict, saved with "
                       "torch.save(model.state_dict(), PATH)")


def _what_file(source: str, exc: BaseException) -> str:
    """What a file is that torch.load(weights_only=True) refused, in words: empty, text, another
    format, or a pickle of some class (a whole model saved with torch.save(model))."""
    with open(source, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or the legacy pickle format
        found = re.search(r"(?:GLOBAL|class) ([A-Za-z_][\w.]*)", str(exc))
        if found is None:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"a file torch.load cannot read as weights ({first})"
        return f"a pickled {found.group(1)}{_whole_model(found.group(1))}, not a state_dict"
    try:
        text = b"\0" not in head and bool(head.decode("utf-8"))
    except UnicodeDecodeError as err:
        text = b"\0" not in head and err.start >= len(head) - 3  # a character cut at the 512th byte
    return "a text file, not a file written by torch.save" if text else "not a file written by torch.save"


def _whole_model(qualname: str) -> str:
    """' (a whole model ...)' when `qualname` names an nn.Module class of a module already
    imported (torchvision's networks are; nothing is imported to find out), else ''."""
    module, _, name = qualname.rpartition(".")
    found = getattr(sys.modules.get(module), name, None)
    is_model = isinstance(found, type) and issubclass(found, nn.Module)
    return " (a whole model saved with torch.save(model))" if is_model else ""


def _state_of(state: object, source: str, name: str) -> dict[str, Tensor]:
    """`state` (or its "state_dict" / "model" entry) when it is a dict of tensors, else the one line
    saying what the file holds instead."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if isinstance(state, Tensor):
        raise _not_weights(source, "holds a single tensor, not a state_dict", name)
    if not isinstance(state, dict):
        raise _not_weights(source, f"holds a {type(state).__name__}, not a state_dict", name)
    for key, value in state.items():
        if not isinstance(value, Tensor):
            kind = type(value).__name__
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            raise _not_weights(source, f"holds a dict whose entry {key!r} is {article} {kind}, not a tensor", name)
    return state


def _read_state(source: str, name: str) -> dict[str, Tensor]:
    """The state_dict in the file `source` (or in its "state_dict" / "model" entry); the one line
    for a file that cannot be read, or holds something else (`name`: the encoder expected)."""
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ConfigError(f"model.pretrained={source}: cannot read a state_dict ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # any failure to unpickle: the file is not weights; say what it is
        raise _not_weights(source, _what_file(source, exc), name) from None
    return _state_of(state, source, name)


def load_pretrained(model: nn.Module, source: str) -> str:
    """Put pretrained weights into `model`'s torchvision encoder; returns a one-line report.

    `source`: "imagenet" (the registry's weights for the architecture, downloaded on first use to
    torch's cache: meant for Colab, never used by the tests or the demo) or the path of a local
    file holding the architecture's torchvision state_dict (e.g. saved with
    `torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), PATH)`; a dict
    with a "state_dict" or "model" entry holding it is accepted too). The classifier's weights
    are ignored; the stem is widened as `TorchvisionEncoder` describes. The input
    normalisation becomes the one the registry gives for the weights (ImageNet's).

    Raises:
        ConfigError (one line): no torchvision encoder, a missing or unreadable file, or a
            state_dict of another architecture.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, TorchvisionEncoder):
        raise ConfigError(f"model.pretrained={source!r} needs a torchvision encoder (model.encoder: "
                          f"{', '.join(PRETRAINED_ENCODERS)})")
    if source == "imagenet":
        state, where = pretrained_state(backbone.name), f"torchvision's ImageNet weights for {backbone.name}"
    else:
        state, where = _read_state(source, backbone.name), source
    ours = backbone.net.state_dict()
    kept = {k: v for k, v in state.items() if k in ours and k != backbone.stem_key}
    rgb = state.get(backbone.stem_key)
    wrong = [k for k, v in kept.items() if tuple(v.shape) != tuple(ours[k].shape)]
    missing = [k for k in ours if k not in kept and k != backbone.stem_key]
    extra = [k for k in state if k not in ours and not k.startswith(tuple(f"{d}." for d in backbone.drop))]
    if rgb is None or rgb.shape[1] != 3 or missing or wrong or extra:
        problem = (f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else
                   f"shape of {wrong[0]} differs" if wrong else
                   f"{len(extra)} weights it does not have (e.g. {extra[0]})" if extra else
                   f"no 3-channel {backbone.stem_key}")
        raise ConfigError(f"model.pretrained={where}: not a {backbone.name} state_dict ({problem})")
    stem = torch.zeros_like(ours[backbone.stem_key])
    stem[:, 3:6] = rgb  # the fg_bg slot; bg, difference (and coordinates) start at zero
    backbone.net.load_state_dict({**kept, backbone.stem_key: stem})
    spec = encoder_spec(backbone.name)
    model.set_normalization(spec.mean, spec.std)
    return f"encoder {backbone.name}: {len(kept) + 1} tensors from {where}; input normalisation ImageNet's"
