"""Tests of I-AutoRec / U-AutoRec and their sparse products (autorec.models.autorec,
autorec.models._sparse_ops).

The sparse routes are checked against ``route="dense"``, the plain dense masked loss
(``losses.masked_sse``): same loss, same gradients. Everything runs on tiny synthetic
data; one quality gate runs on ml-100k when ``$AUTOREC_DATA`` has it.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import autorec
from autorec import losses, protocols
from autorec.exceptions import NotFittedForUser
from autorec.models._sparse_ops import Pattern, pair_dots, sddmm, spmm
from autorec.models.autorec import (
    SPARSE_MAX_DENSITY, IAutoRec, UAutoRec, resolve_route,
)
from autorec.train import Batch

from .conftest import ml100k

MODELS = [IAutoRec, UAutoRec]
FAST = dict(hidden=16, epochs=8, lr=1e-2, batch_size=32, l2=1.0, device="cpu", progress=False)


def low_rank(n_users=90, n_items=60, rank=3, density=0.2, seed=0) -> autorec.RatingMatrix:
    """Ratings 1..5 from a rank-``rank`` matrix, a random share ``density`` observed."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n_users, rank)) @ rng.normal(size=(rank, n_items)) / np.sqrt(rank)
    full = np.clip(np.round(3 + 1.2 * P), 1, 5).astype(np.float32)  # (U, I)
    rows, cols = np.nonzero(rng.random((n_users, n_items)) < density)
    return autorec.RatingMatrix.from_arrays(rows, cols, full[rows, cols], shape=(n_users, n_items))


def rmse(model, R) -> float:
    coo = R.X.tocoo()
    pred = model.predict(coo.row, coo.col)
    return float(np.sqrt(np.mean((pred - coo.data) ** 2)))


@pytest.fixture(scope="module")
def data():
    return low_rank()


_cache: dict = {}


def fitted(cls, data, **extra):
    key = (cls, tuple(sorted(extra.items())))
    if key not in _cache:
        _cache[key] = cls(**dict(FAST, **extra)).fit(data)
    return _cache[key]


# ----------------------------------------------------------------- sparse ops
@pytest.mark.parametrize("backend", ["bag", "scipy"])
def test_sparse_products_gradcheck(backend):
    rng = np.random.default_rng(1)
    X = sp.random(7, 9, density=0.3, format="csr", random_state=rng, dtype=np.float64)
    X.data[0] = 0.0  # stored zero: still an observed entry
    p = Pattern(X, "cpu", backend)
    assert p.nnz == X.nnz and p.values.dtype == torch.float32
    vals = p.values.double().requires_grad_()
    A = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    D = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, d: spmm(p, v, d), (vals, D))
    for method in ("sampled", "mm"):
        assert torch.autograd.gradcheck(lambda a, d: sddmm(p, a, d, method), (A, D))
    # with the squared norm of the weight folded into its gradient: both outputs, or either
    assert torch.autograd.gradcheck(lambda v, d: spmm(p, v, d, sq_norm=True), (vals, D))
    assert torch.autograd.gradcheck(lambda a, d: sddmm(p, a, d, "sampled", sq_norm=True), (A, D))
    assert torch.autograd.gradcheck(lambda a, d: sddmm(p, a, d, "sampled", sq_norm=True)[1], (A, D))
    assert torch.autograd.gradcheck(lambda v, d: spmm(p, v, d, sq_norm=True)[0], (vals, D))
    Xd = torch.from_numpy(X.toarray())
    torch.testing.assert_close(spmm(p, p.values.double(), D), Xd @ D)
    torch.testing.assert_close(sddmm(p, A, D), (A @ D.T)[p.rows, p.cols])
    # column-major order, and the pattern's values are X's at those positions
    key = p.cols * 7 + p.rows
    assert (key[1:] > key[:-1]).all()
    assert torch.equal(p.values.double(), Xd[p.rows, p.cols].float().double())


