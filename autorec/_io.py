"""Atomic file writes: a temp file in the target's folder, then ``os.replace``.

A killed process leaves at most a temp file behind, never a complete-looking target. The
temp of ``NAME`` is ``.NAME.tmp-HOST-PID-XXXXXXXX[SUFFIX]`` (``HOST``: 8 hex digits of the
host name's sha1, ``PID``: the writer's process id), so a later write of the same target
can tell a stale temp from a live one: :func:`clean_stale_temps` removes only temps of that
exact pattern whose writer is a dead process on this host, or (from another host, or
written by an autorec before the pid was in the name) that nobody has touched for
:data:`STALE_AFTER_S` seconds. Nothing else in the folder is touched. (Two machines
sharing a folder need distinct host names; processes in different pid namespaces of one
host name see each other's writers as dead.)
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_path", "clean_stale_temps", "STALE_AFTER_S"]

#: a temp not written to for this long is stale even when its writer cannot be checked
STALE_AFTER_S = 3600.0
_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkstemp's random part


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched. Stale
    temps of ``path`` left by killed writers are removed first (:func:`clean_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{_host_tag()}-{os.getpid()}-",
                               suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def clean_stale_temps(path, suffix: str = "") -> list[Path]:
    """Remove the temps :func:`atomic_path` left for ``path`` in killed processes.

    Only regular files named exactly like its temps of ``path`` (``.NAME.tmp-...``) are
    candidates. One written on this host is removed when its writer's pid is dead (a live
    pid, even a reused one, keeps it); one from another host, or from an older autorec
    (no pid in the name), when it has not been modified for :data:`STALE_AFTER_S` seconds.
    Returns the removed paths.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(?:(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-)?"
                         rf"{_RANDOM}{re.escape(suffix)}")
    host, now, removed = _host_tag(), time.time(), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if match["pid"] is not None and match["host"] == host:  # its writer can be asked
                stale = not _alive(int(match["pid"]))
            else:  # another host's, or an older autorec's: by age
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # removed meanwhile, or not ours to remove
            continue
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts as alive)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True
