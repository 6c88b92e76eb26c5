"""Config: YAML + overrides, type checking, one-line errors naming the key, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from maskdepth.cli import main
from maskdepth.config import Config, config_from_dict, config_to_dict, load_config, save_config
from maskdepth.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["quick.yaml", "full192.yaml", "seed.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    # docs/architecture.md: every config has these keys
    for key in ("run_dir", "seed", "resume"):
        assert getattr(cfg, key) is not None
    assert cfg.data.path and cfg.data.size in (64, 192)
    assert cfg.model.name in ("maskdepth", "seed")


def test_overrides_are_typed() -> None:
    cfg = load_config(CONFIGS / "quick.yaml", ["train.epochs=3", "data.size=32", "train.lr=1e-3",
                                               "data.in_memory=false", "data.fractions=[0.6, 0.2, 0.2]",
                                               "model.base_channels=8", "run_dir=some/where"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.data.size == 32
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.data.in_memory is False
    assert cfg.data.fractions == [0.6, 0.2, 0.2]
    assert cfg.model.options() == {"base_channels": 8}
    assert cfg.run_dir == "some/where"


def test_integer_accepted_for_float_but_not_the_reverse() -> None:
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"'train.epochs' must be int, got 2.5"):
        load_config(None, ["train.epochs=2.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown config key 'train.epoch' \(did you mean 'train.epochs'\?\); valid keys in 'train': .*epochs"),
        ("trian.epochs=3", r"unknown config key 'trian.epochs'.*valid keys at the top level: data, device"),
        ("train.epochs=many", r"'train.epochs' must be int, got 'many'"),
        ("data.in_memory=maybe", r"'data.in_memory' must be bool"),
        ("train.optimizer=sgd", r"'train.optimizer' must be one of adam, adamw; got 'sgd'"),
        ("model.name=resnet", r"'model.name' must be one of maskdepth, seed"),
        ("model.seed_activation=gelu", r"'model.seed_activation' must be one of relu, leaky_relu; got 'gelu'"),
        ("model.seed_activation=leaky_relu", r"'model.seed_activation' applies only to model.name=seed"),
        ("train=3", r"'train' is a section"),
        ("train.epochs", r"must look like key=value"),
        ("train.epochs=0", r"'train.epochs' must be >= 1"),
        ("data.fractions=[0.5, 0.5]", r"'data.fractions' must be three"),
        ("data.crop=1", r"'data.crop' must be in \[0, 1\)"),
        ("data.photometric=2", r"'data.photometric' must be in \[0, 1\]"),
        ("train.ema=1.5", r"'train.ema' must be in \[0, 1\)"),
        ("train.max_minutes=-1", r"'train.max_minutes' must be >= 0"),
        ("loss.w_silog=-1", r"'loss.w_silog' must be >= 0"),
        ("loss.w_grad=-0.5", r"'loss.w_grad' must be >= 0"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.learning_rate'"):
        load_config(path)


def test_removed_data_augment_names_its_replacement_in_one_line(tmp_path: Path, capsys) -> None:
    """data.augment (dataset-side flip + colour jitter) is gone: asking for it, in a file or an
    override, fails with one line naming data.flip / data.crop / data.photometric; its old
    default, which every config.yaml and checkpoint of older versions holds, still loads."""
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  size: 32\n  augment: true\n")
    for source, overrides in ((path, []), (None, ["data.augment=true"])):
        with pytest.raises(ConfigError) as caught:
            load_config(source, overrides)
        message = str(caught.value)
        assert "'data.augment' was removed" in message and "\n" not in message
        assert all(key in message for key in ("data.flip", "data.crop", "data.photometric"))
    assert str(path) in str(pytest.raises(ConfigError, load_config, path).value)
    assert main(["train", str(path), f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.flip" in err
    saved = config_to_dict(Config())
    saved["data"]["augment"] = False  # what older versions saved
    assert config_from_dict(saved) == Config() == load_config(None, ["data.augment=false"])
    assert "augment" not in config_to_dict(Config())["data"]


def test_missing_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "quick.yaml", ["train.epochs=5", "model.num_stages=3"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 5
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_defaults_are_valid() -> None:
    assert config_from_dict({}) == Config()


def test_cli_reports_config_error_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(CONFIGS / "quick.yaml"), "train.epoch=3", f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown config key 'train.epoch'" in err
    assert not (tmp_path / "r").exists()


def test_text_values_are_taken_as_typed() -> None:
    cfg = load_config(None, ["data.path=/drive/My Drive/run: 2/data.zip", "run_dir=[runs]", "train.best_metric=val_rmse"])
    assert cfg.data.path == "/drive/My Drive/run: 2/data.zip"
    assert cfg.run_dir == "[runs]"


def test_seed_activation_reaches_the_seed_model_only() -> None:
    import torch

    from maskdepth.config import diff_configs
    from maskdepth.model import build_model

    cfg = load_config(CONFIGS / "seed.yaml")
    assert cfg.model.seed_activation == "relu"  # what the repo's seed model has always been
    assert cfg.model.options() == {"activation": "relu"}
    leaky = load_config(CONFIGS / "seed.yaml", ["model.seed_activation=leaky_relu"])
    assert leaky.model.options() == {"activation": "leaky_relu"}
    model = build_model(leaky.model.name, **leaky.model.options())
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in model.modules())
    # maskdepth never sees the key; a config written before it existed resumes unchanged
    assert "activation" not in load_config(CONFIGS / "quick.yaml").model.options()
    older = config_to_dict(cfg)
    del older["model"]["seed_activation"]
    assert diff_configs(config_from_dict(older), cfg) == []
