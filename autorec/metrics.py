"""Evaluation: rating error (RMSE, MAE) and top-k ranking metrics through one ``evaluate``.

``evaluate(model, train, test)`` ranks the catalogue for every user with at least one
held-out item through the models' one shared :meth:`~autorec.models.base.BaseRecommender.recommend`
(seen items excluded there, ties by item index), in batches of users, and scores the lists
with the vectorised kernels of :mod:`autorec._ranking` (re-exported here). Users without
held-out items are skipped and counted; per-user values are kept for significance tests.

Protocol names (see the design notes): *AutoRec explicit* (RMSE on the observed test
ratings), *Mult-VAE strong generalization* (``train`` = fold-in rows of held-out users,
``test`` = their held-out 20%; Recall@20/50 normalized, NDCG@100 binary), *per-user
holdout* (weak generalization).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from ._arrays import has_duplicates
from .ranking import (
    PER_USER, RankedLists, average_precision_at_k, coverage, hit_rate_at_k, mrr_at_k,
    SCORE_BUDGET_BYTES, ndcg_at_k, precision_at_k, recall_at_k,
)
from .data import RatingMatrix

__all__ = [
    "EvalResult", "evaluate", "rmse", "mae", "rmse_from_arrays", "mae_from_arrays",
    "ndcg_at_k", "recall_at_k", "precision_at_k", "average_precision_at_k", "mrr_at_k",
    "hit_rate_at_k", "coverage", "RANKING_METRICS", "RATING_METRICS", "DEFAULT_METRICS",
]

RANKING_METRICS = PER_USER + ("coverage",)
RATING_METRICS = ("rmse", "mae")
DEFAULT_METRICS = ("ndcg", "recall", "precision", "map", "mrr", "hit_rate", "coverage")
PREDICT_BATCH = 2**18  # (user, item) pairs sent to model.predict at once


# ------------------------------------------------------------------ rating error
def rmse_from_arrays(y_true, y_pred) -> float:
    r"""Root mean squared error :math:`\sqrt{\frac1n \sum_i (y_i - \hat y_i)^2}`.

    Sedhain et al. (2015), "AutoRec: Autoencoders Meet Collaborative Filtering", WWW.
    """
    y_true, y_pred = _paired(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def mae_from_arrays(y_true, y_pred) -> float:
    r"""Mean absolute error :math:`\frac1n \sum_i |y_i - \hat y_i|`."""
    y_true, y_pred = _paired(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def rmse(model, test: RatingMatrix, clip=True) -> float:
    r"""RMSE of ``model.predict`` on the observed ratings of ``test``.

    .. math:: \mathrm{RMSE} = \sqrt{\frac{1}{|T|} \sum_{(u,i) \in T} (r_{ui} - \hat r_{ui})^2}

    Sedhain et al. (2015), "AutoRec: Autoencoders Meet Collaborative Filtering", WWW.

    Parameters
    ----------
    model : BaseRecommender
        A fitted model with ``predicts_ratings = True``.
    test : RatingMatrix
        Same ``users`` and ``items`` as the model's training matrix (as splits produce).
    clip : bool or (float, float)
        Clip predictions to the rating scale: ``True`` uses ``model.rating_range_`` when the
        model records it, else the smallest and largest rating in ``test`` (the scale of the
        data, e.g. 1-5 stars); a pair gives the bounds; ``False`` keeps raw predictions.
    """
    return rmse_from_arrays(*_observed_predictions(model, test, clip))


def mae(model, test: RatingMatrix, clip=True) -> float:
    r"""MAE of ``model.predict`` on the observed ratings of ``test``:
    :math:`\frac{1}{|T|} \sum_{(u,i) \in T} |r_{ui} - \hat r_{ui}|`. See :func:`rmse`."""
    return mae_from_arrays(*_observed_predictions(model, test, clip))


def _paired(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("no ratings to compare")
    return y_true, y_pred


def _check_fitted(model) -> None:
    check = getattr(model, "_check_fitted", None)
    if check is not None:
        check()


def _check_vocabulary(model, R: RatingMatrix, name: str, check_users: bool) -> None:
    if not isinstance(R, RatingMatrix):
        raise TypeError(f"{name} must be a RatingMatrix, got {type(R).__name__}")
    fix = f"re-express it with {name}.align(users=model.users_, items=model.items_)"
    if not R.items.equals(model.items_):
        raise ValueError(
            f"{name} has {R.n_items:,} items that are not the model's {len(model.items_):,} "
            f"training items in the same order; {fix}"
        )
    if check_users and not R.users.equals(model.users_):
        raise ValueError(
            f"{name} has {R.n_users:,} users that are not the model's {len(model.users_):,} "
            f"training users in the same order; {fix}"
        )


def _observed_predictions(model, test: RatingMatrix, clip) -> tuple[np.ndarray, np.ndarray]:
    """(observed ratings, predictions) over test's stored entries, predicted in batches."""
    if not getattr(model, "predicts_ratings", False):
        raise TypeError(
            f"{type(model).__name__} ranks items and does not predict ratings: RMSE/MAE "
            "need a rating model (e.g. I-AutoRec, BiasedMF); use evaluate() for ranking"
        )
    _check_fitted(model)
    _check_vocabulary(model, test, "test", check_users=True)
    if test.nnz == 0:
        raise ValueError("test has no ratings")
    coo = test.X.tocoo()
    user_idx, item_idx = coo.row.astype(np.int64), coo.col.astype(np.int64)
    y_pred = np.empty(test.nnz, dtype=np.float64)
    for start in range(0, test.nnz, PREDICT_BATCH):
        stop = min(start + PREDICT_BATCH, test.nnz)
        pred = model.predict(user_idx[start:stop], item_idx[start:stop])
        if hasattr(pred, "detach"):  # a torch tensor
            pred = pred.detach().cpu().numpy()
        pred = np.asarray(pred, dtype=np.float64).reshape(-1)
        if pred.shape != (stop - start,):
            raise ValueError(f"{type(model).__name__}.predict returned {pred.size} values for {stop - start} pairs")
        y_pred[start:stop] = pred
    bad = ~np.isfinite(y_pred)
    if bad.any():
        raise ValueError(f"{type(model).__name__}.predict returned {int(bad.sum()):,} non-finite predictions")
    if clip is True:
        clip = getattr(model, "rating_range_", None)
        if clip is None:
            clip = (float(coo.data.min()), float(coo.data.max()))
    if clip is not False and clip is not None:
        lo, hi = clip
        np.clip(y_pred, lo, hi, out=y_pred)
    return coo.data.astype(np.float64), y_pred


