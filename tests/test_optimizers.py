"""The Trainer's full-batch optimisers (Rprop, L-BFGS: the AutoRec paper's) against Adam.

On a tiny AutoRec problem all three must reach the same value of the paper's objective
(observed SSE + lambda/2 ||W||^2 + ||V||^2 over all rows), and the full-batch paths must be
deterministic, resumable from a checkpoint and refuse what they cannot do.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autorec.models.autorec import IAutoRec, UAutoRec
from autorec.train import Batch, Trainer

from .test_autorec import low_rank

BASE = dict(hidden=16, l2=1.0, device="cpu", progress=False, seed=0)
#: epochs and lr of each optimiser on the tiny problem (Adam: 4 minibatches an epoch)
RUNS = {
    "adam": dict(optimizer="adam", epochs=400, lr=1e-2, batch_size=16),
    "rprop": dict(optimizer="rprop", epochs=400, lr=1e-2, batch_size=16),
    "lbfgs": dict(optimizer="lbfgs", epochs=150, lr=1.0, batch_size=16),
}


@pytest.fixture(scope="module")
def data():
    return low_rank(n_users=60, n_items=40, density=0.3)


def objective(model, data) -> float:
    """The paper's objective of the fitted network over every training row."""
    rows = model._rows_of(data.X)
    idx = np.flatnonzero(np.diff(rows.indptr) > 0)
    batch = Batch(torch.from_numpy(idx), rows[idx], len(idx), torch.device("cpu"), torch.Generator())
    with torch.no_grad():
        return float(model.network_.loss(batch, 0))


@pytest.fixture(scope="module")
def objectives(data):
    out = {}
    for name, run in RUNS.items():
        model = IAutoRec(**BASE, **run).fit(data)
        out[name] = (objective(model, data), model)
    out["start"] = (objective(IAutoRec(**BASE, **dict(RUNS["adam"], epochs=1, lr=1e-9)).fit(data), data), None)
    return out


@pytest.mark.parametrize("name", ["rprop", "lbfgs"])
def test_full_batch_optimisers_reach_adams_objective(objectives, name):
    adam, start = objectives["adam"][0], objectives["start"][0]
    got = objectives[name][0]
    assert got < 0.5 * start  # it trained
    assert got == pytest.approx(adam, rel=0.03) or got < adam, (name, got, adam)


@pytest.mark.parametrize("name", ["rprop", "lbfgs"])
def test_full_batch_is_deterministic_and_one_step_an_epoch(data, name):
    run = dict(RUNS[name], epochs=5)
    a = UAutoRec(**BASE, **run).fit(data)
    b = UAutoRec(**dict(BASE, seed=0), **dict(run, batch_size=7)).fit(data)  # other chunks
    assert len(a.history_) == 5
    losses_a = [h["loss"] for h in a.history_]
    losses_b = [h["loss"] for h in b.history_]
    # the full objective does not depend on how rows are chunked (up to float sums)
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-4)
    assert losses_a[-1] < losses_a[0]


def test_full_batch_resume_matches_straight_run(data, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    run = dict(RUNS["lbfgs"], epochs=6)
    straight = IAutoRec(**BASE, **run).fit(data)
    IAutoRec(**BASE, **dict(run, epochs=3)).fit(data, checkpoint=ckpt)
    resumed = IAutoRec(**BASE, **run).fit(data, checkpoint=ckpt, resume=True)
    for k, v in straight.network_.state_dict().items():
        torch.testing.assert_close(resumed.network_.state_dict()[k], v)


def test_bad_optimizer_and_weight_decay_raise(data):
    with pytest.raises(ValueError, match="optimizer"):
        IAutoRec(**BASE, optimizer="sgd").fit(data)
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(epochs=1, batch_size=1, lr=1.0, optimizer="newton")
    with pytest.raises(ValueError, match="weight_decay"):
        IAutoRec(**BASE, optimizer="rprop", weight_decay=1e-3, epochs=1).fit(data)
