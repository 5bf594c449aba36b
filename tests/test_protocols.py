"""Tests of autorec.protocols on synthetic data, and on ml-100k when AUTOREC_DATA has it."""

import numpy as np
import pytest

from autorec import protocols, split
from autorec.data import RatingMatrix
from autorec.protocols import PROTOCOLS, Protocol

from .conftest import ml100k



def synthetic(n_users=300, n_items=150, density=0.12, seed=0, half_stars=True):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density  # (n_users, n_items)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    u, i = np.nonzero(dense)
    scale = np.arange(1, 11) / 2 if half_stars else np.arange(1, 6, dtype=float)
    return RatingMatrix.from_arrays(u, i, rng.choice(scale, len(u)))


@pytest.fixture(scope="module")
def R():
    return synthetic()


def pattern(M):
    return set(zip(*M.X.nonzero()))


def test_registry():
    assert set(PROTOCOLS) == {"autorec", "strong", "per-user"}
    assert PROTOCOLS["autorec"] is protocols.autorec_protocol


def test_autorec_protocol(R):
    p = protocols.autorec_protocol(R, seed=3)
    assert isinstance(p, Protocol) and p.name == "autorec" and not p.strong
    assert p.params == {"test_size": 0.1, "valid_size": 0.1, "seed": 3}
    assert p.test.target.nnz == round(0.1 * R.nnz)
    assert p.valid.target.nnz == round(0.1 * (R.nnz - p.test.target.nnz))
    assert p.train.nnz + p.valid.target.nnz + p.test.target.nnz == R.nnz
    for M in (p.valid.target, p.test.target):
        assert M.users.equals(p.train.users) and M.items.equals(p.train.items)
    assert len({*pattern(p.train), *pattern(p.valid.target), *pattern(p.test.target)}) == R.nnz
    # the test part is the plain holdout's with the same seed
    assert pattern(p.test.target) == pattern(split.holdout(R, 0.1, seed=3)[1])
    with pytest.raises(AttributeError):
        p.name = "other"  # frozen


def test_autorec_protocol_no_valid(R):
    p = protocols.autorec_protocol(R, valid_size=0)
    assert p.valid is None and p.train.nnz + p.test.target.nnz == R.nnz
    assert "valid" not in p.describe().split(":", 1)[1]
    with pytest.raises(ValueError, match="valid_size"):
        protocols.autorec_protocol(R, valid_size=1.0)


def test_strong_generalization(R):
    p = protocols.strong_generalization(R, n_heldout=30, seed=1)
    assert p.name == "strong" and p.strong
    assert p.params == dict(n_heldout=30, threshold=3.5, min_user_ratings=5, fold_in=0.8, seed=1)
    B = protocols.binarize_above(R, 3.5).filter(min_user_ratings=5)
    parts = (p.train, *p.valid, *p.test)
    for M in parts:
        assert M.users.equals(B.users) and M.items.equals(p.train.items)
        assert set(np.unique(M.X.data)) <= {1.0}
    for fold_in, held_out in (p.valid, p.test):
        users = (fold_in.user_counts() + held_out.user_counts()) > 0
        assert users.sum() == 30 and (p.train.user_counts()[users] == 0).all()
        assert (held_out.user_counts()[users] >= 1).all()
        share = held_out.nnz / (fold_in.nnz + held_out.nnz)
        assert 0.1 < share < 0.3
    assert sum(M.nnz for M in parts) <= B.nnz
    assert "30 held-out users" in p.describe()


def test_binarize_threshold_half_stars():
    # half-star scale: > 3.5 keeps 4.0, 4.5, 5.0 and drops 3.5
    R = RatingMatrix.from_arrays(np.zeros(10, int), np.arange(10), np.arange(1, 11) / 2)
    B = protocols.binarize_above(R, 3.5)
    np.testing.assert_array_equal(B.X.indices, [7, 8, 9])
    # integer scale: > 3.5 keeps 4 and 5; an integer threshold is strict too
    R5 = RatingMatrix.from_arrays(np.zeros(5, int), np.arange(5), np.arange(1, 6))
    np.testing.assert_array_equal(protocols.binarize_above(R5, 3.5).X.indices, [3, 4])
    np.testing.assert_array_equal(protocols.binarize_above(R5, 4).X.indices, [4])


