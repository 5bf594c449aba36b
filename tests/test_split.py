"""Tests of autorec.split: disjoint and complete parts, shares, seeds, guarantees, errors."""
import numpy as np
import pandas as pd
import pytest

from autorec import split
from autorec.data import RatingMatrix
from autorec.exceptions import SplitWarning


def synthetic(n_users=200, n_items=120, density=0.1, seed=0, timestamps=True, half_stars=False):
    """Random explicit ratings; every user and item has at least 2 ratings."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density  # (n_users, n_items)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    dense[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(dense)
    scale = np.arange(1, 11) / 2 if half_stars else np.arange(1, 6)
    r = rng.choice(scale, len(u))
    ts = rng.integers(0, 10_000, len(u)) if timestamps else None
    return RatingMatrix.from_arrays(
        u, i, r, users=[f"u{k}" for k in range(n_users)], items=np.arange(n_items) * 10,
        timestamps=ts,
    )


@pytest.fixture(scope="module")
def R():
    return synthetic()


def entries(M: RatingMatrix) -> pd.DataFrame:
    """All ratings as a sorted frame of (user id, item id, rating, timestamp)."""
    return M.to_frame().sort_values(["user", "item"]).reset_index(drop=True)


def assert_partition(R, *parts):
    """The parts share R's ids, are pairwise disjoint, and together are R exactly."""
    for P in parts:
        assert P.users.equals(R.users) and P.items.equals(R.items)
    patterns = [pattern(P) for P in parts]
    assert sum(len(p) for p in patterns) == len(set().union(*patterns)) == R.nnz
    together = pd.concat([entries(P) for P in parts]).sort_values(["user", "item"])
    pd.testing.assert_frame_equal(together.reset_index(drop=True), entries(R))


def pattern(M):
    return set(zip(*M.X.nonzero()))


# ------------------------------------------------------------------------ holdout
def test_holdout_partition_and_share(R):
    train, test = split.holdout(R, test_size=0.25, seed=3)
    assert_partition(R, train, test)
    assert pattern(train).isdisjoint(pattern(test))
    assert test.nnz == round(0.25 * R.nnz)
    assert train.item_info is R.item_info and train.timestamps is not None


def test_holdout_seeds(R):
    a = split.holdout(R, 0.1, seed=0)[1]
    b = split.holdout(R, 0.1, seed=0)[1]
    c = split.holdout(R, 0.1, seed=1)[1]
    assert pattern(a) == pattern(b)
    assert pattern(a) != pattern(c)


def test_holdout_validation_carved_from_train(R):
    train, test = split.holdout(R, 0.1, seed=0)
    fit, valid = split.holdout(train, 0.1, seed=1)
    assert_partition(R, fit, valid, test)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "0.1", None])
def test_holdout_bad_share(R, bad):
    with pytest.raises(ValueError, match="test_size"):
        split.holdout(R, test_size=bad)


def test_holdout_too_few_ratings():
    with pytest.raises(ValueError, match="at least 2 ratings"):
        split.holdout(RatingMatrix.from_arrays([0], [0], [4.0]))


# ----------------------------------------------------------------------- per_user
def test_per_user_guarantees(R):
    train, test = split.per_user(R, test_size=0.2, seed=0)
    assert_partition(R, train, test)
    counts = R.user_counts()
    assert (test.user_counts()[counts >= 2] >= 1).all()
    assert (train.user_counts()[counts >= 2] >= 1).all()
    expected = np.clip(np.floor(0.2 * counts + 0.5), 1, counts - 1)
    np.testing.assert_array_equal(test.user_counts(), expected)
    assert abs(test.nnz / R.nnz - 0.2) < 0.03


def test_per_user_small_users_reported():
    #  user 0: 1 rating, user 1: 2, user 2: 3, user 3: none
    R = RatingMatrix.from_arrays([0, 1, 1, 2, 2, 2], [0, 0, 1, 0, 1, 2], shape=(4, 3))
    with pytest.warns(SplitWarning, match="1 users have a single rating"):
        train, test = split.per_user(R, test_size=0.9, seed=0)
    np.testing.assert_array_equal(test.user_counts(), [0, 1, 2, 0])
    np.testing.assert_array_equal(train.user_counts(), [1, 1, 1, 0])


def test_per_user_seeds(R):
    a, b, c = (split.per_user(R, 0.2, seed=s)[1] for s in (0, 0, 5))
    assert pattern(a) == pattern(b) != pattern(c)


def test_per_user_bad_share(R):
    with pytest.raises(ValueError, match="test_size must be a number strictly between 0 and 1"):
        split.per_user(R, test_size=1.0)


