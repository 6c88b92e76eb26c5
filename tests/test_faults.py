"""Faults and bad input (issue 14): one writer per run, nothing stale, every failure one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskdepth import fileio
from maskdepth.checkpoint import load_checkpoint
from maskdepth.cli import main
from maskdepth.config import load_config
from maskdepth.errors import ConfigError, RunLockedError
from maskdepth.runlock import LOCK_NAME, RunLock, read_lock
from maskdepth.train import fit

from conftest import QUICK, REPO


def _csv_without_seconds(run: Path) -> list[list[str]]:
    import csv

    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    drop = rows[0].index("seconds")
    return [r[:drop] + r[drop + 1:] for r in rows]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The error the CLI printed: one line, no traceback (progress bars aside)."""
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.splitlines() if "maskdepth: error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("maskdepth: error: ")
    return lines[0]


# --------------------------------------------------------------------------------------------
# 1. one writer per run directory


def test_a_second_live_training_is_refused_and_a_dead_holder_never_blocks(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from maskdepth.runlock import RunLock; "
         "RunLock(sys.argv[1], heartbeat_s=0.2).acquire(); print('locked', flush=True); time.sleep(120)", str(run)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", str(QUICK), *tiny_overrides, "train.epochs=1"]) == 2
        line = _one_error_line(capsys)
        assert f"{run} is in use by another training (host {socket.gethostname()}, pid {holder.pid}, since " in line
        assert not (run / "checkpoints" / "last.pt").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert read_lock(run)["pid"] == holder.pid  # the killed holder's lock is still there ...
    assert main(["train", str(QUICK), *tiny_overrides, "train.epochs=1"]) == 0  # ... and does not block
    assert not (run / LOCK_NAME).exists()  # released at the end


def test_a_lock_from_another_machine_blocks_until_its_heartbeat_is_stale(tmp_path: Path) -> None:
    lock_file = tmp_path / LOCK_NAME
    gone = {"host": "colab-vm-that-vanished", "pid": 1, "token": "x", "since": time.time() - 3600}
    lock_file.write_text(json.dumps({**gone, "heartbeat": time.time() - 5}))
    with pytest.raises(RunLockedError, match=r"host colab-vm-that-vanished, pid 1, .*last heartbeat 5 s ago"):
        RunLock(tmp_path, stale_s=120).acquire()
    lock_file.write_text(json.dumps({**gone, "heartbeat": time.time() - 121}))
    with RunLock(tmp_path, stale_s=120) as lock:
        assert read_lock(tmp_path)["token"] == lock.token
    assert not lock_file.exists()


def test_a_heartbeat_in_the_future_is_clock_skew_not_a_live_run(tmp_path: Path) -> None:
    """Issue 24: a lock whose heartbeat lies in the future (the other machine's clock is ahead)
    blocked for as long as the skew. More than the take-over time ahead, it is stale, and the
    take-over says why; less, the refusal says the heartbeat is in the future, not '-30 s ago'."""
    import torch

    from maskdepth.rundir import run_lock
    from maskdepth.runtime import Dist

    lock_file = tmp_path / LOCK_NAME
    ahead = {"host": "colab-vm-with-a-fast-clock", "pid": 1, "token": "x", "since": time.time()}
    lock_file.write_text(json.dumps({**ahead, "heartbeat": time.time() + 30}))
    with pytest.raises(RunLockedError, match=r"pid 1, .*last heartbeat 30 s in the future \(its clock is ahead"):
        RunLock(tmp_path, stale_s=120).acquire()
    lock_file.write_text(json.dumps({**ahead, "heartbeat": time.time() + 3 * 3600}))
    notes: list[str] = []
    with RunLock(tmp_path, stale_s=120, log=notes.append) as lock:
        assert read_lock(tmp_path)["token"] == lock.token
    assert notes == [f"note: took over {lock_file} of host colab-vm-with-a-fast-clock, pid 1: its heartbeat lies "
                     "180 min in the future (clock skew between the machines), more than the 120 s after which "
                     "a lock is stale"], notes
    lock_file.write_text(json.dumps({**ahead, "heartbeat": time.time() + 3 * 3600}))
    notes.clear()
    with run_lock(tmp_path, Dist(), torch.device("cpu"), notes.append):  # what training logs
        assert read_lock(tmp_path)["pid"] == os.getpid()
    assert len(notes) == 1 and "in the future (clock skew" in notes[0], notes


def test_a_live_lock_keeps_beating(tmp_path: Path) -> None:
    with RunLock(tmp_path, heartbeat_s=0.05) as lock:
        first = read_lock(tmp_path)["heartbeat"]
        time.sleep(0.4)
        info = read_lock(tmp_path)
        assert info["token"] == lock.token and info["heartbeat"] > first and info["pid"] == os.getpid()


# --------------------------------------------------------------------------------------------
# 2. and 3. every file of the run directory derives from last.pt; stale temp files go


class _Killed(BaseException):
    """Stands for a kill: nothing after it runs (not caught by `except Exception`)."""


_DERIVED = ("last.pt", "best.pt", "epoch_002.pt", "metrics.csv", "curves.png", "epoch_002.png")


@pytest.mark.slow
def test_a_kill_at_any_write_of_the_last_epoch_is_repaired_by_the_rerun(
        tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*tiny_overrides, "train.best_metric=train_loss", "train.keep_last=2"]
    base, reference = tmp_path / "base", tmp_path / "reference"
    fit(load_config(QUICK, [*args, f"run_dir={base}", "train.epochs=1"]))
    shutil.copytree(base, reference)
    fit(load_config(QUICK, [*args, f"run_dir={reference}"]))  # the last epoch, never interrupted
    real_replace = os.replace
    writes: list[str] = []

    def replace(src: str, dst: str, kill_at: int) -> None:
        if Path(dst).name in _DERIVED:
            writes.append(Path(dst).name)
            if len(writes) == kill_at:
                raise _Killed(Path(dst).name)
        real_replace(src, dst)

    k = 1
    while True:
        run = tmp_path / f"killed_at_{k}"
        shutil.copytree(base, run)
        writes.clear()
        monkeypatch.setattr(fileio.os, "replace", lambda s, d, k=k: replace(s, d, k))
        killed = False
        try:
            fit(load_config(QUICK, [*args, f"run_dir={run}"]))
        except _Killed:
            killed = True
        monkeypatch.setattr(fileio.os, "replace", real_replace)
        if not killed:
            break  # every write of the last epoch has been a kill point
        fit(load_config(QUICK, [*args, f"run_dir={run}"]))  # the rerun
        for name in ("last.pt", "best.pt", "epoch_002.pt"):
            ref, got = load_checkpoint(reference / "checkpoints" / name), load_checkpoint(run / "checkpoints" / name)
            assert got["epoch"] == ref["epoch"] == 2, (k, writes[-1], name)
            assert all(torch.equal(ref["model"][t], got["model"][t]) for t in ref["model"]), (k, name)
        assert _csv_without_seconds(run) == _csv_without_seconds(reference), k
        for name in ("curves.png", "samples/epoch_002.png", "checkpoints/epoch_001.pt"):
            assert (run / name).is_file(), (k, name)
        k += 1
    assert k - 1 == len(_DERIVED)  # the uninterrupted run wrote each derived file once


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_stale_temp_files_of_the_run_are_removed_on_start(tiny_overrides: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    stale = [run / "checkpoints" / ".last.pt.k1ll3d.tmp", run / ".metrics.csv.abc.tmp",
             run / "samples" / ".epoch_002.png.x.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    mine = run / "notes.tmp"  # not a temp file of ours
    mine.write_text("keep")
    fit(load_config(QUICK, tiny_overrides))
    assert not any(p.exists() for p in stale) and mine.read_text() == "keep"
    assert not list(run.rglob(".*.tmp"))


# --------------------------------------------------------------------------------------------
# 4. changed keys on resume: applied, or refused naming the key


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_a_changed_lr_is_applied_and_other_changes_are_refused(tiny_overrides: list[str], tmp_path: Path) -> None:
    import csv

    run = tmp_path / "run"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1", "train.schedule=constant", "train.warmup=0"]))
    constant = [*tiny_overrides, "train.schedule=constant", "train.warmup=0"]
    with pytest.raises(ConfigError, match=r"^train.batch_size=4 but the run in .*last.pt was trained with "
                                          r"train.batch_size=8; a resumed run may change only .*train.lr"):
        fit(load_config(QUICK, [*constant, "train.batch_size=4"]))
    fit(load_config(QUICK, [*constant, "train.lr=0.5"]))
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["lr"]) == pytest.approx(2e-3) and float(rows[1]["lr"]) == pytest.approx(0.5)
    assert load_config(run / "config.yaml").train.lr == 0.5  # config.yaml says what the run did last
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# 5.-9. one line, not a traceback


def test_a_missing_mask_entry_names_the_archive_the_entry_and_the_hint(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from data_helpers import write_dataset_zip

    data = tmp_path / "holes.zip"
    write_dataset_zip(data, num_bg=3, per_bg=4, replace={"mask/bg001_fg002.png": None})
    args = [f"data.path={data}", f"run_dir={tmp_path / 'run'}", "data.size=32", "train.epochs=1",
            "model.base_channels=8"]
    assert main(["train", str(QUICK), *args]) == 2
    line = _one_error_line(capsys)
    assert "holes.zip" in line and "mask/bg001_fg002.png" in line and "data.skip_bad=true" in line


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("name", ["last.pt", "config.yaml", "metrics.csv", "curves.png", "epoch_002.png"])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_one(
        name: str, tiny_overrides: list[str], tmp_path: Path, full_disk, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}
    capsys.readouterr()
    full_disk(name)
    assert main(["train", str(QUICK), *tiny_overrides]) == 2
    line = _one_error_line(capsys)
    target = next(run.rglob(name), None) if name != "epoch_002.png" else run / "samples" / name
    kept = f"the previous {name} is kept" if target is not None and target in before else "nothing was written"
    assert line == f"maskdepth: error: no space left on device writing {target} ({kept})"
    for path, data in before.items():  # what was there is whole: a file is replaced only when complete
        if path.name in ("last.pt", "config.yaml") and path.name != name:
            continue  # written (whole) before the failure
        if path.name == name:
            assert path.read_bytes() == data
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] >= 1
    assert not list(run.rglob(".*.tmp"))


@pytest.mark.parametrize("bad", ["text", "config.yaml", "metrics.csv"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(bad: str, tiny_overrides: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    path = {"text": tmp_path / "notes.pt", "config.yaml": run / "config.yaml", "metrics.csv": run / "metrics.csv"}[bad]
    if bad == "text":
        path.write_text("just some notes\n")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    for argv in (["evaluate", str(path)], ["predict", str(path), "--bg", str(image), "--fg-bg", str(image)],
                 ["train", str(QUICK), *tiny_overrides, f"run_dir={tmp_path / 'other'}", f"resume={path}"]):
        assert main(argv) == 2, argv
        assert _one_error_line(capsys) == f"maskdepth: error: {path} is not a maskdepth checkpoint (not a file " \
                                          "written by torch.save; pass RUN/checkpoints/last.pt or best.pt)"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_run_directory_is_taken_wherever_a_checkpoint_is(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24: `export RUNDIR` said "checkpoint RUNDIR not found" though the folder exists.
    export, evaluate, predict and train.init_from read RUN/checkpoints/best.pt; resume=RUN last.pt."""
    from PIL import Image

    from maskdepth.rundir import resume_source

    run, best = tmp_path / "run", tmp_path / "run" / "checkpoints" / "best.pt"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1", "train.max_steps_per_epoch=1"]))
    capsys.readouterr()
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    exported = run / "checkpoints" / "best.ts.pt"
    assert capsys.readouterr().out.split() == [str(exported), f"{exported}.json"]
    assert json.loads(Path(f"{exported}.json").read_text())["checkpoint"] == str(best)
    assert main(["evaluate", str(run), "--split", "val", "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["checkpoint"] == str(best)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["predict", str(run), "--bg", str(image), "--fg-bg", str(image), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "x_mask.png").is_file()
    other = [*tiny_overrides[:1], f"run_dir={tmp_path / 'other'}", *tiny_overrides[2:], "train.epochs=1",
             "train.max_steps_per_epoch=1"]
    assert main(["train", str(QUICK), *other, f"train.init_from={run}"]) == 0
    out = capsys.readouterr()
    assert f"initialised from {best} (epoch 1" in out.out + out.err
    cfg = load_config(QUICK, [*other, f"resume={run}"])
    assert resume_source(cfg, tmp_path / "new", print) == run / "checkpoints" / "last.pt"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty)]) == 2
    assert _one_error_line(capsys) == (
        f"maskdepth: error: {empty} is a folder, not a checkpoint, and holds neither {empty}/checkpoints/best.pt nor "
        f"{empty}/checkpoints/last.pt; pass a checkpoint file, or a run directory that has saved one")


@pytest.mark.parametrize("override, message", [
    ("device=tpu", "config key 'device' must be auto, cpu, cuda, cuda:N or mps; got 'tpu'"),
    ("device=cuda:x", "config key 'device' must be auto, cpu, cuda, cuda:N or mps; got 'cuda:x'"),
    ("data.size=65536", "config key 'data.size' must be in [16, 1024]"),
])
def test_bad_device_and_huge_size_are_refused_before_any_work(
    override: str, message: str, tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(QUICK), *tiny_overrides, override]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Ctrl-C / the notebook's Stop button (issue 13): last.pt with the position, then a clean stop


@pytest.fixture
def sigint_delivered():
    """SIGINT handled as in a terminal, even where pytest started with it ignored: a script's
    background job (`pytest ... &`) or nohup inherits SIG_IGN, and then maskdepth, like Python
    itself, leaves Ctrl-C ignored (in this process and in the CLI processes it starts)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
@pytest.mark.usefixtures("sigint_delivered")
def test_sigint_saves_the_position_and_the_rerun_ends_where_an_uninterrupted_run_does(
        tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maskdepth import train
    from maskdepth.errors import TrainingInterrupted

    args = [*tiny_overrides, "data.flip=true", "train.ema=0.9"]
    fit(load_config(QUICK, [*args, f"run_dir={tmp_path / 'reference'}"]))
    handler_before = signal.getsignal(signal.SIGINT)
    real_optimise, calls = train._optimise, []

    def optimise(*a, **k) -> None:  # a real SIGINT to this process in the middle of the third step
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        real_optimise(*a, **k)

    monkeypatch.setattr(train, "_optimise", optimise)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"interrupted at epoch 1, batch 3/\d+ \(step 3\).*run again"):
        fit(load_config(QUICK, args))
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler is put back
    assert not (run / LOCK_NAME).exists()
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == (0, 3, 3)
    monkeypatch.setattr(train, "_optimise", real_optimise)
    fit(load_config(QUICK, args))
    ref = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    got = load_checkpoint(run / "checkpoints" / "last.pt")
    for key in ("model", "raw_model"):
        assert all(torch.equal(ref[key][t], got[key][t]) for t in ref[key]), key
    assert _csv_without_seconds(run) == _csv_without_seconds(tmp_path / "reference")


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
@pytest.mark.usefixtures("sigint_delivered")  # the CLI process inherits SIG_IGN, not a handler
def test_sigint_to_the_cli_exits_130_with_last_pt_saved(tiny_overrides: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "maskdepth", "train", str(QUICK), *tiny_overrides, "train.epochs=200",
           "data.num_workers=1"]  # a worker too: Ctrl-C in a terminal reaches it as well
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "config.yaml").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("maskdepth: ")]
    assert lines, err[-3000:]
    last_line = lines[-1]
    assert re.match(r"maskdepth: interrupted (at|after) epoch \d+", last_line), last_line
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["step"] > 0 and f"(step {saved['step']})" in last_line


@pytest.mark.usefixtures("sigint_delivered")
@pytest.mark.parametrize("saved_before", [True, False], ids=["after_an_epoch", "before_any_checkpoint"])
def test_a_second_ctrl_c_stops_at_once_with_the_interruption_line(
        saved_before: bool, tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24: a second Ctrl-C (the first asks for a clean stop, the second stops at once) printed
    an empty `maskdepth: ` line. It says where the run stands, exits 130, and last.pt stays whole."""
    from maskdepth import train

    last = tmp_path / "run" / "checkpoints" / "last.pt"
    if saved_before:
        fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    before = last.read_bytes() if saved_before else None
    real_optimise = train._optimise

    def optimise(*a, **k) -> None:  # Ctrl-C twice inside one step: the second one interrupts at once
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        real_optimise(*a, **k)

    monkeypatch.setattr(train, "_optimise", optimise)
    handler_before = signal.getsignal(signal.SIGINT)
    capsys.readouterr()
    assert main(["train", str(QUICK), *tiny_overrides]) == 130
    assert signal.getsignal(signal.SIGINT) is handler_before
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.splitlines() if line.split("\r")[-1].startswith("maskdepth:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    if saved_before:
        assert lines[0] == (f"maskdepth: interrupted again: stopped at once, without saving; {last} holds the last "
                            "saved position: run again to continue from there")
        assert last.read_bytes() == before
    else:
        assert lines[0] == ("maskdepth: interrupted again: stopped at once, before any checkpoint was saved; "
                            "run again to start the run over")
        assert not last.exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


# --------------------------------------------------------------------------------------------
# 10. a run knows its data (issue 24)


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_a_run_refuses_other_data_keeps_its_checkpoint_and_resumes_on_a_copy(
        tiny_data: Path, tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from maskdepth.synth import make_dataset

    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    # the same generator settings, another seed: the same names and bg ids, other images
    other = tmp_path / "other.zip"
    make_dataset(other, size=32, num_bg=5, num_fg=3, per_pair=2, seed=1, workers=1, progress=False)
    before = last.read_bytes()
    capsys.readouterr()
    for epochs in ("2", "1"):  # an unfinished resume, and "already trained"
        assert main(["train", str(QUICK), *tiny_overrides, f"data.path={other}", f"train.epochs={epochs}"]) == 2
        line = _one_error_line(capsys)
        assert f"run {run} was trained on {tiny_data} (60 samples" in line, line
        assert f"data.path is other data: {other} (60 samples" in line and "new run_dir" in line, line
        assert last.read_bytes() == before
    # the notebook's evaluation (data given, no consent) is refused; the CLI's --data evaluates and says so
    from maskdepth.errors import DataError
    from maskdepth.inference import evaluate_checkpoint

    with pytest.raises(DataError, match="was trained on .*tiny.zip .* other data: .*other.zip"):
        evaluate_checkpoint(last, data=other, split="val")
    assert main(["evaluate", str(last), "--data", str(other), "--split", "val"]) == 0
    out = capsys.readouterr()
    assert f"was trained on {tiny_data}" in out.err + out.out and f"evaluated on {other}" in out.err + out.out
    # the same archive at another path (Drive -> local disk) resumes as before
    copy = tmp_path / "local" / "tiny.zip"
    copy.parent.mkdir()
    shutil.copy(tiny_data, copy)
    fit(load_config(QUICK, [*tiny_overrides, f"data.path={copy}", "train.epochs=2"]))
    assert load_checkpoint(last)["epoch"] == 2


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
def test_a_checkpoint_without_a_data_fingerprint_still_resumes_with_a_note(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from maskdepth.checkpoint import save_checkpoint

    last = tmp_path / "run" / "checkpoints" / "last.pt"
    fit(load_config(QUICK, [*tiny_overrides, "train.epochs=1"]))
    state = load_checkpoint(last)
    assert state["data"]["samples"] == 60 and len(state["data"]["sha1"]) == 16
    del state["data"]  # as written before fingerprints were recorded
    save_checkpoint(last, state)
    capsys.readouterr()
    assert main(["train", str(QUICK), *tiny_overrides]) == 0
    out = capsys.readouterr()
    assert "records no data fingerprint" in out.out + out.err and "Traceback" not in out.err
    assert load_checkpoint(last)["epoch"] == 2 and "data" in load_checkpoint(last)
