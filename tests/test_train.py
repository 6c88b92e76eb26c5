"""Training engine: the run directory, exact resume after SIGKILL, extension, NaN guard, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskdepth.checkpoint import load_checkpoint
from maskdepth.cli import main
from maskdepth.config import load_config
from maskdepth.errors import CheckpointError, ConfigError, TrainingError
from maskdepth.train import CSV_COLUMNS, fit

from conftest import QUICK, REPO, run_process_group


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_train_end_to_end_writes_the_run_directory(tiny_overrides: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(QUICK), *tiny_overrides]) == 0
    run = tmp_path / "run"
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "training maskdepth" in out and "epoch   2/2" in out  # one summary line per epoch
    for name in ["config.yaml", "split.json", "metrics.csv", "curves.png", "samples/epoch_001.png",
                 "samples/epoch_002.png", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml").train.epochs == 2
    split = json.loads((run / "split.json").read_text())
    assert set(split) >= {"train", "val", "test"}
    assert not set(split["train"]) & set(split["val"]) and not set(split["train"]) & set(split["test"])
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == CSV_COLUMNS
    for key in ("train_loss", "val_loss", "val_iou", "val_dice", "val_rmse", "val_abs_rel", "val_delta1", "lr"):
        value = float(rows[-1][key])
        assert value == value, key  # not NaN
    assert 0.0 <= float(rows[-1]["val_iou"]) <= 1.0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["batch_in_epoch"] == 0 and state["step"] > 0
    for key in ("optimizer", "scaler", "rng", "config", "version", "format", "best_metric", "history", "splits"):
        assert key in state, key
    assert not list(run.rglob("*.tmp"))


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_extend_a_finished_run(tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    first = _rows(run)
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))  # nothing to do
    assert "already trained 1/1 epochs" in capsys.readouterr().out
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=2"]))
    rows = _rows(run)
    assert len(rows) == 2 and rows[0] == first[0]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_time_budget_ends_the_epoch_and_survives_a_rerun(tiny_overrides: list[str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    tiny_budget = "train.max_minutes=1e-6"  # spent by the first step
    fit(load_config(QUICK, [*tiny_overrides, tiny_budget]))
    rows = _rows(run)
    assert len(rows) == 1 and rows[0]["steps"] == "1"  # epoch 1 ended after one step, validated and saved
    assert "train.max_minutes=1e-06 reached after 1 steps" in capsys.readouterr().out
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 0, 1)
    assert (run / "samples" / "epoch_001.png").is_file()

    fit(load_config(QUICK, [*tiny_overrides, tiny_budget]))  # the clock came back from the checkpoint
    assert "already trained for its train.max_minutes" in capsys.readouterr().out
    assert len(_rows(run)) == 1

    fit(load_config(QUICK, [*tiny_overrides, "train.max_minutes=60"]))  # a larger budget continues the run
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["steps"] == "5"  # 1 + a whole epoch of 4


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_ema_is_what_is_evaluated_saved_and_handed_to_the_epoch_hook(tiny_overrides: list[str], tmp_path: Path) -> None:
    seen: list[tuple[dict, dict]] = []

    def hook(row: dict, model: torch.nn.Module) -> None:
        assert not model.training
        seen.append((row, {k: v.clone() for k, v in model.state_dict().items()}))

    fit(load_config(QUICK, [*tiny_overrides, "train.ema=0.9", "data.flip=true", "data.crop=0.2"]), on_epoch_end=hook)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert [row["epoch"] for row, _ in seen] == [1, 2] and state["ema_updates"] == state["step"] == 8
    assert all(torch.equal(seen[-1][1][k], state["model"][k]) for k in state["model"])  # the hook got the EMA
    raw, ema = state["raw_model"], state["model"]
    assert raw.keys() == ema.keys() and any(not torch.equal(raw[k], ema[k]) for k in raw)
    from maskdepth.inference import load_model

    model, _ = load_model(tmp_path / "run" / "checkpoints" / "last.pt")  # inference gets the EMA weights
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_resume_never_and_architecture_mismatch(tiny_overrides: list[str]) -> None:
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    with pytest.raises(ConfigError, match="not empty and resume=never"):
        fit(load_config(QUICK, [*tiny_overrides, "resume=never"]))
    with pytest.raises(CheckpointError, match=r"another architecture: model.base_channels=8"):
        fit(load_config(QUICK, [*tiny_overrides, "model.base_channels=16"]))
    with pytest.raises(ConfigError, match="no such checkpoint"):
        fit(load_config(QUICK, [*tiny_overrides, "resume=/no/such.pt"]))


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_nonfinite_loss_stops_without_touching_the_checkpoint(tiny_overrides: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from maskdepth import losses

    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = _weights(last)
    original = losses.DepthLoss.forward
    calls = {"n": 0}

    def poisoned(self, pred, true, *args, **kwargs):
        calls["n"] += 1
        out = original(self, pred, true, *args, **kwargs)
        return out * float("nan") if calls["n"] == 2 else out

    monkeypatch.setattr(losses.DepthLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 2.*train.on_nonfinite=skip"):
        fit(load_config(QUICK, [*tiny_overrides, "train.epochs=2"]))
    after = _weights(last)
    assert all(torch.equal(before[k], after[k]) for k in before)

    calls["n"] = 0
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=2", "train.on_nonfinite=skip"]))
    rows = _rows(tmp_path / "run")
    assert rows[-1]["epoch"] == "2" and int(rows[-1]["skipped_batches"]) == 1
    assert all(torch.isfinite(v).all() for v in _weights(last).values() if v.is_floating_point())


def _train_cmd(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "maskdepth", "train", str(QUICK), *overrides]


def _wait_for_mid_epoch_checkpoint(last: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Poll until last.pt is a mid-epoch checkpoint; returns its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}")
        if last.is_file():
            try:
                state = torch.load(last, weights_only=True)
            except Exception:  # replaced while reading: try again
                continue
            if state["batch_in_epoch"] > 0:
                return state["step"]
        time.sleep(0.05)
    raise AssertionError("no mid-epoch checkpoint appeared")


@pytest.mark.slow
def test_sigkill_and_restart_gives_the_same_weights(tiny_overrides: list[str], tmp_path: Path) -> None:
    # every option whose state a resume must restore: augmentation draws, EMA, the budget clock
    common = [*tiny_overrides, "train.epochs=3", "train.checkpoint_every=1", "data.flip=true", "data.crop=0.2",
              "data.photometric=0.2", "train.ema=0.9", "train.max_minutes=60", "loss.w_silog=0.5", "loss.w_grad=1"]
    reference = [*common, f"run_dir={tmp_path / 'reference'}"]
    killed = [*common, f"run_dir={tmp_path / 'killed'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    assert run_process_group(_train_cmd(reference), env=env, timeout=300).returncode == 0

    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    kills = 0
    for delay in (0.0, 0.7):  # once right at a mid-epoch checkpoint, once at an arbitrary moment
        proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_mid_epoch_checkpoint(last, proc)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        finally:
            proc.wait()
    assert kills >= 1
    resumed = run_process_group(_train_cmd(killed), env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr

    ref_state, got_state = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt"), load_checkpoint(last)
    for key in ("model", "raw_model"):  # the EMA and the optimised weights
        ref, got = ref_state[key], got_state[key]
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref), f"resumed run differs from the uninterrupted one ({key})"
    assert got_state["ema_updates"] == ref_state["ema_updates"] == ref_state["step"]
    ref_rows, got_rows = _rows(tmp_path / "reference"), _rows(tmp_path / "killed")
    for a, b in zip(ref_rows, got_rows, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_iou"] == b["val_iou"]


@pytest.mark.slow
def test_two_process_gloo_run(tiny_overrides: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "maskdepth", "train", str(QUICK), *tiny_overrides, "train.epochs=1"]
    done = run_process_group(cmd, env=env, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    run = tmp_path / "run"
    rows = _rows(run)
    assert len(rows) == 1 and float(rows[0]["val_iou"]) == float(rows[0]["val_iou"])
    assert len(list((run / "samples").glob("epoch_*.png"))) == 1
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert not any(k.startswith("module.") for k in state["model"])  # saved unwrapped, loads without DDP


def test_image_size_not_a_multiple_of_the_stride_fails_before_training(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"data.size=40 is not a multiple of the model's stride 16; use 32 or 48"):
        fit(load_config(QUICK, [*tiny_overrides, "data.size=40"]))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_sample_stops_training_naming_it_or_is_skipped_and_counted(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from data_helpers import write_dataset_zip

    data = tmp_path / "bad.zip"
    broken = {f"fg_bg/bg00{b}_fg001.jpg": b"\xff\xd8\xff\xe0 broken" for b in range(3)}  # one per background
    write_dataset_zip(data, num_bg=3, per_bg=4, replace=broken)
    args = [f"data.path={data}", f"run_dir={tmp_path / 'run'}", "data.size=32", "train.epochs=1",
            "train.batch_size=4", "train.num_samples=0", "train.checkpoint_minutes=0", "model.base_channels=8"]
    assert main(["train", str(QUICK), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.zip: fg_bg/bg00" in err and "_fg001.jpg" in err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()

    assert main(["train", str(QUICK), *args, "data.skip_bad=true"]) == 0
    row = _rows(tmp_path / "run")[-1]
    assert int(row["skipped_samples"]) == 1 and float(row["val_iou"]) == float(row["val_iou"])


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_keep_last_and_resume_from_a_given_checkpoint(tiny_overrides: list[str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=3", "train.keep_last=2"]))
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("epoch_*.pt")) == ["epoch_002.pt", "epoch_003.pt"]
    assert load_checkpoint(ckpts / "epoch_002.pt")["epoch"] == 2

    # resume=PATH: a new run directory continues from epoch 2 of the first run
    other = tmp_path / "branch"
    fit(load_config(QUICK, [*tiny_overrides, f"run_dir={other}", f"resume={ckpts / 'epoch_002.pt'}", "train.epochs=3"]))
    assert "resuming" in capsys.readouterr().out
    rows = _rows(other)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]  # the history travels with the checkpoint
    assert rows[:2] == _rows(tmp_path / "run")[:2]
    assert load_checkpoint(other / "checkpoints" / "last.pt")["epoch"] == 3
    ref, got = _weights(ckpts / "epoch_003.pt"), _weights(other / "checkpoints" / "last.pt")
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # same epoch 3 as the run it branched from


def test_sample_grids_are_drawn_without_autograd(tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-epoch grids' forward passes (the fixed samples, then the worst ones) build no graph
    (no_grad), so they cost no activation memory."""
    import maskdepth.viz as viz

    seen: list[bool] = []
    real = viz.save_sample_grid

    def spy(path, *tensors, **kwargs):
        seen.append(torch.is_grad_enabled() or any(t.requires_grad for t in tensors))
        return real(path, *tensors, **kwargs)

    monkeypatch.setattr(viz, "save_sample_grid", spy)
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1", "train.max_steps_per_epoch=1"]))
    assert seen == [False, False]
