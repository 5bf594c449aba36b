"""Train/test splits of a :class:`~autorec.data.RatingMatrix`.

Every split draws from a seeded :func:`numpy.random.default_rng` (``seed`` may also be a
``numpy.random.Generator``, which is then advanced), is vectorised over all ratings (no
loop per user), and returns matrices that share the same ``users`` and ``items`` index, so
rows and columns always agree between train and test. Each part is ``R.mask(keep)`` for an
entry mask aligned with ``R.X.data``: timestamps and ``item_info`` carry through.

Splits that cannot give some users a test part (too few ratings) keep those users wholly in
train and say how many with a :class:`SplitWarning`; such users have empty test rows and
must not be counted as evaluated.

Protocols
---------
- :func:`holdout` -- random share of all ratings (AutoRec, Sedhain et al. 2015).
- :func:`per_user` -- random share of each user's ratings (weak generalization).
- :func:`heldout_users` -- held-out users with fold-in (strong generalization, Mult-VAE,
  Liang et al. 2018).
- :func:`leave_last` -- each user's latest ratings by timestamp.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .data import RatingMatrix
from .exceptions import SplitWarning

__all__ = ["SplitWarning", "StrongSplit", "holdout", "per_user", "heldout_users", "leave_last"]


class StrongSplit(NamedTuple):
    """The five matrices of a strong-generalization split (:func:`heldout_users`).

    All share the full ``users`` index and the reduced ``items`` index (items rated by at
    least one training user). ``train`` holds the training users' ratings (held-out users
    have empty rows); ``valid_in``/``test_in`` hold the fold-in part of the validation/test
    users' ratings (what a model sees of them) and ``valid_out``/``test_out`` the part to
    predict. Other users have empty rows in the last four.
    """

    train: RatingMatrix
    valid_in: RatingMatrix
    valid_out: RatingMatrix
    test_in: RatingMatrix
    test_out: RatingMatrix


# ----------------------------------------------------------------------- helpers
def _check_share(value: float, name: str) -> float:
    if not isinstance(value, (int, float, np.floating)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _entry_rows(R: RatingMatrix) -> np.ndarray:
    """User position of every stored entry, aligned with ``R.X.data``. Shape (nnz,)."""
    return np.repeat(np.arange(R.n_users), np.diff(R.X.indptr))


def _rank_in_row(R: RatingMatrix, rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Rank (0 = smallest ``key``) of each entry among its user's entries. Shape (nnz,).

    ``key`` holds integers in ``[0, 2**32)``; equal keys in a row rank in storage order.
    One sort of the packed key ``row * 2**32 + key`` (much faster than
    :func:`numpy.lexsort`) groups each row's entries in the row's own CSR slot
    ``indptr[u]:indptr[u+1]``, so the rank is the sorted position minus ``indptr[u]``.
    """
    if R.n_users < 2**31 and R.nnz < 2**32:
        order = np.argsort((rows.astype(np.int64) << 32) | key, kind="stable")  # (nnz,)
    else:  # pragma: no cover - beyond packing range
        order = np.lexsort((key, rows))
    rank = np.empty(R.nnz, dtype=np.int64)  # (nnz,)
    rank[order] = np.arange(R.nnz) - R.X.indptr[rows[order]]
    return rank


