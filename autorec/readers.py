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

__all__ = ["AlignReport", "Columns", "Triplets", "read_frame", "read_csv", "resolve_duplicates"]


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


def read_frame(df: pd.DataFrame, columns: Columns, *, users=None, items=None,
               source: str = "DataFrame", first_line: int | None = None) -> Triplets:
    """Ratings of a long-format table as :class:`Triplets`.

    Parameters
    ----------
    df : pandas.DataFrame
    columns : Columns
    users, items : array-like, optional
        A fixed vocabulary: rows with other ids are dropped and counted in ``report``
        (with a warning); without it, ids are factorized (sorted) from the table.
    source : str
        Name of the table in error messages (a file path for CSV files).
    first_line : int, optional
        File line of the first data row, so errors can name file lines.
    """
    user, item, rating, timestamp = columns.user, columns.item, columns.rating, columns.timestamp
    missing = [c for c in columns.present if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; available columns are {list(df.columns)}"
        )
    if len(df) == 0:
        raise DataError(f"{source}: no ratings (the table is empty)")
    if rating is not None:
        vals = _numeric_column(df, rating, source, np.float32, first_line)
    else:
        vals = np.ones(len(df), np.float32)
    ts = _timestamp_column(df, timestamp, source, first_line) if timestamp else None
    for c in (user, item):
        if df[c].isna().any():
            pos = int(np.flatnonzero(df[c].isna().to_numpy())[0])
            raise DataError(
                f"{source}: missing {c} id at {_where(pos, first_line)} (column '{c}')"
            )
    report = None
    keep = slice(None)
    if users is not None or items is not None:
        users_ix = pd.Index(users) if users is not None else None
        items_ix = pd.Index(items) if items is not None else None
        u_pos = users_ix.get_indexer(df[user]) if users_ix is not None else None  # (n_rows,)
        i_pos = items_ix.get_indexer(df[item]) if items_ix is not None else None  # (n_rows,)
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
        user_codes, users_index = pd.factorize(df[user][keep], sort=True)
    if items is not None:
        item_codes, items_index = i_pos[keep], items_ix
    else:
        item_codes, items_index = pd.factorize(df[item][keep], sort=True)
    return Triplets(np.asarray(user_codes, np.int64), np.asarray(item_codes, np.int64), vals, ts,
                    pd.Index(users_index), pd.Index(items_index), report)


def read_csv(path, columns: Columns, *, sep: str = ",", header: bool = True,
             names: list[str] | None = None, encoding: str = "utf-8") -> Triplets:
    """Ratings of a CSV/TSV file as :class:`Triplets` (see ``RatingMatrix.from_csv``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if not header and names is None:
        names = columns.present
    engine = "c" if len(sep) == 1 or sep == r"\s+" else "python"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: never turn a surplus leading column into the index
            # (that silently shifts every column by one)
            df = pd.read_csv(
                path, sep=sep, header=0 if header else None, names=names,
                encoding=encoding, engine=engine, index_col=False,
            )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file has no data") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: could not parse ({exc}); check sep={sep!r} and encoding") from exc
    surplus = any(issubclass(w.category, pd.errors.ParserWarning) for w in caught)
    if surplus and names is None:  # with names, surplus trailing columns are ignored
        raise DataError(
            f"{path}: some lines have more fields than the header {list(df.columns)}; "
            f"check sep={sep!r}"
        )
    one_column = df.shape[1] == 1 or (
        df.shape[1] > 1 and len(df) > 0 and df.iloc[:, 1:].isna().all().all()
    )
    if one_column and len(columns.present) > 1:
        guess = _guess_sep(path, encoding, sep)
        hint = f"; the first line looks {guess!r}-separated" if guess else ""
        raise DataError(
            f"{path}: every line parsed as one column; the separator is probably "
            f"not {sep!r}{hint}"
        )
    return read_frame(df, columns, source=str(path), first_line=2 if header else 1)


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


def _where(pos: int, first_line: int | None) -> str:
    """Name a 0-based data row: ``row N`` (1-based) or, for files, also its line."""
    if first_line is None:
        return f"row {pos + 1}"
    return f"row {pos + 1} (line {pos + first_line} of the file)"


def _numeric_column(df: pd.DataFrame, col: str, source: str, dtype, first_line=None) -> np.ndarray:
    """The column as numbers; a clear error naming row and value when it is not."""
    s = df[col]
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna().to_numpy() | ~np.isfinite(num.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: column '{col}' has a non-numeric, missing or infinite value "
            f"{s.iloc[pos]!r} at {_where(pos, first_line)} ({int(bad.sum()):,} such rows)"
        )
    return num.to_numpy(dtype=dtype)


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
    return _numeric_column(df, col, source, np.int64, first_line)


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