def test_pair_dots_any_order_and_repeats():
    rng = np.random.default_rng(2)
    A, D = torch.randn(5, 3), torch.randn(8, 3)
    ia, id_ = rng.integers(0, 5, 40), rng.integers(0, 8, 40)
    torch.testing.assert_close(pair_dots(A, D, ia, id_, chunk=7), (A @ D.T)[ia, id_])


# ------------------------------------------------------- sparse == dense (loss)
def _loss_and_grads(net, batch):
    net.zero_grad()
    loss = net.loss(batch, 0)
    loss.backward()
    return loss.detach(), {k: v.grad.clone() for k, v in net.named_parameters()}


def test_sparse_dense_matmul_matches_dense_and_gradcheck():
    """The first layer of CDAE / Mult-DAE / Mult-VAE: X @ W without densifying X."""
    from autorec.models._sparse_ops import sparse_dense_matmul

    rng = np.random.default_rng(2)
    X = sp.random(8, 11, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    X = sp.csr_matrix(X.multiply(np.arange(8)[:, None] != 3))  # row 3 empty
    W = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(sparse_dense_matmul(X, W.t()), torch.from_numpy(X.toarray()).double() @ W.t())
    assert torch.autograd.gradcheck(lambda w: sparse_dense_matmul(X, w.t()), (W,))
    empty = sp.csr_matrix((2, 11), dtype=np.float32)
    assert sparse_dense_matmul(empty, W.t()).shape == (2, 5)


@pytest.mark.parametrize("cls", MODELS)
def test_sparse_routes_equal_dense_loss_and_grads(cls, data):
    model = fitted(cls, data)
    net, rows = model.network_, model._rows_of(data.X)
    idx = np.arange(0, rows.shape[0], 3)
    batch = Batch(torch.from_numpy(idx), rows[idx], rows.shape[0], torch.device("cpu"), torch.Generator())
    net.route = "dense"
    ref_loss, ref_grads = _loss_and_grads(net, batch)
    try:
        for route in ("sparse", "sparse-mm"):
            net.route = route
            loss, grads = _loss_and_grads(net, batch)
            torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
            for name, g in grads.items():
                torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=f"{route}: d{name}")
    finally:
        net.route = model.route_


@pytest.mark.parametrize("cls", MODELS)
def test_scipy_kernels_give_the_same_gradients(cls, data, monkeypatch):
    """The embedding_bag kernels (default, CPU and CUDA) agree with scipy's CSR products."""
    import autorec.models._sparse_ops as ops

    model = fitted(cls, data)
    net, rows = model.network_, model._rows_of(data.X)
    batch = Batch(None, rows[:20], rows.shape[0], torch.device("cpu"), torch.Generator())
    _, ref = _loss_and_grads(net, batch)
    original = ops.Pattern.__init__
    monkeypatch.setattr(ops.Pattern, "__init__", lambda self, X, device="cpu", backend="bag":
                        original(self, X, device, "scipy"))
    _, got = _loss_and_grads(net, batch)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)


def test_no_gradient_at_unobserved_entries(data):
    model = fitted(UAutoRec, data)
    net, rows = model.network_, model._rows_of(data.X)
    Xb = rows[:3]
    Xd = torch.from_numpy(Xb.toarray())
    mask = torch.from_numpy((Xb != 0).toarray().astype(np.float32))  # no stored zeros here
    pred = net.forward_dense(Xd)
    pred.retain_grad()
    losses.masked_sse(pred, Xd, mask).backward()
    assert (pred.grad[mask == 0] == 0).all() and (pred.grad[mask == 1] != 0).any()
    # sparse route: a column nobody in the batch rated gets the L2 gradient only
    net.zero_grad()
    batch = Batch(None, Xb, rows.shape[0], torch.device("cpu"), torch.Generator())
    net.loss(batch, 0).backward()
    unrated = np.flatnonzero(np.diff(Xb.tocsc().indptr) == 0)
    assert len(unrated) > 0
    reg = net.l2 * (3 / rows.shape[0]) * net.W.detach()[unrated]
    torch.testing.assert_close(net.W.grad[unrated], reg)
    assert (net.b.grad[unrated] == 0).all()


