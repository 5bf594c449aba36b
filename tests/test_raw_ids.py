"""Raw ids in, raw ids out: recommend_for, recommend_new_user, predict_for, fit's type hints,
RatingMatrix.from_csr, and get_params(deep=) for scikit-learn's clone."""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import autorec
from autorec.exceptions import DataError, NotFittedForUser
from autorec.protocols import strong_generalization

from .conftest import block_clicks, two_group_ratings


@pytest.fixture(scope="module")
def clicks():
    return block_clicks()  # users "u0".."u59", items 100..139


@pytest.fixture(scope="module")
def ease(clicks):
    return autorec.EASE(l2=10.0).fit(clicks)


def test_recommend_for_gives_raw_ids_of_the_positional_lists(clicks, ease):
    df = ease.recommend_for(["u7", "u2"], clicks, k=5)
    assert list(df.columns) == ["user", "item", "rank", "score"]
    assert list(df["user"]) == ["u7"] * 5 + ["u2"] * 5 and list(df["rank"]) == [1, 2, 3, 4, 5] * 2
    idx, scores = ease.recommend([7, 2], clicks.X[[7, 2]], k=5)
    assert list(df["item"]) == list(clicks.items[idx.ravel()])
    np.testing.assert_array_equal(df["score"].to_numpy(), scores.ravel())
    seen = set(clicks.to_frame().query("user in ['u7', 'u2']").apply(tuple, axis=1).map(lambda t: t[:2]))
    assert not seen & set(zip(df["user"], df["item"]))
    assert len(ease.recommend_for(None, clicks, k=2)) == 2 * clicks.n_users


def test_recommend_for_folds_in_users_the_model_never_saw(clicks):
    p = strong_generalization(clicks, n_heldout=6, threshold=0.5, min_user_ratings=2, seed=0)
    model = autorec.EASE(l2=10.0).fit(p.train)
    history = p.test.history
    new = history.users[history.user_counts() > 0]
    df = model.recommend_for(new[:3], history, k=4)
    assert list(dict.fromkeys(df["user"])) == list(new[:3])
    rows = history.users.get_indexer(new[:3])
    idx, _ = model.recommend(None, history.X[rows], k=4)  # -1: folded in
    assert list(df["item"]) == list(history.items[idx.ravel()])


def test_recommend_new_user_from_raw_item_ids(clicks, ease):
    liked = clicks.items[clicks.X[3].indices]
    df = ease.recommend_new_user(list(liked), k=6)
    assert list(df.columns) == ["item", "rank", "score"] and len(df) == 6
    idx, scores = ease.recommend(None, clicks.X[3], k=6)  # the same row as a new user
    assert list(df["item"]) == list(clicks.items[idx[0]])
    assert not set(df["item"]) & set(liked)
    with pytest.raises(ValueError, match=r"item id\(s\) not in the model's items .*: 999"):
        ease.recommend_new_user([100, 999])
    with pytest.raises(ValueError, match="repeat"):
        ease.recommend_new_user([100, 100])


def test_rating_models_need_the_new_users_ratings_and_i_autorec_refuses():
    R, _, _ = two_group_ratings()
    mf = autorec.BiasedMF(factors=4, epochs=2, progress=False).fit(R)
    with pytest.raises(ValueError, match="ratings="):
        mf.recommend_new_user([0, 1])
    assert len(mf.recommend_new_user([0, 1], ratings=[5, 1], k=3)) == 3
    iar = autorec.IAutoRec(hidden=8, epochs=1, progress=False).fit(R)
    with pytest.raises(NotFittedForUser):
        iar.recommend_new_user([0, 1], ratings=[5, 1])


def test_predict_for_by_raw_ids():
    R, _, _ = two_group_ratings()
    df = R.to_frame()
    df["user"] = "user-" + df["user"].astype(str)
    R = autorec.RatingMatrix.from_frame(df)
    mf = autorec.BiasedMF(factors=4, epochs=2, progress=False).fit(R)
    users, items = ["user-5", "user-17", "user-5"], [3, 40, 41]
    expected = mf.predict(R.users.get_indexer(users), R.items.get_indexer(items))
    np.testing.assert_allclose(mf.predict_for(users, items), expected)
    with pytest.raises(ValueError, match="not in the model's training users"):
        mf.predict_for(["nobody"], [3])
    with pytest.raises(ValueError, match="pass numbers, not text"):
        mf.predict_for(["user-5"], ["3"])
    with pytest.raises(ValueError, match="one pair per prediction"):
        mf.predict_for(["user-5", "user-17"], [3])
    with pytest.raises(TypeError, match="does not predict ratings"):
        autorec.EASE().fit(R).predict_for(["user-5"], [3])


def test_extra_exclusions_are_never_recommended(clicks, ease):
    extra = clicks.replace(sp.csr_matrix(np.ones(clicks.shape, np.float32)))  # everything
    assert ease.recommend_for(["u1"], clicks, exclude=extra).empty
    idx, _ = ease.recommend([1], clicks.X[1], k=5, exclude_seen=False, exclude=clicks.X[1])
    assert not set(idx[0]) & set(clicks.X[1].indices)


@pytest.mark.parametrize("data, hint", [
    (sp.random(5, 4, density=0.5, format="csr"), "RatingMatrix.from_csr"),
    (pd.DataFrame({"user": [1], "item": [2], "rating": [3.0]}), "RatingMatrix.from_frame"),
    (np.ones((3, 3)), "from_csr"),
])
def test_fit_says_how_to_wrap_other_data(data, hint):
    with pytest.raises(TypeError, match=hint):
        autorec.Popularity().fit(data)


def test_from_csr_wraps_any_sparse_matrix():
    X = sp.coo_matrix(([5.0, 3.0, 0.0], ([0, 1, 1], [2, 0, 1])), shape=(2, 3))
    R = autorec.RatingMatrix.from_csr(X, users=["a", "b"], items=[10, 20, 30])
    assert R.nnz == 2 and R.X[0, 2] == 5.0 and list(R.users) == ["a", "b"]  # the stored 0 dropped
    assert autorec.RatingMatrix.from_csr(X).users.equals(pd.RangeIndex(2))
    with pytest.raises(DataError, match="NaN"):
        autorec.RatingMatrix.from_csr(sp.csr_matrix(np.array([[np.nan, 1.0]])))
    with pytest.raises(TypeError, match="csr_matrix"):
        autorec.RatingMatrix.from_csr(np.ones((2, 2)))
    with pytest.raises(ValueError, match="users"):
        autorec.RatingMatrix.from_csr(X, users=["a"])


def test_get_params_takes_deep_and_sklearn_clone_works():
    sig = inspect.signature(autorec.BaseRecommender.get_params)
    assert sig.parameters["deep"].default is True
    model = autorec.MultVAE(dims=(40, 10), epochs=3)
    assert model.get_params(deep=False) == model.get_params(deep=True)
    try:
        from sklearn.base import clone
    except ImportError:
        return  # scikit-learn is not a dependency: the signature is what clone needs
    for name in autorec.models.MODEL_NAMES:
        original = autorec.get_model(name)
        copy = clone(original)
        assert copy is not original and copy.get_params() == original.get_params()
