"""Reading ratings from a DataFrame or a CSV file: columns, validation, the duplicate policy.

The readers return plain arrays (:class:`Triplets`); :class:`autorec.data.RatingMatrix`
builds itself from them (``from_frame`` / ``from_csv``), so this module does not depend on
it. Every error names the source, the row (and file line) and the value at fault.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import DataError

__all__ = ["AlignReport", "Columns", "ID_DTYPES", "Triplets", "read_frame", "read_csv",
           "resolve_duplicates"]


@dataclass(frozen=True)
class Columns:
    """Which columns of a table hold what; ``rating``/``timestamp`` None when absent."""

    user: str = "user"
    item: str = "item"
    rating: str | None = "rating"
    timestamp: str | None = None

    @property
    def present(self) -> list[str]:
        return [c for c in (self.user, self.item, self.rating, self.timestamp) if c is not None]


@dataclass(frozen=True)
class AlignReport:
    """What was dropped when ratings were aligned to a fixed vocabulary of ids."""

    unknown_users: pd.Index
    unknown_items: pd.Index
    dropped_ratings: int

    def __bool__(self) -> bool:  # True when something was dropped
        return self.dropped_ratings > 0


@dataclass(frozen=True)
class Triplets:
    """Ratings as COO arrays plus the raw ids the positions refer to.

    ``user_idx``/``item_idx`` (int64, shape (n,)) are positions in ``users``/``items``;
    ``ratings`` float32 (n,); ``timestamps`` int64 (n,) or None; ``report`` is set when the
    ids were aligned to a fixed vocabulary.
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None
    users: pd.Index
    items: pd.Index
    report: AlignReport | None = None


#: how CSV ids are read: exactly as text (the default), or as integers
ID_DTYPES = ("str", "int64", "uint64")


def read_frame(df: pd.DataFrame, columns: Columns, *, users=None, items=None,
               source: str = "DataFrame", first_line=None, rating_scale=None,
               empty_is_missing: bool = False) -> Triplets:
    """Ratings of a long-format table as :class:`Triplets`.

    Parameters
    ----------
    df : pandas.DataFrame
    columns : Columns
    users, items : array-like, optional
        A fixed vocabulary: rows with other ids are dropped and counted in ``report``
        (with a warning); without it, ids are factorized (sorted) from the table. Text
        ids meeting an integer vocabulary are read as integers, exactly (``"007"`` and
        ``"7"`` both naming id 7 is an error, not a merge).
    source : str
        Name of the table in error messages (a file path for CSV files).
    first_line : int or callable, optional
        File line of the first data row (or a function of the 0-based row giving its
        line), so errors can name file lines.
    rating_scale : (float, float), optional
        The declared ``(lowest, highest)`` rating; a rating outside it is an error.
    empty_is_missing : bool
        An empty text id is a missing id (in a CSV file an empty field cannot be told
        from an absent one).

    Ids keep the dtype they have in ``df`` (str, int64, uint64, float, bool, object);
    missing ids (None/NaN), NUL characters in ids and object columns in which two ids of
    different types are equal (``1``, ``1.0`` and ``True``) are errors naming the row.
    """
    user, item, rating, timestamp = columns.user, columns.item, columns.rating, columns.timestamp
    missing = [c for c in columns.present if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; available columns are {list(df.columns)}"
        )
    repeated = [c for c in columns.present if int((df.columns == c).sum()) > 1]
    if repeated:
        raise DataError(f"{source}: the column name {repeated[0]!r} appears more than once in "
                        f"{list(df.columns)}; rename the columns so each is unique")
    if len(df) == 0:
        raise DataError(f"{source}: no ratings (the table is empty)")
    scale = _check_scale(rating_scale)
    if rating is not None:
        vals = _numeric_column(df, rating, source, np.float32, first_line)
        if scale is not None:
            _check_in_scale(df[rating], vals, rating, scale, source, first_line)
    else:
        vals = np.ones(len(df), np.float32)
    ts = _timestamp_column(df, timestamp, source, first_line) if timestamp else None
    factorized = {}  # column -> (codes, uniques) of the ids not matched to a vocabulary
    for c, vocab in ((user, users), (item, items)):
        if df[c].isna().any():
            pos = int(np.flatnonzero(df[c].isna().to_numpy())[0])
            raise DataError(
                f"{source}: missing {c} id at {_where(pos, first_line)} (column '{c}')"
            )
        if vocab is None:  # checks run on the distinct ids, found once
            factorized[c] = pd.factorize(df[c], sort=True)
        _check_ids(df[c], c, source, first_line, *factorized.get(c, ()), empty_is_missing=empty_is_missing)
    report = None
    keep = slice(None)
    if users is not None or items is not None:
        users_ix = pd.Index(users) if users is not None else None
        items_ix = pd.Index(items) if items is not None else None
        u_pos = _vocabulary_positions(df[user], users_ix, user, source, first_line)  # (n_rows,)
        i_pos = _vocabulary_positions(df[item], items_ix, item, source, first_line)  # (n_rows,)
        keep = np.ones(len(df), bool)  # (n_rows,)
        if u_pos is not None:
            keep &= u_pos >= 0
        if i_pos is not None:
            keep &= i_pos >= 0
        report = AlignReport(
            unknown_users=pd.Index(df[user][u_pos < 0].unique()) if u_pos is not None else pd.Index([]),
            unknown_items=pd.Index(df[item][i_pos < 0].unique()) if i_pos is not None else pd.Index([]),
            dropped_ratings=int((~keep).sum()),
        )
        if report:
            warnings.warn(
                f"{source}: {report.dropped_ratings:,} ratings dropped: "
                f"{len(report.unknown_users):,} unknown users, "
                f"{len(report.unknown_items):,} unknown items",
                stacklevel=3,
            )
        vals = vals[keep]
        ts = ts[keep] if ts is not None else None
    # ids not in a fixed vocabulary are factorized from the kept rows only, so ids seen
    # only in dropped rows do not become empty rows/columns
    if users is not None:
        user_codes, users_index = u_pos[keep], users_ix
    else:
        user_codes, users_index = _kept(*factorized[user], keep)
    if items is not None:
        item_codes, items_index = i_pos[keep], items_ix
    else:
        item_codes, items_index = _kept(*factorized[item], keep)
    return Triplets(np.asarray(user_codes, np.int64), np.asarray(item_codes, np.int64), vals, ts,
                    pd.Index(users_index), pd.Index(items_index), report)


