"""LMF (logistic matrix factorization), fitted by ``implicit``: fold-in, layout, saving."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp
import torch

import autorec
from autorec.models import LMF, Popularity
from autorec.data import RatingMatrix

from .conftest import HALF, N_ITEMS, N_USERS, block_clicks, random_clicks, ml100k


@pytest.fixture(scope="module")
def block():
    return block_clicks()


@pytest.fixture(scope="module")
def fitted(block):
    # implicit's default regularization 0.6 is noisy on 60 users (82-85% of the trained
    # users' top-5 in their block); 2.0: 97-100% over seeds 0-4, folded-in users 99.7-100%
    return LMF(factors=8, iterations=30, regularization=2.0).fit(block)


def _objective_gradient(model, X, Z, train_X) -> torch.Tensor:
    """Autograd gradient of the fold-in objective w.r.t. ``[x, b_u]``, written from the
    formula (not from the solver): popularity from ``train_X``, m = min(f + 2, n_u·neg_prop)."""
    V = model.item_factors_.double()  # (n, f + 2): [y, b_i, 1]
    f = V.shape[1] - 2
    Y1, item_bias = torch.cat([V[:, :f], V[:, -1:]], 1), V[:, f]  # (n, f + 1), (n,)
    counts = np.bincount(train_X.indices, minlength=train_X.shape[1]).astype(np.float64)
    pop = torch.from_numpy(counts / counts.sum())  # (n,)
    C = torch.from_numpy(X.toarray().astype(np.float64))  # (B, n)
    m = torch.from_numpy(np.minimum(f + 2, np.diff(X.indptr) * model.neg_prop).astype(np.float64))  # (B,)
    Z = torch.as_tensor(Z, dtype=torch.float64)
    z = torch.cat([Z[:, :f], Z[:, -1:]], 1).requires_grad_(True)  # (B, f + 1)
    S = z @ Y1.T + item_bias  # (B, n)
    softplus = torch.nn.functional.softplus
    objective = ((C * (S - softplus(S))).sum() - (m[:, None] * pop * softplus(S)).sum()
                 - model.regularization / 2 * (z ** 2).sum())
    objective.backward()
    return z.grad


def test_fold_in_reaches_a_stationary_point_of_the_objective():
    R = random_clicks(rated=True)  # confidences 1..5
    model = LMF(factors=6, iterations=5, regularization=0.3).fit(R)
    X = R.X.tolil()
    X[3, :] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    Z = model.fold_in(X)  # (B, f + 2)
    assert Z.shape == (R.n_users, 8) and torch.all(Z[:, -2] == 1)
    assert not Z[3, :-2].any() and Z[3, -1] == 0  # empty history: z = 0
    g = _objective_gradient(model, X, Z, R.X).norm(dim=1)  # (B,)
    g0 = _objective_gradient(model, X, torch.zeros_like(Z), R.X).norm(dim=1)  # at z = 0
    busy = np.diff(X.indptr) > 0
    rel = (g[busy] / g0[busy]).max().item()
    assert rel < 1e-3, rel  # measured ~1e-6 (float32 rounding of the result)
    # trained vectors are noisy Adagrad iterates, far from stationary
    g_trained = _objective_gradient(model, X, model.user_factors_, R.X).norm(dim=1)
    assert (g_trained[busy] / g0[busy]).max() > 10 * rel
    # a user's vector depends on their history only, not on the batch
    torch.testing.assert_close(model.fold_in(X[[5, 17, 2]]), Z[[5, 17, 2]], rtol=1e-5, atol=1e-6)


def _recall_at(model, users, X_train, X_test, k=20) -> float:
    ids, _ = model.recommend(users, X_train, k=k)
    relevant = X_test.toarray() > 0  # (B, n)
    hits = relevant[np.arange(len(ids))[:, None], ids].sum(axis=1)  # ids are never -1 here
    n_rel = relevant.sum(axis=1)
    some = n_rel > 0
    return float((hits[some] / np.minimum(k, n_rel[some])).mean())


def test_folded_in_users_rank_like_trained_ones_on_ml100k():
    R = ml100k().binarize(4)
    train, test = autorec.split.holdout(R, 0.2, seed=0)
    model = LMF(seed=0).fit(train)  # implicit's defaults: 30 factors
    users = np.flatnonzero(model.known_users_)
    X_train, X_test = train.X[users], test.X[users]
    trained = _recall_at(model, users, X_train, X_test)
    folded = _recall_at(model, np.full(len(users), -1), X_train, X_test)
    floor = _recall_at(Popularity().fit(train), users, X_train, X_test)
    # measured: trained 0.289, folded 0.298, popularity 0.200 (item biases alone: 0.201)
    assert folded >= 0.8 * trained, (folded, trained)
    assert folded >= 1.3 * floor, (folded, floor)


def test_new_users_are_folded_into_their_block(fitted, block):
    hist = np.zeros((2, N_ITEMS), np.float32)
    hist[0, [1, 3, 5, 7]] = 1
    hist[1, [HALF + 2, HALF + 4, HALF + 6, HALF + 8]] = 1
    ids, scores = fitted.recommend(np.array([-1, -1]), sp.csr_matrix(hist), k=5)
    assert (ids[0] < HALF).all() and (ids[1] >= HALF).all(), ids
    ids, _ = fitted.recommend(np.full(N_USERS, -1), block.X, k=5)
    assert ((ids // HALF) == (np.arange(N_USERS) % 2)[:, None]).mean() >= 0.95
    empty = sp.csr_matrix((1, N_ITEMS), dtype=np.float32)  # scores = item biases
    torch.testing.assert_close(fitted.score(np.array([-1]), empty)[0], fitted.item_factors_[:, -2])


def test_save_load_round_trip_keeps_fold_in(fitted, block, tmp_path):
    path = fitted.save(tmp_path / "lmf.pt")
    torch.load(path, weights_only=True)  # no pickled objects
    loaded = autorec.load(path)
    assert type(loaded) is LMF and loaded.get_params() == fitted.get_params()
    users = np.array([0, 3, -1, 7, -1])  # -1: folded in, needs the saved popularity
    X = block.X[[0, 3, 5, 7, 9]]
    torch.testing.assert_close(loaded.score(users, X), fitted.score(users, X), rtol=0, atol=0)
    torch.testing.assert_close(loaded.item_popularity_, fitted.item_popularity_, rtol=0, atol=0)


def test_fit_and_from_factors_reproduce_implicit():
    from implicit.cpu.lmf import LogisticMatrixFactorization

    R = random_clicks(120, 70, density=0.1)
    X = R.X.tolil()
    X[4, :] = 0  # implicit leaves this user at [0, 1, 0]
    X = X.tocsr()
    X.eliminate_zeros()
    R = RatingMatrix(X, R.users, R.items)
    imp = LogisticMatrixFactorization(factors=6, iterations=10, random_state=3, num_threads=1)
    imp.fit(R.X, show_progress=False)
    ours = LMF(factors=6, iterations=10, seed=3).fit(R)  # same arguments, same numbers
    np.testing.assert_array_equal(ours.user_factors_.numpy(), imp.user_factors)
    np.testing.assert_array_equal(ours.item_factors_.numpy(), imp.item_factors)
    counts = np.bincount(R.X.indices, minlength=R.n_items)
    model = LMF.from_factors(imp.user_factors, imp.item_factors, R.users, R.items, item_counts=counts)
    assert model.factors == 6 and not model.known_users_[4] and model.known_users_.sum() == R.n_users - 1
    known = np.flatnonzero(model.known_users_)
    np.testing.assert_allclose(model.score(known, R.X[known]).numpy(),
                               imp.user_factors[known] @ imp.item_factors.T, rtol=1e-5, atol=1e-5)
    want_ids, want_scores = imp.recommend(known, R.X[known], N=10, filter_already_liked_items=True)
    ids, scores = model.recommend(known, R.X[known], k=10)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert (ids == want_ids).mean() > 0.99  # may differ only among (near-)ties
    torch.testing.assert_close(model.fold_in(R.X), ours.fold_in(R.X))  # same popularity
    bare = LMF.from_factors(imp.user_factors, imp.item_factors)
    bare.score(known[:3], R.X[known[:3]])  # known users need no popularity
    with pytest.raises(ValueError, match="item_counts"):
        bare.score(np.array([-1]), R.X[:1])


def test_bad_params_name_the_parameter(block):
    for params, name in [(dict(factors=0), "factors"), (dict(iterations=1.5), "iterations"),
                         (dict(regularization=-1), "regularization"),
                         (dict(learning_rate=0), "learning_rate"), (dict(neg_prop=0), "neg_prop"),
                         (dict(neg_prop=2.5), "neg_prop"), (dict(device="tpu"), "device")]:
        with pytest.raises(ValueError, match=name):
            LMF(**params).fit(block)
    with pytest.raises(ValueError, match="non-negative"):
        LMF().fit(RatingMatrix(-block.X, block.users, block.items))
    U, V = np.zeros((3, 5)), np.ones((4, 5))
    with pytest.raises(ValueError, match="factor columns"):
        LMF.from_factors(U, V, factors=4)
    with pytest.raises(ValueError, match="item_counts"):
        LMF.from_factors(U, V, item_counts=[1, 2])


def test_cuda_without_a_gpu_is_a_clear_error(block):
    if torch.cuda.is_available():  # pragma: no cover
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        LMF(factors=2, iterations=1, device="cuda").fit(block)
