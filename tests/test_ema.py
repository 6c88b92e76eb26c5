"""ModelEMA: the update formula by hand, integer buffers, and an exact state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskdepth.ema import ModelEMA


def _scalar_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_update_follows_the_warmed_up_decay_by_hand():
    model = _scalar_model(0.0)
    ema = ModelEMA(model, decay=0.5)
    assert ema.current_decay() == pytest.approx(2 / 11)  # (1 + n) / (10 + n) at n = 1, below 0.5
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(9 / 11)  # 2/11 * 0 + 9/11 * 1
    for _ in range(20):
        ema.update(model)
    assert ema.current_decay() == 0.5  # the warm-up no longer binds
    with torch.no_grad():
        model.weight.fill_(3.0)
    before = ema.module.weight.item()
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.5 * before + 0.5 * 3.0)
    assert not ema.module.weight.requires_grad and not ema.module.training


def test_integer_buffers_are_copied_and_float_buffers_averaged():
    model = nn.BatchNorm2d(2)
    ema = ModelEMA(model, decay=0.9)
    model.train()
    model(torch.randn(4, 2, 3, 3) + 5)
    ema.update(model)
    assert ema.module.num_batches_tracked.item() == 1
    d = 2 / 11
    expected = d * torch.zeros(2) + (1 - d) * model.running_mean
    assert torch.allclose(ema.module.running_mean, expected)


def test_state_round_trip_continues_the_same_average():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    a = ModelEMA(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(0.1)
        a.update(model)
    b = ModelEMA(nn.Linear(3, 2), decay=0.99)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        model.weight.add_(0.1)
    a.update(model)
    b.update(model)
    assert b.updates == a.updates == 4
    pairs = zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_decay_out_of_range():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.0)
