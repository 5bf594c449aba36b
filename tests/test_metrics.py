"""Metrics against values worked out by hand (the arithmetic is written next to each)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from autorec import metrics
from autorec.models.base import BaseRecommender
from autorec.data import RatingMatrix
from autorec.metrics import (
    average_precision_at_k, coverage, evaluate, hit_rate_at_k, mae, mrr_at_k, ndcg_at_k,
    precision_at_k, recall_at_k, rmse, rmse_from_arrays,
)

L2 = math.log2  # discount of rank r is 1 / log2(r + 1)


def csr(rows, n_items, values=None):
    """CSR (len(rows), n_items) with the given relevant items per row (values: grades)."""
    r = [i for i, items in enumerate(rows) for _ in items]
    c = [j for items in rows for j in items]
    v = [1.0] * len(c) if values is None else [g for gs in values for g in gs]
    return sp.csr_matrix((v, (r, c)), shape=(len(rows), n_items))


# ---------------------------------------------------------------- kernels
# 8 items; 5 users; lists of length 3 with -1 padding
#   u0 relevant {1, 3}     list [3, 0, 1]   hits at ranks 1, 3
#   u1 relevant {0}        list [2, 5, -1]  no hit (padded)
#   u2 relevant {2, 4, 5}  list [5, 4, 0]   hits at ranks 1, 2  (more relevant than k=1, 2)
#   u3 relevant {4}        list [1, 2, 4]   hit at rank 3
#   u4 relevant {}         list [0, 1, 2]   no relevant item -> NaN
TOPK = np.array([[3, 0, 1], [2, 5, -1], [5, 4, 0], [1, 2, 4], [0, 1, 2]])
TARGET = csr([[1, 3], [0], [2, 4, 5], [4], []], 8)


def close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-12, atol=1e-15, equal_nan=True)


def test_ndcg_binary_by_hand():
    u0 = (1 / L2(2) + 1 / L2(4)) / (1 / L2(2) + 1 / L2(3))  # DCG 1 + 0.5; IDCG over min(3, 2) = 2
    u2 = (1 + 1 / L2(3)) / (1 + 1 / L2(3) + 1 / L2(4))  # IDCG over all 3 relevant
    u3 = (1 / L2(4)) / 1.0  # hit at rank 3; IDCG one item at rank 1
    close(ndcg_at_k(TOPK, TARGET, 3), [u0, 0.0, u2, u3, np.nan])
    # k = 1: only rank 1 counts; IDCG = 1 for everyone with a relevant item
    close(ndcg_at_k(TOPK, TARGET, 1), [1.0, 0.0, 1.0, 0.0, np.nan])


def test_ndcg_graded_by_hand():
    # u0 grades: item 1 -> 3, item 3 -> 1; list [3, 0, 1]
    target = csr([[1, 3]], 8, values=[[3.0, 1.0]])
    dcg = (2**1 - 1) / L2(2) + (2**3 - 1) / L2(4)  # 1 + 7/2 = 4.5
    idcg = (2**3 - 1) / L2(2) + (2**1 - 1) / L2(3)  # best order: grade 3 then grade 1
    close(ndcg_at_k(TOPK[:1], target, 3, graded=True), [dcg / idcg])
    # binary ignores the grades
    close(ndcg_at_k(TOPK[:1], target, 3), [1.5 / (1 + 1 / L2(3))])
    # k = 1: list has grade 1 at rank 1, ideal has grade 3: (2 - 1) / (8 - 1)
    close(ndcg_at_k(TOPK[:1], target, 1, graded=True), [1 / 7])


def test_recall_normalized_vs_plain_by_hand():
    # k=3: hits 2, 0, 2, 1
    close(recall_at_k(TOPK, TARGET, 3), [2 / min(3, 2), 0 / 1, 2 / min(3, 3), 1 / 1, np.nan])
    close(recall_at_k(TOPK, TARGET, 3, normalized=False), [2 / 2, 0 / 1, 2 / 3, 1 / 1, np.nan])
    # k=1: u0 hit, u2 hit; normalized divides by min(1, #rel) = 1, plain by #rel
    close(recall_at_k(TOPK, TARGET, 1), [1 / 1, 0, 1 / 1, 0, np.nan])
    close(recall_at_k(TOPK, TARGET, 1, normalized=False), [1 / 2, 0, 1 / 3, 0, np.nan])


def test_precision_by_hand_padding_counts_as_miss():
    close(precision_at_k(TOPK, TARGET, 3), [2 / 3, 0 / 3, 2 / 3, 1 / 3, np.nan])
    # k beyond the list width: missing positions are padding, denominator stays k
    close(precision_at_k(TOPK, TARGET, 5), [2 / 5, 0, 2 / 5, 1 / 5, np.nan])


def test_average_precision_by_hand():
    u0 = (1 / 1 + 2 / 3) / min(3, 2)  # P@1 = 1 at rank 1, P@3 = 2/3 at rank 3
    u2 = (1 / 1 + 2 / 2) / min(3, 3)  # P@1 = 1, P@2 = 1
    u3 = (1 / 3) / min(3, 1)  # P@3 = 1/3
    close(average_precision_at_k(TOPK, TARGET, 3), [u0, 0.0, u2, u3, np.nan])
    close(average_precision_at_k(TOPK, TARGET, 2), [(1 / 1) / 2, 0, (1 + 1) / 2, 0, np.nan])


def test_mrr_and_hit_rate_by_hand():
    close(mrr_at_k(TOPK, TARGET, 3), [1 / 1, 0, 1 / 1, 1 / 3, np.nan])
    close(mrr_at_k(TOPK, TARGET, 2), [1, 0, 1, 0, np.nan])  # u3's hit is at rank 3 > 2
    close(hit_rate_at_k(TOPK, TARGET, 3), [1, 0, 1, 1, np.nan])
    close(hit_rate_at_k(TOPK, TARGET, 2), [1, 0, 1, 0, np.nan])


def test_coverage_by_hand():
    # top-3 items: {3,0,1} u {2,5} u {5,4,0} u {1,2,4} u {0,1,2} = {0..5}: 6 of 8
    assert coverage(TOPK, 8, 3) == 6 / 8
    # top-1: {3, 2, 5, 1, 0} = 5 of 8 (padding never counts)
    assert coverage(TOPK, 8, 1) == 5 / 8
    assert coverage(np.full((2, 3), -1), 8, 3) == 0.0


def test_kernels_validate_inputs():
    with pytest.raises(ValueError, match="repeats"):
        ndcg_at_k(np.array([[1, 1, 2]]), TARGET[:1], 3)
    with pytest.raises(ValueError, match="-1"):
        ndcg_at_k(np.array([[9, 1, 2]]), TARGET[:1], 3)  # item 9 of 8
    with pytest.raises(ValueError, match="2-D"):
        recall_at_k(np.array([1, 2]), TARGET[:1], 2)
    with pytest.raises(ValueError, match="rows"):
        recall_at_k(TOPK[:2], TARGET, 2)
    with pytest.raises(TypeError, match="sparse"):
        recall_at_k(TOPK, TARGET.toarray(), 2)
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(TOPK, TARGET, 0)
    with pytest.raises(ValueError, match="negative"):
        ndcg_at_k(TOPK[:1], csr([[1]], 8, [[-1.0]]), 1)


def test_padding_never_hits_the_previous_users_last_item():
    # u0 relevant {7} = the last item; u1's -1 padding must not read u0's entry
    target = csr([[7], [0]], 8)
    topk = np.array([[7, -1], [-1, -1]])
    close(hit_rate_at_k(topk, target, 2), [1.0, 0.0])
    close(precision_at_k(topk, target, 2), [1 / 2, 0 / 2])


def test_explicit_zero_in_target_is_not_relevant():
    target = sp.csr_matrix((np.array([0.0, 1.0]), np.array([3, 1]), np.array([0, 2])), shape=(1, 8))
    # only item 1 is relevant: list [3, 0, 1] hits at rank 3 -> P@3 = 1/3, recall 1/1
    close(precision_at_k(TOPK[:1], target, 3), [1 / 3])
    close(recall_at_k(TOPK[:1], target, 3), [1.0])


# ---------------------------------------------------------------- stub models
class FixedScores(BaseRecommender):
    """Ranks with a fixed (n_users, n_items) score matrix; new users (-1) get ``new_user``."""

    def __init__(self, scores=None, new_user=None):
        self.scores = scores
        self.new_user = new_user

    def fit(self, train, valid=None):
        self._init_fit(train)
        self.S_ = torch.as_tensor(np.asarray(self.scores, dtype=np.float32))
        self.seen_users_ = []
        return self

    def score(self, users, X):
        self.seen_users_.extend(users.tolist())
        rows = [self.S_[u] if u >= 0 else torch.as_tensor(self.new_user, dtype=torch.float32) for u in users]
        return torch.stack(rows)

    def _get_state(self):
        return {"S": self.S_}

    def _set_state(self, state):
        self.S_ = state["S"]


class FixedRatings(FixedScores):
    predicts_ratings = True

    def fit(self, train, valid=None):
        super().fit(train)
        self.calls_ = 0
        return self

    def predict(self, user_idx, item_idx):
        self.calls_ += 1
        return self.S_[torch.as_tensor(user_idx), torch.as_tensor(item_idx)]  # a tensor on purpose


# 4 users x 6 items
#   u0 scores descending by index; train {0} (excluded) -> ranking [1, 2, 3, 4, 5]; test {1, 4}
#   u1 ties 0.5 on items 0, 1, 2 (lowest index first), item 5 best but seen -> [0, 1, 2, 3, 4]; test {2}
#   u2 no test item -> skipped
#   u3 scores ascending; train {3} -> ranking [5, 4, 2, 1, 0]; test {0}
SCORES = np.array([
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    [0.5, 0.5, 0.5, 0.1, 0.1, 0.9],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
])
TRAIN = RatingMatrix(csr([[0], [5], [0, 1], [3]], 6), pd.Index(list("abcd")), pd.Index(range(10, 16)))
TEST = TRAIN.replace(csr([[1, 4], [2], [], [0]], 6))

# hand-computed per-user values at k = 2 and k = 5 for users 0, 1, 3
EXPECTED = {
    # u0 @2 [1, 2]: hit rank 1; @5 [1..5]: hits ranks 1, 4.  u1 @5 [0..4]: hit rank 3.  u3 @5: hit rank 5
    "ndcg@2": [1 / (1 + 1 / L2(3)), 0.0, 0.0],
    "ndcg@5": [(1 + 1 / L2(5)) / (1 + 1 / L2(3)), (1 / L2(4)) / 1, (1 / L2(6)) / 1],
    "recall@2": [1 / 2, 0, 0],
    "recall@5": [2 / 2, 1 / 1, 1 / 1],
    "precision@2": [1 / 2, 0, 0],
    "precision@5": [2 / 5, 1 / 5, 1 / 5],
    "map@2": [(1 / 1) / 2, 0, 0],
    "map@5": [(1 / 1 + 2 / 4) / 2, (1 / 3) / 1, (1 / 5) / 1],
    "mrr@2": [1, 0, 0],
    "mrr@5": [1, 1 / 3, 1 / 5],
    "hit_rate@2": [1, 0, 0],
    "hit_rate@5": [1, 1, 1],
}


@pytest.fixture
def model():
    return FixedScores(SCORES).fit(TRAIN)


def test_evaluate_by_hand(model):
    res = evaluate(model, TRAIN, TEST, ks=(5, 2), batch_size=2)  # 2 batches of users
    assert (res.n_users, res.n_skipped) == (3, 1)
    assert list(res.per_user.index) == [0, 1, 3] and res.per_user.index.name == "user_idx"
    assert res.per_user.shape == (3, 12)  # 6 per-user metrics x 2 cut-offs; coverage is global
    for name, values in EXPECTED.items():
        close(res.per_user[name].to_numpy(), values)
        assert res[name] == pytest.approx(sum(values) / 3, abs=1e-12)
    # coverage@2: {1, 2} u {0, 1} u {5, 4} = 5 of 6 items; @5 every item
    assert res["coverage@2"] == pytest.approx(5 / 6)
    assert res["coverage@5"] == 1.0
    # se = std(ddof=1) / sqrt(n), written out for ndcg@5
    x = EXPECTED["ndcg@5"]
    m = sum(x) / 3
    assert res.se["ndcg@5"] == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in x) / (3 - 1)) / math.sqrt(3))
    assert "coverage@5" not in res.se
    assert model.seen_users_ == [0, 1, 3]  # u2 skipped, never scored


def test_evaluate_recall_plain_and_users_subset(model):
    res = evaluate(model, TRAIN, TEST, metrics=["recall", "recall_plain"], ks=[2], users=[0, 2])
    assert (res.n_users, res.n_skipped) == (1, 1)  # u2 has no test item
    assert res["recall@2"] == 1 / min(2, 2) and res["recall_plain@2"] == 1 / 2
    assert math.isnan(res.se["recall@2"])  # one user


def test_evaluate_training_items_excluded_and_overlap_warned(model):
    # u0's test item 0 is also in its training row: never recommended, counted as a miss
    test = TRAIN.replace(csr([[0], [], [], []], 6))
    with pytest.warns(UserWarning, match="1 test items"):
        res = evaluate(model, TRAIN, test, metrics=["hit_rate"], ks=[5])
    assert res["hit_rate@5"] == 0.0


def test_evaluate_graded_ndcg(model):
    # u0 grades: item 1 -> 2, item 4 -> 5; list [1, 2, 3, 4, 5]: ranks 1 and 4
    test = TRAIN.replace(csr([[1, 4], [], [], []], 6, values=[[2.0, 5.0], [], [], []]))
    res = evaluate(model, TRAIN, test, metrics=["ndcg"], ks=[5], graded=True)
    dcg = (2**2 - 1) / L2(2) + (2**5 - 1) / L2(5)
    idcg = (2**5 - 1) / L2(2) + (2**2 - 1) / L2(3)
    assert res["ndcg@5"] == pytest.approx(dcg / idcg) and res.graded


def test_evaluate_folds_in_unknown_users(model):
    # held-out users 'x', 'y' are not in the model's users: passed to recommend as -1
    new_user = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7], dtype=np.float32)  # ranking 1, 3, 5, 4, 2, 0
    model.new_user = new_user
    fold_in = RatingMatrix(csr([[1], [0]], 6), pd.Index(["x", "y"]), TRAIN.items)
    test = fold_in.replace(csr([[3], [1]], 6))
    res = evaluate(model, fold_in, test, metrics=["mrr"], ks=[1])
    assert model.seen_users_ == [-1, -1]
    # x: 1 seen -> [3, ...] hit at rank 1; y: [1, ...] hit at rank 1
    assert res["mrr@1"] == 1.0


def test_evaluate_errors(model):
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(model, TRAIN, TEST, metrics=["auc"])
    with pytest.raises(ValueError, match="ks"):
        evaluate(model, TRAIN, TEST, ks=[0])
    other = RatingMatrix(TRAIN.X, TRAIN.users, pd.Index(range(20, 26)))
    with pytest.raises(ValueError, match="align"):
        evaluate(model, other, other)
    with pytest.raises(TypeError, match="does not predict ratings"):
        evaluate(model, TRAIN, TEST, metrics=["ndcg", "rmse"])
    with pytest.raises(ValueError, match="no user has test items"):
        evaluate(model, TRAIN, TRAIN.replace(sp.csr_matrix((4, 6))))


def test_eval_result_is_read_only_mapping_and_serialises(model):
    res = evaluate(model, TRAIN, TEST, ks=(2, 5))
    assert set(res) == {f"{m}@{k}" for m in metrics.DEFAULT_METRICS for k in (2, 5)}
    with pytest.raises(TypeError):
        res["ndcg@2"] = 1.0
    with pytest.raises(KeyError, match="available"):
        res["ndcg@3"]
    d = json.loads(json.dumps(res.to_dict()))
    assert d["ndcg@5"] == pytest.approx(res["ndcg@5"]) and d["ndcg@5_se"] == pytest.approx(res.se["ndcg@5"])
    assert d["n_users"] == 3 and d["n_skipped"] == 1 and "coverage@5_se" not in d
    table = res.table()
    assert "| ndcg |" in table and "@5" in table and "±" in table and "1 skipped" in table
    assert repr(res).startswith("EvalResult(")


# ---------------------------------------------------------------- rating error
# test ratings (0, 0) = 4, (0, 2) = 2, (1, 1) = 5; predictions 3.5, 2.5, 6.0
RATINGS = np.zeros((4, 6))
RATINGS[0, 0], RATINGS[0, 2], RATINGS[1, 1] = 3.5, 2.5, 6.0
R_TEST = TRAIN.replace(sp.csr_matrix(([4.0, 2.0, 5.0], ([0, 0, 1], [0, 2, 1])), shape=(4, 6)))


def test_rmse_mae_by_hand():
    model = FixedRatings(RATINGS).fit(TRAIN)
    # clip to test's scale [2, 5]: 6.0 -> 5.0; errors 0.5, 0.5, 0
    assert rmse(model, R_TEST) == pytest.approx(math.sqrt((0.25 + 0.25 + 0) / 3))
    assert mae(model, R_TEST) == pytest.approx((0.5 + 0.5 + 0) / 3)
    # no clipping: errors 0.5, 0.5, 1
    assert rmse(model, R_TEST, clip=False) == pytest.approx(math.sqrt((0.25 + 0.25 + 1) / 3))
    assert mae(model, R_TEST, clip=False) == pytest.approx((0.5 + 0.5 + 1) / 3)
    # the model's own scale wins: 6.0 -> 5.5, errors 0.5, 0.5, 0.5
    model.rating_range_ = (1.0, 5.5)
    assert rmse(model, R_TEST) == pytest.approx(0.5)
    assert rmse_from_arrays([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))


def test_rmse_in_batches(monkeypatch):
    model = FixedRatings(RATINGS).fit(TRAIN)
    monkeypatch.setattr(metrics, "PREDICT_BATCH", 2)
    assert rmse(model, R_TEST, clip=False) == pytest.approx(math.sqrt(1.5 / 3))
    assert model.calls_ == 2  # 3 ratings in batches of 2


def test_rmse_in_evaluate():
    model = FixedRatings(RATINGS).fit(TRAIN)
    res = evaluate(model, TRAIN, R_TEST, metrics=["rmse", "mae"], ks=[1])
    assert res["rmse"] == pytest.approx(math.sqrt(0.5 / 3)) and res["mae"] == pytest.approx(1 / 3)
    res = evaluate(model, TRAIN, R_TEST, metrics=["rmse"], users=[1])  # only (1, 1): clipped 5 vs 5
    assert res["rmse"] == pytest.approx(0.0)


def test_rmse_errors(model):
    with pytest.raises(TypeError, match="does not predict ratings"):
        rmse(model, R_TEST)
    rating_model = FixedRatings(RATINGS).fit(TRAIN)
    other_items = RatingMatrix(R_TEST.X, R_TEST.users, pd.Index(range(20, 26)))
    with pytest.raises(ValueError, match="items.*align"):
        rmse(rating_model, other_items)
    other_users = RatingMatrix(R_TEST.X, pd.Index(list("wxyz")), R_TEST.items)
    with pytest.raises(ValueError, match="users.*align"):
        mae(rating_model, other_users)
    with pytest.raises(ValueError, match="same length|has 2 values"):
        rmse_from_arrays([1, 2], [1])
