"""Atomic file writes: readers (and a runtime that dies mid-write) see the old file or the new one.

The temp file lives in the target folder (a rename across file systems is not atomic) and is
fsynced before `os.replace`, since the folder may be a network mount such as Google Drive. On
any failure, a full disk included, the temp file is removed and the old file is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


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


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """`with atomic_open(p, "w") as f: ...` writes p only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
