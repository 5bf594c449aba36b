"""Shared builders of small synthetic data for the tests, and the ml-100k loader.

Import them explicitly (``from .conftest import block_clicks``) where a test module needs
them; each builder is deterministic for a given seed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import autorec
from autorec.data import RatingMatrix

#: shape of :func:`block_clicks`: two halves of the items
N_USERS, N_ITEMS, HALF = 60, 40, 20


def ml100k() -> RatingMatrix:
    """MovieLens 100K from ``$AUTOREC_DATA``; the calling test is skipped without it."""
    folder = os.environ.get("AUTOREC_DATA")
    if not folder or not (Path(folder) / "ml-100k.zip").exists():
        pytest.skip("AUTOREC_DATA does not point at a folder with ml-100k.zip")
    return autorec.load_movielens("ml-100k", data_dir=folder, download=False)


def two_group_ratings(seed=0, n_users=120, n_items=80):
    """Explicit ratings of two user groups: 4-5 stars for their own half of the items, 1-2
    for the other half. Returns ``(R, group, block)``; the contract battery's data."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_users) % 2  # (U,) 0 or 1
    block = (np.arange(n_items) >= n_items // 2).astype(int)  # (I,)
    rows, cols, vals = [], [], []
    for g in (0, 1):
        users = np.flatnonzero(group == g)
        own, other = np.flatnonzero(block == g), np.flatnonzero(block != g)
        like = rng.random((len(users), len(own))) < 0.4  # (u, own)
        hate = rng.random((len(users), len(other))) < 0.1  # (u, other)
        r, c = np.nonzero(like)
        rows.append(users[r]), cols.append(own[c]), vals.append(rng.integers(4, 6, len(r)))
        r, c = np.nonzero(hate)
        rows.append(users[r]), cols.append(other[c]), vals.append(rng.integers(1, 3, len(r)))
    R = autorec.RatingMatrix.from_arrays(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                                         shape=(n_users, n_items))
    return R, group, block


def block_clicks(seed=0) -> RatingMatrix:
    """Two user groups, each liking its own half of the items (plus rare noise)."""
    rng = np.random.default_rng(seed)
    group = np.arange(N_USERS) % 2  # user u likes block group[u]
    in_block = (np.arange(N_ITEMS)[None, :] // HALF) == group[:, None]
    p = np.where(in_block, 0.45, 0.02)
    dense = (rng.random((N_USERS, N_ITEMS)) < p).astype(np.float32)
    dense[np.arange(N_USERS), group * HALF] = 1  # nobody is empty
    return RatingMatrix(sp.csr_matrix(dense), pd.Index([f"u{i}" for i in range(N_USERS)]),
                        pd.Index(range(100, 100 + N_ITEMS)))


def random_clicks(n_users=80, n_items=50, density=0.12, seed=1, rated=False) -> RatingMatrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data[:] = rng.integers(1, 6, X.nnz) if rated else 1.0
    return RatingMatrix(X, pd.Index(range(n_users)), pd.Index(range(n_items)))
