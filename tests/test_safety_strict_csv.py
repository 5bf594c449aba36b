"""Inputs are read strictly; every error names the file, line, column and value.

Silently accepted before: a duplicated header name, timestamps beyond int64 (wrapped to
-2^63) or fractional (truncated), NUL bytes inside ids, ratings outside the scale (which
could not be declared). Reported without a place before: a non-UTF-8 byte ("position 3"),
an overflowing rating (1e39 -> float32 inf, "position 200"), an encrypted or
unsupported-compression zip member (a raw RuntimeError / NotImplementedError), a
threshold that removes every rating ("the training matrix has no ratings").
"""
from __future__ import annotations

import struct
import zipfile

import numpy as np
import pandas as pd
import pytest

import autorec
from autorec.exceptions import DataError

from .test_movielens import make_fixtures


def _csv(tmp_path, text, name="r.csv") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _refused(path, pattern, **kw):
    with pytest.raises(DataError, match=pattern) as err:
        autorec.RatingMatrix.from_csv(path, **kw)
    assert str(err.value).startswith(f"{path}: "), str(err.value)
    return str(err.value)


def test_a_duplicated_header_name(tmp_path):
    path = _csv(tmp_path, "user,item,rating,rating\nu,i,1,5\n")
    _refused(path, r"line 1: the header names column 'rating' twice \(fields 3 and 4\)")
    df = pd.DataFrame([["u", "i", 1, 5]], columns=["user", "item", "rating", "rating"])
    with pytest.raises(DataError, match="the column name 'rating' appears more than once"):
        autorec.RatingMatrix.from_frame(df)


@pytest.mark.parametrize("value, why", [
    ("9223372036854775808", "beyond the int64 range"),
    ("-9223372036854775809", "beyond the int64 range"),
    ("99999999999999999999999", "beyond the int64 range"),
    ("978300760.5", "timestamps must be whole numbers"),
    ("1e400", "beyond the int64 range"),
    ("nan", "not a finite number"),
    ("soon", "not a number"),
    ("", "not a number, or missing"),
])
def test_timestamps_are_whole_int64(tmp_path, value, why):
    path = _csv(tmp_path, f"user,item,rating,ts\nu,i,5,978300760\nu,j,4,{value}\n")
    _refused(path, rf"column 'ts' has the timestamp '{value}' at row 2 \(line 3 of the file\): {why}",
             timestamp="ts")


def test_timestamps_that_fit_are_kept_exactly(tmp_path):
    top = 2**63 - 1
    path = _csv(tmp_path, f"user,item,rating,ts\nu,i,5,{top}\nu,j,4,{-(2**63)}\nv,i,3,1\n")
    R = autorec.RatingMatrix.from_csv(path, timestamp="ts")
    assert sorted(R.timestamps.tolist()) == [-(2**63), 1, top]
    path = _csv(tmp_path, f"user,item,rating,ts\nu,i,5,{top}\nv,i,3,1.0\n")  # a column of floats
    _refused(path, rf"timestamp '{top}' at row 1 \(line 2 of the file\): an integer too large to "
                   "hold exactly in a column of floats", timestamp="ts")
    df = pd.DataFrame({"user": ["u", "v"], "item": ["i", "i"], "rating": 1.0,
                       "ts": np.array([2**63, 5], dtype=np.uint64)})
    with pytest.raises(DataError, match=r"timestamp 9223372036854775808 at row 1: beyond"):
        autorec.RatingMatrix.from_frame(df, timestamp="ts")
    df["ts"] = [1.5, 2.0]
    with pytest.raises(DataError, match="timestamp 1.5 at row 1: timestamps must be whole"):
        autorec.RatingMatrix.from_frame(df, timestamp="ts")


def test_nul_bytes_inside_ids(tmp_path):
    path = _csv(tmp_path, b"user,item,rating\nu1,i1,5\nu\x002,i1,4\n")
    _refused(path, r"the user id 'u\\x002' at row 2 \(line 3 of the file\) \(column 'user'\) holds a NUL")
    df = pd.DataFrame({"user": ["a"], "item": ["b\x00"], "rating": [1.0]})
    with pytest.raises(DataError, match="the item id 'b.x00' at row 1 .column 'item'. holds a NUL"):
        autorec.RatingMatrix.from_frame(df)


def test_rating_scale(tmp_path):
    path = _csv(tmp_path, "user,item,rating\nu,i,5\nu,j,0\nv,i,6\n")
    _refused(path, r"column 'rating' has the rating '0' at row 2 \(line 3 of the file\), outside "
                   r"rating_scale=\(1, 5\) \(2 such rows\)", rating_scale=(1, 5))
    assert autorec.RatingMatrix.from_csv(path, rating_scale=(0, 6)).nnz == 3
    df = pd.DataFrame({"user": ["u"], "item": ["i"], "rating": [4.5]})
    with pytest.raises(DataError, match=r"rating 4.5 at row 1, outside rating_scale=\(1, 4\)"):
        autorec.RatingMatrix.from_frame(df, rating_scale=(1, 4))
    for bad in ((5, 1), (1, float("inf")), (1,), "15", 5):
        with pytest.raises((TypeError, ValueError), match="rating_scale must be"):
            autorec.RatingMatrix.from_frame(df, rating_scale=bad)