def _random_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random sort keys in ``[0, 2**32)``, shape (n,) (cheaper than a permutation)."""
    return rng.integers(0, 2**32, size=n, dtype=np.int64)


def _global_rank(values: np.ndarray) -> np.ndarray:
    """Distinct ranks ``0..n-1`` of ``values``, ties in storage order. Shape (n,)."""
    rank = np.empty(len(values), dtype=np.int64)  # (n,)
    rank[np.argsort(values, kind="stable")] = np.arange(len(values))
    return rank


def _round_half_up(x: np.ndarray) -> np.ndarray:
    """Round to nearest, halves up (not numpy's halves-to-even); tolerant to 1e-9 noise."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5 + 1e-9).astype(np.int64)


def _warn(message: str) -> None:
    warnings.warn(message, SplitWarning, stacklevel=3)


# ------------------------------------------------------------------------ splits
def holdout(R: RatingMatrix, test_size: float = 0.1, seed=0) -> tuple[RatingMatrix, RatingMatrix]:
    """Random share of all ratings to test (the AutoRec protocol).

    Exactly ``round(test_size * nnz)`` ratings (at least 1, at most ``nnz - 1``) are drawn
    uniformly without replacement. A validation share is carved by calling it again on
    train. Some users or items may end up with test ratings only; AutoRec predicts a
    default rating for them (Sedhain et al., "AutoRec: Autoencoders Meet Collaborative
    Filtering", WWW 2015: 90/10 split, 10% of train for validation).

    Parameters
    ----------
    R : RatingMatrix
    test_size : float in (0, 1)
        Share of the ratings to hold out.
    seed : int or numpy.random.Generator

    Returns
    -------
    train, test : RatingMatrix
        Same users and items as ``R``; disjoint, and together exactly ``R``.
    """
    test_size = _check_share(test_size, "test_size")
    if R.nnz < 2:
        raise ValueError(f"holdout needs at least 2 ratings, the matrix has {R.nnz}")
    rng = np.random.default_rng(seed)
    n_test = int(np.clip(_round_half_up(test_size * R.nnz), 1, R.nnz - 1))
    in_test = np.zeros(R.nnz, dtype=bool)  # (nnz,)
    in_test[rng.choice(R.nnz, size=n_test, replace=False)] = True
    return R.mask(~in_test), R.mask(in_test)


def per_user(R: RatingMatrix, test_size: float = 0.2, seed=0) -> tuple[RatingMatrix, RatingMatrix]:
    """Random share of each user's ratings to test (weak generalization).

    A user with :math:`n_u \\ge 2` ratings gets
    :math:`t_u = \\min(\\max(\\operatorname{round}(\\text{test\\_size} \\cdot n_u), 1), n_u - 1)`
    test ratings (halves round up), so at least one on each side. Users with a single
    rating stay in train and are counted in a :class:`SplitWarning`.

    Parameters
    ----------
    R : RatingMatrix
    test_size : float in (0, 1)
    seed : int or numpy.random.Generator

    Returns
    -------
    train, test : RatingMatrix
        Same users and items as ``R``; disjoint, and together exactly ``R``.
    """
    test_size = _check_share(test_size, "test_size")
    rng = np.random.default_rng(seed)
    counts = R.user_counts()  # (n_users,)
    n_test = np.clip(_round_half_up(test_size * counts), 1, np.maximum(counts - 1, 1))  # (n_users,)
    n_test[counts < 2] = 0
    rows = _entry_rows(R)  # (nnz,)
    rank = _rank_in_row(R, rows, _random_keys(rng, R.nnz))  # (nnz,) random order within each user
    in_test = rank < n_test[rows]  # (nnz,)
    single = int((counts == 1).sum())
    if single:
        _warn(f"per_user: {single:,} users have a single rating; kept in train, no test rating")
    return R.mask(~in_test), R.mask(in_test)


def heldout_users(
    R: RatingMatrix, n_valid: int, n_test: int, fold_in: float = 0.8, seed=0
) -> StrongSplit:
    """Held-out users with fold-in: the strong-generalization protocol.

    Following Liang et al., "Variational Autoencoders for Collaborative Filtering"
    (WWW 2018) and their reference code:

    1. ``n_valid + n_test`` users with ratings are drawn at random and held out;
       the others are the training users, and ``train`` is their ratings.
    2. Items are restricted to those with at least one training rating: every returned
       matrix has that reduced item index, and held-out ratings of other items are dropped.
    3. Each held-out user's remaining :math:`n_u` ratings are split at random:
       :math:`o_u = \\min(\\max(\\lfloor (1 - \\text{fold\\_in})\\, n_u \\rfloor, 1), n_u - 1)`
       go to ``*_out`` (to predict; :math:`\\lfloor 0.2\\, n_u \\rfloor` as in the reference
       code) and the other :math:`n_u - o_u` to ``*_in`` (folded in). Held-out users left
       with fewer than 2 ratings keep them in ``*_in``, have an empty ``*_out`` row, and are
       counted in a :class:`SplitWarning`.

    Parameters
    ----------
    R : RatingMatrix
        Usually binarized and filtered first (see :func:`autorec.protocols.strong_generalization`).
    n_valid, n_test : int
        Numbers of validation and test users (``n_valid`` may be 0).
    fold_in : float in (0, 1)
        Share of each held-out user's ratings that is folded in.
    seed : int or numpy.random.Generator

    Returns
    -------
    StrongSplit
        ``(train, valid_in, valid_out, test_in, test_out)``, all with the full user index
        of ``R`` and the reduced item index.
    """
    fold_in = _check_share(fold_in, "fold_in")
    for name, value in (("n_valid", n_valid), ("n_test", n_test)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_test < 1:
        raise ValueError("n_test must be at least 1")
    candidates = np.flatnonzero(R.user_counts() > 0)  # (n_rated,) users with ratings
    if n_valid + n_test >= len(candidates):
        raise ValueError(
            f"n_valid + n_test = {n_valid + n_test:,} held-out users leaves no training user: "
            f"the matrix has {len(candidates):,} users with ratings"
        )
    rng = np.random.default_rng(seed)
    picked = rng.permutation(candidates)[: n_valid + n_test]  # (n_valid + n_test,)
    group = np.zeros(R.n_users, dtype=np.int8)  # (n_users,) 0 train, 1 valid, 2 test
    group[picked[:n_valid]] = 1
    group[picked[n_valid:]] = 2

    train_items = np.bincount(R.X.indices[group[_entry_rows(R)] == 0], minlength=R.n_items) > 0
    dropped_items = R.n_items - int(train_items.sum())
    R = R.subset(items=train_items) if dropped_items else R  # full users, reduced items

    rows = _entry_rows(R)  # (nnz,)
    entry_group = group[rows]  # (nnz,)
    counts = R.user_counts()  # (n_users,)
    n_out = np.floor(np.round((1.0 - fold_in) * counts, 9)).astype(np.int64)  # (n_users,)
    n_out = np.clip(n_out, 1, np.maximum(counts - 1, 1))
    n_out[(counts < 2) | (group == 0)] = 0
    rank = _rank_in_row(R, rows, _random_keys(rng, R.nnz))  # (nnz,)
    is_out = rank < n_out[rows]  # (nnz,)

    short = int(((group > 0) & (counts < 2)).sum())
    if short:
        _warn(
            f"heldout_users: {short:,} held-out users have fewer than 2 ratings of training "
            "items; nothing to predict for them (empty *_out rows)"
        )
    return StrongSplit(
        train=R.mask(entry_group == 0),
        valid_in=R.mask((entry_group == 1) & ~is_out),
        valid_out=R.mask((entry_group == 1) & is_out),
        test_in=R.mask((entry_group == 2) & ~is_out),
        test_out=R.mask((entry_group == 2) & is_out),
    )


def leave_last(R: RatingMatrix, n: int = 1) -> tuple[RatingMatrix, RatingMatrix]:
    """Each user's ``n`` latest ratings to test (sequential / next-item evaluation).

    Ratings are ordered by timestamp; among equal timestamps the higher item position
    counts as later, so the split is deterministic. Users with at most ``n`` ratings stay
    wholly in train and are counted in a :class:`SplitWarning`.

    Parameters
    ----------
    R : RatingMatrix
        Must carry timestamps.
    n : int >= 1

    Returns
    -------
    train, test : RatingMatrix
        Same users and items as ``R``; disjoint, and together exactly ``R``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if R.timestamps is None:
        raise ValueError(
            "leave_last needs timestamps: build the matrix with a timestamp column, "
            "e.g. RatingMatrix.from_frame(df, timestamp='timestamp')"
        )
    rows = _entry_rows(R)  # (nnz,)
    # storage order is item position within a row, so equal times rank by item position
    rank = _rank_in_row(R, rows, _global_rank(R.timestamps))  # (nnz,) 0 = earliest of its user
    counts = R.user_counts()  # (n_users,)
    in_test = (rank >= counts[rows] - n) & (counts[rows] > n)  # (nnz,)
    short = int(((counts > 0) & (counts <= n)).sum())
    if short:
        _warn(f"leave_last: {short:,} users have at most {n} ratings; kept in train, no test rating")
    return R.mask(~in_test), R.mask(in_test)
