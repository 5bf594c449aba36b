"""Tests of autorec.data.RatingMatrix: readers, duplicates, operations, alignment."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from autorec.data import AlignReport, DataError, RatingMatrix


@pytest.fixture
def df():
    return pd.DataFrame(
        {
            "user": ["bob", "alice", "bob", "carol", "alice"],
            "item": [20, 10, 30, 10, 30],
            "rating": [4.0, 3.5, 5.0, 1.0, 2.0],
            "timestamp": [100, 200, 50, 10, 300],
        }
    )


def dense(R):
    return R.X.toarray()


# -------------------------------------------------------------------- from_frame
def test_from_frame_string_and_int_ids(df):
    R = RatingMatrix.from_frame(df, timestamp="timestamp")
    assert list(R.users) == ["alice", "bob", "carol"] and list(R.items) == [10, 20, 30]
    assert R.X.dtype == np.float32 and R.X.has_canonical_format
    np.testing.assert_array_equal(dense(R), [[3.5, 0, 2], [0, 4, 5], [1, 0, 0]])
    # timestamps aligned with X.data (row-major, sorted items)
    np.testing.assert_array_equal(R.timestamps, [200, 300, 100, 50, 10])
    ints = RatingMatrix.from_frame(df.assign(user=[7, 3, 7, 9, 3]))
    assert list(ints.users) == [3, 7, 9]


def test_from_frame_implicit_and_custom_columns(df):
    R = RatingMatrix.from_frame(df.rename(columns={"user": "u", "item": "i"}), "u", "i", rating=None)
    assert set(R.X.data) == {1.0} and R.nnz == 5


def test_from_frame_missing_columns(df):
    with pytest.raises(DataError, match=r"missing column\(s\) \['score'\].*available columns"):
        RatingMatrix.from_frame(df, rating="score")


@pytest.mark.parametrize("bad", [np.nan, np.inf, "five"])
def test_from_frame_bad_ratings_name_the_row(df, bad):
    df["rating"] = df["rating"].astype(object)
    df.loc[3, "rating"] = bad
    with pytest.raises(DataError, match=r"column 'rating'.* at row 4 \(1 such rows\)"):
        RatingMatrix.from_frame(df)


def test_from_frame_missing_id(df):
    df.loc[2, "item"] = np.nan
    with pytest.raises(DataError, match="missing item id at row 3"):
        RatingMatrix.from_frame(df)


def test_from_frame_empty():
    with pytest.raises(DataError, match="empty"):
        RatingMatrix.from_frame(pd.DataFrame({"user": [], "item": [], "rating": []}))


# ---------------------------------------------------------------------- from_csv
def test_from_csv_header_and_custom_sep(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("uid;mid;stars\n1;a;4\n2;b;3\n1;b;5\n")
    R = RatingMatrix.from_csv(path, "uid", "mid", "stars", sep=";")
    np.testing.assert_array_equal(dense(R), [[4, 5], [0, 3]])
    assert list(R.items) == ["a", "b"]


def test_from_csv_no_header_multichar_sep_and_surplus_columns(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    R = RatingMatrix.from_csv(path, sep="::", header=False)  # 4th column ignored
    np.testing.assert_array_equal(dense(R), [[5, 3], [4, 0]])
    assert list(R.users) == ["1", "2"] and list(R.items) == ["10", "20"]  # ids as text
    R = RatingMatrix.from_csv(path, sep="::", header=False, id_dtype="int64")
    assert list(R.users) == [1, 2] and list(R.items) == [10, 20] and R.users.dtype == np.int64
    T = RatingMatrix.from_csv(path, sep="::", header=False, timestamp="timestamp")
    np.testing.assert_array_equal(T.timestamps, [978300760, 978302109, 978301968])
    named = RatingMatrix.from_csv(path, "a", "b", "c", sep="::", header=False, names=["a", "b", "c", "d"])
    np.testing.assert_array_equal(dense(named), dense(R))


@pytest.mark.parametrize(
    "text, header",
    [("user\titem\trating\n1\t2\t3\n", True), ("1\t2\t3\n4\t5\t6\n", False)],
)
def test_from_csv_wrong_separator(tmp_path, text, header):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=r"separator is probably not ','.*looks '\\t'-separated"):
        RatingMatrix.from_csv(path, header=header)


def test_from_csv_more_fields_than_header(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,2,3,4\n")
    with pytest.raises(DataError, match="more fields than the header"):
        RatingMatrix.from_csv(path)


def test_from_csv_bad_value_names_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,2,3\n1,3,oops\n")
    with pytest.raises(DataError, match=r"'oops' at row 2 \(line 3 of the file\)"):
        RatingMatrix.from_csv(path)


@pytest.mark.parametrize("text, match", [("", "empty"), ("\n  \n", "no data"), ("user,item,rating\n", "empty")])
def test_from_csv_empty(tmp_path, text, match):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        RatingMatrix.from_csv(path)


def test_from_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        RatingMatrix.from_csv(tmp_path / "nope.csv")


# -------------------------------------------------------------------- from_arrays
def test_from_arrays():
    R = RatingMatrix.from_arrays([2, 0], [1, 0], [5, 3])
    assert R.shape == (3, 2) and isinstance(R.users, pd.RangeIndex)
    np.testing.assert_array_equal(dense(R), [[3, 0], [0, 0], [0, 5]])
    R = RatingMatrix.from_arrays([0], [1], users=["a", "b"], items=["x", "y", "z"])
    assert R.shape == (2, 3) and R.X[0, 1] == 1.0
    with pytest.raises(ValueError, match="out of range"):
        RatingMatrix.from_arrays([0], [5], shape=(1, 2))
    with pytest.raises(ValueError, match="same length"):
        RatingMatrix.from_arrays([0, 1], [0], [1.0])
    with pytest.raises(DataError, match="1 NaN or infinite value.*position 1"):
        RatingMatrix.from_arrays([0, 1], [0, 0], [1.0, np.nan])


def test_constructor_checks():
    with pytest.raises(ValueError, match="shape"):
        RatingMatrix(sp.csr_matrix((2, 2)), ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="unique"):
        RatingMatrix(sp.csr_matrix((2, 1)), ["a", "a"], ["x"])
    with pytest.raises(TypeError, match="sparse"):
        RatingMatrix(np.zeros((1, 1)), ["a"], ["x"])


# --------------------------------------------------------------------- duplicates
@pytest.fixture
def dup():
    return pd.DataFrame(
        {"user": [1, 1, 1, 2], "item": [5, 5, 5, 5], "rating": [1.0, 4.0, 2.0, 3.0], "t": [10, 30, 20, 0]}
    )


def test_duplicates_last_by_timestamp(dup):
    with pytest.warns(UserWarning, match="2 repeated"):
        R = RatingMatrix.from_frame(dup, timestamp="t")
    assert R.X[0, 0] == 4.0 and R.timestamps[0] == 30  # latest time, not last line
    with pytest.warns(UserWarning, match="2 repeated"):
        R = RatingMatrix.from_frame(dup)
    assert R.X[0, 0] == 2.0  # no timestamp: last line


def test_duplicates_mean_and_error(dup):
    with pytest.warns(UserWarning, match="2 repeated.*'mean'"):
        R = RatingMatrix.from_frame(dup, duplicates="mean")
    assert R.X[0, 0] == pytest.approx(7 / 3) and R.X[1, 0] == 3.0
    with pytest.raises(DataError, match="2 repeated"):
        RatingMatrix.from_frame(dup, duplicates="error")
    with pytest.raises(ValueError, match="duplicates must be"):
        RatingMatrix.from_frame(dup, duplicates="first")


# ----------------------------------------------------------------- to_frame etc.
def test_to_frame_round_trip(df):
    R = RatingMatrix.from_frame(df, timestamp="timestamp")
    out = R.to_frame()
    assert list(out.columns) == ["user", "item", "rating", "timestamp"]
    back = RatingMatrix.from_frame(out, timestamp="timestamp")
    assert back.users.equals(R.users) and back.items.equals(R.items)
    assert (back.X != R.X).nnz == 0
    np.testing.assert_array_equal(back.timestamps, R.timestamps)
    expected = df.sort_values(["user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)


def test_binarize(df):
    R = RatingMatrix.from_frame(df, timestamp="timestamp")
    B = R.binarize(3.5)
    np.testing.assert_array_equal(dense(B), [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(B.timestamps, [200, 100, 50])
    assert B.users.equals(R.users) and B.items.equals(R.items)
    assert R.binarize(4).nnz == 2


def test_mask_with_empty_trailing_rows():
    R = RatingMatrix.from_arrays([0, 0, 1], [0, 1, 1], [1, 2, 3], shape=(4, 2))
    M = R.mask(np.array([True, False, True]))
    np.testing.assert_array_equal(dense(M), [[1, 0], [0, 3], [0, 0], [0, 0]])
    assert R.mask(np.zeros(3, bool)).nnz == 0
    with pytest.raises(ValueError, match="keep has shape"):
        R.mask(np.ones(2, bool))


def test_filter_is_iterative():
    # items: x has 3 ratings (u1, u2, u3), y has 2 (u1, u4), z 2 (u2, u3).
    # min 2 per user drops u4 (1 rating) -> y falls to 1 rating -> dropped -> u1 falls to 1
    u = ["u1", "u1", "u2", "u2", "u3", "u3", "u4"]
    i = ["x", "y", "x", "z", "x", "z", "y"]
    R = RatingMatrix.from_frame(pd.DataFrame({"user": u, "item": i, "rating": 1.0}))
    F = R.filter(min_user_ratings=2, min_item_ratings=2)
    assert list(F.users) == ["u2", "u3"] and list(F.items) == ["x", "z"]
    assert (F.user_counts() >= 2).all() and (F.item_counts() >= 2).all()
    assert R.filter().nnz == R.nnz


def test_subset_positions_and_masks(df):
    R = RatingMatrix.from_frame(df, timestamp="timestamp")
    S = R.subset(users=[2, 0], items=[2, 0])
    assert list(S.users) == ["carol", "alice"] and list(S.items) == [30, 10]
    np.testing.assert_array_equal(dense(S), [[0, 1], [2, 3.5]])
    np.testing.assert_array_equal(S.timestamps, [10, 300, 200])
    M = R.subset(users=np.array([False, True, False]))
    assert list(M.users) == ["bob"] and M.n_items == 3
    with pytest.raises(ValueError, match="mask has shape"):
        R.subset(items=np.array([True, False]))


def test_transpose_carries_timestamps(df):
    R = RatingMatrix.from_frame(df, timestamp="timestamp")
    T = R.T
    assert T.users.equals(R.items) and T.items.equals(R.users)
    np.testing.assert_array_equal(dense(T), dense(R).T)
    back = T.to_frame("item", "user").sort_values(["user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back[R.to_frame().columns], R.to_frame())
    assert (R.T.T.X != R.X).nnz == 0


# ------------------------------------------------------------------------- align
def test_align_reports_unknown_ids(df):
    R = RatingMatrix.from_frame(df)
    with pytest.warns(UserWarning, match="3 ratings dropped"):
        A, report = R.align(users=["dave", "bob", "alice"], items=[20, 10])
    # carol (1 rating) unknown, item 30 (2 ratings) unknown: 3 ratings dropped
    assert isinstance(report, AlignReport) and bool(report) and report.dropped_ratings == 3
    assert list(report.unknown_users) == ["carol"] and list(report.unknown_items) == [30]
    assert list(A.users) == ["dave", "bob", "alice"] and A.user_counts()[0] == 0
    np.testing.assert_array_equal(dense(A), [[0, 0], [4, 0], [0, 3.5]])
    same, rep = R.align()
    assert not rep and (same.X != R.X).nnz == 0


def test_from_frame_fixed_users_factorizes_kept_rows_only(df):
    with pytest.warns(UserWarning, match="1 ratings dropped: 1 unknown users"):
        R, report = RatingMatrix.from_frame(df, users=["alice", "bob"])
    assert list(R.items) == [10, 20, 30]  # item 10 also rated by alice
    with pytest.warns(UserWarning):
        R, report = RatingMatrix.from_frame(df, users=["bob"])
    assert list(R.items) == [20, 30]  # no empty column for items only others rated


# ------------------------------------------------------------------ repr/describe
def test_repr_and_describe(df):
    R = RatingMatrix.from_frame(df)
    assert repr(R) == "RatingMatrix(3 users x 3 items, 5 ratings, density 55.56%)"
    d = R.describe()
    assert d["users"] == 3 and d["ratings"] == 5 and d["rating_min"] == 1.0
    assert d["rating_max"] == 5.0 and d["rating_mean"] == pytest.approx(3.1)
    assert d["users_without_ratings"] == 0
    E = RatingMatrix.from_arrays([], [], shape=(2, 2))
    assert E.describe()["users_without_ratings"] == 2 and np.isnan(E.describe()["rating_min"])
    assert len(R) == 5 and R.density == pytest.approx(5 / 9)