def _kept(codes: np.ndarray, uniques, keep) -> tuple[np.ndarray, pd.Index]:
    """Codes and sorted ids of the kept rows only (codes are positions in sorted ids, so
    re-factorizing the kept codes keeps the order)."""
    if isinstance(keep, slice):
        return codes, uniques
    sub, present = pd.factorize(codes[keep], sort=True)
    return sub, pd.Index(uniques)[present]


def read_csv(path, columns: Columns, *, sep: str = ",", header: bool = True,
             names: list[str] | None = None, encoding: str = "utf-8", id_dtype="str",
             rating_scale=None) -> Triplets:
    """Ratings of a CSV/TSV file as :class:`Triplets` (see ``RatingMatrix.from_csv``).

    Ids are read as text, exactly (``007`` and ``7`` are two ids; ``NA``, ``None`` and
    ``null`` are ids, not missing values) unless ``id_dtype`` says integers; an empty id
    field is missing. Errors name the file, line, column and value.
    """
    path = Path(path)
    id_types = _id_dtypes(id_dtype, columns)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if not header and names is None:
        names = columns.present
    engine = "c" if len(sep) == 1 or sep == r"\s+" else "python"
    try:
        if header and names is None:
            _check_header(path, sep, encoding, engine)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: never turn a surplus leading column into the index
            # (that silently shifts every column by one); na_filter=False: "NA", "None",
            # "null" are ids, and an empty rating is reported, not read as NaN
            df = pd.read_csv(
                path, sep=sep, header=0 if header else None, names=names,
                encoding=encoding, engine=engine, index_col=False,
                dtype={columns.user: str, columns.item: str}, na_filter=False,
            )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file has no data") from exc
    except UnicodeDecodeError as exc:
        raise DataError(_decode_error(path, encoding, sep, exc)) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: could not parse ({exc}); check sep={sep!r} and encoding") from exc
    surplus = any(issubclass(w.category, pd.errors.ParserWarning) for w in caught)
    if surplus and names is None:  # with names, surplus trailing columns are ignored
        raise DataError(
            f"{path}: some lines have more fields than the header {list(df.columns)}; "
            f"check sep={sep!r}"
        )
    one_column = df.shape[1] == 1 or (
        df.shape[1] > 1 and len(df) > 0
        and all(_all_empty(df[c]) for c in df.columns[1:])
    )
    if one_column and len(columns.present) > 1:
        guess = _guess_sep(path, encoding, sep)
        hint = f"; the first line looks {guess!r}-separated" if guess else ""
        raise DataError(
            f"{path}: every line parsed as one column; the separator is probably "
            f"not {sep!r}{hint}"
        )
    lines = _FileLines(path, 2 if header else 1, sep, encoding, list(df.columns))
    for c in (columns.user, columns.item):
        if c in df.columns and id_types[c] != "str":
            df[c] = _ids_as(df[c], id_types[c], c, str(path), lines)
    return read_frame(df, columns, source=str(path), first_line=lines, rating_scale=rating_scale,
                      empty_is_missing=True)