# ------------------------------------------------------------------ the result
class EvalResult(Mapping):
    """Means of the metrics by name (``"ndcg@100"``, ``"rmse"``), read-only.

    Attributes
    ----------
    se : dict
        Standard error of each per-user mean, ``std(ddof=1) / sqrt(n_users)``
        (``NaN`` when one user); coverage and the rating metrics have none.
    per_user : pandas.DataFrame
        Indexed by ``user_idx`` (positions in ``train``/``test``), one column per
        per-user metric: the samples for paired significance tests between models.
    n_users : int
        Users evaluated (at least one test item).
    n_skipped : int
        Users left out because they have no test item.
    """

    def __init__(self, means: dict, se: dict, per_user: pd.DataFrame, n_users: int,
                 n_skipped: int, graded: bool = False):
        self._means = MappingProxyType(dict(means))
        self._se = MappingProxyType(dict(se))
        self._per_user = per_user
        self.n_users, self.n_skipped, self.graded = int(n_users), int(n_skipped), bool(graded)

    def __getitem__(self, name: str) -> float:
        try:
            return self._means[name]
        except KeyError:
            raise KeyError(f"{name!r} was not computed; available: {', '.join(self._means)}") from None

    def __iter__(self):
        return iter(self._means)

    def __len__(self) -> int:
        return len(self._means)

    @property
    def se(self) -> dict:
        return dict(self._se)

    @property
    def per_user(self) -> pd.DataFrame:
        return self._per_user

    def to_dict(self) -> dict:
        """Means, ``"<name>_se"`` and the counts as plain JSON values (NaN -> None)."""
        out = {}
        for name, value in self._means.items():
            out[name] = _json_float(value)
            if name in self._se:
                out[f"{name}_se"] = _json_float(self._se[name])
        out.update(n_users=self.n_users, n_skipped=self.n_skipped, graded=self.graded)
        return out

    def table(self, digits: int = 4) -> str:
        """Markdown table: one row per metric, one column per cut-off, ``mean ± se``."""
        def cell(name):
            if name not in self._means:
                return ""
            text = f"{self._means[name]:.{digits}f}"
            se = self._se.get(name)
            return text if se is None or math.isnan(se) else f"{text} ± {se:.{digits}f}"

        ranked = [n for n in self._means if "@" in n]
        names = list(dict.fromkeys(n.split("@")[0] for n in ranked))
        ks = sorted({int(n.split("@")[1]) for n in ranked})
        lines = [f"{self.n_users:,} users evaluated, {self.n_skipped:,} skipped (no test items)"
                 + (", graded NDCG" if self.graded else ""), ""]
        if ranked:
            lines += ["| metric | " + " | ".join(f"@{k}" for k in ks) + " |",
                      "|---|" + "---|" * len(ks)]
            lines += [f"| {m} | " + " | ".join(cell(f"{m}@{k}") for k in ks) + " |" for m in names]
            if "recall" in names:
                lines += ["", "recall: the normalised recall of Liang et al. 2018, hits / min(k, test "
                          "items); recall_plain: hits / test items"]
        rating = [n for n in self._means if "@" not in n]
        if rating:
            lines += ["", "| metric | value |", "|---|---|"] + [f"| {n} | {cell(n)} |" for n in rating]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"EvalResult(\n{self.table()}\n)"