def test_strong_threshold_on_half_stars(R):
    p = protocols.strong_generalization(R, n_heldout=20, threshold=3.5, min_user_ratings=1)
    kept = p.train.nnz + sum(M.nnz for part in (p.valid, p.test) for M in part)
    items_kept = R.subset(items=R.items.get_indexer(p.train.items))
    assert kept == int((items_kept.X.data >= 4.0).sum())


def test_strong_errors(R):
    with pytest.raises(ValueError, match="n_heldout"):
        protocols.strong_generalization(R, n_heldout=0)
    with pytest.raises(ValueError, match="leaves no training user"):
        protocols.strong_generalization(R, n_heldout=200)
    with pytest.raises(ValueError, match=rf"threshold=5.0 removes all {R.nnz:,} ratings.*range from 0.5 to 5"):
        protocols.strong_generalization(R, n_heldout=5, threshold=5.0)
    with pytest.raises(ValueError, match=rf"no user has 1000 .* of the {R.nnz:,} ratings, [0-9,]+ are above"):
        protocols.strong_generalization(R, n_heldout=5, min_user_ratings=1000)
    with pytest.raises(ValueError, match="threshold=9 removes all"):
        protocols.per_user_holdout(R, threshold=9)


def test_per_user_holdout(R):
    with pytest.warns(split.SplitWarning, match="have a single rating"):
        p = protocols.per_user_holdout(R, test_size=0.2, valid_size=0.1, seed=2, threshold=3.5)
    assert p.name == "per-user" and not p.strong
    assert p.params == {"test_size": 0.2, "valid_size": 0.1, "seed": 2, "threshold": 3.5}
    B = protocols.binarize_above(R, 3.5)
    assert p.train.nnz + p.valid.target.nnz + p.test.target.nnz == B.nnz
    counts = B.user_counts()
    assert (p.test.target.user_counts()[counts >= 2] >= 1).all()
    assert set(np.unique(p.test.target.X.data)) == {1.0}
    q = protocols.per_user_holdout(R)
    assert q.valid is None and q.train.nnz + q.test.target.nnz == R.nnz
    assert set(np.unique(q.test.target.X.data)) > {1.0}  # explicit ratings kept


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_params_rebuild_the_same_split(R, name):
    kwargs = {"n_heldout": 20} if name == "strong" else {}
    p = PROTOCOLS[name](R, seed=7, **kwargs)
    q = PROTOCOLS[p.name](R, **p.params)
    assert pattern(p.test.target) == pattern(q.test.target)
    assert p.describe() == q.describe() and p.describe().startswith(f"{name}(")


# ------------------------------------------------------------------- ml-100k
def test_ml100k_protocols():
    R = ml100k()
    assert R.shape == (943, 1682) and R.nnz == 100_000
    p = protocols.autorec_protocol(R)
    assert (p.train.nnz, p.valid.target.nnz, p.test.target.nnz) == (81_000, 9_000, 10_000)
    s = protocols.strong_generalization(R, n_heldout=50)
    positives = int((R.X.data > 3.5).sum())
    assert positives == 55_375
    heldout = sum(M.nnz for part in (s.valid, s.test) for M in part)
    assert s.train.nnz + heldout <= positives
    for fold_in, held_out in (s.valid, s.test):
        assert ((fold_in.user_counts() + held_out.user_counts()) > 0).sum() == 50
    per = protocols.per_user_holdout(R, test_size=0.2)
    assert (per.train.nnz, per.test.target.nnz) == (80_000, 20_000)  # every ml-100k user has >= 20
