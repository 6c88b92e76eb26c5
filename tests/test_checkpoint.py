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
    with pytest.raises(DiskFullError, match=r"^no space left on device writing .*last.pt \(the previous last.pt is kept\)$"):
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