def _json_float(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


# ------------------------------------------------------------------ evaluate
def evaluate(model, train: RatingMatrix, test: RatingMatrix, metrics=DEFAULT_METRICS,
             ks=(10, 20, 50, 100), batch_size: int | None = None, users=None,
             graded: bool = False) -> EvalResult:
    """Top-k ranking (and optionally rating) metrics of ``model`` on held-out items.

    Parameters
    ----------
    model : BaseRecommender
        Fitted.
    train : RatingMatrix
        The users' history: the training ratings (weak generalization) or the fold-in
        rows of held-out users (strong generalization). Its items are excluded from the
        recommendations by ``model.recommend(..., exclude_seen=True)``.
    test : RatingMatrix
        Held-out relevant items (value = grade for ``graded``), same users and items as
        ``train``; items must be the model's training items. Every stored entry counts
        as relevant: keep only liked items first (e.g. ``test.binarize(4)``) if needed. Users of ``train`` found in
        the model's training users are passed by position, the others as ``-1`` (fold-in).
    metrics : sequence of str
        From ``"ndcg", "recall"`` (normalized by ``min(k, #relevant)``), ``"recall_plain"``,
        ``"precision", "map", "mrr", "hit_rate", "coverage"``, and for rating models
        ``"rmse", "mae"`` (on test's observed ratings of the selected users).
    ks : sequence of int
        Cut-offs; the lists are computed once at ``max(ks)``.
    batch_size : int, optional
        Users per ``recommend`` call; by default as many as fit the scoring memory budget.
    users : array-like of int, optional
        Restrict to these ``user_idx`` positions of ``train``/``test``.
    graded : bool
        NDCG with gains ``2^rel - 1`` from test's values instead of binary relevance.

    Returns
    -------
    EvalResult
        ``result["ndcg@100"]``, ``result.se``, ``result.per_user``, ``result.n_skipped``...
    """
    metrics = _check_metrics(metrics)
    ks = _check_ks(ks)
    _check_fitted(model)
    for name, R in (("train", train), ("test", test)):
        _check_vocabulary(model, R, name, check_users=False)
    if not train.users.equals(test.users):
        raise ValueError("train and test must have the same users in the same order (as splits produce)")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    selected = np.arange(test.n_users, dtype=np.int64) if users is None else _check_users(users, test.n_users)
    has_test = test.user_counts()[selected] > 0
    eval_users = selected[has_test]
    n_skipped = int((~has_test).sum())
    ranking = [m for m in metrics if m in RANKING_METRICS]
    per_user_names = [m for m in ranking if m != "coverage"]
    if ranking and len(eval_users) == 0:
        raise ValueError(f"no user has test items ({n_skipped:,} users, all skipped)")

    means, se, columns = {}, {}, {}
    if ranking:
        # users known to the model by position, the others folded in from train's rows
        model_users = eval_users if train.users.equals(model.users_) else \
            model.users_.get_indexer(train.users)[eval_users].astype(np.int64)
        _warn_overlap(train, test, eval_users)
        k_max = max(ks)
        chunk = batch_size or max(1, SCORE_BUDGET_BYTES // (4 * max(test.n_items, 1)))
        for m in per_user_names:
            for k in ks:
                columns[f"{m}@{k}"] = np.empty(len(eval_users))
        covered = {k: np.zeros(test.n_items, dtype=bool) for k in ks}
        for start in range(0, len(eval_users), chunk):
            stop = min(start + chunk, len(eval_users))
            u = eval_users[start:stop]
            topk, _ = model.recommend(model_users[start:stop], train.X[u], k=k_max,
                                      exclude_seen=True, batch_size=batch_size)
            # recommend() never repeats an item: skip the distinctness check
            lists = RankedLists(topk, test.X[u], k_max, graded=graded, check_distinct=False)
            for m in per_user_names:
                for k in ks:
                    columns[f"{m}@{k}"][start:stop] = lists.metric(m, k)
            if "coverage" in ranking:
                for k in ks:
                    items = topk[:, :k]
                    covered[k][items[items >= 0]] = True
        n = len(eval_users)
        for m in ranking:
            for k in ks:
                name = f"{m}@{k}"
                if m == "coverage":
                    means[name] = float(covered[k].mean())
                else:
                    values = columns[name]
                    means[name] = float(values.mean())
                    se[name] = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    rating = [m for m in metrics if m in RATING_METRICS]
    if rating:
        sub = test
        if users is not None:
            keep = np.zeros(test.n_users, dtype=bool)
            keep[selected] = True
            sub = test.mask(np.repeat(keep, test.user_counts()))
        y_true, y_pred = _observed_predictions(model, sub, clip=True)
        for m in rating:
            means[m] = rmse_from_arrays(y_true, y_pred) if m == "rmse" else mae_from_arrays(y_true, y_pred)
    per_user = pd.DataFrame(columns, index=pd.Index(eval_users, name="user_idx"))
    return EvalResult(means, se, per_user, len(eval_users), n_skipped, graded)


def _check_metrics(metrics) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(dict.fromkeys(metrics))
    valid = RANKING_METRICS + RATING_METRICS
    unknown = [m for m in metrics if m not in valid]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(valid)}")
    return metrics


def _check_ks(ks) -> list[int]:
    ks = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return sorted({int(k) for k in ks})


def _check_users(users, n_users: int) -> np.ndarray:
    users = np.asarray(users).reshape(-1)
    if users.size and not np.issubdtype(users.dtype, np.integer):
        raise TypeError(f"users must be user_idx positions (integers), got dtype {users.dtype}")
    users = users.astype(np.int64)
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"users must be positions in [0, {n_users - 1}]")
    if has_duplicates(users):
        raise ValueError("users repeats a user_idx")
    return users


def _warn_overlap(train: RatingMatrix, test: RatingMatrix, eval_users: np.ndarray) -> None:
    both = train.X[eval_users].multiply(test.X[eval_users] != 0).count_nonzero()
    if both:
        warnings.warn(
            f"{both:,} test items are also in the users' train history: recommend() excludes "
            "seen items, so they can never be hit (check the split)",
            stacklevel=3,
        )
