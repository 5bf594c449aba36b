"""Named evaluation protocols: the splits that benchmarks, the CLI and users share.

Each protocol function takes a :class:`~autorec.data.RatingMatrix` and returns a
:class:`Protocol`: the training matrix, the validation and test targets, and the name and
every parameter of the protocol (for results files). ``PROTOCOLS[p.name](R, **p.params)``
rebuilds the same split.

Every validation and test part is one :class:`EvalPart` ``(history, target)``: what a
model sees of the evaluated users and what it must predict. For weak generalization and
rating prediction the history is ``train`` itself (same users); for strong generalization
(``fold_in=True``) the users are not in ``train`` and a model folds them in from their
history rows.

Users with an empty target row have nothing to predict and must not be counted as evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import split
from .data import RatingMatrix
from .exceptions import DataError

__all__ = [
    "EvalPart", "Protocol", "PROTOCOLS", "autorec_protocol", "strong_generalization", "per_user_holdout",
    "binarize_above", "AUTOREC_DEFAULT_RATING",
]

#: AutoRec predicts this rating for users/items unseen in training (Sedhain et al. 2015).
#: A model parameter, not part of the split; recorded here for results files.
AUTOREC_DEFAULT_RATING = 3.0


@dataclass(frozen=True, eq=False)
class EvalPart:
    """One validation or test part: the evaluated users' ``history`` and their ``target``.

    Attributes
    ----------
    history : RatingMatrix
        What a model sees of the users (their training rows, or the fold-in share of
        held-out users); items seen here are excluded from their rankings.
    target : RatingMatrix
        The held-out ratings to predict, same users and items as ``history``.
    fold_in : bool
        True when the users are not in the training matrix (strong generalization).

    Unpacks as ``history, target = part`` (e.g. for ``evaluate(model, *part)``).
    """

    history: RatingMatrix
    target: RatingMatrix
    fold_in: bool = False

    def __iter__(self):
        return iter((self.history, self.target))

    def describe(self) -> str:
        """The size of the part in words."""
        if self.fold_in:
            n_users = int((self.history.user_counts() + self.target.user_counts() > 0).sum())
            return (f"{n_users:,} held-out users ({self.history.nnz:,} fold-in / "
                    f"{self.target.nnz:,} held-out ratings)")
        return _size(self.target)


@dataclass(frozen=True, eq=False)
class Protocol:
    """A split under a named evaluation protocol.

    Attributes
    ----------
    name : str
        Key of :data:`PROTOCOLS` (``"autorec"``, ``"strong"``, ``"per-user"``).
    params : dict
        Every parameter of the protocol function (seed included).
    train : RatingMatrix
    valid : EvalPart or None
        None when the protocol has no validation part.
    test : EvalPart
    """

    name: str
    params: dict
    train: RatingMatrix
    valid: EvalPart | None
    test: EvalPart

    @property
    def strong(self) -> bool:
        """True when the evaluated users are held out of training and folded in."""
        return self.test.fold_in

    def describe(self) -> str:
        """One line: protocol, parameters and the sizes of each part."""
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        parts = [f"train {_size(self.train)}"]
        for label, part in (("valid", self.valid), ("test", self.test)):
            if part is not None:
                parts.append(f"{label} {part.describe()}")
        return f"{self.name}({args}): " + "; ".join(parts)


def _size(part: RatingMatrix) -> str:
    """``'943 users x 1,682 items, 81,000 ratings'``."""
    n_users = int((part.user_counts() > 0).sum())
    return f"{n_users:,} users x {part.n_items:,} items, {part.nnz:,} ratings"


def binarize_above(R: RatingMatrix, threshold: float) -> RatingMatrix:
    """Implicit feedback from ratings STRICTLY greater than ``threshold`` (kept as 1).

    :meth:`RatingMatrix.binarize` keeps ``>= t``; the strict rule is that with
    ``t = nextafter(float32(threshold), +inf)``, the smallest float32 above the threshold,
    which is exact for the float32 ratings on any scale: with ``threshold=3.5`` a
    half-star scale keeps 4.0, 4.5, 5.0 and drops 3.5; an integer scale keeps 4 and 5.
    """
    t = np.nextafter(np.float32(threshold), np.float32(np.inf))
    return R.binarize(t)


def _positives(R: RatingMatrix, threshold: float) -> RatingMatrix:
    """:func:`binarize_above`, and a DataError saying why when it leaves nothing."""
    B = binarize_above(R, threshold)
    if B.nnz == 0 and R.nnz > 0:
        data = R.X.data
        raise DataError(
            f"threshold={threshold} removes all {R.nnz:,} ratings: positives are ratings "
            f"strictly above it, and these range from {float(data.min()):g} to "
            f"{float(data.max()):g}. Lower the threshold (CLI: --threshold), or leave it out "
            "for implicit data")
    return B


# --------------------------------------------------------------------- protocols
def autorec_protocol(
    R: RatingMatrix, test_size: float = 0.1, valid_size: float = 0.1, seed=0
) -> Protocol:
    """AutoRec's rating-prediction protocol (Sedhain et al., WWW 2015).

    A random ``test_size`` share of all ratings is the test set (90/10 in the paper);
    then a ``valid_size`` share of the remaining training ratings is carved out for
    tuning. Scored by RMSE on the observed test ratings; users/items unseen in training
    get the default rating :data:`AUTOREC_DEFAULT_RATING` (a model parameter). The test
    part equals ``split.holdout(R, test_size, seed)``'s.

    Parameters
    ----------
    R : RatingMatrix
        Explicit ratings.
    test_size : float in (0, 1)
    valid_size : float in [0, 1)
        Share of the training ratings held out for validation; 0 gives ``valid=None``.
    seed : int

    Returns
    -------
    Protocol
        ``valid``/``test`` are EvalPart with ``train`` as history.
    """
    _check_valid_size(valid_size)
    rng = np.random.default_rng(seed)
    train, test = split.holdout(R, test_size, seed=rng)
    valid = None
    if valid_size > 0:
        train, valid = split.holdout(train, valid_size, seed=rng)
    params = {"test_size": test_size, "valid_size": valid_size, "seed": seed}
    return _weak("autorec", params, train, valid, test)


def strong_generalization(
    R: RatingMatrix,
    n_heldout: int,
    threshold: float = 3.5,
    min_user_ratings: int = 5,
    fold_in: float = 0.8,
    seed=0,
) -> Protocol:
    """Mult-VAE's strong-generalization protocol (Liang et al., WWW 2018).

    1. Implicit feedback: keep ratings strictly greater than ``threshold`` as 1
       (:func:`binarize_above`; on MovieLens, > 3.5 means 4 stars and up).
    2. Keep users with at least ``min_user_ratings`` of them (and items with at least one).
    3. Hold out ``n_heldout`` validation and ``n_heldout`` test users
       (:func:`autorec.split.heldout_users`); items are those rated by training users.
       Each held-out user's items are split ``fold_in`` / ``1 - fold_in`` into the part a
       model sees and the part it must rank (Recall@20/50, NDCG@100).

    The paper holds out 10,000 users on ML-20M (and 40,000 on Netflix); we use 600 on ML-1M.

    Parameters
    ----------
    R : RatingMatrix
        Explicit ratings.
    n_heldout : int
        Number of validation users, and of test users.
    threshold : float
        Ratings ``> threshold`` are positives.
    min_user_ratings : int
        Minimum number of positives per user.
    fold_in : float in (0, 1)
    seed : int

    Returns
    -------
    Protocol
        ``valid``/``test`` are EvalPart of held-out users (``fold_in=True``).
    """
    if not isinstance(n_heldout, (int, np.integer)) or n_heldout < 1:
        raise ValueError(f"n_heldout must be a positive integer, got {n_heldout!r}")
    positives = _positives(R, threshold)
    B = positives.filter(min_user_ratings=min_user_ratings)
    if B.nnz == 0:
        raise DataError(
            f"no user has {min_user_ratings} or more ratings above {threshold}: of the "
            f"{R.nnz:,} ratings, {positives.nnz:,} are above the threshold, and keeping users "
            f"with min_user_ratings={min_user_ratings} of them removes all. Check threshold "
            "and min_user_ratings against the rating scale"
        )
    s = split.heldout_users(B, n_valid=n_heldout, n_test=n_heldout, fold_in=fold_in, seed=seed)
    params = {
        "n_heldout": n_heldout, "threshold": threshold, "min_user_ratings": min_user_ratings,
        "fold_in": fold_in, "seed": seed,
    }
    return Protocol("strong", params, s.train, EvalPart(s.valid_in, s.valid_out, fold_in=True),
                    EvalPart(s.test_in, s.test_out, fold_in=True))


def per_user_holdout(
    R: RatingMatrix,
    test_size: float = 0.2,
    valid_size: float = 0.0,
    seed=0,
    threshold: float | None = None,
) -> Protocol:
    """Per-user holdout (weak generalization): a share of each user's ratings to test.

    Optionally binarized first (ratings strictly greater than ``threshold`` kept as 1,
    as in :func:`strong_generalization`). Then :func:`autorec.split.per_user` splits each
    user's ratings ``1 - test_size`` / ``test_size``, and when ``valid_size > 0`` splits
    each user's training ratings again for validation. Suits ALS/BPR-style comparisons
    in which every evaluated user is also a training user.

    Parameters
    ----------
    R : RatingMatrix
    test_size : float in (0, 1)
    valid_size : float in [0, 1)
        Share of each user's training ratings for validation; 0 gives ``valid=None``.
    seed : int
    threshold : float, optional
        Binarize, keeping ratings ``> threshold``; None keeps the ratings as they are.

    Returns
    -------
    Protocol
        ``valid``/``test`` are EvalPart with ``train`` as history.
    """
    _check_valid_size(valid_size)
    if threshold is not None:
        R = _positives(R, threshold)
    rng = np.random.default_rng(seed)
    train, test = split.per_user(R, test_size, seed=rng)
    valid = None
    if valid_size > 0:
        train, valid = split.per_user(train, valid_size, seed=rng)
    params = {"test_size": test_size, "valid_size": valid_size, "seed": seed, "threshold": threshold}
    return _weak("per-user", params, train, valid, test)


def _weak(name: str, params: dict, train: RatingMatrix, valid, test: RatingMatrix) -> Protocol:
    """A protocol whose evaluated users are the training users (history = ``train``)."""
    return Protocol(name, params, train, None if valid is None else EvalPart(train, valid),
                    EvalPart(train, test))


def _check_valid_size(valid_size: float) -> None:
    if not isinstance(valid_size, (int, float, np.floating)) or not 0.0 <= float(valid_size) < 1.0:
        raise ValueError(f"valid_size must be a number in [0, 1), got {valid_size!r}")


PROTOCOLS = {
    "autorec": autorec_protocol,
    "strong": strong_generalization,
    "per-user": per_user_holdout,
}
