"""Typed run configuration: dataclasses, YAML load, `key=value` overrides, dump.

    cfg = load_config("configs/quick.yaml", ["train.epochs=3", "data.size=64"])
    save_config(cfg, "runs/quick/config.yaml")

Every key is a dataclass field, so an unknown key or a value of the wrong type is caught
before any work starts, with a one-line `ConfigError` that names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from maskdepth.errors import ConfigError
from maskdepth.fileio import write_atomic
from maskdepth.model.encoders import ENCODERS, PRETRAINED_ENCODERS


def is_device_name(name: object) -> bool:
    """Whether `name` spells a device this package takes (auto | cpu | cuda | cuda:N | mps), present
    or not: config validation and `maskdepth predict` refuse a misspelling before `resolve_device`
    asks the machine whether it has that device."""
    text = str(name)
    return text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdecimal())


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


@dataclass
class DataConfig:
    """Where the data comes from and how it is read (see maskdepth.data.open_dataset)."""

    path: str = ""  # a zip with its manifest, or a manifest.csv
    size: int = 64  # side of the square images the model sees
    num_workers: int = 0  # DataLoader worker processes
    in_memory: bool = True  # load the zip into RAM (Colab) or memory-map it
    split_mode: str = _choice("bg", "bg", "random")  # hold out whole backgrounds, or leak them
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/val/test
    split_seed: int = 0
    # Paired augmentation of training batches on the device (maskdepth.data.augment), the one path:
    flip: bool = False  # mirror bg, fg_bg, mask and depth together, p = 1/2
    crop: float = 0.0  # crop a square of side in [1 - crop, 1] x size and resize back (0: off)
    photometric: float = 0.0  # shared colour jitter of this strength, plus a small one per image (0: off)
    skip_bad: bool = False  # skip undecodable samples (and count them) instead of stopping

    def dataset_options(self) -> dict[str, Any]:
        """Keyword options of `maskdepth.data.open_dataset` that fix which samples a split holds."""
        return dict(split_mode=self.split_mode, fractions=tuple(self.fractions), split_seed=self.split_seed,
                    in_memory=self.in_memory, skip_bad=self.skip_bad)


@dataclass
class ModelConfig:
    """Architecture. Options left at null take the model's own defaults."""

    name: str = _choice("maskdepth", "maskdepth", "seed")
    base_channels: int | None = None
    num_stages: int | None = None
    context: str | None = None  # none | ppm (pyramid pooling at the bottleneck)
    depth_sees_mask: bool | None = None  # the depth head also sees the predicted mask
    coords: bool | None = None  # two input channels of pixel coordinates
    dropout: float | None = None  # Dropout2d on the bottleneck features
    blocks: int | None = None  # residual blocks per encoder level (default 1)
    # depth that knows its scale (issue 22; docs/results.md, "Depth scale"):
    scale_head: bool | None = None  # depth = shape from the decoder x one scale per image from pooled features
    ruler: bool | None = None  # the depth head sees the mask, the object's pixel height and foot row
    log_depth: bool | None = None  # the depth head outputs log depth (pair with a larger loss.w_silog)
    # the seed decoders' activation: relu (what the 2020 model_1.py runs: its nn.ReLU(0.2) is a
    # plain ReLU) or leaky_relu (slope 0.2, what the 2020 notebook's model summary shows)
    seed_activation: str = _choice("relu", "relu", "leaky_relu")
    # MaskDepthNet's encoder: a name of the registry, maskdepth.model.encoders (docs/encoders.md)
    encoder: str = _choice("own", *ENCODERS)
    # weights for a torchvision encoder: none, imagenet (downloaded, e.g. on Colab) or the path of a
    # local torchvision state_dict; loaded when a run starts, not on resume (the checkpoint has them)
    pretrained: str = "none"

    def options(self) -> dict[str, Any]:
        """Keyword options for `build_model` of this model, without the ones left at null."""
        options = {k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("name", "seed_activation", "encoder", "pretrained") and v is not None}
        if self.name == "maskdepth" and self.encoder != "own":
            options["encoder"] = self.encoder
        if self.name == "seed":
            options["activation"] = self.seed_activation
        return options


@dataclass
class LossConfig:
    """Weights of DiceBCELoss (mask) and DepthLoss (DenseDepth), and of the two tasks."""

    bce_weight: float = 1.0
    dice_weight: float = 1.0
    w_depth: float = 0.1
    w_ssim: float = 1.0
    w_edge: float = 1.0
    w_silog: float = 0.0  # scale-invariant log loss (Eigen et al.; AdaBins' SILog), 0: off
    w_grad: float = 0.0  # multi-scale gradient matching (MiDaS), 0: off
    mask_weight: float = 1.0
    depth_weight: float = 1.0