# ------------------------------------------------------------------ heldout_users
def test_heldout_users_invariants():
    base = synthetic(n_users=300, n_items=400, density=0.05, seed=1, timestamps=False)
    # plus 30 items with a single rating each: those of held-out users must be dropped
    coo = base.X.tocoo()
    solo = np.random.default_rng(0).choice(300, 30, replace=False)  # (30,) their raters
    R = RatingMatrix.from_arrays(
        np.r_[coo.row, solo], np.r_[coo.col, 400 + np.arange(30)], np.r_[coo.data, np.ones(30)]
    )
    s = split.heldout_users(R, n_valid=40, n_test=50, fold_in=0.8, seed=0)
    assert isinstance(s, split.StrongSplit) and len(s) == 5
    for M in s:  # full users, one reduced item index
        assert M.users.equals(R.users) and M.items.equals(s.train.items)
    assert (s.train.item_counts() > 0).all()  # items = those rated by training users
    assert s.train.n_items < R.n_items
    valid = (s.valid_in.user_counts() + s.valid_out.user_counts()) > 0
    test = (s.test_in.user_counts() + s.test_out.user_counts()) > 0
    train = s.train.user_counts() > 0
    assert valid.sum() == 40 and test.sum() == 50
    assert not (train & valid).any() and not (train & test).any() and not (valid & test).any()
    assert (train | valid | test).sum() == R.n_users
    # in/out disjoint, ~80/20, at least one on each side
    for fin, fout, users in ((s.valid_in, s.valid_out, valid), (s.test_in, s.test_out, test)):
        assert pattern(fin).isdisjoint(pattern(fout))
        assert (fin.user_counts()[users] >= 1).all() and (fout.user_counts()[users] >= 1).all()
        n = fin.user_counts() + fout.user_counts()
        expected_out = np.clip(np.floor(0.2 * n + 1e-9), 1, n - 1)[users]
        np.testing.assert_array_equal(fout.user_counts()[users], expected_out)
    # held-out users' ratings of the kept items are all there, nothing else
    kept = R.subset(items=R.items.get_indexer(s.train.items))
    assert_partition(kept, *s)


def test_heldout_users_seeds():
    R = synthetic(seed=2)
    a = split.heldout_users(R, 10, 10, seed=0)
    b = split.heldout_users(R, 10, 10, seed=0)
    c = split.heldout_users(R, 10, 10, seed=1)
    assert pattern(a.test_out) == pattern(b.test_out) != pattern(c.test_out)


def test_heldout_users_short_users_reported():
    # users 0-2 rate items 0-3; user 3 rates only item 4 (rated by no one else)
    u = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    i = [0, 1, 2, 0, 1, 3, 1, 2, 3, 0, 4]
    R = RatingMatrix.from_arrays(u, i)
    with pytest.warns(SplitWarning):
        picked = [s for s in range(50) if split.heldout_users(R, 0, 1, seed=s).test_in.user_counts()[3]]
    with pytest.warns(SplitWarning, match="1 held-out users have fewer than 2"):
        s = split.heldout_users(R, 0, 1, seed=picked[0])
    assert s.test_in.nnz == 1 and s.test_out.nnz == 0 and s.train.n_items == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_valid=100, n_test=100), "leaves no training user"),
        (dict(n_valid=-1, n_test=5), "n_valid must be a non-negative integer"),
        (dict(n_valid=5, n_test=0), "n_test must be at least 1"),
        (dict(n_valid=5, n_test=5, fold_in=1.0), "fold_in"),
    ],
)
def test_heldout_users_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split.heldout_users(synthetic(n_users=150, n_items=50), **kwargs)


# --------------------------------------------------------------------- leave_last
def test_leave_last_picks_latest():
    # user 0: times 5, 9, 1 -> item 1 latest; user 1: tie at 7 -> higher item position wins
    R = RatingMatrix.from_arrays(
        [0, 0, 0, 1, 1, 1, 2], [0, 1, 2, 0, 2, 3, 1], [1, 2, 3, 4, 5, 1, 2],
        timestamps=[5, 9, 1, 7, 7, 3, 4],
    )
    with pytest.warns(SplitWarning, match="1 users have at most 1 ratings"):
        train, test = split.leave_last(R, n=1)
    assert_partition(R, train, test)
    assert pattern(test) == {(0, 1), (1, 2)}
    assert train.user_counts()[2] == 1  # single-rating user stays in train
    with pytest.warns(SplitWarning, match="1 users have at most 2 ratings"):
        train2, test2 = split.leave_last(R, n=2)
    assert pattern(test2) == {(0, 1), (0, 0), (1, 2), (1, 0)}


def test_leave_last_matches_pandas(R):
    train, test = split.leave_last(R, n=3)
    df = R.to_frame()
    df["pos"] = R.items.get_indexer(df["item"])
    df = df.sort_values(["user", "timestamp", "pos"])
    last = df.groupby("user").tail(3)
    assert set(zip(last.user, last.item)) == set(zip(*[entries(test)[c] for c in ("user", "item")]))
    assert_partition(R, train, test)


def test_leave_last_errors(R):
    no_time = synthetic(timestamps=False)
    with pytest.raises(ValueError, match="needs timestamps"):
        split.leave_last(no_time)
    with pytest.raises(ValueError, match="positive integer"):
        split.leave_last(R, n=0)


def test_splits_with_empty_trailing_users():
    """Users without ratings at the end of the index (CSR rows past the last entry)."""
    R = RatingMatrix.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], timestamps=[1, 2, 3, 4], shape=(4, 2))
    train, test = split.holdout(R, 0.5, seed=0)
    assert train.shape == test.shape == (4, 2) and train.nnz == test.nnz == 2
    train, test = split.per_user(R, 0.5, seed=0)
    np.testing.assert_array_equal(test.user_counts(), [1, 1, 0, 0])
    train, test = split.leave_last(R)
    assert pattern(test) == {(0, 1), (1, 1)}
