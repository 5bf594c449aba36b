"""Recovery after kill -9: stale temps of our own are removed by later runs, nothing else.

A kill during a download or a checkpoint write used to leave ``.NAME.tmp-*`` files that no
later run removed. Temps are now named ``.NAME.tmp-HOST-PID-XXXXXXXX``; a later write of the
same target removes those whose writer is dead on this host (or that nobody touched for an
hour), and leaves a live writer's temp, other targets' temps and anything else alone.
"""
from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import autorec
from autorec import _io
from autorec.datasets import download

from ._files import ROOT, tiny_data
from .test_movielens import make_fixtures

HOST = _io._host_tag()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def test_only_stale_temps_of_the_target_are_removed(tmp_path):
    target = tmp_path / "ml-100k.zip"
    dead, live, old = _dead_pid(), os.getpid(), _io.STALE_AFTER_S + 60
    files = {  # name: (seconds since last written, removed?)
        f".ml-100k.zip.tmp-{HOST}-{dead}-abc_1234": (0, True),       # its writer died here
        f".ml-100k.zip.tmp-0badc0de-{live}-zzzzzzzz": (old, True),   # another host's, old
        ".ml-100k.zip.tmp-a1b2c3d4": (old, True),                    # an older autorec's, old
        f".ml-100k.zip.tmp-{HOST}-{live}-abcdefgh": (old, False),    # a live writer's
        f".ml-100k.zip.tmp-0badc0de-{dead}-abcdefgh": (0, False),    # another host's, fresh
        ".ml-100k.zip.tmp-b1b2c3d4": (0, False),                     # an older autorec's, fresh
        ".ml-100k.zip.tmp-a1b2c3d4x": (old, False),                  # not the pattern
        ".ml-100k.zip.tmp-notes.txt": (old, False),
        "ml-100k.zip.tmp-a1b2c3d4": (old, False),                    # no leading dot
        f".ml-1m.zip.tmp-{HOST}-{dead}-abcdefgh": (old, False),      # another target's
        f".ml-100k.zip.tmp-{HOST}-{dead}-abcdefgh.npz": (old, False),  # another suffix
    }
    for name, (age, _) in files.items():
        (tmp_path / name).write_bytes(b"x")
        _age(tmp_path / name, age)
    folder = tmp_path / f".ml-100k.zip.tmp-{HOST}-{dead}-dirdirdi"  # a folder: never touched
    folder.mkdir()
    removed = _io.clean_stale_temps(target)
    assert sorted(p.name for p in removed) == sorted(n for n, (_, gone) in files.items() if gone)
    for name, (_, gone) in files.items():
        assert (tmp_path / name).exists() != gone, name
    assert folder.is_dir()


def test_atomic_path_cleans_before_it_writes(tmp_path):
    target = tmp_path / "model.pt"
    left = tmp_path / f".model.pt.tmp-{HOST}-{_dead_pid()}-abcdefgh"
    left.write_bytes(b"half a file")
    with _io.atomic_path(target) as tmp:
        assert tmp.name.startswith(f".model.pt.tmp-{HOST}-{os.getpid()}-")
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and sorted(tmp_path.iterdir()) == [target]


