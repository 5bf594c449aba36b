"""Ids are kept exactly as the user gave them: read, fitted, saved, loaded, exported.

``007``, ``0007`` and ``7`` used to merge into user 7; ``NA``/``None``/``null`` were refused
as missing; ids beyond int64, uint64, float and bool ids did not survive ``save``/``load``
(the reloaded model no longer knew its users).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import autorec
from autorec.exceptions import DataError

from ._files import TINY

KINDS = {
    "str": (["007", "0007", "7", "NA", "None", "null", "ü ñ", " 7"], "str"),
    "int64": ([-5, 0, 7, 2**62, -(2**63), 2**63 - 1], "int64"),
    "uint64": ([2**63 + 1, 2**64 - 1, 3, 2**63, 0, 9], "uint64"),
    "float": ([1.0, 2.5, 1e300, -3.0, 0.1, 7.25], "float64"),
    "bool": ([True, False], "bool"),
    "mixed": (["a", 1, 2.5, 2**70, "1", -4], "object"),
}


def _frame(ids: list, dtype: str, side: str) -> pd.DataFrame:
    """Every id of ``side`` rates (or is rated by) a few of the other side's, so that all
    of them are known to the model."""
    other = [f"o{k}" for k in range(6)]
    rows = [(x, other[(n + j) % 6], float(1 + (n + j) % 5)) for n, x in enumerate(ids) for j in range(3)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    if side == "item":
        df = df.rename(columns={"user": "item", "item": "user"})
    if dtype != "object":
        df[side] = df[side].astype(dtype)
    else:
        df[side] = pd.Series([r[0] for r in rows], dtype=object)
    return df


def _typed(index: pd.Index) -> set:
    return {(type(v), v) for v in index.tolist()}


def _make(name):
    cls = autorec.MODELS[name]
    params = dict(TINY[name])
    for key, value in (("device", "cpu"), ("progress", False)):
        if key in cls._param_names():
            params[key] = value
    return cls(**params)


@pytest.mark.parametrize("side", ["user", "item"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ids_survive_fit_save_load_recommend_export(kind, side, tmp_path):
    ids, dtype = KINDS[kind]
    df = _frame(ids, dtype, side)
    R = autorec.RatingMatrix.from_frame(df)
    index = R.users if side == "user" else R.items
    assert str(index.dtype) == dtype and len(index) == len(ids)  # nothing merged
    assert _typed(index) == {(type(v), v) for v in pd.Index(df[side]).tolist()}  # nothing converted
    for name in ("pop", "i-autorec", "als"):
        model = _make(name).fit(R if name == "i-autorec" else R.binarize(3))
        loaded = autorec.load(model.save(tmp_path / f"{name}.pt"))
        for before, after in ((model.users_, loaded.users_), (model.items_, loaded.items_)):
            pd.testing.assert_index_equal(after, before, exact=True)
            assert _typed(after) == _typed(before)
        np.testing.assert_array_equal(loaded.known_users_, model.known_users_)
        users = np.arange(R.n_users)
        X = R.X if name == "i-autorec" else R.binarize(3).X
        got, want = loaded.recommend(users, X, k=2), model.recommend(users, X, k=2)  # known users
        np.testing.assert_array_equal(got[0], want[0])
        out = autorec.export_topk(loaded, R, tmp_path / f"{name}.csv", k=2, progress=False)
        table = pd.read_csv(out, dtype=str, keep_default_na=False)
        raw = {str(x) for x in index}
        assert set(table[side]) <= raw and (side == "item" or set(table[side]) == raw)


def test_csv_ids_are_text_exactly(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n007,NA,5\n0007,None,4\n7,null,3\n 7,nan,2\n007,N/A,1\n")
    R = autorec.RatingMatrix.from_csv(path)
    assert list(R.users) == [" 7", "0007", "007", "7"]
    assert list(R.items) == ["N/A", "NA", "None", "nan", "null"]
    assert R.nnz == 5
    model = autorec.Popularity().fit(R)
    loaded = autorec.load(model.save(tmp_path / "m.pt"))
    pd.testing.assert_index_equal(loaded.users_, R.users, exact=True)
    back = autorec.RatingMatrix.from_csv(autorec.export_topk(loaded, R, tmp_path / "o.csv", k=1,
                                                              progress=False), rating="score")
    assert set(back.users) == set(R.users)  # the export round-trips through from_csv


def test_integer_ids_on_request_never_merge(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,10,5\n2,10,4\n 3,+11,3\n")
    R = autorec.RatingMatrix.from_csv(path, id_dtype="int64")
    assert R.users.dtype == np.int64 and list(R.users) == [1, 2, 3] and list(R.items) == [10, 11]
    path.write_text("user,item,rating\n007,1,5\n8,1,4\n7,2,3\n")
    with pytest.raises(DataError, match=r"r\.csv: the user ids '007' \(row 1 \(line 2 of the file\)\) "
                                        r"and '7' \(row 3 \(line 4 of the file\)\) are both 7 as int64"):
        autorec.RatingMatrix.from_csv(path, id_dtype="int64")
    R = autorec.RatingMatrix.from_csv(path, id_dtype={"item": "int64"})  # users stay text
    assert list(R.users) == ["007", "7", "8"] and R.items.dtype == np.int64
    big = "9223372036854775808"  # 2**63: beyond int64, fine as uint64
    path.write_text(f"user,item,rating\n{big},1,5\n18446744073709551615,1,4\n")
    with pytest.raises(DataError, match=rf"user id '{big}' at row 1 \(line 2 of the file\) \(column 'user'\) is outside int64"):
        autorec.RatingMatrix.from_csv(path, id_dtype="int64")
    R = autorec.RatingMatrix.from_csv(path, id_dtype="uint64")
    assert R.users.dtype == np.uint64 and list(R.users) == [2**63, 2**64 - 1]
    path.write_text("user,item,rating\n1,1,5\nx,1,4\n")
    with pytest.raises(DataError, match=r"user id 'x' at row 2 \(line 3 of the file\).* is not an integer"):
        autorec.RatingMatrix.from_csv(path, id_dtype="int64")
    with pytest.raises(ValueError, match="id_dtype for column 'user' must be one of str, int64, uint64"):
        autorec.RatingMatrix.from_csv(path, id_dtype="float64")


def test_mixed_ids_that_python_equates_are_refused():
    df = pd.DataFrame({"user": pd.Series([1, True, "1"], dtype=object), "item": [1, 2, 3], "rating": 1.0})
    with pytest.raises(DataError, match=r"the user ids 1 \(int, row 1\) and True \(bool, row 2\) are equal"):
        autorec.RatingMatrix.from_frame(df)
    df["user"] = pd.Series([1, 1.0, 2], dtype=object)
    with pytest.raises(DataError, match=r"ids 1 \(int, row 1\) and 1.0 \(float, row 2\) are equal"):
        autorec.RatingMatrix.from_frame(df)
    df["user"] = pd.Series(["1", 1, 2.5], dtype=object)  # different values: fine
    assert autorec.RatingMatrix.from_frame(df).n_users == 3


def test_text_ids_meet_an_integer_vocabulary_exactly():
    """A history read as text against a model trained on integer ids (e.g. MovieLens)."""
    R = autorec.RatingMatrix.from_frame(pd.DataFrame({"user": [1, 2], "item": [10, 20], "rating": 1.0}))
    hist = pd.DataFrame({"user": ["1", "5"], "item": ["10", "abc"], "rating": 1.0})
    with pytest.warns(UserWarning, match="1 ratings dropped"):
        H, report = autorec.RatingMatrix.from_frame(hist, users=R.users, items=R.items)
    assert H.nnz == 1 and list(report.unknown_items) == ["abc"] and list(report.unknown_users) == ["5"]
    hist = pd.DataFrame({"user": ["1", "01"], "item": ["10", "20"], "rating": 1.0})
    with pytest.raises(DataError, match="'1' .* and '01' .* are both 1 as int64"):
        autorec.RatingMatrix.from_frame(hist, users=R.users, items=R.items)


def test_ids_that_cannot_be_saved_exactly_are_refused_at_save(tmp_path):
    R = autorec.RatingMatrix.from_frame(pd.DataFrame({"user": [1, 2], "item": [10, 20], "rating": 1.0}))
    model = autorec.Popularity().fit(R)
    model.users_ = pd.Index(pd.Categorical(["a", "b"], categories=["b", "a", "z"]))
    with pytest.raises(ValueError, match="ids of dtype category cannot be saved exactly"):
        model.save(tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    model.users_ = pd.Index(pd.array([1, 2], dtype="Int64"))  # nullable ints round-trip
    loaded = autorec.load(model.save(tmp_path / "m.pt"))
    pd.testing.assert_index_equal(loaded.users_, model.users_, exact=True)
