"""Device, precision and learning rate: resolved once, by rule."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from maskdepth import runtime
from maskdepth.config import load_config
from maskdepth.errors import ConfigError
from maskdepth.train import lr_at, lr_factor

from conftest import QUICK


@pytest.mark.parametrize("capability, native, expected", [
    ((7, 5), False, torch.float16),   # T4: fp16 + GradScaler, not emulated bf16
    ((7, 0), False, torch.float16),   # V100
    ((6, 0), False, torch.float16),   # P100
    ((8, 0), True, torch.bfloat16),   # A100
    ((9, 0), True, torch.bfloat16),   # H100
])
def test_amp_auto_picks_bf16_only_where_it_is_native(
    capability, native, expected, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native or including_emulation)
    dtype, why = runtime.amp_dtype("auto", torch.device("cuda", 0))
    assert dtype == expected
    assert f"compute capability {capability[0]}.{capability[1]}" in why and "Fake GPU" in why
    assert ("GradScaler" in why) == (expected == torch.float16)


def test_amp_on_cpu() -> None:
    assert runtime.amp_dtype("auto", torch.device("cpu")) == (None, "fp32 (no CUDA)")
    assert runtime.amp_dtype("bf16", torch.device("cpu"))[0] == torch.bfloat16
    # fp16 on the CPU: tests/test_amp.py; where this torch lacks it, the probe's reason is the error
    with pytest.raises(ConfigError, match="train.amp=fp16 needs CUDA here: torch .* lacks it"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runtime, "cpu_fp16_unsupported", lambda: "torch 2.2 lacks it")
            runtime.amp_dtype("fp16", torch.device("cpu"))


def test_resolve_device() -> None:
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda:1 but CUDA is not available here"):
            runtime.resolve_device("cuda:1")


def test_lr_is_a_pure_function_of_the_step() -> None:
    cfg = load_config(QUICK, ["train.lr=0.01", "train.schedule=onecycle", "train.warmup=0.1"])
    total = 100
    lrs = [lr_at(cfg, s, total) for s in range(total)]
    assert lrs == [lr_at(cfg, s, total) for s in range(total)]  # no hidden state
    assert lrs[0] == pytest.approx(0.01 * (0.04 + 0.96 / 10))  # warm-up from lr/25
    assert max(lrs) == pytest.approx(0.01) and lrs[9] == pytest.approx(0.01)
    assert lrs[-1] < 0.01 * 0.01 and all(a >= b for a, b in pairwise(lrs[9:]))  # cosine decay
    assert lr_factor("constant", 50, 100, 0.0) == 1.0
    mid = lr_factor("cosine", 55, 100, 0.1)
    assert mid == pytest.approx(1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 0.5)))
