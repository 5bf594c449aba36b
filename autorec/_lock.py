"""One writer per output file: an exclusive, non-blocking lock next to the file.

``.<name>.lock`` in the target's folder is locked with ``flock`` (released by the kernel
when its process dies, so a killed writer never leaves a lock that blocks the next one) and
removed when the writer is done. A second writer of the same file fails at once with
:class:`~autorec.exceptions.ExportInProgress` naming the holder's process id.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .exceptions import ExportInProgress

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an O_EXCL lock file instead
    fcntl = None

__all__ = ["exclusive", "lock_path"]


def lock_path(path) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def exclusive(path, what: str = "an export"):
    """Hold the lock of ``path`` for the ``with`` block, or raise ExportInProgress."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, Path(path), what)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still holding it: a waiter re-checks the inode
        os.close(fd)


def _acquire(lock: Path, path: Path, what: str) -> int:
    while True:
        if fcntl is None:  # pragma: no cover
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise ExportInProgress(
                    f"{path}: {what} is already writing this file ({lock} exists; delete it "
                    "if no other process is writing)") from None
        else:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ExportInProgress(
                    f"{path}: another process (pid {holder}) is writing this file right now; "
                    "wait for it to finish or write to another path") from None
            try:  # the holder before us may have removed the file between our open and lock
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        return fd