def _guess_sep(path: Path, encoding: str, sep: str) -> str | None:
    """The likeliest separator of the file's first line, other than ``sep``."""
    try:
        with open(path, encoding=encoding, errors="replace") as f:
            line = f.readline()
    except OSError:
        return None
    for cand in ("::", "\t", ",", ";", "|"):
        if cand != sep and cand in line:
            return cand
    return None


def _all_empty(column: pd.Series) -> bool:
    """No field of the column has a value (missing, or empty text with na_filter=False)."""
    first = column.iloc[0]
    if not (pd.isna(first) or (isinstance(first, str) and first == "")):
        return False  # the common case, decided by the first row
    if column.isna().all():
        return True
    return pd.api.types.is_string_dtype(column.dtype) and bool((column.astype(object) == "").all())


class _FileLines:
    """The file line of each data row, and the text of a field as the file has it; both
    worked out only when an error needs them (pandas skips blank lines, so row ``i`` is
    line ``i + first_line`` only in files without them)."""

    def __init__(self, path: Path, first_line: int, sep: str, encoding: str, columns: list):
        self.path, self.first_line, self.sep, self.encoding = path, first_line, sep, encoding
        self.columns = list(columns)  # the file's fields, in order
        self._lines = None

    def __call__(self, pos: int) -> int:
        if self._lines is None:
            with open(self.path, "rb") as fh:
                blank = [not raw.strip() for raw in fh]
            data = [n + 1 for n, b in enumerate(blank) if not b and n + 1 >= self.first_line]
            self._lines = data
        return self._lines[pos] if pos < len(self._lines) else pos + self.first_line

    def text(self, pos: int, field: int) -> str | None:
        """The text of 0-based ``field`` on data row ``pos``, or None if it cannot be told."""
        import csv
        import re

        target = self(pos)
        try:
            with open(self.path, encoding=self.encoding, newline="") as fh:
                for number, line in enumerate(fh, 1):
                    if number == target:
                        break
                else:
                    return None
        except (OSError, UnicodeDecodeError):
            return None
        line = line.rstrip("\r\n")
        if len(self.sep) == 1:
            fields = next(csv.reader([line], delimiter=self.sep), [])
        else:  # pandas reads longer separators (and \s+) as regular expressions
            fields = re.split(self.sep, line.strip() if self.sep == r"\s+" else line)
        return fields[field] if field < len(fields) else None


def _raw(s: pd.Series, pos: int, first_line):
    """The value at ``pos`` as the user wrote it: the field's text when it is read from a
    file (the parsed number may have been rounded, e.g. 1e400 -> inf), else the value."""
    if isinstance(first_line, _FileLines) and s.name in first_line.columns:
        text = first_line.text(pos, first_line.columns.index(s.name))
        if text is not None:
            return text
    value = s.iloc[pos]
    return value.item() if isinstance(value, np.generic) else value


def _shown(s: pd.Series, pos: int, first_line) -> str:
    return repr(_raw(s, pos, first_line))


def _where(pos: int, first_line) -> str:
    """Name a 0-based data row: ``row N`` (1-based) or, for files, also its line."""
    if first_line is None:
        return f"row {pos + 1}"
    line = first_line(pos) if callable(first_line) else pos + first_line
    return f"row {pos + 1} (line {line} of the file)"


def _check_header(path: Path, sep: str, encoding: str, engine: str) -> None:
    """A header naming one column twice is an error (pandas would rename the second)."""
    head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, na_filter=False,
                       encoding=encoding, engine=engine, index_col=False)
    names = [str(v) for v in head.iloc[0]] if len(head) else []
    seen: dict[str, int] = {}
    for n, name in enumerate(names, 1):
        if name in seen:
            raise DataError(f"{path}: line 1: the header names column {name!r} twice (fields "
                            f"{seen[name]} and {n}); rename one so each column is unique")
        seen[name] = n


