"""Fuzzing (Hypothesis): random small CSV files and damaged model files.

Every example ends in a clean load or in one of the library's own exceptions (DataError,
ModelFileError) whose message names the file; never a crash or a raw error, and never a
silent change: a CSV that loads gives exactly the ids and ratings a reference reading
(Python's ``csv`` module) gives, and a damaged model file that loads scores as before.

The example count is modest and the examples are fixed (``derandomize``) so the suite is
fast and repeatable; ``AUTOREC_FUZZ_EXAMPLES=2000`` runs a longer, random search.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import autorec  # noqa: E402
from autorec.exceptions import DataError, ModelFileError, NotFittedForUser  # noqa: E402
from autorec.models._format import sign  # noqa: E402

from ._files import cached_model, tiny_data  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*repeated .user, item. ratings")
_LONG = int(os.environ.get("AUTOREC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 40, deadline=None, derandomize=not _LONG, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ----------------------------------------------------------------------- CSV files
ID_TEXT = st.one_of(
    st.sampled_from(["007", "0007", "7", " 7", "NA", "None", "null", "nan", "", "True", "1.0",
                     "1e5", "é", "a,b", 'say "hi"', "x\x00y", "line\nbreak", "-0"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=5),
)
RATING_TEXT = st.one_of(
    st.sampled_from(["1", "4.5", "-2", "0", "1e3", "1e39", "-1e39", "3.4e38", "nan", "inf", "",
                     "abc", "5 ", "1,5"]),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
TS_TEXT = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.sampled_from(["9223372036854775808", "-9223372036854775809", "1.5", "2.0", "", "soon", "1e3"]),
)


def _float32(text: str):
    """The rating a correct reader gives for ``text``, or None when it must refuse it."""
    try:
        value = float(text)
    except ValueError:
        return None
    if "_" in text or not np.isfinite(value):
        return None
    with np.errstate(over="ignore"):
        f32 = np.float32(value)
    return f32 if np.isfinite(f32) else None


def _int64(text: str):
    """The timestamp of ``text`` when it is plainly an int64, else None."""
    t = text.strip()
    digits = t[1:] if t[:1] in "+-" else t
    if not (digits.isdigit() and digits.isascii()):
        return None
    value = int(t)
    return value if -(2**63) <= value < 2**63 else None


def _reference(rows, with_ts):
    """What the file must load as, by Python's csv module: ``{(user, item): rating}`` with
    duplicates resolved "last" (latest timestamp, then last line); None if some value must
    be refused; "either" where a strict reader may refuse it or read it exactly."""
    verdict = "load"
    for user, item, rating, *ts in rows:
        if user == "" or item == "" or "\x00" in user + item or _float32(rating) is None:
            return None
        if "\n" in user + item or "\r" in user + item:
            verdict = "either"  # a line break inside a quoted id: lines are counted differently
    if with_ts and any(_int64(r[3]) is None for r in rows):
        if not all(_timestamp_may_load(r[3]) for r in rows):
            return None
        verdict = "either"
    best: dict = {}
    for line, (user, item, rating, *ts) in enumerate(rows):
        key = (int(float(ts[0])) if _int64(ts[0]) is None else _int64(ts[0]), line) if with_ts else (0, line)
        if (user, item) not in best or key >= best[(user, item)][0]:
            best[(user, item)] = (key, _float32(rating))
    return verdict, {pair: value for pair, (_, value) in best.items()}


def _timestamp_may_load(text: str) -> bool:
    """Integral text a reader could hold exactly ("2.0", "1e3"): it may load or be refused."""
    try:
        value = float(text)
    except ValueError:
        return False
    return np.isfinite(value) and value == int(value) and abs(value) < 2**53


@st.composite
def csv_files(draw):
    with_ts = draw(st.booleans())
    n = draw(st.integers(1, 8))
    rows = [[draw(ID_TEXT), draw(ID_TEXT), draw(RATING_TEXT)] + ([draw(TS_TEXT)] if with_ts else [])
            for _ in range(n)]
    bad_byte = draw(st.one_of(st.none(), st.tuples(st.integers(0, n - 1), st.integers(0x80, 0xFF))))
    return rows, with_ts, bad_byte


def _write_csv(path: Path, rows, with_ts, bad_byte) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user", "item", "rating"] + (["ts"] if with_ts else []))
    writer.writerows(rows)
    raw = out.getvalue().encode("utf-8")
    if bad_byte is not None:  # a line starting with a byte >= 0x80: never valid UTF-8
        lines = raw.split(b"\n")
        row, byte = bad_byte
        lines[row + 1] = bytes([byte]) + lines[row + 1]
        raw = b"\n".join(lines)
    path.write_bytes(raw)


@FUZZ
@given(csv_files())
def test_random_csv_files_load_exactly_or_fail_cleanly(example):
    rows, with_ts, bad_byte = example
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.csv"
        _write_csv(path, rows, with_ts, bad_byte)
        try:
            R = autorec.RatingMatrix.from_csv(path, timestamp="ts" if with_ts else None)
        except DataError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)
            expected = _reference(rows, with_ts)
            if bad_byte is None and expected is not None and expected[0] == "load":
                raise AssertionError(f"a valid file was refused: {exc}") from exc
            return  # with a bad byte: the decoder or the tokenizer (a quote moved) refuses it
        except Exception as exc:  # anything but the library's own exception is a bug
            raise AssertionError(f"{type(exc).__name__} escaped from_csv: {exc}") from exc
    assert bad_byte is None, "a file with a byte that is not UTF-8 loaded"
    expected = _reference(rows, with_ts)
    assert expected is not None, f"a file with a value that must be refused loaded: {rows}"
    got = R.to_frame()
    loaded = {(u, i): r for u, i, r in zip(got["user"], got["item"], got["rating"])}
    assert set(loaded) == set(expected[1])  # ids exactly as written: nothing merged or changed
    for pair, value in expected[1].items():  # pandas' float parser may differ in the last bit
        assert loaded[pair] == pytest.approx(float(value), rel=1e-6, abs=0), pair
    assert R.users.dtype == "str" and R.items.dtype == "str"


# --------------------------------------------------------------------- model files
MODELS = ("pop", "ease", "i-autorec", "als", "mult-vae")


def _saved(name: str, folder: Path) -> tuple[Path, dict]:
    model = cached_model(name)
    path = model.save(folder / f"{name}.pt")
    return path, torch.load(path, weights_only=True)


def _scores(model):
    X = tiny_data().X if model.predicts_ratings else tiny_data().binarize(4).X
    return model.recommend(np.arange(model.n_users_), X, k=5)


@st.composite
def byte_damage(draw):
    kind = draw(st.sampled_from(["flip", "truncate", "overwrite"]))
    at = draw(st.floats(0, 1, exclude_max=True))
    return kind, at, draw(st.integers(0, 7)), draw(st.binary(min_size=1, max_size=64))


@FUZZ
@given(st.sampled_from(MODELS), byte_damage())
def test_damaged_model_files_are_refused_or_score_as_before(name, damage):
    kind, at, bit, junk = damage
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = _saved(name, Path(tmp))
        raw = bytearray(path.read_bytes())
        pos = int(at * len(raw))
        if kind == "flip":
            raw[pos] ^= 1 << bit
        elif kind == "truncate":
            raw = raw[:pos]
        else:
            raw[pos:pos + len(junk)] = junk
        path.write_bytes(bytes(raw))
        try:
            loaded = autorec.load(path)
        except ModelFileError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)
            return
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__} escaped autorec.load: {exc}") from exc
    for got, want in zip(_scores(loaded), _scores(cached_model(name))):  # nothing changed
        np.testing.assert_array_equal(got, want)


def _tensors(tree, prefix=()):
    if isinstance(tree, torch.Tensor):
        yield prefix
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, prefix + (key,))


def _replace(tree: dict, where: tuple, value):
    out = dict(tree)
    if len(where) == 1:
        if value is ...:
            out.pop(where[0])
        else:
            out[where[0]] = value
    else:
        out[where[0]] = _replace(tree[where[0]], where[1:], value)
    return out


@st.composite
def tensor_damage(draw, t: torch.Tensor):
    how = draw(st.sampled_from(["shift", "shorter", "longer", "transpose", "cast", "nan", "random",
                                "scalar", "drop", "list"]))
    if how == "shift":
        return t + draw(st.sampled_from([1, -1, 10**6])) if t.dtype != torch.bool else ~t
    if how == "shorter":
        return t.reshape(-1)[: max(t.numel() - 1, 0)]
    if how == "longer":
        return torch.cat([t.reshape(-1), t.reshape(-1)[:1]])
    if how == "transpose":
        return t.T.contiguous() if t.dim() == 2 else t.reshape(1, -1)
    if how == "cast":
        return t.to(draw(st.sampled_from([torch.float64, torch.int32, torch.float16, torch.bool])))
    if how == "nan":
        return t.float() * float("nan")
    if how == "random":  # plausible values of the right shape and dtype: a clean load is fine
        return torch.rand(t.shape).to(t.dtype)
    if how == "scalar":
        return torch.tensor(3.0)
    if how == "drop":
        return ...
    return t.tolist()


@FUZZ
@given(st.sampled_from(MODELS), st.data())
def test_re_signed_inconsistent_model_files_are_refused_or_usable(name, data):
    """Entries replaced and the digest recomputed: only the consistency checks remain."""
    with tempfile.TemporaryDirectory() as tmp:
        path, payload = _saved(name, Path(tmp))
        payload = {k: v for k, v in payload.items() if k != "digest"}
        where = data.draw(st.sampled_from(sorted(_tensors(payload), key=str)))
        node = payload
        for key in where:
            node = node[key]
        payload = _replace(payload, where, data.draw(tensor_damage(node)))
        torch.save(sign(payload), path)
        try:
            loaded = autorec.load(path)
        except ModelFileError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)
            return
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__} escaped autorec.load: {exc}") from exc
        try:
            _scores(loaded)  # a file that loads can be used
        except NotFittedForUser:  # known_users may now say no user is known: that is honest
            pass