# ------------------------------------------------------------ kill -9 mid-download
class SlowMirror(http.server.BaseHTTPRequestHandler):
    body = b""
    release = threading.Event()
    SLOW = 8 << 20  # bytes promised on the slow route; a quarter is sent, then nothing

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        slow = self.path.startswith("/slow/")
        self.send_header("Content-Length", str(self.SLOW if slow else len(self.body)))
        self.end_headers()
        if slow:  # more than the downloader's 1 MiB chunk, so part of it reaches the disk
            self.wfile.write(b"\0" * (self.SLOW // 4))
            self.wfile.flush()
            self.release.wait(60)
            return
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    make_fixtures.write_archive(tmp_path / "src.zip", "ml-100k", n_ratings=3000, n_users=50,
                                n_items=300)
    SlowMirror.body = (tmp_path / "src.zip").read_bytes()
    SlowMirror.release.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowMirror)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    SlowMirror.release.set()
    server.shutdown()
    server.server_close()


def _wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _child(code: str, *args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL  # reaped: its pid is dead, not a zombie


def test_kill_9_mid_download_then_a_later_download_cleans_up(mirror, tmp_path):
    dest = tmp_path / "cache"
    proc = _child("import sys; from autorec.datasets import download; "
                  "download('ml-100k', sys.argv[1], url=sys.argv[2], progress=False, verify=False)",
                  dest, f"{mirror}/slow/ml-100k.zip")
    temps = lambda: [p for p in dest.glob(".ml-100k.zip.tmp-*") if p.stat().st_size > 0]
    [temp] = _wait_for(temps, "the download's temp file")
    _kill(proc)
    assert temp.name.startswith(f".ml-100k.zip.tmp-{HOST}-{proc.pid}-") and temp.exists()
    assert not (dest / "ml-100k.zip").exists()  # never a complete-looking archive
    path = download("ml-100k", dest, url=f"{mirror}/good/ml-100k.zip", progress=False, verify=False)
    assert path.read_bytes() == SlowMirror.body
    assert sorted(dest.iterdir()) == [path]  # the killed run's temp is gone


def test_a_later_load_cleans_a_killed_download_of_the_archive_it_finds(mirror, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOREC_CACHE", str(cache))
    proc = _child("import sys; from autorec.datasets import download; "
                  "download('ml-100k', url=sys.argv[1], progress=False, verify=False)",
                  f"{mirror}/slow/ml-100k.zip")
    _wait_for(lambda: list(cache.glob(".ml-100k.zip.tmp-*")), "the download's temp file")
    _kill(proc)
    data = tmp_path / "data"
    data.mkdir()
    (data / "ml-100k.zip").write_bytes(SlowMirror.body)
    autorec.load_movielens("ml-100k", data, download=False, verify=False)  # nothing to download
    assert not list(cache.glob(".ml-100k.zip.tmp-*"))


# ------------------------------------------------------ kill -9 mid-checkpoint write
KILLED_TRAINING = r'''
import sys, time
from pathlib import Path
import torch
import autorec
from tests._files import tiny_data
path, marker = sys.argv[1], Path(sys.argv[2])
real, calls = torch.save, []
def save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) < 2:
        return real(obj, f, *args, **kwargs)
    Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")  # epoch 2's checkpoint, cut short
    marker.touch()
    time.sleep(600)
torch.save = save
autorec.MultDAE(dims=(8,), epochs=3, batch_size=8, progress=False, device="cpu", seed=5).fit(
    tiny_data().binarize(4), checkpoint=path)
'''


def test_kill_9_mid_checkpoint_write_then_resume_cleans_up(tmp_path):
    ck, marker = tmp_path / "ck.pt", tmp_path / "writing"
    proc = _child(KILLED_TRAINING, ck, marker)
    _wait_for(marker.exists, "the second checkpoint write", timeout=120)
    _kill(proc)
    [temp] = tmp_path.glob(".ck.pt.tmp-*")
    assert temp.name.startswith(f".ck.pt.tmp-{HOST}-{proc.pid}-")
    assert torch.load(ck, weights_only=True)["epoch"] == 1  # epoch 1's checkpoint is intact
    R = tiny_data().binarize(4)
    make = lambda: autorec.MultDAE(dims=(8,), epochs=3, batch_size=8, progress=False, device="cpu", seed=5)
    resumed = make().fit(R, checkpoint=ck, resume=True)
    assert not temp.exists() and sorted(tmp_path.iterdir()) == [ck, marker]
    whole = make().fit(R)
    for k, v in whole.network_.state_dict().items():  # resume after the kill is exact
        assert torch.equal(v, resumed.network_.state_dict()[k]), k
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3]