def _decode_error(path: Path, encoding: str, sep: str, exc: UnicodeDecodeError) -> str:
    """Where the first byte that is not valid ``encoding`` is: line, column and field."""
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as bad:
                col = bad.start + 1
                field = raw[:bad.start].count(sep.encode()) + 1 if len(sep) == 1 else None
                where = f"line {line_no}, column {col}" + (f" (field {field})" if field else "")
                return (f"{path}: {where}: byte 0x{raw[bad.start]:02x} is not valid {encoding} "
                        f"({bad.reason}); pass the file's encoding (e.g. encoding='latin-1')")
    return f"{path}: not valid {encoding} text ({exc.reason}); pass the file's encoding"


def _numeric_column(df: pd.DataFrame, col: str, source: str, dtype, first_line=None) -> np.ndarray:
    """The column as numbers; a clear error naming row and value when it is not."""
    s = df[col]
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna().to_numpy() | ~np.isfinite(num.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: column '{col}' has a non-numeric, missing or infinite value "
            f"{_shown(s, pos, first_line)} at {_where(pos, first_line)} ({int(bad.sum()):,} such rows)"
        )
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore"):  # reported below, with the row
            out = num.to_numpy(dtype=np.float64).astype(dtype)
    else:
        out = num.to_numpy(dtype=dtype)
    if np.dtype(dtype).kind == "f" and not np.isfinite(out).all():  # finite, but not as float32
        over = ~np.isfinite(out)
        pos = int(np.flatnonzero(over)[0])
        raise DataError(
            f"{source}: column '{col}' has the value {_shown(s, pos, first_line)} at {_where(pos, first_line)}, "
            f"beyond {np.dtype(dtype).name} (largest {np.finfo(dtype).max:.3g}; "
            f"{int(over.sum()):,} such rows)"
        )
    return out


_INT64 = (-(2**63), 2**63 - 1)


def _integer_timestamps(df: pd.DataFrame, col: str, source: str, first_line=None) -> np.ndarray:
    """Integer timestamps (int64), exactly: fractional values, values beyond int64 and
    non-numbers are errors naming the row (they were truncated or wrapped)."""
    s = df[col]
    num = s if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf" else pd.to_numeric(s, errors="coerce")
    kind = num.dtype.kind if isinstance(num.dtype, np.dtype) else "O"
    if kind == "i":
        return num.to_numpy(np.int64)
    if kind == "u":
        bad = (num > _INT64[1]).to_numpy()
    elif kind == "f":
        v = num.to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(v) | (v != np.floor(v)) | (np.abs(v) > 2**53)
    else:
        bad = np.ones(len(s), bool)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raw = _raw(s, pos, first_line)
        raise DataError(f"{source}: column '{col}' has the timestamp {raw!r} at "
                        f"{_where(pos, first_line)}: {_why_not_int64(raw)} "
                        f"({int(bad.sum()):,} such rows)")
    return num.to_numpy(np.int64)


