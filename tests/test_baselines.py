"""Baselines: Popularity, EASE, ALS and BPR (the last two fitted by ``implicit``)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from autorec.models import ALS, BPR, EASE, Popularity
from autorec.data import RatingMatrix

from .conftest import HALF, N_ITEMS, N_USERS, block_clicks, random_clicks



MODELS = {
    "ease": lambda: EASE(l2=5.0),
    "als": lambda: ALS(factors=2, iterations=15),  # the data have rank 2
    "bpr": lambda: BPR(factors=8, learning_rate=0.05, iterations=60),
}


@pytest.fixture(scope="module")
def block():
    return block_clicks()


@pytest.fixture(scope="module")
def fitted(block):
    return {name: make().fit(block) for name, make in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_known_users_get_their_block_first(fitted, block, name):
    model = fitted[name]
    users = np.arange(N_USERS)
    ids, _ = model.recommend(users, block.X, k=5)
    want = (users % 2)[:, None]
    assert ((ids // HALF) == want).mean() >= 0.95, name


@pytest.mark.parametrize("name", list(MODELS))
def test_new_users_are_folded_in(fitted, name):
    model = fitted[name]
    # two new users (-1): one with a few block-0 items, one with a few block-1 items
    hist = np.zeros((2, N_ITEMS), np.float32)
    hist[0, [1, 3, 5, 7]] = 1
    hist[1, [HALF + 2, HALF + 4, HALF + 6, HALF + 8]] = 1
    ids, scores = model.recommend(np.array([-1, -1]), sp.csr_matrix(hist), k=5)
    assert (ids[0] < HALF).all() and (ids[1] >= HALF).all(), (name, ids)
    assert np.isfinite(scores).all()


def test_popularity_scores_are_training_counts(block):
    model = Popularity().fit(block)
    counts = block.item_counts()
    s = model.score(np.array([0, -1]), block.X[:2])
    assert s.dtype == torch.float32 and s.shape == (2, N_ITEMS)
    np.testing.assert_array_equal(s.numpy(), np.tile(counts, (2, 1)))
    ids, _ = model.recommend(np.array([-1]), sp.csr_matrix((1, N_ITEMS), dtype=np.float32), k=3)
    assert list(ids[0]) == list(np.argsort(-counts, kind="stable")[:3])
    # recommend writes -inf into score blocks: it must not corrupt the stored counts
    model.recommend(np.arange(N_USERS), block.X, k=3)
    np.testing.assert_array_equal(model.item_counts_.numpy(), counts)


def test_ease_matches_numpy_formula():
    R = random_clicks(30, 12, density=0.3, rated=True)
    l2 = 7.0
    model = EASE(l2=l2).fit(R)
    X = R.X.toarray().astype(np.float64)
    P = np.linalg.inv(X.T @ X + l2 * np.eye(12))
    B = np.eye(12) - P @ np.diag(1 / np.diag(P))
    np.fill_diagonal(B, 0)
    np.testing.assert_allclose(model.B_.numpy(), B, rtol=1e-5, atol=1e-6)
    s = model.score(np.arange(5), R.X[:5]).numpy()
    np.testing.assert_allclose(s, X[:5] @ B, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="l2"):
        EASE(l2=0).fit(R)


def test_als_fold_in_equals_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    R = random_clicks(rated=True)
    model = ALS(factors=6, iterations=5, alpha=2.0, regularization=0.5).fit(R)
    ref = AlternatingLeastSquares(factors=6, regularization=0.5, alpha=1.0)
    ref.user_factors = model.user_factors_.numpy().copy()
    ref.item_factors = model.item_factors_.numpy().copy()
    X = R.X.tolil()
    X[3, :] = 0  # an empty history folds in to zero in both
    X = X.tocsr()
    X.eliminate_zeros()
    want = ref.recalculate_user(np.arange(X.shape[0]), model.confidence(X))
    got = model.fold_in(X).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not got[3].any()
    # and through score(): new users (-1) are scored from the folded-in vectors
    s = model.score(np.full(X.shape[0], -1), X).numpy()
    np.testing.assert_allclose(s, want @ ref.item_factors.T, rtol=1e-4, atol=1e-4)


def test_als_recommend_agrees_with_implicit():
    from implicit.cpu.als import AlternatingLeastSquares

    R = random_clicks(120, 70, density=0.1)
    C = ALS(alpha=1.0).confidence(R.X)
    imp = AlternatingLeastSquares(factors=8, iterations=5, random_state=0, num_threads=1)
    imp.fit(C, show_progress=False)
    model = ALS.from_factors(imp.user_factors, imp.item_factors, R.users, R.items, factors=8)
    users = np.arange(R.n_users)
    want_ids, want_scores = imp.recommend(users, R.X, N=10, filter_already_liked_items=True)
    ids, scores = model.recommend(users, R.X, k=10)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    # ids may differ only among (near-)tied scores
    tol = 1e-5 * np.maximum(1, np.abs(scores))
    tied = np.zeros_like(scores, dtype=bool)
    tied[:, 1:] |= np.abs(np.diff(scores, axis=1)) <= tol[:, 1:]
    tied[:, :-1] |= np.abs(np.diff(scores, axis=1)) <= tol[:, :-1]
    assert (ids[~tied] == want_ids[~tied]).all()
    with pytest.raises(ValueError, match="factor columns"):
        ALS.from_factors(imp.user_factors, imp.item_factors, factors=9)


def test_bpr_from_factors_folds_in_users_implicit_never_trained():
    """implicit leaves a user without items at [0, ..., 0, 1]: not a known user."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    R = random_clicks(40, 30, density=0.2)
    X = sp.csr_matrix(R.X.multiply((np.arange(40) != 3)[:, None]))
    X.eliminate_zeros()
    imp = BayesianPersonalizedRanking(factors=4, iterations=5, random_state=0, num_threads=1)
    imp.fit(X, show_progress=False)
    np.testing.assert_array_equal(imp.user_factors[3], [0, 0, 0, 0, 1])
    model = BPR.from_factors(imp.user_factors, imp.item_factors, R.users, R.items)
    np.testing.assert_array_equal(model.known_users_, np.diff(X.indptr) > 0)  # user 3 among the unknown
    assert not model.known_users_[3]