def test_a_non_utf8_byte_names_line_and_column(tmp_path):
    path = _csv(tmp_path, b"user,item,rating\nu1,i1,5\nu2,caf\xe9,4\n")
    message = _refused(path, r"line 3, column 7 \(field 2\): byte 0xe9 is not valid utf-8")
    assert "encoding='latin-1'" in message
    assert "café" in autorec.RatingMatrix.from_csv(path, encoding="latin-1").items


def test_an_overflowing_rating_names_its_line(tmp_path):
    rows = "".join(f"u{n},i{n},4\n" for n in range(200))
    path = _csv(tmp_path, f"user,item,rating\n{rows}u,x,1e39\n")
    _refused(path, r"column 'rating' has the value '1e39' at row 201 \(line 202 of the file\), beyond "
                   r"float32 \(largest 3.4e\+38")
    path = _csv(tmp_path, "user,item,rating\nu,x,inf\n")
    _refused(path, r"column 'rating' has a non-numeric, missing or infinite value 'inf' at row 1")


def test_lines_are_counted_across_blank_lines(tmp_path):
    path = _csv(tmp_path, "user,item,rating\n\nu,i,5\n   \n\nu,j,x\n")
    _refused(path, r"value 'x' at row 2 \(line 6 of the file\)")


def test_empty_ids_and_fields(tmp_path):
    _refused(_csv(tmp_path, "user,item,rating\nu,i,5\n,j,4\n"), r"missing user id at row 2 \(line 3")
    _refused(_csv(tmp_path, "user,item,rating\nu,i,5\nv,j,\n"), r"non-numeric, missing .* '' at row 2")


# ------------------------------------------------------------------ zip members
def _patch_member(path, member: str, *, flags: int = 0, method: int | None = None) -> None:
    """Set general-purpose ``flags`` bits and/or the compression ``method`` of ``member`` in
    both its local header and its central-directory entry (zipfile cannot write these)."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    for sig, flag_at, method_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 8, 26, 30),
                                                          (b"PK\x01\x02", 8, 10, 28, 46)):
        at = raw.find(sig)
        while at >= 0:
            (n,) = struct.unpack_from("<H", raw, at + name_len_at)
            if raw[at + name_at: at + name_at + n] == name:
                (f,) = struct.unpack_from("<H", raw, at + flag_at)
                struct.pack_into("<H", raw, at + flag_at, f | flags)
                if method is not None:
                    struct.pack_into("<H", raw, at + method_at, method)
            at = raw.find(sig, at + 4)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["ml-1m", "ml-20m"])  # read whole / streamed from the zip
@pytest.mark.parametrize("defect, says", [
    ({"flags": 0x1}, "is encrypted .password-protected."),
    ({"method": 98}, "uses zip compression method 98, which Python's zipfile cannot read"),
])
def test_unreadable_zip_members_name_the_archive(tmp_path, monkeypatch, name, defect, says):
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path / "cache"))
    path = tmp_path / f"{name}.zip"
    make_fixtures.write_archive(path, name, n_ratings=100, n_users=10, n_items=20)
    folder, ratings_file = make_fixtures.LAYOUTS[name][:2]
    _patch_member(path, f"{folder}/{ratings_file}", **defect)
    with zipfile.ZipFile(path) as zf:  # the defect is real: zipfile itself refuses it
        with pytest.raises((RuntimeError, NotImplementedError)):
            zf.read(f"{folder}/{ratings_file}")
    with pytest.raises(DataError, match=rf"{folder}/{ratings_file} in {path} {says}"):
        autorec.load_movielens(name, tmp_path, download=False, verify=False, cache=False)


# ------------------------------------------------------------------ thresholds
def test_a_threshold_that_removes_every_rating_says_so(tmp_path):
    rng = np.random.default_rng(0)
    rows = "".join(f"u{rng.integers(20)},i{n},{rng.integers(1, 6)}\n" for n in range(200))
    path = _csv(tmp_path, "user,item,rating\n" + rows)
    R = autorec.RatingMatrix.from_csv(path)
    for protocol in (autorec.protocols.per_user_holdout, autorec.protocols.strong_generalization):
        kwargs = {"n_heldout": 2} if protocol is autorec.protocols.strong_generalization else {}
        with pytest.raises(DataError, match=r"threshold=5 removes all 200 ratings: positives are "
                                            r"ratings strictly above it, and these range from 1 to 5"):
            protocol(R, threshold=5, **kwargs)