def _why_not_int64(value) -> str:
    """Why a timestamp is refused: not a number, fractional, or beyond int64."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        return "not a number, or missing"
    if not d.is_finite():
        return "not a finite number"
    if d != d.to_integral_value():
        return "timestamps must be whole numbers (fractional values would be truncated)"
    if not _INT64[0] <= d <= _INT64[1]:
        return "beyond the int64 range (it would wrap around)"
    return "an integer too large to hold exactly in a column of floats; write all values as integers"


def _check_scale(rating_scale):
    """``rating_scale`` as a (low, high) pair of floats, or None."""
    if rating_scale is None:
        return None
    try:
        if isinstance(rating_scale, (str, bytes)):
            raise TypeError
        lo, hi = (float(v) for v in rating_scale)
    except (TypeError, ValueError):
        raise TypeError(f"rating_scale must be (lowest, highest), got {rating_scale!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"rating_scale must be two finite numbers, lowest first, got {rating_scale!r}")
    return lo, hi


def _check_in_scale(raw: pd.Series, vals: np.ndarray, col: str, scale, source: str, first_line) -> None:
    lo, hi = scale
    out = (vals < np.float32(lo)) | (vals > np.float32(hi))
    if out.any():
        pos = int(np.flatnonzero(out)[0])
        raise DataError(f"{source}: column '{col}' has the rating {_shown(raw, pos, first_line)} at "
                        f"{_where(pos, first_line)}, outside rating_scale=({lo:g}, {hi:g}) "
                        f"({int(out.sum()):,} such rows)")


def _check_ids(s: pd.Series, col: str, source: str, first_line, codes=None, uniques=None,
               empty_is_missing: bool = False) -> None:
    """No NUL characters in text ids (nor empty ones where they mean missing); no two ids
    of different types that are equal. Checked on ``uniques`` (with the rows' ``codes``)
    when given: one pass over the distinct ids, not the rows."""
    if not pd.api.types.is_string_dtype(s.dtype) and s.dtype != object:
        return
    ids = pd.Series(uniques) if uniques is not None else s

    def first_row(bad: np.ndarray) -> int:
        at = int(np.flatnonzero(bad)[0])
        return at if uniques is None else int(np.flatnonzero(codes == at)[0])

    if empty_is_missing:
        empty = (ids.astype(object) == "").to_numpy(dtype=bool)
        if empty.any():
            raise DataError(f"{source}: missing {col} id at {_where(first_row(empty), first_line)} "
                            f"(column '{col}')")
    if ids.dtype == object:
        nul = ids.map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(dtype=bool)
    else:
        nul = ids.str.contains("\x00", regex=False).to_numpy(dtype=bool)
    if nul.any():
        pos = first_row(nul)
        raise DataError(f"{source}: the {col} id {s.iloc[pos]!r} at {_where(pos, first_line)} "
                        f"(column '{col}') holds a NUL character")
    if s.dtype == object:
        types = s.map(lambda v: type(v).__name__)
        if types.nunique() > 1:
            tagged = pd.Series(list(zip(types, s)), index=s.index)
            codes, uniques = pd.factorize(s)
            if len(pd.unique(tagged)) != len(uniques):  # e.g. 1 and True hash as one id
                pairs = pd.DataFrame({"code": codes, "type": types.to_numpy()})
                first = pairs.groupby("code")["type"].nunique()
                code = int(first[first > 1].index[0])
                rows = np.flatnonzero(codes == code)
                a = int(rows[0])
                b = int(next(r for r in rows if types.iloc[r] != types.iloc[a]))
                raise DataError(f"{source}: the {col} ids {s.iloc[a]!r} ({types.iloc[a]}, "
                                f"{_where(a, first_line)}) and {s.iloc[b]!r} ({types.iloc[b]}, "
                                f"{_where(b, first_line)}) are equal in Python and would be "
                                "merged into one id; give the column one type (e.g. str)")


def _id_dtypes(id_dtype, columns: Columns) -> dict:
    """``id_dtype`` (one for both id columns, or a dict by column) as canonical names."""
    per = id_dtype if isinstance(id_dtype, dict) else {columns.user: id_dtype, columns.item: id_dtype}
    out = {}
    for c in (columns.user, columns.item):
        value = per.get(c, "str")
        name = {str: "str", int: "int64"}.get(value, None) if isinstance(value, type) else None
        if name is None:
            try:
                name = "str" if value in ("str", "string") else np.dtype(value).name
            except TypeError:
                name = repr(value)
        if name not in ID_DTYPES:
            raise ValueError(f"id_dtype for column {c!r} must be one of {', '.join(ID_DTYPES)}, "
                             f"got {value!r}")
        out[c] = name
    return out


def _ids_as(s: pd.Series, dtype: str, col: str, source: str, first_line,
            strict: bool = True) -> pd.Series:
    """Text ids as integers of ``dtype``, exactly.

    Text that is not an integer, or is outside ``dtype``, is an error (with ``strict``;
    else it becomes NA: an id no integer vocabulary holds). Two different texts of one
    integer (``"007"`` and ``"7"``) are an error: they would merge two ids into one.
    Surrounding spaces do not count (``" 7"`` is ``"7"``). Works on the distinct ids.
    """
    codes, uniq = pd.factorize(s)  # (n_rows,), distinct texts
    info = np.iinfo(dtype)
    values, ok, seen = [], np.ones(len(uniq), bool), {}
    for n, raw in enumerate(uniq):
        text = str(raw).strip()
        digits = text[1:] if text[:1] in "+-" else text
        value = int(text) if digits.isdigit() and digits.isascii() else None
        if value is None or not info.min <= value <= info.max:
            if strict:
                pos = int(np.flatnonzero(codes == n)[0])
                why = "not an integer" if value is None else f"outside {dtype}"
                raise DataError(f"{source}: the {col} id {raw!r} at {_where(pos, first_line)} "
                                f"(column '{col}') is {why} (id_dtype={dtype!r}); read ids as "
                                "text with id_dtype='str'")
            ok[n], value = False, 0
        elif seen.setdefault(value, (text, n))[0] != text:
            (other, m) = seen[value]
            a, b = sorted((int(np.flatnonzero(codes == m)[0]), int(np.flatnonzero(codes == n)[0])))
            raise DataError(f"{source}: the {col} ids {s.iloc[a]!r} ({_where(a, first_line)}) and "
                            f"{s.iloc[b]!r} ({_where(b, first_line)}) are both {value} as {dtype}; "
                            "they would be merged into one id. Read ids as text "
                            "(id_dtype='str', the default) to keep them apart")
        values.append(value)
    out = pd.Series(np.array(values, dtype=dtype)[codes], index=s.index)
    if not ok.all():
        out = out.astype(object).where(ok[codes], None)
    return out


def _vocabulary_positions(s: pd.Series, vocab: pd.Index | None, col: str, source: str,
                          first_line) -> np.ndarray | None:
    """Positions of the ids of ``s`` in ``vocab`` (-1: unknown); text ids meeting an
    integer vocabulary are read as those integers, exactly."""
    if vocab is None:
        return None
    if (isinstance(vocab.dtype, np.dtype) and vocab.dtype.kind in "iu"
            and pd.api.types.is_string_dtype(s.dtype)
            and (s.dtype != object or bool(s.map(lambda v: isinstance(v, str)).all()))):
        as_int = _ids_as(s, vocab.dtype.name, col, source, first_line, strict=False)
        known = as_int.notna().to_numpy()
        pos = np.full(len(s), -1, dtype=np.int64)
        pos[known] = vocab.get_indexer(as_int[known].to_numpy(dtype=vocab.dtype))
        return pos
    return vocab.get_indexer(s)


def _timestamp_column(df: pd.DataFrame, col: str, source: str, first_line=None) -> np.ndarray:
    """Times as int64: numbers as they are (e.g. Unix seconds); datetimes and ISO-8601
    text (``2024-05-01T12:30:00Z``, ``2024-05-01 12:30``, a date) as Unix seconds, UTC
    (text without a zone is read as UTC)."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s) or (
            s.dtype == object or pd.api.types.is_string_dtype(s)) and not _looks_numeric(s):
        try:
            when = pd.to_datetime(s, format="ISO8601", utc=True)
        except (ValueError, TypeError, OverflowError):
            when = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
        bad = when.isna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source}: column '{col}' has a value {s.iloc[pos]!r} at {_where(pos, first_line)} "
                f"that is neither a number nor an ISO-8601 time ({int(bad.sum()):,} such rows)"
            )
        return when.astype("datetime64[s, UTC]").astype("int64").to_numpy()
    return _integer_timestamps(df, col, source, first_line)


