"""scripts/drive_budget.py: the checkpoint size and Drive-trash figures docs/robustness.md and the notebook quote."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from maskdepth.config import load_config
from maskdepth.model import build_model

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("drive_budget", REPO / "scripts" / "drive_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checkpoint_size_is_weights_plus_two_adam_moments_and_the_trash_adds_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = _script()
    overrides = ["model.base_channels=8", "train.checkpoint_minutes=10", "train.keep_last=2"]
    size = script.checkpoint_bytes(str(REPO / "configs" / "full192.yaml"), overrides)
    cfg = load_config(REPO / "configs" / "full192.yaml", overrides)
    model = build_model(cfg.model.name, **cfg.model.options())
    tensors = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * 4 for p in model.parameters())
    assert tensors + 2 * params < size < tensors + 2 * params + 200_000  # + config, history, RNG states
    script.main([str(REPO / "configs" / "full192.yaml"), "--hours", "5", "--epoch-minutes", "20", *overrides])
    out = capsys.readouterr().out
    # 5 h: 30 mid-epoch last.pt + 15 epochs x (last.pt, best.pt, an epoch_NNN.pt deleted) = 75 files
    files, gb = re.search(r"about (\d+) replaced files, ([\d.]+) GB", out).groups()
    assert int(files) == 75 and float(gb) == pytest.approx(75 * size / 1e9, abs=0.051)