@dataclass
class TrainConfig:
    """The optimisation loop, checkpoints and what each epoch leaves behind."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = _choice("adamw", "adam", "adamw")
    schedule: str = _choice("onecycle", "onecycle", "cosine", "constant")
    warmup: float = 0.1  # fraction of all steps spent warming up
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    amp: str = _choice("auto", "auto", "bf16", "fp16", "fp32")  # auto: bf16 (or fp16) on CUDA, fp32 on CPU
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (CUDA)
    deterministic: bool = False  # torch.use_deterministic_algorithms
    on_nonfinite: str = _choice("stop", "stop", "skip")  # a NaN/inf loss stops the run or skips the batch
    checkpoint_minutes: float = 10.0  # also save last.pt inside an epoch this often (0: only per epoch)
    checkpoint_every: int = 0  # also save last.pt every N steps (0: off)
    keep_last: int = 0  # also keep the last K per-epoch checkpoints as epoch_NNN.pt
    best_metric: str = "val_iou"  # a metrics.csv column; loss/rmse/rel/log columns are minimised
    num_samples: int = 8  # rows of the per-epoch sample grid
    worst_samples: int = 8  # rows of the per-epoch grid of the worst validation samples (0: off)
    max_steps_per_epoch: int = 0  # cap the steps of an epoch (0: the whole split); for smoke tests
    max_minutes: float = 0.0  # stop when the run's training clock (saved in checkpoints) reaches this (0: no limit)
    ema: float = 0.0  # decay of an exponential moving average of the weights, e.g. 0.999 (0: off)
    # a checkpoint whose weights a new run starts from (a fine-tune, e.g. 192 px from a 64 px run's best.pt):
    # weights and input normalisation only, loaded when a run starts, not on resume; "": off
    init_from: str = ""


@dataclass
class LogConfig:
    """Optional logging besides metrics.csv and curves.png (maskdepth.tblog)."""

    tensorboard: bool = False  # write RUN/tb/ (needs the tensorboard package)
    every: int = 10  # optimiser steps between per-step scalars


@dataclass
class Config:
    """A whole run. `run_dir` holds everything the run writes (see docs/architecture.md)."""

    run_dir: str = "runs/quick"
    seed: int = 0
    resume: str = "auto"  # auto | never | path/to/checkpoint.pt
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --------------------------------------------------------------------------------------------
# type checking of values


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp`, or ConfigError naming `key`. ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
    elif tp is type(None):
        if value is None:
            return None
    elif origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, item_tp, key) for v in value]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, section: str, valid: Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    where = f"in '{section}'" if section else "at the top level"
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    hint = f" (did you mean '{(section + '.') if section else ''}{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; valid keys {where}: {', '.join(valid)}")


# Keys that older versions had -> (their old default, what replaced them). A config that sets one
# to anything else fails with one line naming the replacement (ignoring it would leave a run
# without what its config asks for); the old default asked for nothing, and every config.yaml and
# checkpoint those versions saved holds it, so it is accepted and ignored.
REMOVED_KEYS: dict[str, tuple[Any, str]] = {
    "data.augment": (False, "the batch augmentation on the device: data.flip, data.crop, data.photometric"),
}


def _set(obj: Any, key: str, value: Any, full_key: str | None = None) -> None:
    """Set dotted `key` on the dataclass tree `obj`, type-checked."""
    full_key = full_key or key
    if full_key in REMOVED_KEYS:
        old_default, replacement = REMOVED_KEYS[full_key]
        if value is old_default:
            return
        raise ConfigError(f"config key '{full_key}' was removed; use {replacement} instead")
    head, _, rest = key.partition(".")
    fields = _fields(type(obj))
    section = full_key[: len(full_key) - len(key)].rstrip(".")
    if head not in fields:
        raise _unknown_key(full_key, section, fields)
    tp = _hints(type(obj))[head]
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if rest:
            _set(current, rest, value, full_key)
            return
        if not isinstance(value, dict):
            example = next(iter(_fields(type(current))))
            raise ConfigError(f"config key '{full_key}' is a section; set its keys, e.g. {full_key}.{example}=...")
        for sub_key, sub_value in value.items():
            _set(current, str(sub_key), sub_value, f"{full_key}.{sub_key}")
        return
    if rest:
        raise _unknown_key(full_key, section, fields)
    choices = fields[head].metadata.get("choices")
    try:
        value = _coerce(value, tp, full_key)
    except ConfigError:
        if not choices:
            raise
        value = None  # reported below with the choices
    if choices and value not in choices:
        raise ConfigError(f"config key '{full_key}' must be one of {', '.join(choices)}; got {value!r}")
    setattr(obj, head, value)


MAX_SIZE = 1024  # data.size above this is refused before any memory is allocated (activations grow as size^2)


def _validate(cfg: Config) -> None:
    checks = [
        (16 <= cfg.data.size <= MAX_SIZE, "data.size",
         f"must be in [16, {MAX_SIZE}] (the model is built for 64-192 px)"),
        (is_device_name(cfg.device), "device", "must be auto, cpu, cuda, cuda:N or mps"),
        (cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (len(cfg.data.fractions) == 3 and all(f >= 0 for f in cfg.data.fractions) and sum(cfg.data.fractions) > 0,
         "data.fractions", "must be three non-negative numbers (train, val, test)"),
        (cfg.train.epochs >= 1, "train.epochs", "must be >= 1"),
        (cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (cfg.train.lr > 0, "train.lr", "must be > 0"),
        (0 <= cfg.train.warmup < 1, "train.warmup", "must be in [0, 1)"),
        (cfg.train.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 turns clipping off)"),
        (cfg.train.checkpoint_minutes >= 0, "train.checkpoint_minutes", "must be >= 0"),
        (cfg.train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0"),
        (cfg.train.keep_last >= 0, "train.keep_last", "must be >= 0"),
        (cfg.log.every >= 1, "log.every", "must be >= 1"),
        (cfg.train.num_samples >= 0, "train.num_samples", "must be >= 0"),
        (cfg.train.worst_samples >= 0, "train.worst_samples", "must be >= 0 (0: off)"),
        (cfg.train.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0"),
        (cfg.train.max_minutes >= 0, "train.max_minutes", "must be >= 0 (0: no limit)"),
        (0 <= cfg.train.ema < 1, "train.ema", "must be in [0, 1) (0: off; 0.999 is typical)"),
        (0 <= cfg.data.crop < 1, "data.crop", "must be in [0, 1) (0: off)"),
        (0 <= cfg.data.photometric <= 1, "data.photometric", "must be in [0, 1] (0: off)"),
        (cfg.loss.w_silog >= 0, "loss.w_silog", "must be >= 0 (0: off)"),
        (cfg.loss.w_grad >= 0, "loss.w_grad", "must be >= 0 (0: off)"),
        (cfg.model.name == "seed" or cfg.model.seed_activation == "relu", "model.seed_activation",
         "applies only to model.name=seed (leave it at relu)"),
        (cfg.model.name == "maskdepth" or cfg.model.encoder == "own", "model.encoder",
         "applies only to model.name=maskdepth (leave it at own)"),
        (cfg.model.pretrained == "none" or cfg.model.encoder != "own", "model.pretrained",
         f"needs a torchvision encoder (model.encoder: {', '.join(PRETRAINED_ENCODERS)})"),
        (not cfg.train.init_from or cfg.model.pretrained == "none", "model.pretrained",
         f"must be none with train.init_from={cfg.train.init_from} (the checkpoint's weights replace it)"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' {message}; got {_get(cfg, key)!r}")
    if not cfg.run_dir:
        raise ConfigError("config key 'run_dir' must name a folder for the run's outputs")


def _field_type(key: str) -> Any:
    """The declared type of dotted `key`, or None if there is no such key."""
    cls: Any = Config
    tp: Any = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls) or part not in _fields(cls):
            return None
        tp = _hints(cls)[part]
        cls = tp
    return tp


def _get(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', 0.001). The value is read as YAML (numbers, bools, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # A value YAML reads as a date or similar is meant as text.
    if not isinstance(value, (str, int, float, bool, list, type(None))):
        value = raw
    return key.strip(), value


def config_from_dict(
    data: dict[str, Any], overrides: Iterable[str] = (), *, source: str | None = None
) -> Config:
    """A validated Config from a nested dict, then `key=value` overrides on top.

    `source` (a file name) prefixes errors about keys that came from `data`.
    """
    cfg = Config()
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'a config'} must be a mapping of keys, got {type(data).__name__}")
    try:
        for key, value in data.items():
            _set(cfg, str(key), value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    for text in overrides:
        key, value = parse_override(text)
        if _field_type(key) is str and value is not None and not isinstance(value, str):
            value = text.partition("=")[2].strip()  # text fields take the text as typed, e.g. paths with ': '
        _set(cfg, key, value)
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike[str] | None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (or start from defaults when `path` is None) and apply overrides."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data, overrides, source=str(path) if path is not None else None)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON/torch.load(weights_only=True) friendly)."""
    return dataclasses.asdict(cfg)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def diff_configs(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every key whose value differs, in key order."""
    a, b = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    return [(k, a[k], b[k]) for k in a if a[k] != b[k]]


def save_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
