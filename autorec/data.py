"""RatingMatrix: the one data type of autorec (its readers are in :mod:`autorec.readers`).

A users x items float32 CSR matrix (rows ALWAYS users, canonical) plus the raw ids of its
rows and columns as :class:`pandas.Index`; optional timestamps aligned with ``X.data``.

Naming: ``user_idx``/``item_idx`` are positions (0..n-1); ``user_id``/``item_id`` are raw
ids, which appear only at the boundary (readers, ``to_frame``, export, CLI).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import readers
from .exceptions import DataError
from .readers import AlignReport, Columns, Triplets

__all__ = ["RatingMatrix", "DataError", "AlignReport"]


@dataclass(frozen=True, eq=False)
class RatingMatrix:
    """Sparse users x items ratings with their raw ids.

    Parameters
    ----------
    X : scipy.sparse.csr_matrix, shape (n_users, n_items), float32
        Ratings; absent entries are unobserved (not zero ratings).
    users, items : pandas.Index
        Raw ids of the rows and the columns, unique.
    timestamps : numpy.ndarray of int64, shape (nnz,), optional
        Time of each rating, aligned with ``X.data``.
    item_info : pandas.DataFrame, optional
        Item metadata (e.g. title, genres, year) indexed by raw item id.
    """

    X: sp.csr_matrix
    users: pd.Index
    items: pd.Index
    timestamps: np.ndarray | None = None
    item_info: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self):
        X = self.X
        if not sp.issparse(X):
            raise TypeError(f"X must be a scipy sparse matrix, got {type(X).__name__}")
        X = sp.csr_matrix(X, dtype=np.float32)
        if not X.has_canonical_format:
            X = X.copy()  # canonicalise our own copy, never the caller's arrays
            if self.timestamps is not None:
                raise ValueError("timestamps need X in canonical CSR format")
            X.sum_duplicates()
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "users", pd.Index(self.users))
        object.__setattr__(self, "items", pd.Index(self.items))
        if X.shape != (len(self.users), len(self.items)):
            raise ValueError(
                f"X has shape {X.shape} but there are {len(self.users)} users and "
                f"{len(self.items)} items"
            )
        if not self.users.is_unique or not self.items.is_unique:
            raise ValueError("user and item ids must be unique")
        if self.timestamps is not None:
            ts = np.asarray(self.timestamps, dtype=np.int64)
            if ts.shape != (X.nnz,):
                raise ValueError(f"timestamps has shape {ts.shape}, expected ({X.nnz},)")
            object.__setattr__(self, "timestamps", ts)

    # ------------------------------------------------------------------ basics
    @property
    def n_users(self) -> int:
        return self.X.shape[0]

    @property
    def n_items(self) -> int:
        return self.X.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape

    @property
    def nnz(self) -> int:
        return self.X.nnz

    @property
    def density(self) -> float:
        cells = self.n_users * self.n_items
        return self.nnz / cells if cells else 0.0

    def __repr__(self) -> str:
        return (
            f"RatingMatrix({self.n_users:,} users x {self.n_items:,} items, "
            f"{self.nnz:,} ratings, density {self.density:.2%})"
        )

    def __len__(self) -> int:
        return self.nnz

    def describe(self) -> pd.Series:
        """Summary statistics: counts, density, rating range and per-user/item counts."""
        per_user = np.diff(self.X.indptr)
        per_item = np.bincount(self.X.indices, minlength=self.n_items)
        data = self.X.data
        return pd.Series(
            {
                "users": self.n_users,
                "items": self.n_items,
                "ratings": self.nnz,
                "density": self.density,
                "rating_min": float(data.min()) if self.nnz else np.nan,
                "rating_max": float(data.max()) if self.nnz else np.nan,
                "rating_mean": float(data.mean()) if self.nnz else np.nan,
                "ratings_per_user_median": float(np.median(per_user)) if self.n_users else np.nan,
                "ratings_per_item_median": float(np.median(per_item)) if self.n_items else np.nan,
                "users_without_ratings": int((per_user == 0).sum()),
                "items_without_ratings": int((per_item == 0).sum()),
            }
        )

    def replace(self, X: sp.csr_matrix, timestamps: np.ndarray | None = None) -> RatingMatrix:
        """A RatingMatrix with the same ids and metadata but other ratings."""
        return RatingMatrix(X, self.users, self.items, timestamps, self.item_info)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        user_idx,
        item_idx,
        ratings=None,
        *,
        users=None,
        items=None,
        timestamps=None,
        shape: tuple[int, int] | None = None,
        duplicates: str = "last",
    ) -> RatingMatrix:
        """Build from position arrays (COO triplets).

        Parameters
        ----------
        user_idx, item_idx : array-like of int
            Row and column positions.
        ratings : array-like of float, optional
            Values; ones (implicit feedback) when omitted.
        users, items : array-like, optional
            Raw ids; ``range(n)`` when omitted.
        timestamps : array-like of int, optional
        shape : (int, int), optional
            Defaults to ``(len(users), len(items))`` or the largest positions + 1.
        duplicates : {"last", "mean", "error"}
            Policy for repeated (user, item) pairs, see :meth:`from_frame`.
        """
        rows = np.asarray(user_idx, dtype=np.int64)
        cols = np.asarray(item_idx, dtype=np.int64)
        vals = np.ones(len(rows), np.float32) if ratings is None else np.asarray(ratings, np.float32)
        if not (len(rows) == len(cols) == len(vals)):
            raise ValueError("user_idx, item_idx and ratings must have the same length")
        finite = np.isfinite(vals)
        if not finite.all():
            pos = int(np.flatnonzero(~finite)[0])
            raise DataError(
                f"ratings has {int((~finite).sum()):,} NaN or infinite value(s), "
                f"the first at position {pos} ({vals[pos]})"
            )
        ts = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        if shape is None:
            n_u = len(users) if users is not None else (int(rows.max()) + 1 if len(rows) else 0)
            n_i = len(items) if items is not None else (int(cols.max()) + 1 if len(cols) else 0)
            shape = (n_u, n_i)
        if len(rows) and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0 or cols.max() >= shape[1]):
            raise ValueError(f"positions out of range for shape {shape}")
        users = pd.RangeIndex(shape[0]) if users is None else pd.Index(users)
        items = pd.RangeIndex(shape[1]) if items is None else pd.Index(items)
        rows, cols, vals, ts = readers.resolve_duplicates(rows, cols, vals, ts, shape, duplicates)
        # rows/cols are now unique and sorted by (row, col): CSR built directly
        indptr = np.zeros(shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
        index_dtype = np.int32 if max(shape) < 2**31 and len(rows) < 2**31 else np.int64
        X = sp.csr_matrix(
            (vals, cols.astype(index_dtype), indptr.astype(index_dtype)), shape=shape
        )
        X.has_sorted_indices = True
        return cls(X, users, items, ts)

    @classmethod
    def from_csr(cls, X, users=None, items=None, *, duplicates: str = "last") -> RatingMatrix:
        """Wrap a scipy sparse matrix of ratings, users x items (rows are users).

        Parameters
        ----------
        X : scipy.sparse matrix or array, shape (n_users, n_items)
            Any sparse format; stored entries are the ratings. Explicitly stored zeros
            are dropped: in a sparse matrix an absent entry is unobserved, not a rating.
        users, items : array-like, optional
            Raw ids of the rows and columns; ``range(n)`` when omitted.
        duplicates : {"last", "mean", "error"}
            Repeated entries of a non-canonical matrix, see :meth:`from_frame`.
        """
        if not sp.issparse(X):
            raise TypeError(f"from_csr expects a scipy sparse matrix, got {type(X).__name__} "
                            "(wrap a dense array with scipy.sparse.csr_matrix(a))")
        coo = X.tocoo()
        nonzero = coo.data != 0
        if len(X.shape) != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        return cls.from_arrays(coo.row[nonzero], coo.col[nonzero], coo.data[nonzero], users=users,
                               items=items, shape=tuple(X.shape), duplicates=duplicates)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        user: str = "user",
        item: str = "item",
        rating: str | None = "rating",
        timestamp: str | None = None,
        *,
        users=None,
        items=None,
        duplicates: str = "last",
        source: str = "DataFrame",
        rating_scale: tuple[float, float] | None = None,
    ) -> RatingMatrix | tuple[RatingMatrix, AlignReport]:
        """Build from a long-format DataFrame, vectorised (``pd.factorize``).

        Parameters
        ----------
        df : pandas.DataFrame
        user, item : str
            Column names of the raw user and item ids.
        rating : str or None
            Column of the ratings; None means implicit feedback (all ones).
        timestamp : str or None
            Column of the times, used by ``duplicates="last"`` and ``split.leave_last``.
        users, items : array-like, optional
            A fixed vocabulary (e.g. a trained model's ``users_``/``items_``). Rows whose ids
            are not in it are dropped and reported: the return value is then the pair
            ``(matrix, AlignReport)``, and a warning gives the counts.
        duplicates : {"last", "mean", "error"}
            Repeated (user, item) pairs: ``"last"`` keeps the latest by timestamp (file
            order when there is no timestamp), ``"mean"`` averages, ``"error"`` raises.
            A warning says how many pairs were repeated.
        source : str
            Name used in error messages (e.g. the file path).
        rating_scale : (float, float), optional
            The ratings' declared ``(lowest, highest)``, e.g. ``(1, 5)``: a rating outside it
            is a :class:`DataError` naming its row and value.

        Raw ids keep the dtype of their column (str, int64, uint64, float, bool, object):
        nothing is converted or merged. Missing ids (None/NaN), NUL characters in text ids,
        and equal ids of different types in one object column (``1`` and ``True``) are
        errors naming the row.
        """
        parsed = readers.read_frame(df, Columns(user, item, rating, timestamp), users=users,
                                    items=items, source=source, rating_scale=rating_scale)
        R = cls._from_triplets(parsed, duplicates)
        return (R, parsed.report) if parsed.report is not None else R

    @classmethod
    def from_csv(
        cls,
        path,
        user: str = "user",
        item: str = "item",
        rating: str | None = "rating",
        timestamp: str | None = None,
        *,
        sep: str = ",",
        header: bool = True,
        names: list[str] | None = None,
        encoding: str = "utf-8",
        duplicates: str = "last",
        id_dtype="str",
        rating_scale: tuple[float, float] | None = None,
    ) -> RatingMatrix:
        """Read a CSV/TSV file of ratings (one rating per line).

        Parameters
        ----------
        path : str or Path
        user, item, rating, timestamp : str
            Column names (as in the header, or in ``names`` when ``header=False``).
        sep : str
            Field separator (``","``, ``"\\t"``, ``"::"`` ...).
        header : bool
            Whether the first line holds column names.
        names : list of str, optional
            Column names for a file without header; surplus trailing columns of the file
            are ignored (e.g. reading MovieLens ``u.data`` without its timestamps).
        encoding : str
            Text encoding (MovieLens ``ml-1m`` is ``"latin-1"``).
        duplicates : {"last", "mean", "error"}
            See :meth:`from_frame`.
        id_dtype : {"str", "int64", "uint64"} or dict
            How user and item ids are read (one for both, or ``{column: dtype}``). ``"str"``
            (the default) keeps each id's text exactly: ``007``, ``0007`` and ``7`` are three
            ids, and ``NA``, ``None``, ``null`` are ids, not missing values. ``"int64"`` /
            ``"uint64"`` read integers exactly; text that is not one, or two texts of the
            same integer (``007`` and ``7``), is an error rather than a merge.
        rating_scale : (float, float), optional
            See :meth:`from_frame`.

        Raises
        ------
        DataError
            Missing or empty file, wrong separator (detected, with a guess of the right
            one), a header naming a column twice, lines with more fields than the header,
            bytes that are not valid ``encoding`` (with line and column), bad values: empty
            ids, NUL characters in ids, non-numeric or overflowing ratings, ratings outside
            ``rating_scale``, fractional or out-of-int64 timestamps (with their line).
        """
        parsed = readers.read_csv(path, Columns(user, item, rating, timestamp), sep=sep,
                                  header=header, names=names, encoding=encoding,
                                  id_dtype=id_dtype, rating_scale=rating_scale)
        return cls._from_triplets(parsed, duplicates)

    @classmethod
    def _from_triplets(cls, t: Triplets, duplicates: str) -> RatingMatrix:
        return cls.from_arrays(t.user_idx, t.item_idx, t.ratings, users=t.users, items=t.items,
                               timestamps=t.timestamps, duplicates=duplicates)

    def to_frame(self, user: str = "user", item: str = "item", rating: str = "rating") -> pd.DataFrame:
        """Long format with raw ids: one row per rating (plus ``timestamp`` when known)."""
        coo = self.X.tocoo()
        out = {
            user: self.users[coo.row].to_numpy(),
            item: self.items[coo.col].to_numpy(),
            rating: coo.data,
        }
        if self.timestamps is not None:
            out["timestamp"] = self.timestamps
        return pd.DataFrame(out)

    # -------------------------------------------------------------- operations
    def binarize(self, threshold: float = 4.0) -> RatingMatrix:
        """Implicit feedback: ratings ``>= threshold`` become 1, the others are dropped.

        For the Mult-VAE protocol ("keep ratings > 3.5") on MovieLens' star scales,
        ``binarize(4)`` (integer stars) and ``binarize(4.0)`` (half stars) are the same rule.
        """
        keep = self.X.data >= threshold
        return self._keep_entries(keep, values=np.ones(int(keep.sum()), np.float32))

    def _keep_entries(self, keep: np.ndarray, values: np.ndarray | None = None) -> RatingMatrix:
        """Keep the stored entries where ``keep`` (aligned with X.data) is True."""
        X = self.X
        # kept entries before each old row boundary = the new indptr, shape (n_users + 1,)
        kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))  # (nnz + 1,)
        indptr = kept_before[X.indptr].astype(X.indptr.dtype)
        data = X.data[keep] if values is None else values
        Y = sp.csr_matrix((data, X.indices[keep], indptr), shape=X.shape)
        Y.has_sorted_indices = True
        ts = self.timestamps[keep] if self.timestamps is not None else None
        return self.replace(Y, ts)

    def mask(self, keep: np.ndarray) -> RatingMatrix:
        """The ratings where the boolean ``keep`` (aligned with ``X.data``) is True.

        Same users and items: the building block of the splits.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.nnz,):
            raise ValueError(f"keep has shape {keep.shape}, expected ({self.nnz},)")
        return self._keep_entries(keep)

    def filter(self, min_user_ratings: int = 1, min_item_ratings: int = 1) -> RatingMatrix:
        """k-core filtering: repeatedly drop users and items with too few ratings.

        Users and items left without ratings are removed from the index.
        """
        R = self
        while True:
            per_user = np.diff(R.X.indptr)
            per_item = np.bincount(R.X.indices, minlength=R.n_items)
            keep_u = per_user >= min_user_ratings
            keep_i = per_item >= min_item_ratings
            if keep_u.all() and keep_i.all():
                return R
            R = R.subset(users=np.flatnonzero(keep_u), items=np.flatnonzero(keep_i))

    def subset(self, users=None, items=None) -> RatingMatrix:
        """Rows and/or columns by position (``user_idx``/``item_idx``), ids kept.

        ``users``/``items`` are integer positions or boolean masks of length
        ``n_users``/``n_items``; None keeps all.
        """
        X, ts = self.X, self.timestamps
        u = _positions(users, self.n_users, "users")
        i = _positions(items, self.n_items, "items")
        if ts is not None:
            # carry timestamps through the same slicing by indexing entry positions
            pos = sp.csr_matrix((np.arange(1, X.nnz + 1, dtype=np.float64), X.indices, X.indptr), shape=X.shape)
            pos = pos[u][:, i].tocsr()
            pos.sort_indices()
            ts = ts[pos.data.astype(np.int64) - 1]
        Y = X[u][:, i].tocsr()
        Y.sort_indices()
        info = self.item_info
        return RatingMatrix(Y, self.users[u], self.items[i], ts, info)

    @property
    def T(self) -> RatingMatrix:
        """Items x users view (for item-based models); ids swapped."""
        X = self.X
        if self.timestamps is None:
            Y = X.T.tocsr()
            Y.sort_indices()
            return RatingMatrix(Y, self.items, self.users)
        pos = sp.csr_matrix((np.arange(1, X.nnz + 1, dtype=np.float64), X.indices, X.indptr), shape=X.shape)
        posT = pos.T.tocsr()
        posT.sort_indices()
        order = posT.data.astype(np.int64) - 1
        Y = sp.csr_matrix((X.data[order], posT.indices, posT.indptr), shape=posT.shape)
        return RatingMatrix(Y, self.items, self.users, self.timestamps[order])

    def align(self, users=None, items=None) -> tuple[RatingMatrix, AlignReport]:
        """Re-express these ratings in another vocabulary (e.g. a trained model's).

        Ratings of ids absent from ``users``/``items`` are dropped and reported (with a
        warning), never silently lost; ids of the vocabulary without ratings get empty rows.
        """
        df = self.to_frame()
        R, report = RatingMatrix.from_frame(
            df, "user", "item", "rating", "timestamp" if self.timestamps is not None else None,
            users=self.users if users is None else users,
            items=self.items if items is None else items,
            source="align",
        )
        R = RatingMatrix(R.X, R.users, R.items, R.timestamps, self.item_info)
        return R, report

    def user_counts(self) -> np.ndarray:
        """Number of ratings of each user, shape (n_users,)."""
        return np.diff(self.X.indptr)

    def item_counts(self) -> np.ndarray:
        """Number of ratings of each item, shape (n_items,)."""
        return np.bincount(self.X.indices, minlength=self.n_items)


# ---------------------------------------------------------------------- helpers


def _positions(sel, n: int, what: str) -> np.ndarray:
    """Integer positions from None (all), a boolean mask of length n, or positions."""
    if sel is None:
        return np.arange(n)
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"boolean {what} mask has shape {sel.shape}, expected ({n},)")
        return np.flatnonzero(sel)
    return sel.astype(np.int64)
