"""Shared fixtures: one tiny synthetic archive per session and a shrunken training config.

Everything runs on the CPU with 32 px images, a few dozen samples and no DataLoader workers,
so that an end-to-end training run takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick.yaml"

# One torch thread per test process: `make test` runs two pytest workers on two cores, and tiny
# 32 px models run no faster on more threads (subprocesses the tests start inherit this).
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px archive: 5 backgrounds x 3 objects x 2 flips x 2 placements = 60 samples."""
    from maskdepth.synth import make_dataset

    out = tmp_path_factory.mktemp("data") / "tiny.zip"
    make_dataset(out, size=32, num_bg=5, num_fg=3, per_pair=2, seed=0, workers=1, progress=False)
    return out


@pytest.fixture
def tiny_overrides(tiny_data: Path, tmp_path: Path) -> list[str]:
    """key=value overrides that shrink configs/quick.yaml to a seconds-long CPU run in tmp_path/run."""
    return [
        f"data.path={tiny_data}",
        f"run_dir={tmp_path / 'run'}",
        "data.size=32",
        "data.num_workers=0",
        "train.epochs=2",
        "train.batch_size=8",
        "train.num_samples=2",
        "train.checkpoint_minutes=0",
        "model.base_channels=8",
        "device=cpu",
    ]


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request: pytest.FixtureRequest):
    """The process umask set to the parameter for the test; yields the mode a file the user
    creates gets under it (0o666 & ~umask), which every file maskdepth writes must have too."""
    old = os.umask(request.param)
    try:
        yield 0o666 & ~request.param
    finally:
        os.umask(old)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch):
    """full_disk("curves.png"): from now on, writing a file of that name through maskdepth.fileio
    hits a real ENOSPC (its temp file is /dev/full), as on a full disk or Drive quota."""
    from maskdepth import fileio

    real = fileio.tempfile.mkstemp

    def arm(name: str) -> None:
        def mkstemp(*args, **kwargs):
            if kwargs.get("prefix") == f".{name}.":
                return os.open("/dev/full", os.O_WRONLY), str(Path(kwargs["dir"]) / f".{name}.full.tmp")
            return real(*args, **kwargs)

        monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)

    return arm


def run_process_group(cmd: list[str], *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a session of its own; on timeout the whole process group is killed
    (torchrun's ranks included: a rank stuck in gloo's teardown must not outlive the test)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... ran past {timeout} s; its process group was killed\n{err[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of it survives the test
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
