"""The run directory's lifecycle on its own, without training: which checkpoint a run continues
from, when a run is finished, what an epoch's end writes and what a restart repairs. The same
behaviour end to end (kills, resumes, refusals) is in test_train.py and test_faults.py.

    pytest tests/test_rundir.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from maskdepth.checkpoint import Checkpoint, TrainState
from maskdepth.config import load_config
from maskdepth.errors import ConfigError
from maskdepth.rundir import (grid_path, last_checkpoint, repair_run_dir, resume_source, run_finished, save_epoch,
                              training_clock)


def _rows(n: int, seconds: float = 30.0) -> list[dict[str, Any]]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_iou": 0.1 * e, "lr": 1e-3, "seconds": seconds, "steps": 4 * e}
            for e in range(1, n + 1)]


def test_resume_source_follows_resume_and_prefers_the_runs_own_progress(tmp_path: Path) -> None:
    run, notes = tmp_path / "run", []
    assert resume_source(load_config(None, [f"run_dir={run}"]), run, notes.append) is None  # auto, nothing yet
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        resume_source(load_config(None, [f"resume={tmp_path / 'missing.pt'}"]), run, notes.append)
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    assert resume_source(load_config(None, [f"resume={other}"]), run, notes.append) == other
    last_checkpoint(run).parent.mkdir(parents=True)
    last_checkpoint(run).write_bytes(b"x")
    assert resume_source(load_config(None, []), run, notes.append) == last_checkpoint(run)
    assert resume_source(load_config(None, [f"resume={other}"]), run, notes.append) == last_checkpoint(run)
    assert notes and "continuing from it" in notes[-1]
    with pytest.raises(ConfigError, match="is not empty and resume=never"):
        resume_source(load_config(None, ["resume=never"]), run, notes.append)


def test_a_run_is_finished_when_its_epochs_or_its_time_budget_are_spent(tmp_path: Path) -> None:
    assert training_clock(_rows(3), 5.0) == 95.0
    notes: list[str] = []
    cfg = load_config(None, ["train.epochs=3"])
    assert run_finished(TrainState(epoch=3, history=_rows(3)), cfg, tmp_path, notes.append)
    assert "raise train.epochs" in notes[-1]
    assert not run_finished(TrainState(epoch=2, history=_rows(2)), cfg, tmp_path, notes.append)
    budget = load_config(None, ["train.epochs=3", "train.max_minutes=1"])
    assert run_finished(TrainState(epoch=2, history=_rows(2)), budget, tmp_path, notes.append)
    assert "raise train.max_minutes" in notes[-1]
    # inside an epoch the budget is checked by the loop, not here
    assert not run_finished(TrainState(epoch=2, batch_in_epoch=1, history=_rows(2)), budget, tmp_path, notes.append)


def test_save_epoch_writes_last_first_and_keeps_the_last_k(tmp_path: Path) -> None:
    cfg, written = load_config(None, ["train.keep_last=2"]), []

    def save(path: Path) -> None:
        written.append(path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"state")

    for epoch in (1, 2, 3):
        save_epoch(tmp_path, cfg, TrainState(epoch=epoch, history=_rows(epoch)), improved=epoch == 2, save=save)
    assert written == ["last.pt", "epoch_001.pt", "last.pt", "best.pt", "epoch_002.pt", "last.pt", "epoch_003.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "epoch_002.pt", "epoch_003.pt",
                                                                            "last.pt"]
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4 and (tmp_path / "curves.png").is_file()


def test_repair_derives_what_a_kill_left_missing_from_last_pt(tmp_path: Path) -> None:
    last = last_checkpoint(tmp_path)
    last.parent.mkdir(parents=True)
    last.write_bytes(b"the state of epoch 2")
    ck = Checkpoint(last, {}, {}, TrainState(epoch=2, history=_rows(2)), None, {})
    drawn: list[int] = []
    cfg = load_config(None, ["train.keep_last=1"])
    repair_run_dir(tmp_path, ck, cfg, draw_grid=lambda row: drawn.append(row["epoch"]))
    for name in ("best.pt", "epoch_002.pt"):  # epoch 2 has the best val_iou
        assert (last.parent / name).read_bytes() == b"the state of epoch 2"
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "curves.png").is_file()
    assert drawn == [2]
    (last.parent / "best.pt").unlink()  # this time only best.pt is missing
    grid_path(tmp_path, 2).parent.mkdir(parents=True)
    grid_path(tmp_path, 2).write_bytes(b"png")
    repair_run_dir(tmp_path, ck, load_config(None, []), draw_grid=lambda row: drawn.append(row["epoch"]))
    assert (last.parent / "best.pt").is_file() and drawn == [2]  # the grid is there: not drawn again
