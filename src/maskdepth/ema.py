"""Exponential moving average of a model's weights (what training evaluates and saves when on).

    ema = ModelEMA(model, decay=0.999)
    ...  optimizer.step(); ema.update(model)
    evaluate(ema.module, ...)

After update n (counting from 1) every floating-point parameter and buffer is
    ema = d_n * ema + (1 - d_n) * weight,   d_n = min(decay, (1 + n) / (10 + n)),
the warm-up of timm's ModelEmaV2 / TensorFlow's ExponentialMovingAverage with num_updates, so
that early in a short run the average is not dominated by the random initialisation. Integer
buffers (BatchNorm's num_batches_tracked) are copied. The state (`state_dict()`) is the averaged
weights plus the update count, so a resumed run continues the same average exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """An averaged copy of `model` (kept on the same device, in eval mode, without gradients)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold `model`'s current weights (same architecture) into the average."""
        d = self.current_decay()
        source = model.state_dict()
        for name, avg in self.module.state_dict().items():
            new = source[name].detach()
            if avg.is_floating_point():
                avg.mul_(d).add_(new.to(avg.dtype), alpha=1 - d)
            else:
                avg.copy_(new)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


__all__ = ["ModelEMA"]
