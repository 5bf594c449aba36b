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
