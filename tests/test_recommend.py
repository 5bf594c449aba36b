"""The one ``recommend`` of BaseRecommender: ties, padding, exclusion, guards."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from autorec.models._topk import topk_lowest_index_first
from autorec.models.base import BaseRecommender
from autorec.data import RatingMatrix


class FixedScores(BaseRecommender):
    """Returns a fixed score matrix (rows by user_idx)."""

    def __init__(self, scores=None, view=False):
        self.scores = scores
        self.view = view

    def fit(self, train, valid=None):
        self._init_fit(train)
        return self

    def score(self, users, X):
        users, X = self._check_users_X(users, X)
        table = torch.as_tensor(self.scores, dtype=torch.float32)
        if self.view:  # a view of model state, as a careless model might return
            return table.expand(len(users), -1)
        return table[torch.from_numpy(np.maximum(users, 0))].clone()


def _fitted(scores, **kw):
    n_users, n_items = np.asarray(scores).shape
    R = RatingMatrix.from_arrays(np.arange(n_users), np.zeros(n_users, int), shape=(n_users, n_items))
    return FixedScores(scores, **kw).fit(R)


def test_ties_across_the_cut_take_the_lowest_indices():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (16, 300), generator=g).float()  # many ties
    for k in (1, 7, 50, 299, 300):
        top_scores, top_idx = topk_lowest_index_first(scores.clone(), k)
        ref = np.stack([np.lexsort((np.arange(300), -row))[:k] for row in scores.numpy()])
        assert np.array_equal(top_idx, ref)
        assert np.array_equal(top_scores, np.take_along_axis(scores.numpy(), top_idx, 1))


def test_selection_is_the_same_in_blocks_and_threads(monkeypatch):
    from autorec.models import _topk

    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 50, (700, 120), generator=g).float()  # ties everywhere
    scores[3, :] = -torch.inf  # a row with nothing to recommend
    whole = topk_lowest_index_first(scores, 10)
    monkeypatch.setattr(_topk, "_ROWS_PER_TASK", 64)  # 11 blocks over the threads
    blocks = topk_lowest_index_first(scores, 10)
    assert all(np.array_equal(a, b) for a, b in zip(whole, blocks))
    ref = np.stack([np.lexsort((np.arange(120), -row))[:10] for row in scores.numpy()])
    assert np.array_equal(whole[1], ref)


def test_padding_exclusion_and_order():
    model = _fitted([[0.1, 0.9, 0.5, 0.5]])
    X = sp.csr_matrix(np.array([[0, 1, 0, 1]], dtype=np.float32))
    ids, scores = model.recommend([0], X, k=4)
    assert ids.tolist() == [[2, 0, -1, -1]]
    assert scores[0, 0] == pytest.approx(0.5) and np.isneginf(scores[0, 2:]).all()
    ids, _ = model.recommend([0], X, k=4, exclude_seen=False)
    assert ids.tolist() == [[1, 2, 3, 0]]


def test_score_views_are_not_written_into():
    state = torch.tensor([[1.0, 2.0, 3.0]])
    model = _fitted(state.numpy())
    model.scores = state
    model.view = True
    X = sp.csr_matrix(np.array([[0, 0, 1]], dtype=np.float32))
    ids, _ = model.recommend([0], X, k=2)
    assert ids.tolist() == [[1, 0]]
    assert torch.equal(state, torch.tensor([[1.0, 2.0, 3.0]]))


def test_nan_scores_raise():
    model = _fitted([[0.1, np.nan, 0.3], [0.1, 0.2, 0.3]])
    with pytest.raises(FloatingPointError, match="NaN"):
        model.recommend([1, 0], sp.csr_matrix((2, 3), dtype=np.float32), k=1)
    # a NaN at an item the user has seen is never recommended: it is masked, not an error
    ids, _ = model.recommend([0], sp.csr_matrix(np.array([[0, 1, 0]], dtype=np.float32)), k=1)
    assert ids.tolist() == [[2]]


def test_bad_users_and_shapes_raise():
    model = _fitted([[0.1, 0.2, 0.3]])
    empty = sp.csr_matrix((1, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="out of range"):
        model.recommend([-2], empty, k=1)
    with pytest.raises(ValueError, match="out of range"):
        model.recommend([5], empty, k=1)
    with pytest.raises(ValueError, match="expected"):
        model.recommend([0], sp.csr_matrix((1, 4), dtype=np.float32), k=1)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend([0], empty, k=0)


def test_ratingmatrix_does_not_mutate_callers_matrix():
    X = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), np.array([0, 2, 3])), shape=(2, 2))
    before = X.indptr.copy(), X.indices.copy(), X.data.copy()
    R = RatingMatrix(X, [0, 1], [0, 1])
    assert R.nnz == 2
    for a, b in zip(before, (X.indptr, X.indices, X.data)):
        assert np.array_equal(a, b)


def test_rows_rebuilt_at_a_straddling_tie_are_sorted_by_score():
    scores = torch.tensor([[1.0, 5.0, 1.0, 0.0]])  # tie of 1.0 straddles k=2
    top_scores, top_idx = topk_lowest_index_first(scores.clone(), 2)
    assert top_idx.tolist() == [[1, 0]] and top_scores.tolist() == [[5.0, 1.0]]
