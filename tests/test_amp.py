"""The Colab GPU path run on the CPU: fp16 with a GradScaler (a T4's precision), bf16, channels_last
and torch.compile. Where this torch lacks fp16 on the CPU (torch < 2.4), those tests skip, saying why."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch

from maskdepth import losses, runtime
from maskdepth.checkpoint import load_checkpoint
from maskdepth.config import load_config
from maskdepth.errors import TrainingError
from maskdepth.train import fit

from conftest import QUICK, REPO, run_process_group
from test_train import _rows, _train_cmd, _wait_for_mid_epoch_checkpoint

NO_FP16 = runtime.cpu_fp16_unsupported()
needs_fp16 = pytest.mark.skipif(NO_FP16 is not None, reason=f"no fp16 on the CPU: {NO_FP16}")
INITIAL_SCALE = 65536.0  # GradScaler's init_scale


@pytest.fixture(autouse=True)
def _quiet_cpu_fp16_warning() -> None:
    warnings.filterwarnings("ignore", message="train.amp=fp16 on the CPU is slow")


def _fit(overrides: list[str], *extra: str) -> Path:
    return fit(load_config(QUICK, [*overrides, *extra]))


def _state(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")


def _optimizer_steps(state: dict) -> int:
    """How many optimiser steps AdamW really took (a step the scaler skipped does not count)."""
    return int(state["optimizer"]["state"][0]["step"])


def _poison_depth_loss(monkeypatch: pytest.MonkeyPatch, factor: float, at_call: int) -> dict[str, int]:
    """DepthLoss times `factor` at its `at_call`-th call (validation calls it too, after training)."""
    original, calls = losses.DepthLoss.forward, {"n": 0}

    def poisoned(self, pred, true, *args, **kwargs):
        calls["n"] += 1
        out = original(self, pred, true, *args, **kwargs)
        return out * factor if calls["n"] == at_call else out

    monkeypatch.setattr(losses.DepthLoss, "forward", poisoned)
    return calls


def test_fp16_on_the_cpu_warns_once_or_says_why_not() -> None:
    if NO_FP16 is not None:
        with pytest.raises(Exception, match="train.amp=fp16 needs CUDA here"):
            runtime.amp_dtype("fp16", torch.device("cpu"))
        pytest.skip(f"no fp16 on the CPU: {NO_FP16}")
    with pytest.warns(UserWarning, match="slow: it exists to test the GPU"):
        dtype, why = runtime.amp_dtype("fp16", torch.device("cpu"))
    assert dtype == torch.float16 and "GradScaler on the CPU" in why
    assert runtime.grad_scaler(True, torch.device("cpu")).is_enabled()


@needs_fp16
def test_fp16_scales_the_loss_and_keeps_the_scaler_in_the_checkpoint(tiny_overrides: list[str], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ratios: list[float] = []
    original = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scaled = original(self, outputs)
        ratios.append(float(scaled.detach() / outputs.detach()))
        return scaled

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    run = _fit(tiny_overrides, "train.amp=fp16", "train.epochs=1")
    state = _state(run)
    assert ratios and all(r == pytest.approx(INITIAL_SCALE) for r in ratios)
    assert state["scaler"]["scale"] == INITIAL_SCALE and state["scaler"]["_growth_tracker"] == state["step"]
    assert _optimizer_steps(state) == state["step"] == len(ratios)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
@needs_fp16
def test_an_overflow_step_is_skipped_the_scale_halves_and_a_resume_restores_it(
        tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison_depth_loss(monkeypatch, 1e30, at_call=2)  # finite in fp32, inf in the fp16 gradients
    run = _fit(tiny_overrides, "train.amp=fp16", "train.epochs=1")
    state = _state(run)
    assert state["scaler"]["scale"] == INITIAL_SCALE / 2
    assert _optimizer_steps(state) == state["step"] - 1  # the overflow step was not taken
    assert _rows(run)[0]["skipped_batches"] == "0"  # a finite loss: on_nonfinite is not involved
    monkeypatch.undo()
    state2 = _state(_fit(tiny_overrides, "train.amp=fp16", "train.epochs=2"))
    assert state2["scaler"]["scale"] == INITIAL_SCALE / 2  # restored, not a fresh scaler's 65536
    assert _optimizer_steps(state2) == state2["step"] - 1


@needs_fp16
def test_on_nonfinite_under_the_scaler_stops_or_skips_leaving_the_scale(
        tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _poison_depth_loss(monkeypatch, float("nan"), at_call=2)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 1.*train.on_nonfinite=skip"):
        _fit(tiny_overrides, "train.amp=fp16", "train.epochs=1")
    calls["n"] = 0
    run = _fit(tiny_overrides, "train.amp=fp16", "train.epochs=1", "train.on_nonfinite=skip")
    state = _state(run)
    assert _rows(run)[0]["skipped_batches"] == "1"
    assert state["scaler"]["scale"] == INITIAL_SCALE  # a skipped batch never reaches the scaler
    assert _optimizer_steps(state) == state["step"]


def test_bf16_has_no_scaler_and_on_nonfinite_still_stops(tiny_overrides: list[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run = _fit(tiny_overrides, "train.amp=bf16", "train.epochs=1")
    state = _state(run)
    assert not state["scaler"]  # a disabled scaler's state is empty
    assert _optimizer_steps(state) == state["step"] > 0
    _poison_depth_loss(monkeypatch, float("nan"), at_call=1)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 2"):
        _fit(tiny_overrides, "train.amp=bf16", "train.epochs=2")


def test_channels_last_runs_on_the_cpu(tiny_overrides: list[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from maskdepth import train

    seen: list[bool] = []
    original = train.forward

    def spy(net, bg, fg_bg, amp_dtype):
        seen.append(bg.is_contiguous(memory_format=torch.channels_last) and bg.dim() == 4)
        return original(net, bg, fg_bg, amp_dtype)

    monkeypatch.setattr(train, "channels_last_on", lambda requested, device: requested)  # CUDA-only otherwise
    monkeypatch.setattr(train, "forward", spy)
    run = _fit(tiny_overrides, "train.channels_last=true", "train.epochs=1", "data.flip=true", "data.crop=0.2")
    assert seen and all(seen)
    assert all(torch.isfinite(v).all() for v in _state(run)["model"].values() if v.is_floating_point())


def _inductor_unusable() -> str | None:
    try:
        fn = torch.compile(lambda x: torch.relu(x) + 1)
        fn(torch.randn(4))
    except Exception as exc:  # no C++ compiler, an unsupported platform
        return f"torch.compile cannot compile on this machine: {type(exc).__name__}: {str(exc)[:200]}"
    return None


@pytest.mark.slow
def test_a_compiled_run_saves_plain_keys_and_resumes_uncompiled_and_back(tiny_overrides: list[str],
                                                                         tmp_path: Path) -> None:
    why = _inductor_unusable()
    if why:
        pytest.skip(why)
    run = _fit(tiny_overrides, "train.compile=true", "train.epochs=1")
    for epochs, compiled in ((2, "false"), (3, "true")):
        state = _state(run)
        assert not any("_orig_mod." in k for k in state["model"])
        run = _fit(tiny_overrides, f"train.compile={compiled}", f"train.epochs={epochs}")
    state = _state(run)
    assert state["epoch"] == 3 and not any("_orig_mod." in k for k in state["model"])
    assert [r["epoch"] for r in _rows(run)] == ["1", "2", "3"]


@pytest.mark.slow
@pytest.mark.parametrize("amp", [pytest.param("fp16", marks=needs_fp16), "bf16"])
def test_sigkill_mid_epoch_resumes_bit_exact_under_amp(amp: str, tiny_overrides: list[str], tmp_path: Path) -> None:
    common = [*tiny_overrides, "train.epochs=2", "train.checkpoint_every=1", f"train.amp={amp}", "train.ema=0.9",
              "data.flip=true"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONWARNINGS": "ignore"}
    reference = run_process_group(_train_cmd([*common, f"run_dir={tmp_path / 'reference'}"]), env=env, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = [*common, f"run_dir={tmp_path / 'killed'}"]
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_mid_epoch_checkpoint(last, proc)
        time.sleep(0.3)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    resumed = run_process_group(_train_cmd(killed), env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref, got = _state(tmp_path / "reference"), _state(tmp_path / "killed")
    for key in ("model", "raw_model"):
        assert all(torch.equal(ref[key][k], got[key][k]) for k in ref[key]), f"{amp}: resumed {key} differs"
    assert ref["scaler"] == got["scaler"]
    for a, b in zip(_rows(tmp_path / "reference"), _rows(tmp_path / "killed"), strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_iou"] == b["val_iou"]
