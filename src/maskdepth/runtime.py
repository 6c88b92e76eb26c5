"""Where the code runs: the device, the precision, the torchrun process group and the flags its
ranks agree on.

    device = resolve_device("auto")          # cuda if there is one, else cpu
    dtype, why = amp_dtype("auto", device)   # None (fp32), torch.bfloat16 or torch.float16
    world, device = init_distributed("auto") # joins torchrun's group when WORLD_SIZE > 1
    if any_rank(stop.requested, world, device): ...   # every rank decides together

Used by training and inference alike, so a device that is not there gives the same one-line
error everywhere.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from maskdepth.errors import ConfigError, TrainingInterrupted


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch.device for `name` (auto | cpu | cuda | cuda:N | mps); ConfigError if it is not here."""
    text = str(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={text} but CUDA is not available here; use device=cpu or device=auto")
    if text.startswith("cuda:") and int(text[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device={text} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if text == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device=mps but Apple's MPS backend is not available here; use device=cpu or device=auto")
    return torch.device(text)


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one (WORLD_SIZE > 1); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return Dist(), device
    info = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return info, torch.device("cuda", info.local_rank) if cuda else torch.device("cpu")


def shutdown_distributed(world: Dist) -> None:
    """Leave the process group. All ranks meet at a barrier first: a rank that destroys the gloo
    group while another still sends can hang for good in older torch (pytorch#154976)."""
    if world.world > 1 and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def all_ranks_true(flag: bool, world: Dist, device: torch.device) -> bool:
    """`flag` of rank 0 on every rank (clocks differ a little; all ranks must stop together)."""
    return _share_flag(flag, world, device, any_rank=False)


def any_rank(flag: bool, world: Dist, device: torch.device) -> bool:
    """Whether `flag` holds on any rank (each rank's Ctrl-C arrives at its own moment)."""
    return _share_flag(flag, world, device, any_rank=True)


def _share_flag(flag: bool, world: Dist, device: torch.device, *, any_rank: bool) -> bool:
    if world.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device if device.type == "cuda" else "cpu")
    if any_rank:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    else:
        dist.broadcast(value, src=0)
    return bool(value.item())


def all_ranks_finite(loss: torch.Tensor, world: Dist) -> bool:
    """Whether `loss` is finite on every rank: one rank's NaN must make all of them skip (or stop)
    the step together, or DDP's gradient all-reduce would wait for a rank that left."""
    finite = torch.isfinite(loss.detach()).float()
    if world.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def broadcast_buffers(modules: list[torch.nn.Module | None], world: Dist) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) copied into every rank's `modules`, in
    place. DDP sends rank 0's buffers before each forward pass, but the pass then updates each
    rank's own, so after an epoch's last step they differ by rank, and so do the EMA's averages of
    them: without this, each rank would validate another model than the one rank 0 saves, and
    a resumed run's validation would differ from the uninterrupted one's. Training never reads a
    rank's own buffers (the next forward pass takes rank 0's), so it changes nothing else."""
    if world.world == 1:
        return
    for module in filter(None, modules):
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _bf16_native() -> bool:
    """bf16 in hardware (compute capability >= 8.0: A100, L4, H100), not emulated (T4, V100)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation
        return torch.cuda.get_device_capability()[0] >= 8


def cpu_fp16_unsupported() -> str | None:
    """None where this torch has what train.amp=fp16 needs on the CPU (fp16 autocast, torch >= 2.4,
    and `torch.amp.GradScaler("cpu")`, torch >= 2.3), else why not: a probe, not a version check."""
    if not hasattr(torch.amp, "GradScaler"):
        return f"torch {torch.__version__} has no torch.amp.GradScaler for the CPU (torch >= 2.3)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unsupported autocast dtype warns and disables itself
            with torch.autocast("cpu", dtype=torch.float16):
                out = torch.mm(torch.ones(2, 2), torch.ones(2, 2))
            torch.amp.GradScaler("cpu")
    except (RuntimeError, TypeError, ValueError) as exc:
        return f"torch {torch.__version__} refuses fp16 on the CPU ({exc})"
    if out.dtype != torch.float16:
        return f"torch {torch.__version__} has no fp16 autocast on the CPU (torch >= 2.4)"
    return None


_CPU_FP16 = ("train.amp=fp16 on the CPU is slow: it exists to test the GPU (T4) path of fp16 with a GradScaler; "
             "train on the CPU with train.amp=fp32 or bf16")


