"""One writer per run directory: a lock file with a heartbeat, safe on Google Drive's FUSE mount.

    with RunLock(run_dir):      # RunLockedError if another live process holds it
        fit(...)

`RUN/.lock` is a small JSON file: host, pid, a random token, when the lock was taken and the
last heartbeat. While the lock is held, a daemon thread rewrites it every `HEARTBEAT_S`
seconds. A lock is stale, and is taken over, when
- its host is this machine and its pid is not running (a killed run, rerun at once), or
- its heartbeat is older than `STALE_S` seconds (a Colab runtime that vanished: its pid means
  nothing here, and it stopped beating), or
- its heartbeat lies more than `STALE_S` seconds in the future: the clocks of the two machines
  differ by more than a live run could explain, and waiting for it would block for the skew.
A take-over by heartbeat is logged as a note that says why.
`flock` is not used: Drive's mount does not share it between machines. Taking the lock writes
the file atomically and reads it back after a moment, so of two processes racing for a stale
lock only the one whose token is in the file goes on.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maskdepth.errors import RunLockedError
from maskdepth.fileio import write_atomic

LOCK_NAME = ".lock"
HEARTBEAT_S = 15.0  # how often a live run refreshes its lock
STALE_S = 120.0  # a heartbeat older than this is a dead run (allows for Drive's sync delay)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def read_lock(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The lock's contents, or None when there is no (readable) lock."""
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stale(info: dict[str, Any], now: float, stale_s: float) -> str | None:
    """Why the lock `info` is stale ('' when its process is gone from this host), or None: it is live."""
    if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
        return ""
    beat = now - float(info.get("heartbeat", 0.0))
    if beat > stale_s:
        return f"its heartbeat is {_age(beat)} old, more than the {stale_s:.0f} s after which a lock is stale"
    if -beat > stale_s:
        return (f"its heartbeat lies {_age(-beat)} in the future (clock skew between the machines), more than the "
                f"{stale_s:.0f} s after which a lock is stale")
    return None


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _heartbeat(seconds_ago: float) -> str:
    """'last heartbeat 5 s ago', or for a clock ahead of ours 'last heartbeat 30 s in the future (...)'."""
    if seconds_ago >= -1.0:  # a second of jitter between two clocks is not worth a word
        return f"last heartbeat {_age(max(seconds_ago, 0.0))} ago"
    return f"last heartbeat {_age(-seconds_ago)} in the future (its clock is ahead of this machine's)"


class RunLock:
    """Context manager holding `RUN/.lock` for this process (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike[str], *, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S, log: Callable[[str], Any] | None = None) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self._log = log or (lambda line: None)
        self.token = secrets.token_hex(8)
        self.since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _info(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "since": self.since, "heartbeat": time.time()}

    def _write(self) -> None:
        write_atomic(self.path, json.dumps(self._info()) + "\n")

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = read_lock(self.path.parent)
        now = time.time()
        if holder is not None and holder.get("token") != self.token:
            why = _stale(holder, now, self.stale_s)
            if why is None:
                self._refuse(holder, now)
            if why:
                self._log(f"note: took over {self.path} of host {holder.get('host')}, pid {holder.get('pid')}: {why}")
        self._write()
        time.sleep(0.05)  # a racing writer's rename lands in this window; the file then names it
        holder = read_lock(self.path.parent)
        if holder is not None and holder.get("token") != self.token:
            self._refuse(holder, time.time())
        self._thread = threading.Thread(target=self._beat, name="maskdepth-runlock", daemon=True)
        self._thread.start()
        return self

    def _refuse(self, holder: dict[str, Any], now: float) -> None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("since", now))))
        beat = now - float(holder.get("heartbeat", now))
        raise RunLockedError(
            f"{self.path.parent} is in use by another training (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {since}, {_heartbeat(beat)}); wait for it to end, or use another run_dir "
            f"(a lock whose heartbeat stops is taken over after {self.stale_s:.0f} s)")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = read_lock(self.path.parent)
            if holder is not None and holder.get("token") not in (None, self.token):
                return  # taken over (we were presumed dead): leave it to the new holder
            try:
                self._write()
            except OSError:
                pass  # a full disk or a dropped mount: the next beat tries again

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = read_lock(self.path.parent)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


__all__ = ["HEARTBEAT_S", "LOCK_NAME", "STALE_S", "RunLock", "read_lock"]
