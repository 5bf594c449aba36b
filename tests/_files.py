"""Helpers of the file-safety tests: tiny fitted models, re-signed payloads, child processes.

Crafted files that could crash the interpreter (out-of-bounds indices reaching scipy or
torch kernels) are loaded in a child process, so a missing check fails one test instead
of killing the test run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import autorec
from autorec.models._format import sign

from .conftest import two_group_ratings

ROOT = Path(__file__).resolve().parents[1]

#: the smallest settings that fit every registered model in well under a second
TINY = {
    "i-autorec": dict(hidden=8, epochs=1), "u-autorec": dict(hidden=8, epochs=1),
    "cdae": dict(hidden=8, epochs=1), "mult-dae": dict(dims=(8,), epochs=1),
    "mult-vae": dict(dims=(8, 4), epochs=1), "biased-mf": dict(factors=4, epochs=1),
    "ease": dict(l2=10.0), "als": dict(factors=4, iterations=2),
    "bpr": dict(factors=4, iterations=2), "lmf": dict(factors=4, iterations=2), "pop": dict(),
}
_fitted: dict = {}


def tiny_data():
    R, _, _ = two_group_ratings(n_users=40, n_items=30)
    return R


def tiny_model(name: str, R=None):
    """A fitted ``name`` with :data:`TINY` settings (on ``R``, binarized for rankers)."""
    cls = autorec.MODELS[name]
    params = dict(TINY[name])
    for key, value in (("device", "cpu"), ("progress", False), ("seed", 0)):
        if key in cls._param_names():
            params[key] = value
    model = cls(**params)
    R = tiny_data() if R is None else R
    return model.fit(R if model.predicts_ratings else R.binarize(4))


def cached_model(name: str):
    if name not in _fitted:
        _fitted[name] = tiny_model(name)
    return _fitted[name]


def payload_of(model, tmp_path: Path) -> dict:
    path = model.save(tmp_path / "orig.pt")
    return torch.load(path, weights_only=True)


def write(path: Path, payload: dict, *, resign: bool = True) -> Path:
    """Save ``payload`` as a model file; with ``resign`` its digest is recomputed (as an
    attacker or a buggy writer would), so only the consistency checks can refuse it."""
    payload = {k: v for k, v in payload.items() if k != "digest"}
    torch.save(sign(payload) if resign else payload, path)
    return path


def child(code: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


def outcomes(proc: subprocess.CompletedProcess) -> dict:
    """``{label: (status, message)}`` from a child printing ``json`` lines; a child killed
    by a signal (a crash) fails, naming the file it was using."""
    started, done = None, {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if record["status"] == "start":
            started = record["label"]
        else:
            done[record["label"]] = (record["status"], record.get("message", ""))
    assert proc.returncode >= 0, (
        f"the child died of signal {-proc.returncode} while using {started!r}: a file reached "
        f"a kernel unchecked\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return done


def state_of(model) -> dict:
    return model._get_state()


def np_equal(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