def _looks_numeric(s: pd.Series) -> bool:
    """True when the first value parses as a number (text columns of Unix times)."""
    first = s.dropna()
    return len(first) == 0 or not np.isnan(pd.to_numeric(first.iloc[:1], errors="coerce").iloc[0])


def resolve_duplicates(rows, cols, vals, ts, shape, policy):
    """Sort entries by (row, col) and apply the duplicate policy."""
    if policy not in ("last", "mean", "error"):
        raise ValueError(f"duplicates must be 'last', 'mean' or 'error', not {policy!r}")
    key = rows * np.int64(max(shape[1], 1)) + cols
    order = np.argsort(key, kind="stable")  # near-linear on files grouped by user
    repeated = bool((key[order][1:] == key[order][:-1]).any())
    if repeated and ts is not None:
        # stable sort on (key, time) keeps file order among equal times: "last" = latest, then last line
        order = np.lexsort((ts, key))
    key, rows, cols, vals = key[order], rows[order], cols[order], vals[order]
    ts = ts[order] if ts is not None else None
    last = np.ones(len(key), bool)
    last[:-1] = key[1:] != key[:-1]
    n_dup = len(key) - int(last.sum())
    if n_dup == 0:
        return rows, cols, vals, ts
    if policy == "error":
        raise DataError(f"{n_dup:,} repeated (user, item) pairs; choose duplicates='last' or 'mean'")
    warnings.warn(
        f"{n_dup:,} repeated (user, item) ratings resolved with duplicates={policy!r}",
        stacklevel=3,
    )
    if policy == "mean":
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        group = np.cumsum(first) - 1
        sums = np.bincount(group, weights=vals)
        counts = np.bincount(group)
        vals_out = (sums / counts).astype(np.float32)
        return rows[last], cols[last], vals_out, (ts[last] if ts is not None else None)
    return rows[last], cols[last], vals[last], (ts[last] if ts is not None else None)
