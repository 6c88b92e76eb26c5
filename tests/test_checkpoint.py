"""Checkpoints: atomic writes that survive failures, safe loading, RNG round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from maskdepth.checkpoint import all_finite, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from maskdepth.errors import CheckpointError, DiskFullError


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "config": {"model": {"name": "maskdepth"}}, "epoch": 1}


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ck" / "last.pt", _state(2.0))
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.full((3,), 2.0))
    assert state["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFullError,
                       match=r"^no space left on device writing .*last.pt \(the previous last.pt is kept\)$"):
        save_checkpoint(path, _state(5.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_truncated_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    good = save_checkpoint(tmp_path / "good.pt", _state(1.0))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.pt is unreadable"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a maskdepth checkpoint"):
        load_checkpoint(foreign)


def test_rng_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "rng.pt", {**_state(0.0), "rng": capture_rng()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_all_finite() -> None:
    layer = torch.nn.Linear(2, 2)
    assert all_finite(layer)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    assert not all_finite(layer)


def _format_1(state: dict) -> dict:
    """A format-2 state as maskdepth 0.x (format 1) wrote it: LambdaLR state, flat epoch sums."""
    old = dict(state)
    old.pop("format")
    sums = old.pop("epoch_sums")
    old["scheduler"] = {"base_lrs": [0.002], "last_epoch": old["step"], "_step_count": old["step"] + 1}
    old["sampler_seed"] = 0
    s, c = sums["sums"]["sums"], sums["sums"]["counts"]
    old["epoch_sums"] = {"loss": s["train_loss"], "mask": s["train_mask_loss"], "depth": s["train_depth_loss"],
                         "images": c["train_loss"], "skipped_batches": int(s.get("skipped_batches", 0)),
                         "skipped_samples": int(s.get("skipped_samples", 0)), "seconds": sums["seconds"]}
    return old


def test_format_1_checkpoints_are_migrated_and_newer_ones_refused(tmp_path: Path) -> None:
    from maskdepth.checkpoint import FORMAT, TrainState, make_state, read_checkpoint
    from maskdepth.metrics import MetricAccumulator

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    acc = MetricAccumulator()
    for key, value in (("train_loss", 6.0), ("train_mask_loss", 4.0), ("train_depth_loss", 2.0)):
        acc.add(key, value, 3)
    acc.add("skipped_samples", 2)
    ts = TrainState(epoch=1, batch_in_epoch=2, step=7, best_metric=0.5, history=[{"epoch": 1}],
                    sums=acc.state_dict(), epoch_seconds=12.5)
    from maskdepth.runtime import grad_scaler

    state = make_state(ts, config={"model": {"name": "maskdepth"}}, model=model, optimizer=optimizer,
                       scaler=grad_scaler(False), splits={"train": ["bg000"]})
    save_checkpoint(tmp_path / "old.pt", _format_1(state))
    ck = read_checkpoint(tmp_path / "old.pt")
    assert ck.state["format"] == FORMAT and "scheduler" not in ck.state
    assert (ck.train.epoch, ck.train.batch_in_epoch, ck.train.step, ck.train.epoch_seconds) == (1, 2, 7, 12.5)
    resumed = MetricAccumulator().load_state_dict(ck.train.sums)
    assert resumed.compute()["train_loss"] == acc.compute()["train_loss"] == 2.0
    assert resumed.total("skipped_samples") == 2 and ck.splits == {"train": ["bg000"]}

    save_checkpoint(tmp_path / "new.pt", {**state, "format": FORMAT + 1})
    with pytest.raises(CheckpointError, match=f"has format {FORMAT + 1}, newer than this maskdepth reads"):
        load_checkpoint(tmp_path / "new.pt")


def test_text_files_are_not_checkpoints(tmp_path: Path) -> None:
    for name, text in (("config.yaml", "run_dir: runs/x\n"), ("metrics.csv", "epoch,train_loss\n1,0.5\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(CheckpointError, match=f"{name} is not a maskdepth checkpoint"):
            load_checkpoint(tmp_path / name)


def test_a_run_directory_stands_for_its_best_checkpoint(tmp_path: Path) -> None:
    """Issue 24: `export RUNDIR` said "checkpoint RUNDIR not found" though the folder exists. A run
    directory (or its checkpoints folder) is read as RUN/checkpoints/best.pt, else last.pt; resume
    prefers last.pt; a folder with neither is one line naming both paths."""
    from maskdepth.checkpoint import read_checkpoint, resolve_checkpoint

    run = tmp_path / "run"
    folder = run / "checkpoints"
    save_checkpoint(folder / "last.pt", _state(1.0))
    assert resolve_checkpoint(run) == folder / "last.pt"  # no best.pt yet (Ctrl-C in the first epoch)
    assert torch.equal(load_checkpoint(run)["model"]["w"], torch.full((3,), 1.0))
    save_checkpoint(folder / "best.pt", _state(2.0))
    assert resolve_checkpoint(run) == folder / "best.pt" == resolve_checkpoint(folder)
    assert resolve_checkpoint(run, prefer=("last.pt", "best.pt")) == folder / "last.pt"
    assert resolve_checkpoint(folder / "last.pt") == folder / "last.pt"  # a file stays as it is
    ck = read_checkpoint(run)
    assert ck.path == folder / "best.pt" and torch.equal(ck.weights["w"], torch.full((3,), 2.0))
    empty = tmp_path / "empty"
    empty.mkdir()
    for given in (empty, empty / "checkpoints"):
        given.mkdir(exist_ok=True)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(given)
        assert str(err.value) == (
            f"{given} is a folder, not a checkpoint, and holds neither {empty / 'checkpoints' / 'best.pt'} nor "
            f"{empty / 'checkpoints' / 'last.pt'}; pass a checkpoint file, or a run directory that has saved one")


def test_atomically_written_files_follow_the_umask(umask: int, tmp_path: Path) -> None:
    """Issue 24: mkstemp made every atomically written file 0600 whatever the umask, so a run
    directory shared with a group (or on Drive) was unreadable to the others."""
    from maskdepth.config import load_config, save_config
    from maskdepth.fileio import atomic_open, write_atomic

    from conftest import QUICK

    written = [save_checkpoint(tmp_path / "checkpoints" / "last.pt", _state(1.0)),
               write_atomic(tmp_path / "split.json", "{}\n"),
               save_config(load_config(QUICK), tmp_path / "config.yaml")]
    with atomic_open(tmp_path / "metrics.csv", "w") as f:
        f.write("epoch\n")
    written.append(tmp_path / "metrics.csv")
    save_checkpoint(written[0], _state(2.0))  # replacing a file gives the new one the same mode
    for path in written:
        assert path.stat().st_mode & 0o777 == umask, (path.name, oct(path.stat().st_mode & 0o777))
    from maskdepth import fileio

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    with pytest.MonkeyPatch.context() as mp:  # where /proc/self/status is not there (macOS): os.umask, put back
        mp.setattr(fileio, "open", no_proc, raising=False)
        assert fileio.user_file_mode() == umask and fileio.user_file_mode() == umask
        write_atomic(tmp_path / "split.json", "{}\n")
    assert (tmp_path / "split.json").stat().st_mode & 0o777 == umask
