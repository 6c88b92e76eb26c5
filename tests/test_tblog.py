"""log.tensorboard: per-step and per-epoch scalars and the sample grid in RUN/tb, read back from
the event files, with no step twice after a crash and a resume.

    pytest tests/test_tblog.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maskdepth.config import load_config
from maskdepth.errors import ConfigError
from maskdepth.train import fit

from conftest import QUICK

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(folder: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_tensorboard_logs_steps_epochs_and_grids_and_resumes_without_duplicates(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maskdepth.train as train

    overrides = [*tiny_overrides, "log.tensorboard=true", "log.every=1", "train.checkpoint_minutes=0"]
    cfg = load_config(QUICK, overrides)
    real, calls = train._optimise, {"n": 0}

    def crash_in_epoch_2(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:  # epoch 1 saved at its end; 2 steps of epoch 2 logged, then a crash
            raise RuntimeError("simulated crash")
        real(*args, **kwargs)

    steps_per_epoch = len(train.build(cfg).train_loader)
    monkeypatch.setattr(train, "_optimise", crash_in_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg)
    crashed = _read(tmp_path / "run" / "tb")
    assert [e.step for e in crashed.Scalars("train/loss")] == list(range(1, steps_per_epoch + 3))

    monkeypatch.setattr(train, "_optimise", real)
    fit(load_config(QUICK, overrides))  # resumes from the end of epoch 1 and trains epoch 2 again
    acc = _read(tmp_path / "run" / "tb")
    assert len(list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))) == 2  # one folder, two sessions
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, 2 * steps_per_epoch + 1)), steps  # every step once: the orphans were purged
    assert {"train/loss", "train/mask_loss", "train/depth_loss", "train/lr", "epoch/val_iou", "epoch/val_rmse",
            "epoch/train_loss"} <= set(acc.Tags()["scalars"])
    ious = acc.Scalars("epoch/val_iou")
    assert [e.step for e in ious] == [steps_per_epoch, 2 * steps_per_epoch]
    import csv

    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [e.value for e in ious] == pytest.approx([float(r["val_iou"]) for r in rows], rel=1e-6)
    images = acc.Images("samples")
    assert [e.step for e in images] == [steps_per_epoch, 2 * steps_per_epoch] and images[0].width > 100


def test_tensorboard_missing_is_one_line(tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from maskdepth.tblog import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError,
                       match="log.tensorboard=true needs the tensorboard package: pip install tensorboard"):
        TensorBoardLog("unused")
    with pytest.raises(ConfigError, match="config key .log.every. must be >= 1; got 0"):
        load_config(QUICK, [*tiny_overrides, "log.every=0"])