def test_als_fit_wraps_implicit_with_confidence_one_plus_alpha_r():
    """Our fit equals implicit fitted on C = 1 + alpha*r with implicit's alpha = 1."""
    from implicit.cpu.als import AlternatingLeastSquares

    R = random_clicks(rated=True)
    model = ALS(factors=5, iterations=3, alpha=3.0, seed=7).fit(R)
    C = R.X.copy()
    C.data = 1 + 3.0 * C.data
    imp = AlternatingLeastSquares(factors=5, iterations=3, random_state=7)
    imp.fit(C, show_progress=False)
    np.testing.assert_allclose(model.user_factors_.numpy(), imp.user_factors, rtol=1e-5, atol=1e-6)
    again = ALS(factors=5, iterations=3, alpha=3.0, seed=7).fit(R)
    assert torch.equal(again.item_factors_, model.item_factors_)


def test_bpr_bias_column_and_determinism(fitted, block):
    model = fitted["bpr"]
    U, V = model.user_factors_, model.item_factors_
    assert U.shape == (N_USERS, 9) and V.shape == (N_ITEMS, 9)
    assert torch.all(U[:, -1] == 1)
    s = model.score(np.arange(4), block.X[:4])
    torch.testing.assert_close(s, U[:4, :-1] @ V[:, :-1].T + V[:, -1])
    again = MODELS["bpr"]().fit(block)  # num_threads=1 by default: bit-reproducible
    assert torch.equal(again.item_factors_, V)


def test_bpr_fold_in_is_deterministic_and_batch_independent(fitted, block):
    model = fitted["bpr"]
    X = block.X
    full = model.fold_in(X)
    assert torch.all(full[:, -1] == 1)
    part = model.fold_in(X[[5, 17, 2]])
    torch.testing.assert_close(part, full[[5, 17, 2]])
    torch.testing.assert_close(model.fold_in(X), full)
    # an empty history scores by item bias alone
    empty = sp.csr_matrix((1, N_ITEMS), dtype=np.float32)
    s = model.score(np.array([-1]), empty)
    torch.testing.assert_close(s[0], model.item_factors_[:, -1])
    # folded-in vectors rank like the trained ones (same block first)
    ids, _ = model.recommend(np.full(N_USERS, -1), X, k=5)
    assert ((ids // HALF) == (np.arange(N_USERS) % 2)[:, None]).mean() >= 0.95


def test_users_with_empty_training_rows_are_folded_in():
    R = random_clicks()
    X = R.X.tolil()
    X[0, :] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    R = RatingMatrix(X, R.users, R.items)
    model = ALS(factors=4, iterations=3).fit(R)
    assert not model.known_users_[0]
    hist = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 9])), shape=(1, R.n_items), dtype=np.float32)
    torch.testing.assert_close(model.score(np.array([0]), hist), model.score(np.array([-1]), hist))
    assert model.score(np.array([0]), hist).abs().sum() > 0


@pytest.mark.parametrize("name", ["pop", *MODELS])
def test_save_load_round_trip(fitted, block, name, tmp_path):
    from autorec.models import load

    model = Popularity().fit(block) if name == "pop" else fitted[name]
    path = model.save(tmp_path / f"{name}.pt")
    torch.load(path, weights_only=True)  # no pickled objects
    loaded = load(path)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    users = np.array([0, 3, -1, 7])
    X = block.X[[0, 3, 5, 7]]
    torch.testing.assert_close(loaded.score(users, X), model.score(users, X), rtol=0, atol=0)
    assert list(loaded.users_) == list(block.users) and list(loaded.items_) == list(block.items)


def test_params_clone_and_validation(block):
    als = ALS(factors=3, seed=5)
    assert als.get_params()["factors"] == 3 and als.clone().get_params() == als.get_params()
    assert not hasattr(als.clone(), "user_factors_")
    with pytest.raises(ValueError, match="factors"):
        ALS(factors=0).fit(block)
    with pytest.raises(ValueError, match="non-negative"):
        neg = RatingMatrix(-block.X, block.users, block.items)
        ALS().fit(neg)
    with pytest.raises(ValueError, match="learning_rate"):
        BPR(learning_rate=0).fit(block)


def test_cuda_without_implicit_gpu_is_a_clear_error(block):
    import implicit.gpu

    if implicit.gpu.HAS_CUDA and torch.cuda.is_available():  # pragma: no cover
        pytest.skip("implicit has CUDA here")
    with pytest.raises(RuntimeError, match="HAS_CUDA|CUDA"):
        ALS(factors=2, iterations=1, device="cuda").fit(block)
    with pytest.raises(RuntimeError, match="HAS_CUDA|CUDA"):
        BPR(factors=2, iterations=1, device="cuda").fit(block)
