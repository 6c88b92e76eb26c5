"""Atomic file writes: readers (and a runtime that dies mid-write) see the old file or the new one.

The temp file lives in the target folder (a rename across file systems is not atomic) and is
fsynced before `os.replace`, since the folder may be a network mount such as Google Drive. On
any failure, a full disk included, the temp file is removed and the old file is left as it was;
a full disk (or quota) becomes one DiskFullError naming the file.

The file gets the mode of any file the user creates, 0o666 less the umask (mkstemp's own 0600
would make a run directory shared with a group, or synced to Drive, unreadable to the others).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from maskdepth.errors import ConfigError, DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status,
    kernel 4.7+); elsewhere set and put back at once, under a lock, since the umask is
    process-wide and the run lock's heartbeat thread writes files too."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # for the instant it is changed, a file created elsewhere is private, not open
        os.umask(mask)
    return mask


def user_file_mode() -> int:
    """The mode the user's umask gives a new file: 0o644 under umask 022, 0o664 under 002."""
    return 0o666 & ~current_umask()


def disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an error it was raised from or while handling, is a full disk or quota
    (torch.save reports one as a RuntimeError raised while handling the OSError)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        stack += [e.__cause__, e.__context__]
    return False


def _identity(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """The keys that make two paths one file: the resolved path (symlinks followed) and, for a
    file that exists, its inode (hard links, case-insensitive file systems)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return (real,)
    return (real, (st.st_dev, st.st_ino))


def refuse_overwrite(outs: Any, inputs: dict[str, Any] | list[tuple[str, Any]], flag: str = "--out") -> None:
    """ConfigError (one line) when an output path (`outs`: one path or several) is one of
    `inputs` ({what: path} or (what, path) pairs; None skipped): writing it would destroy the
    input before (or while) it is read."""
    known: dict[Any, tuple[str, Any]] = {}
    for what, path in inputs.items() if isinstance(inputs, dict) else inputs:
        if path is not None:
            known.update({key: (what, path) for key in _identity(path)})
    for out in [outs] if isinstance(outs, (str, os.PathLike)) else outs:
        hit = next((known[key] for key in _identity(out) if key in known), None)
        if hit is not None:
            raise ConfigError(f"{flag} {out} is the input {hit[0]} {hit[1]}; writing it would destroy the input: "
                              "choose another output path")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows, some FUSE mounts: the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _follow_umask(path: str | os.PathLike[str]) -> None:
    """Give `path` the mode of a file the user creates; where a file system has no modes to set
    (some FUSE mounts refuse chmod), the file stays as it was created."""
    try:
        os.chmod(path, user_file_mode())
    except OSError:
        pass


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """`with atomic_open(p, "w") as f: ...` writes p only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            _follow_umask(tmp)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _give_up(path, tmp, exc)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: save(tmp)`, for writers that take a file name, not a file (an
    ONNX program's save): `tmp` is a temp file in p's folder, renamed to p when the block
    completes and removed when it does not; a full disk is one DiskFullError naming p. A writer
    that aborts the process on a full disk (torch.jit.save's C++ writer) cannot be guarded so:
    write it to memory, then `write_atomic`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        _give_up(path, tmp, exc)
        raise
    _fsync_dir(path.parent)


def _give_up(path: Path, tmp: str, exc: BaseException) -> None:
    """After a failed write: remove the temp file, and turn a full disk into one DiskFullError
    naming the file (any other error is the caller's to re-raise)."""
    Path(tmp).unlink(missing_ok=True)
    if isinstance(exc, Exception) and not isinstance(exc, DiskFullError) and disk_full(exc):
        kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
        raise DiskFullError(f"no space left on device writing {path} ({kept})") from None


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