def amp_dtype(amp: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None for fp32, the reason) for train.amp on `device`.

    auto: fp32 off CUDA; on CUDA bf16 where the GPU has it natively (compute capability >= 8.0),
    else fp16 with a GradScaler (T4, V100, P100), since emulated bf16 is slower than fp32.
    fp16 on the CPU runs (with one warning) where torch has it: what tests the T4 path here.
    """
    if amp == "fp32" or (amp == "auto" and device.type != "cuda"):
        return None, "fp32" + (" (no CUDA)" if amp == "auto" else "")
    if amp == "auto":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        if _bf16_native():
            return torch.bfloat16, f"bf16 ({name}, compute capability {major}.{minor} has native bf16)"
        return torch.float16, f"fp16 + GradScaler ({name}, compute capability {major}.{minor} has no native bf16)"
    if amp == "fp16" and device.type != "cuda":
        why = cpu_fp16_unsupported() if device.type == "cpu" else f"device {device} is not the CPU or CUDA"
        if why:
            raise ConfigError(f"train.amp=fp16 needs CUDA here: {why}; on CPU use train.amp=bf16 or fp32")
        warnings.warn(_CPU_FP16, stacklevel=2)
        return torch.float16, "fp16 + GradScaler on the CPU (slow: for testing the GPU path)"
    return (torch.bfloat16, "bf16") if amp == "bf16" else (torch.float16, "fp16 + GradScaler")


def grad_scaler(enabled: bool, device: torch.device | str = "cuda") -> Any:
    """A GradScaler for `device` (a no-op unless `enabled`, i.e. fp16)."""
    kind = torch.device(device).type
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(kind if kind in ("cuda", "cpu") else "cuda", enabled=enabled and kind != "mps")
    return torch.cuda.amp.GradScaler(enabled=enabled and kind == "cuda")  # pragma: no cover - torch 2.2


def channels_last_on(requested: bool, device: torch.device) -> bool:
    """Whether training uses channels_last: train.channels_last on CUDA only (on the CPU it is
    slower; tests patch this to run that path on the CPU)."""
    return requested and device.type == "cuda"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def settle(seed: int, deterministic: bool, device: torch.device) -> None:
    """Determinism switches and seeds, before anything random is built: a run (and its resume)
    must draw the same numbers whatever ran in the process before it."""
    if deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
    seed_everything(seed)


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch.autocast for `dtype` on `device`, disabled for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class StopRequest:
    """Ctrl-C (SIGINT; Colab's and Jupyter's Stop button send it too) during training, turned into
    a clean stop: the first one only sets `requested`, and the loop stops at the end of the step
    it is in, after saving last.pt with that position; a second one interrupts at once, as Python
    does by default. Used as a context manager around training; a no-op outside the main thread
    (signal handlers can only be set there) or where SIGINT is ignored.

    DataLoader workers ignore SIGINT (`ignore_interrupts`, their worker_init_fn): in a terminal
    Ctrl-C reaches the whole process group, and a worker that dies of it would break the batch
    the loop is waiting for.

    The second Ctrl-C's bare KeyboardInterrupt (whose message is empty) leaves the block as a
    TrainingInterrupted that says where the run stands: `checkpoint` (the run's last.pt), if it
    exists, holds the last position saved."""

    def __init__(self, log: Any = print, checkpoint: str | os.PathLike[str] | None = None) -> None:
        self.requested = False
        self._log = log
        self._checkpoint = checkpoint
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self._restore()  # a second Ctrl-C interrupts at once
        self._log("interrupted: saving checkpoints/last.pt at the end of this step, then stopping "
                  "(interrupt again to stop at once, without saving)")

    def _restore(self) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._restore()
        if self.requested and isinstance(exc, KeyboardInterrupt) and not isinstance(exc, TrainingInterrupted):
            raise TrainingInterrupted(self.stopped_at_once()) from None

    def stopped_at_once(self) -> str:
        """The line for a second Ctrl-C: nothing was saved, what the last checkpoint holds."""
        if self._checkpoint is not None and Path(self._checkpoint).is_file():
            return (f"interrupted again: stopped at once, without saving; {self._checkpoint} holds the last saved "
                    "position: run again to continue from there")
        return "interrupted again: stopped at once, before any checkpoint was saved; run again to start the run over"


def ignore_interrupts(worker_id: int = 0) -> None:
    """worker_init_fn for DataLoader workers: SIGINT is for the main process to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
