"""train.init_from: a new run starts from another run's weights, and nothing else of it (issue 22, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskdepth.checkpoint import load_checkpoint, load_init_weights
from maskdepth.config import load_config
from maskdepth.errors import CheckpointError, ConfigError
from maskdepth.model import build_model
from maskdepth.train import build, fit

from conftest import QUICK

ONE_STEP = ["train.epochs=1", "train.max_steps_per_epoch=1", "train.worst_samples=0"]


@pytest.fixture
def source(tiny_data: Path, tmp_path: Path) -> Path:
    """best.pt of a one-step run at 64 px, on an archive of its own (another data.size than tiny_data's 32)."""
    from maskdepth.synth import make_dataset

    data = tmp_path / "d64.zip"
    make_dataset(data, size=64, num_bg=5, num_fg=2, per_pair=1, seed=1, workers=1, progress=False)
    fit(load_config(QUICK, [f"data.path={data}", f"run_dir={tmp_path / 'src'}", "data.size=64", "data.num_workers=0",
                            "train.batch_size=4", "train.num_samples=0", "train.checkpoint_minutes=0",
                            "model.base_channels=8", "device=cpu", *ONE_STEP]))
    return tmp_path / "src" / "checkpoints" / "best.pt"


def test_a_new_run_starts_from_the_weights_only(source: Path, tiny_overrides: list[str]) -> None:
    cfg = load_config(QUICK, [*tiny_overrides, f"train.init_from={source}", "train.ema=0.9"])
    assert cfg.data.size == 32  # the source trained at 64 px: a fully convolutional net takes both
    p = build(cfg)
    theirs = load_checkpoint(source)["model"]
    for name, ours in p.model.state_dict().items():
        assert torch.equal(ours, theirs[name]), name  # the normalisation buffers (input_mean/std) too
    for name, ours in p.ema.module.state_dict().items():
        assert torch.equal(ours, theirs[name]), name  # the EMA starts from them
    assert p.optimizer.state_dict()["state"] == {}  # a fresh optimiser: no Adam moments, no step


def test_init_from_run_records_it_trains_and_resumes_from_its_own_checkpoint(
        source: Path, tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*tiny_overrides, f"train.init_from={source}", "train.max_steps_per_epoch=1", "train.worst_samples=0"]
    run = fit(load_config(QUICK, [*args, "train.epochs=1"]))
    out = capsys.readouterr()
    assert f"initialised from {source}" in out.out + out.err  # the log says what was loaded
    assert load_config(run / "config.yaml").train.init_from == str(source)  # and the run records it
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 1 and len(state["history"]) == 1  # a history of its own, from step 0
    row = state["history"][0]  # and the row has val_score (issue 22, item 4)
    assert row["val_score"] == pytest.approx((row["val_iou"] + row["val_delta1"]) / 2)
    source.unlink()  # a resume that read CKPT again would fail now
    fit(load_config(QUICK, [*args, "train.epochs=2"]))
    out = capsys.readouterr()
    assert "initialised from" not in out.out + out.err and "resuming" in out.out + out.err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


def test_weights_that_do_not_fit_are_one_line_naming_tensors_and_keys(source: Path, tiny_overrides: list[str]) -> None:
    with pytest.raises(CheckpointError) as err:
        build(load_config(QUICK, [*tiny_overrides, f"train.init_from={source}", "model.base_channels=16"]))
    message = str(err.value)
    assert "\n" not in message and str(source) in message
    assert "of another shape (e.g. " in message  # the first mismatched tensor, with both shapes
    assert "model.base_channels=8 there, 16 here" in message
    with pytest.raises(CheckpointError, match=r"tensors missing \(e\.g\. .*unexpected \(e\.g\. "):
        load_init_weights(build_model("seed"), source)  # another network altogether


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:FutureWarning")
def test_only_checkpoints_are_taken(source: Path, tmp_path: Path) -> None:
    model = build_model("maskdepth", base_channels=8)
    config = source.parents[1] / "config.yaml"
    with pytest.raises(CheckpointError, match="is not a maskdepth checkpoint"):
        load_init_weights(model, config)
    scripted = tmp_path / "export.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    with pytest.raises(CheckpointError, match="is a TorchScript export, not a checkpoint") as err:
        load_init_weights(model, scripted)
    assert "\n" not in str(err.value)
    assert load_init_weights(model, source).startswith(f"initialised from {source} (epoch 1, step 1, trained at 64 px)")


def test_init_from_and_pretrained_are_refused_together(tiny_overrides: list[str]) -> None:
    assert load_config(QUICK, tiny_overrides).train.init_from == ""  # off by default
    with pytest.raises(ConfigError, match=r"model.pretrained' must be none with train.init_from=best.pt") as err:
        load_config(QUICK, [*tiny_overrides, "train.init_from=best.pt", "model.encoder=resnet18",
                            "model.pretrained=imagenet"])
    assert "\n" not in str(err.value)
