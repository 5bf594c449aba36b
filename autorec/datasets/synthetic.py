"""A built-in synthetic ratings dataset, shaped like MovieLens 100K.

Used by ``autorec demo`` when no MovieLens archive can be found or downloaded, and handy
in tests. Fully deterministic for a given ``seed``; built vectorised (no loop per user).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import RatingMatrix

__all__ = ["synthetic_ratings"]

#: share of 1..5 stars in MovieLens 100K (6,110 / 11,370 / 27,145 / 34,174 / 21,201)
ML100K_STAR_SHARES = np.array([0.0611, 0.1137, 0.27145, 0.34174, 0.21201])


def synthetic_ratings(
    n_users: int = 900,
    n_items: int = 1600,
    density: float = 0.06,
    rank: int = 10,
    noise: float = 0.5,
    min_user_ratings: int = 10,
    seed: int = 0,
) -> RatingMatrix:
    """A deterministic low-rank explicit ratings matrix with MovieLens-like statistics.

    Preferences are ``u_i . v_j / sqrt(rank) + user bias + item bias + noise``. Which cells
    are observed follows skewed user activity (log-normal) and item popularity (Zipf-like),
    with popular items also liked more (as in MovieLens); the observed preferences are
    cut into 1-5 stars at the quantiles of MovieLens 100K's star distribution.

    Parameters
    ----------
    n_users, n_items : int
        Shape (defaults close to MovieLens 100K's 943 x 1,682).
    density : float
        Expected share of observed cells (MovieLens 100K: 6.3%).
    rank : int
        Rank of the preference matrix.
    noise : float
        Standard deviation of the per-rating noise.
    min_user_ratings : int
        Every user gets at least this many ratings (their most likely cells).
    seed : int
        Seed of the generator.

    Returns
    -------
    RatingMatrix
        Integer stars 1..5 as float32; user ids ``1..n_users``, item ids ``1..n_items``,
        ``item_info`` with a ``title`` per item.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, rank))
    V = rng.normal(size=(n_items, rank))
    popularity = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.8  # (n_items,) Zipf-like
    item_bias = 0.4 * np.log(popularity / popularity.mean()) / np.log(n_items) + rng.normal(0, 0.3, n_items)
    user_bias = rng.normal(0, 0.4, n_users)
    preference = U @ V.T / np.sqrt(rank) + user_bias[:, None] + item_bias[None, :]  # (users, items)

    activity = rng.lognormal(0.0, 0.7, n_users)  # (n_users,)
    propensity = np.outer(activity, popularity)  # (users, items)
    scale = density / propensity.mean()
    for _ in range(20):  # clipping at 1 loses mass: rescale until the mean is right
        scale *= density / np.minimum(propensity * scale, 1.0).mean()
    propensity = np.minimum(propensity * scale, 1.0)
    observed = rng.random(propensity.shape) < propensity
    # top up light users with their most likely cells
    m = min(min_user_ratings, n_items)
    light = np.flatnonzero(observed.sum(axis=1) < m)  # (n_light,)
    if len(light):
        likely = np.argsort(-propensity[light], axis=1, kind="stable")[:, :m]  # (n_light, m)
        observed[light[:, None], likely] = True

    rows, cols = np.nonzero(observed)  # sorted by (row, col)
    values = preference[rows, cols] + rng.normal(0, noise, len(rows))
    cuts = np.quantile(values, np.cumsum(ML100K_STAR_SHARES)[:-1])
    stars = (1 + np.searchsorted(cuts, values)).astype(np.float32)  # 1..5
    X = sp.csr_matrix((stars, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    items = pd.RangeIndex(1, n_items + 1, name=None)
    info = pd.DataFrame({"title": [f"Synthetic item {i}" for i in items]}, index=items)
    return RatingMatrix(X, pd.RangeIndex(1, n_users + 1), items, item_info=info)
