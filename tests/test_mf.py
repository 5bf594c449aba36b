"""BiasedMF: the bias initialisation and that the factors add something over the biases."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import autorec
from autorec.metrics import rmse
from autorec.models.biased_mf import damped_biases
from autorec.datasets.synthetic import synthetic_ratings

FAST = dict(device="cpu", progress=False, seed=0)


def test_damped_biases_solve_the_bias_only_ridge_problem():
    """Enough alternating passes reach min Σ (r - μ - b_u - b_i)² + d (Σ b_u² + Σ b_i²)."""
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(sp.random(30, 20, density=0.3, format="csr", random_state=rng))
    X.data = np.round(X.data * 4 + 1).astype(np.float32)  # ratings 1..5
    mu, d = float(X.data.mean()), 5.0
    user_bias, item_bias = damped_biases(X, mu, damping=d, passes=300)
    coo = X.tocoo()
    design = np.zeros((coo.nnz, 50))  # one column per user, then one per item
    design[np.arange(coo.nnz), coo.row] = 1
    design[np.arange(coo.nnz), 30 + coo.col] = 1
    exact = np.linalg.solve(design.T @ design + d * np.eye(50), design.T @ (coo.data - mu))
    np.testing.assert_allclose(np.concatenate([user_bias, item_bias]), exact, atol=1e-4)


def test_bias_only_starts_converged_and_factors_beat_it():
    R = synthetic_ratings(n_users=300, n_items=200, density=0.1, seed=1)
    p = autorec.protocols.autorec_protocol(R, valid_size=0.1, seed=0)
    mean_only = float(np.sqrt(np.mean((p.test.target.X.data - p.train.X.data.mean()) ** 2)))
    bias_only = autorec.BiasedMF(factors=0, epochs=1, **FAST).fit(p.train, p.valid)
    user_bias, item_bias = damped_biases(p.train.X, bias_only.global_mean_)
    test = p.test.target.X.tocoo()
    pred = np.clip(bias_only.global_mean_ + user_bias[test.row] + item_bias[test.col], 1, 5)
    closed_form = float(np.sqrt(np.mean((pred - test.data) ** 2)))
    assert abs(rmse(bias_only, p.test.target) - closed_form) < 0.01  # one epoch away from the init
    assert rmse(bias_only, p.test.target) < 0.95 * mean_only
    mf = autorec.BiasedMF(factors=16, epochs=40, lr=1e-2, **FAST).fit(p.train)
    assert rmse(mf, p.test.target) < rmse(bias_only, p.test.target) - 0.01, (rmse(mf, p.test.target), rmse(bias_only, p.test.target))


def test_ridge_rows_is_the_exact_per_row_ridge_solution():
    """Every row's x = argmin Σ (z_jᵀx − y_j)² + λ n_r ||x||², blocks of any size, empty rows 0."""
    import torch

    from autorec.models.biased_mf import ridge_rows

    rng = np.random.default_rng(0)
    X = sp.random(40, 25, density=0.3, format="lil", random_state=rng)
    X[3] = 0  # an empty row
    X = sp.csr_matrix(X.tocsr())
    X.eliminate_zeros()
    Z = rng.normal(size=(25, 6))
    y = rng.normal(size=X.nnz)
    lam = 0.3
    cols = torch.from_numpy(X.indices.astype(np.int64))
    for budget in (1, 64, 1 << 20):  # one row per block ... everything in one block
        got = ridge_rows(X.indptr, cols, torch.from_numpy(y).float(), torch.from_numpy(Z).float(),
                         lam, budget=budget).numpy()
        for r in range(X.shape[0]):
            lo, hi = X.indptr[r], X.indptr[r + 1]
            Zr = Z[X.indices[lo:hi]]
            exact = (np.linalg.solve(Zr.T @ Zr + lam * (hi - lo) * np.eye(6), Zr.T @ y[lo:hi])
                     if hi > lo else np.zeros(6))
            np.testing.assert_allclose(got[r], exact, atol=2e-5, rtol=1e-4)


def test_als_never_raises_the_objective_and_matches_adam_quality():
    """Each half-sweep solves its side exactly, so the training loss cannot go up; on
    held-out ratings ALS does at least as well as Adam's default run."""
    R = synthetic_ratings(n_users=300, n_items=200, density=0.1, seed=1)
    p = autorec.protocols.autorec_protocol(R, valid_size=0.1, seed=0)
    als = autorec.BiasedMF(factors=16, solver="als", l2=0.1, epochs=8, **FAST).fit(p.train, p.valid)
    losses = [h["loss"] for h in als.history_]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert als.best_epoch_ == 1 + int(np.argmin([h["rmse"] for h in als.history_]))
    adam = autorec.BiasedMF(factors=16, epochs=40, lr=1e-2, **FAST).fit(p.train)
    assert rmse(als, p.test.target) <= rmse(adam, p.test.target) + 0.005


def test_als_refuses_what_it_cannot_do(tmp_path):
    import pytest

    R = synthetic_ratings(n_users=30, n_items=20, density=0.3, seed=0)
    with pytest.raises(ValueError, match="solver must be one of"):
        autorec.BiasedMF(solver="sgd", **FAST).fit(R)
    with pytest.raises(ValueError, match="needs l2 > 0"):
        autorec.BiasedMF(solver="als", l2=0.0, **FAST).fit(R)
    with pytest.raises(ValueError, match="checkpoint/resume are for solver='adam'"):
        autorec.BiasedMF(solver="als", **FAST).fit(R, checkpoint=tmp_path / "ck.pt")


def test_als_model_saves_and_loads(tmp_path):
    R = synthetic_ratings(n_users=60, n_items=40, density=0.2, seed=0)
    model = autorec.BiasedMF(factors=4, solver="als", epochs=3, **FAST).fit(R)
    back = autorec.load(model.save(tmp_path / "mf.pt"))
    u, i = R.X.nonzero()
    np.testing.assert_array_equal(back.predict(u, i), model.predict(u, i))
    assert back.solver == "als"
