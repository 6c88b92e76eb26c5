"""Torchvision encoders (model.encoder) and pretrained weights (model.pretrained), with no download:
the weights come from a state_dict file the test writes, or from a stand-in for torchvision's
weights API.

    pytest tests/test_encoders.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import maskdepth.train as train
from maskdepth.checkpoint import read_checkpoint
from maskdepth.config import load_config
from maskdepth.errors import ConfigError
from maskdepth.model import IMAGENET_MEAN, PRETRAINED_ENCODERS, REGISTRY, build_model, get_encoder, load_pretrained
from maskdepth.train import fit

from conftest import QUICK

DOCS = Path(__file__).resolve().parents[1] / "docs" / "encoders.md"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_registry_entry_gives_the_skips_it_states(name: str) -> None:
    spec = REGISTRY[name]
    encoder = get_encoder(name, 9).eval()
    assert (encoder.stride, encoder.out_channels) == (spec.stride, spec.out_channels)
    with torch.no_grad():
        skips = encoder(torch.rand(2, 9, 64, 96))
    assert [s.shape[1] for s in skips] == list(spec.out_channels)
    assert [tuple(s.shape[-2:]) for s in skips] == [(64 >> i, 96 >> i) for i in range(1, len(skips) + 1)]
    assert 64 // skips[-1].shape[-2] == spec.stride
    assert (spec.mean is None) == (spec.std is None) and (spec.weights is None or spec.mean is not None)


def test_the_registry_is_what_config_and_docs_read() -> None:
    import dataclasses

    from maskdepth.config import ModelConfig

    encoder = next(f for f in dataclasses.fields(ModelConfig) if f.name == "encoder")
    assert encoder.metadata["choices"] == tuple(REGISTRY)
    rows = {line.split("|")[1].strip().split()[0].strip("`") for line in DOCS.read_text().splitlines()
            if line.startswith("| `")}
    assert set(REGISTRY) <= rows, f"docs/encoders.md does not list {sorted(set(REGISTRY) - rows)}"
    with pytest.raises(ConfigError, match="model.encoder must be one of own, resnet18"):
        get_encoder("vit", 9)


def test_config_reads_the_registry_without_importing_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, maskdepth.config, maskdepth.model.encoders; "
            "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("encoder", PRETRAINED_ENCODERS)
def test_each_encoder_builds_and_gives_full_size_outputs(encoder: str) -> None:
    model = build_model("maskdepth", encoder=encoder).eval()
    assert model.stride == 32
    with torch.no_grad():
        logits, depth = model(torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96))
    assert logits.shape == depth.shape == (2, 1, 64, 96)
    assert 0 <= float(depth.min()) and float(depth.max()) <= 1
    with pytest.raises(ConfigError, match="multiple of the network stride 32"):
        model(torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48))


def _saved_weights(name: str, path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    torch.save(state, path)
    return state


@pytest.mark.parametrize("encoder", ["resnet18", "efficientnet_b0"])
def test_a_local_state_dict_lands_in_the_encoder(encoder: str, tmp_path: Path) -> None:
    state = _saved_weights(encoder, tmp_path / "weights.pt")
    model = build_model("maskdepth", encoder=encoder)
    report = load_pretrained(model, str(tmp_path / "weights.pt"))
    assert report.startswith(f"encoder {encoder}: ") and "ImageNet" in report
    ours = model.backbone.net.state_dict()
    stem_key = model.backbone.stem_key
    for key, value in state.items():
        if key == stem_key:
            assert torch.equal(ours[key][:, 3:6], value)  # the fg_bg slot holds the RGB kernel ...
            assert not ours[key][:, :3].any() and not ours[key][:, 6:].any()  # ... bg and difference start at 0
        elif key in ours:
            assert torch.equal(ours[key], value), key
    assert torch.allclose(model.input_mean, torch.tensor(IMAGENET_MEAN))
    # Wrapped state_dicts are accepted; another architecture's is one line.
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    load_pretrained(build_model("maskdepth", encoder=encoder), str(tmp_path / "wrapped.pt"))
    other = "resnet34" if encoder == "resnet18" else "resnet18"
    _saved_weights(other, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=f"not a {encoder} state_dict"):
        load_pretrained(build_model("maskdepth", encoder=encoder), str(tmp_path / "other.pt"))
    with pytest.raises(ConfigError, match="cannot read a state_dict"):
        load_pretrained(model, str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="needs a torchvision encoder"):
        load_pretrained(build_model("maskdepth"), str(tmp_path / "weights.pt"))


def _write_not_a_state_dict(kind: str, path: Path) -> None:
    if kind == "module":
        torch.save(torchvision.models.resnet18(weights=None), path)  # the whole model, not its state_dict
    elif kind == "text":
        path.write_text("resnet18 weights: see the README\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"conv1.weight": 1}, path)


@pytest.mark.parametrize("kind, what", [
    ("module", "a pickled torchvision.models.resnet.ResNet (a whole model saved with torch.save(model)), "
               "not a state_dict"),
    ("text", "a text file, not a file written by torch.save"),
    ("empty", "an empty file"),
    ("list", "holds a list, not a state_dict"),
    ("tensor", "holds a single tensor, not a state_dict"),
    ("dict", "holds a dict whose entry 'conv1.weight' is an int, not a tensor"),
])
def test_a_pretrained_file_that_is_no_state_dict_is_one_line(kind: str, what: str, tmp_path: Path) -> None:
    """Issue 24: model.pretrained=FILE holding a pickled module, text, a list or a tensor gave
    UnpicklingError / KeyError / AttributeError tracebacks. One line: what FILE is, what was expected."""
    path = tmp_path / f"{kind}.pt"
    _write_not_a_state_dict(kind, path)
    with pytest.raises(ConfigError) as err:
        load_pretrained(build_model("maskdepth", encoder="resnet18"), str(path))
    assert str(err.value) == (f"model.pretrained={path}: {what}; expected a torchvision resnet18 state_dict, "
                              "saved with torch.save(model.state_dict(), PATH)")


def test_a_pretrained_module_file_is_one_line_from_the_cli(tiny_overrides: list[str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from maskdepth.cli import main

    path = tmp_path / "module.pt"
    _write_not_a_state_dict("module", path)
    assert main(["train", str(QUICK), *tiny_overrides, "model.encoder=resnet18", f"model.pretrained={path}"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("maskdepth: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"maskdepth: error: model.pretrained={path}: a pickled torchvision.models.resnet.ResNet")


def test_imagenet_goes_through_torchvisions_weights_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = _saved_weights("resnet18", tmp_path / "w.pt")
    asked: list[str] = []

    class Weights:
        @staticmethod
        def get_state_dict(progress: bool = True) -> dict[str, torch.Tensor]:
            return state

    def get_model_weights(name: str) -> object:
        asked.append(name)
        return type("Enum", (), {"DEFAULT": Weights})

    monkeypatch.setattr(torchvision.models, "get_model_weights", get_model_weights)
    model = build_model("maskdepth", encoder="resnet18")
    assert "torchvision's ImageNet weights for resnet18" in load_pretrained(model, "imagenet")
    assert asked == ["resnet18"]
    assert torch.equal(model.backbone.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_config_rules_for_encoders(tiny_overrides: list[str]) -> None:
    cfg = load_config(QUICK, [*tiny_overrides, "model.encoder=resnet34"])
    assert cfg.model.options()["encoder"] == "resnet34"
    assert "encoder" not in load_config(QUICK, tiny_overrides).model.options()
    with pytest.raises(ConfigError, match="model.pretrained' needs a torchvision encoder"):
        load_config(QUICK, [*tiny_overrides, "model.pretrained=imagenet"])
    with pytest.raises(ConfigError, match="model.encoder' applies only to model.name=maskdepth"):
        load_config(QUICK, [*tiny_overrides, "model.name=seed", "model.encoder=resnet18"])
    with pytest.raises(ConfigError, match="must be one of own, resnet18, resnet34, efficientnet_b0"):
        load_config(QUICK, [*tiny_overrides, "model.encoder=vit"])


@pytest.mark.slow
def test_pretrained_encoder_trains_and_resumes_exactly(tiny_overrides: list[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resnet18 run from local weights: one epoch straight, and the same epoch crashed after two
    steps and resumed, end with the same weights; the resume does not read the weights file again."""
    _saved_weights("resnet18", tmp_path / "r18.pt")
    common = [*tiny_overrides, "data.size=32", "model.encoder=resnet18", f"model.pretrained={tmp_path / 'r18.pt'}",
              "train.epochs=1", "train.max_steps_per_epoch=4", "train.checkpoint_every=1", "train.num_samples=0"]
    straight = fit(load_config(QUICK, [*common, f"run_dir={tmp_path / 'a'}"]))
    first = read_checkpoint(straight / "checkpoints" / "last.pt").weights
    stem = first["backbone.net.conv1.weight"]
    assert stem[:, 3:6].abs().sum() > 0 and train.IMAGENET_MEAN == IMAGENET_MEAN

    real, calls = train._optimise, {"n": 0}

    def crash(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        real(*args, **kwargs)

    monkeypatch.setattr(train, "_optimise", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(load_config(QUICK, [*common, f"run_dir={tmp_path / 'b'}"]))
    monkeypatch.setattr(train, "_optimise", real)
    (tmp_path / "r18.pt").unlink()  # a resume must not need the weights file: the checkpoint has them
    resumed = fit(load_config(QUICK, [*common, f"run_dir={tmp_path / 'b'}"]))
    second = read_checkpoint(resumed / "checkpoints" / "last.pt").weights
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