def test_auto_route_rule():
    assert resolve_route("auto", 0.045) == "sparse"
    assert resolve_route("auto", SPARSE_MAX_DENSITY + 0.1) == "dense"
    assert resolve_route("dense", 0.01) == "dense"
    assert IAutoRec(**dict(FAST, epochs=1)).fit(low_rank()).route_ == "sparse"  # density 0.2
    with pytest.raises(ValueError, match="route"):
        resolve_route("fast", 0.1)


def test_dense_route_trains_like_sparse(data):
    a = IAutoRec(**dict(FAST, epochs=3, route="dense")).fit(data)
    b = IAutoRec(**dict(FAST, epochs=3, route="sparse")).fit(data)
    assert a.route_ == "dense" and b.route_ == "sparse"
    for (name, p), q in zip(a.network_.named_parameters(), b.network_.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


# -------------------------------------------------------------------- learning
@pytest.mark.parametrize("cls", MODELS)
def test_learns_low_rank_better_than_global_mean(cls):
    R = low_rank(n_users=300, n_items=200, density=0.2, seed=3)
    train, test = autorec.split.holdout(R, test_size=0.1, seed=0)
    model = cls(**dict(FAST, epochs=15, hidden=32, batch_size=32, lr=2e-2)).fit(train)
    baseline = float(np.sqrt(np.mean((test.X.data - train.X.data.mean()) ** 2)))
    got = rmse(model, test)
    assert got < 0.7 * baseline, (got, baseline)  # measured 0.46 (I) and 0.51 (U)


# ------------------------------------------------------------ implicit mode
def test_implicit_loss_is_dense_sse_over_every_cell(data):
    """implicit=True: unobserved cells count as 0; same loss and gradients as the dense form."""
    model = fitted(UAutoRec, data, implicit=True)
    net = model.network_
    rows = data.X[:20]
    _, grads = _loss_and_grads(net, Batch(None, rows, data.n_users, torch.device("cpu"), torch.Generator()))
    net.zero_grad()
    Xd = torch.from_numpy(rows.toarray())  # (20, n_items), zeros where unobserved
    ref = ((net.forward_dense(Xd) - Xd) ** 2).sum() + net.penalty(20, data.n_users)
    ref.backward()
    loss = net.loss(Batch(None, rows, data.n_users, torch.device("cpu"), torch.Generator()), 0)
    torch.testing.assert_close(loss, ref)
    for name, param in net.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::autorec.split.SplitWarning")  # a few one-click users
def test_implicit_uautorec_ranks_held_out_clicks_above_popularity():
    R = low_rank(n_users=200, n_items=80, density=0.3, seed=4)
    liked = autorec.RatingMatrix.from_arrays(*sp.find(R.X >= 4)[:2], np.ones((R.X >= 4).nnz), shape=R.X.shape)
    train, test = autorec.split.per_user(liked, test_size=0.2, seed=0)
    model = UAutoRec(**dict(FAST, epochs=20, hidden=32, l2=1.0, implicit=True)).fit(train)
    got = autorec.evaluate(model, train, test, metrics=("ndcg",), ks=(10,))["ndcg@10"]
    pop = autorec.evaluate(autorec.Popularity().fit(train), train, test, metrics=("ndcg",), ks=(10,))["ndcg@10"]
    assert got > 1.2 * pop, (got, pop)
    assert model.predict([0], [0])[0] < 1.5  # not clipped to the all-ones "rating range", near 0..1
    assert not model.predicts_ratings and UAutoRec().predicts_ratings
    # a plain held-out matrix as validation: the best epoch is chosen by NDCG@100, not RMSE
    tuned = UAutoRec(**dict(FAST, epochs=3, hidden=8, implicit=True)).fit(train, test)
    assert "ndcg@100" in tuned.history_[0] and "rmse" not in tuned.history_[0]


# ----------------------------------------------------------- predict and score
def _with_holes(data):
    """``data`` without any rating of user 0 and item 0."""
    X = data.X.tolil()
    X[0, :] = 0
    X[:, 0] = 0
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    return data.replace(X)


@pytest.mark.parametrize("cls", MODELS)
def test_default_rating_for_unseen_users_and_items(cls, data):
    train = _with_holes(data)
    model = cls(**dict(FAST, epochs=2, default_rating=2.5)).fit(train)
    pred = model.predict([0, 0, 3, -1, 5], [4, 0, 0, 2, 7])
    assert pred.dtype == np.float32 and pred.shape == (5,)
    np.testing.assert_array_equal(pred[:4], 2.5)
    assert pred[4] != 2.5
    scores = model.score(np.array([3]), train.X[[3]]).numpy()
    assert scores[0, 0] == 2.5  # an item never rated scores the default too


@pytest.mark.parametrize("cls", MODELS)
def test_predictions_clipped_to_training_range(cls, data):
    model = cls(**dict(FAST, epochs=1)).fit(data)
    users, items = np.arange(10), np.arange(10)
    with torch.no_grad():
        model.network_.b.fill_(100.0)
    model._on_weights_changed()
    np.testing.assert_array_equal(model.predict(users, items), 5.0)
    with torch.no_grad():
        model.network_.b.fill_(-100.0)
    np.testing.assert_array_equal(model.predict(users, items), 1.0)
    assert model.rating_range_ == (1.0, 5.0)


def test_iautorec_refuses_new_users(data):
    train = _with_holes(data)
    model = IAutoRec(**dict(FAST, epochs=1)).fit(train)
    for users in ([-1], [0], [3, 0]):
        with pytest.raises(NotFittedForUser, match="IAutoRec cannot score 1 user.*UAutoRec"):
            model.score(np.array(users), sp.csr_matrix((len(users), train.n_items)))
    assert model.score(np.array([3]), train.X[[3]]).shape == (1, train.n_items)
    assert not IAutoRec.folds_in and UAutoRec.folds_in


def test_uautorec_folds_in_new_users(data):
    model = fitted(UAutoRec, data)
    X = data.X[[4, 7]]
    known = model.score(np.array([4, 7]), X)
    new = model.score(np.array([-1, -1]), X)
    torch.testing.assert_close(new, known)
    other = model.score(np.array([-1]), data.X[[9]])
    assert not torch.allclose(other[0], known[0])
    ids, _ = model.recommend(None, X, k=5)
    assert ids.shape == (2, 5) and (ids >= 0).all()


@pytest.mark.parametrize("cls", MODELS)
def test_predict_matches_score(cls, data):
    """predict (pairs through the sampled kernel) agrees with score (dense rows)."""
    model = fitted(cls, data)
    users = np.array([1, 5, 8])
    S = model.score(users, data.X[users]).numpy()
    items = np.arange(data.n_items)
    pred = model.predict(np.repeat(users, len(items)), np.tile(items, len(users))).reshape(3, -1)
    np.testing.assert_allclose(pred, np.clip(S, 1, 5), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------- persistence, seeding
@pytest.mark.parametrize("cls", MODELS)
def test_save_load_round_trip(cls, data, tmp_path):
    model = fitted(cls, data)
    path = model.save(tmp_path / "m.pt")
    torch.load(path, weights_only=True)
    loaded = autorec.load(path)
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score(users, data.X).numpy(), model.score(users, data.X).numpy())
    coo = data.X.tocoo()
    np.testing.assert_array_equal(loaded.predict(coo.row, coo.col), model.predict(coo.row, coo.col))
    assert loaded.route_ == model.route_ and loaded.rating_range_ == model.rating_range_


@pytest.mark.parametrize("cls", MODELS)
def test_same_seed_same_model(cls, data):
    a = cls(**dict(FAST, epochs=3)).fit(data)
    b = cls(**dict(FAST, epochs=3)).fit(data)
    c = cls(**dict(FAST, epochs=3, seed=1)).fit(data)
    for p, q in zip(a.network_.parameters(), b.network_.parameters()):
        assert torch.equal(p, q)
    coo = data.X.tocoo()
    np.testing.assert_array_equal(a.predict(coo.row, coo.col), b.predict(coo.row, coo.col))
    assert not torch.equal(a.network_.W, c.network_.W)


def test_early_stopping_restores_best_epoch(data):
    train, valid = autorec.split.holdout(data, test_size=0.2, seed=0)
    # a large code, no L2 and a big step size: validation RMSE turns up after a few epochs
    model = UAutoRec(**dict(FAST, epochs=40, l2=0.0, hidden=64, lr=3e-2, patience=3)).fit(train, valid)
    curve = [r["rmse"] for r in model.history_]
    assert len(curve) < 40  # stopped early
    best = int(np.argmin(curve))
    assert model.best_epoch_ == best + 1
    assert rmse(model, valid) == pytest.approx(curve[best], abs=1e-6)


def test_bad_parameters_raise(data):
    with pytest.raises(ValueError, match="activation"):
        IAutoRec(**dict(FAST, activation="swish")).fit(data)
    with pytest.raises(ValueError, match="hidden"):
        UAutoRec(**dict(FAST, hidden=0)).fit(data)
    with pytest.raises(ValueError, match="route"):
        UAutoRec(**dict(FAST, route="fast")).fit(data)
    with pytest.raises(ValueError, match="shape"):
        fitted(IAutoRec, data).predict([1, 2], [1])


def test_defaults_follow_the_paper():
    for cls in MODELS:
        params = cls().get_params()
        assert params["hidden"] == 500 and params["activation"] == "sigmoid"
        assert params["output_activation"] == "identity" and params["default_rating"] == 3.0
        assert params["route"] == "auto"


# ----------------------------------------------------------- ml-100k quality gate
# IAutoRec's defaults on ml-100k, AutoRec protocol (random 90/10), seed 0: test RMSE 0.8895
# measured, fit in ~6 s on one thread of the shared 2-core machine; the gate adds 0.015.
ML100K_GATE_RMSE = 0.905


def test_ml100k_iautorec_quality_gate():
    R = ml100k()
    p = protocols.autorec_protocol(R, test_size=0.1, valid_size=0.0, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steady timing when other jobs share the cores
    try:
        start = time.perf_counter()
        model = IAutoRec(device="cpu", progress=False, seed=0).fit(p.train)  # the defaults
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    got = autorec.metrics.rmse(model, p.test.target)
    assert got < ML100K_GATE_RMSE, got
    assert seconds < 60, seconds


@pytest.mark.parametrize("cls", MODELS)
def test_model_file_keeps_codes_not_ratings_and_format_1_loads(cls, data, tmp_path):
    """A fitted AutoRec keeps no training ratings; files store its codes (format 2).

    A format-1 file (which stored the training ratings as ``train_X``) still loads: the
    ratings are encoded once into codes and dropped, giving the same scores.
    """
    model = fitted(cls, data)
    assert not any(isinstance(v, sp.spmatrix) for v in vars(model).values())
    path = model.save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 3 and "train_X" not in payload["state"]
    assert payload["state"]["codes"].shape == (model._rows_of(data.X).shape[0], model.hidden)
    old = {k: v for k, v in payload.items() if k != "digest"}  # formats 1-2 had no digest
    old.update(format_version=1, users=torch.tensor(data.users.to_numpy(np.int64)),
               items=torch.tensor(data.items.to_numpy(np.int64)))  # int ids: an int64 tensor
    old["state"] = {k: v for k, v in payload["state"].items() if k != "codes"}
    X = data.X  # format 1's layout of the training ratings
    old["state"]["train_X"] = {"indptr": torch.from_numpy(X.indptr.astype(np.int64)),
                               "indices": torch.from_numpy(X.indices.astype(np.int64)),
                               "data": torch.from_numpy(X.data.astype(np.float32)),
                               "shape": list(X.shape)}
    torch.save(old, tmp_path / "old.pt")
    loaded = autorec.load(tmp_path / "old.pt")
    users = np.arange(data.n_users)
    np.testing.assert_allclose(loaded.score(users, data.X).numpy(), model.score(users, data.X).numpy(),
                               rtol=1e-6, atol=1e-6)
    assert loaded._rows is None
