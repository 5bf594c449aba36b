"""What ALS, BPR and LMF share: matrix factorization fitted by ``implicit``, scored by autorec.

``implicit`` fits the factors (its native CPU code, or its CUDA build with
``device="cuda"``); autorec keeps only the factor matrices as tensors, so scoring, top-k
(``BaseRecommender.recommend``), saving and loading never touch an ``implicit`` object.
Users unseen in training are *folded in* with the item factors fixed:

* ALS: the exact one-user least-squares solve of Hu, Koren & Volinsky (2008), batched;
  the same numbers as ``implicit``'s ``recommend(..., recalculate_user=True)``.
* BPR: deterministic stochastic gradient ascent on the user vector (see :class:`BPR`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from .. import _checks
from .._validate import tensor
from .base import BaseRecommender, _state_keys

__all__ = ["_ImplicitMF"]

_FOLD_BUDGET = 32 * 2**20  # bytes of per-chunk work arrays in the fold-in solvers


class _ImplicitMF(BaseRecommender):
    """Shared plumbing: validation, device, factors as tensors, scoring, state."""

    _param_rules = {
        "factors": _checks.positive_int, "iterations": _checks.positive_int,
        "regularization": _checks.non_negative, "seed": _checks.non_negative_int,
        "num_threads": _checks.non_negative_int, "alpha": _checks.non_negative,
        "learning_rate": _checks.positive, "neg_prop": _checks.positive_int,
        "device": _checks.device,
    }

    @property
    def _device(self) -> str:
        """``device`` with ``"auto"`` resolved: implicit's CUDA build when it can run, else CPU."""
        if self.device != "auto":
            return self.device
        try:
            import implicit.gpu

            return "cuda" if implicit.gpu.HAS_CUDA and torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover - implicit always has the module
            return "cpu"

    def _implicit_gpu(self):
        """The ``implicit.gpu`` module, or a clear error when it cannot be used."""
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            raise RuntimeError(
                f"{type(self).__name__}(device={self.device!r}) fits with implicit's CUDA build, "
                "but implicit.gpu.HAS_CUDA is False here (implicit without CUDA, no GPU, or RMM "
                "missing); use device='cpu'"
            )
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={self.device!r} but torch sees no CUDA device")
        return implicit.gpu

    def _fit_implicit(self, model, user_items: sp.csr_matrix):
        """Fit an implicit model with BLAS single-threaded (implicit's own advice)."""
        with threadpool_limits(1, "blas"):
            model.fit(user_items, show_progress=False)
        if hasattr(model, "to_cpu"):  # GPU model -> numpy factors
            model = model.to_cpu()
        return model

    def _set_factors(self, user_factors, item_factors) -> None:
        dev = torch.device(self._device)
        self.user_factors_ = torch.as_tensor(np.asarray(user_factors, np.float32)).to(dev)  # (n_users, f)
        self.item_factors_ = torch.as_tensor(np.asarray(item_factors, np.float32)).to(dev)  # (n_items, f)
        self._prepare()

    def _prepare(self) -> None:
        """Derived caches for fold-in (not saved)."""

    @classmethod
    def from_factors(cls, user_factors, item_factors, users=None, items=None,
                     known_users=None, **params):
        """A fitted model from existing factor matrices (e.g. a fitted ``implicit`` model).

        Parameters
        ----------
        user_factors : array-like, shape (n_users, f)
        item_factors : array-like, shape (n_items, f)
            In ``implicit``'s layout (for BPR: last user column 1, last item column the
            item bias). Scores are ``user_factors @ item_factors.T``.
        users, items : pandas.Index-like, optional
            Raw ids; ``0..n-1`` by default.
        known_users : bool array, shape (n_users,), optional
            Users scored from their factors; the others are folded in from their history
            row. Default: users whose factor row is not all zero, apart from the columns
            ``implicit`` holds at 1 (it leaves users without training ratings at zero: BPR
            at ``[0, ..., 0, 1]``).
        **params
            Constructor arguments (``regularization``, ``alpha``, ``device`` ... used by
            the fold-in; ``factors`` is taken from the matrices).

        Examples
        --------
        >>> m = implicit.als.AlternatingLeastSquares(factors=64).fit(C)   # doctest: +SKIP
        >>> model = ALS.from_factors(m.user_factors, m.item_factors, train.users, train.items)
        """
        import pandas as pd

        U = np.array(user_factors, dtype=np.float32)  # copies: no memory shared with the caller
        V = np.array(item_factors, dtype=np.float32)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
            raise ValueError(f"factor shapes {U.shape} and {V.shape} do not match")
        params.setdefault("factors", U.shape[1] - cls._extra_columns)
        if params["factors"] + cls._extra_columns != U.shape[1]:
            raise ValueError(f"factors={params['factors']} does not match {U.shape[1]} factor columns")
        model = cls(**params)
        model._check_params()
        model.users_ = pd.Index(range(U.shape[0]) if users is None else users)
        model.items_ = pd.Index(range(V.shape[0]) if items is None else items)
        if (len(model.users_), len(model.items_)) != (U.shape[0], V.shape[0]):
            raise ValueError("users/items do not match the factor matrices' rows")
        if known_users is None:  # the constant-1 column implicit keeps is not a sign of training
            known_users = np.any(np.delete(U, cls._constant_user_columns, axis=1) != 0, axis=1)
        known = np.asarray(known_users, bool)
        if known.shape != (U.shape[0],):
            raise ValueError(f"known_users has shape {known.shape}, expected ({U.shape[0]},)")
        model.known_users_ = known
        model._set_factors(U, V)
        return model

    _extra_columns = 0  # factor columns beyond ``factors`` (BPR: the bias column)
    _constant_user_columns: tuple = ()  # user-factor columns implicit holds at 1

    def score(self, users, X) -> torch.Tensor:
        users, X = self._check_users_X(users, X)
        new = self._is_new(users)
        V = self.item_factors_
        if not new.any():
            return _rows(self.user_factors_, users) @ V.T  # (B, n_items)
        Uq = torch.empty((len(users), V.shape[1]), dtype=V.dtype, device=V.device)  # (B, f)
        old = np.flatnonzero(~new)
        if len(old):
            Uq.index_copy_(0, _ix(old, V.device), _rows(self.user_factors_, users[old]))
        Uq.index_copy_(0, _ix(np.flatnonzero(new), V.device), self.fold_in(X[new]))
        return Uq @ V.T

    def fold_in(self, X) -> torch.Tensor:  # pragma: no cover
        """User factors for history rows ``X`` (B, n_items), item factors fixed."""
        raise NotImplementedError

    def _get_state(self) -> dict:
        return {"user_factors": self.user_factors_.cpu(), "item_factors": self.item_factors_.cpu()}

    #: state entries besides the two factor matrices (LMF: its item popularity)
    _extra_state_keys: tuple = ()

    def _set_state(self, state: dict) -> None:
        _state_keys(state, ("user_factors", "item_factors", *self._extra_state_keys))
        f = int(self.factors) + self._extra_columns
        U = tensor(state["user_factors"], "state['user_factors']", dtype=torch.float32,
                   shape=(self.n_users_, f), finite=True)  # (n_users, f)
        V = tensor(state["item_factors"], "state['item_factors']", dtype=torch.float32,
                   shape=(self.n_items_, f), finite=True)  # (n_items, f)
        self._set_factors(U.numpy(), V.numpy())


def _ix(idx, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(idx, dtype=np.int64), device=device)


def _rows(M: torch.Tensor, idx) -> torch.Tensor:
    """``M[idx]`` along dim 0 via ``index_select``: advanced indexing (``M[tensor]``) runs
    a parallel kernel that is 100x slower on small inputs when the cores are busy."""
    idx = idx if isinstance(idx, torch.Tensor) else _ix(idx, M.device)
    return M.index_select(0, idx.reshape(-1)).reshape(*idx.shape, *M.shape[1:])


def _padded_rows(X: sp.csr_matrix, rows: np.ndarray, L: int):
    """Columns and values of CSR ``rows`` padded to length ``L``: (b, L) each, pad 0."""
    lengths = np.diff(X.indptr)[rows]
    offs = np.cumsum(lengths) - lengths
    c_of = np.arange(int(lengths.sum())) - np.repeat(offs, lengths)  # position within its row
    r_of = np.repeat(np.arange(len(rows)), lengths)
    pos = np.repeat(X.indptr[rows], lengths) + c_of  # entry positions in X.data
    cols = np.zeros((len(rows), L), np.int64)
    vals = np.zeros((len(rows), L), np.float64)
    cols[r_of, c_of] = X.indices[pos]
    vals[r_of, c_of] = X.data[pos]
    return torch.from_numpy(cols), torch.from_numpy(vals)


def _length_chunks(lengths: np.ndarray, per_entry_bytes: int, max_rows: int):
    """Rows in ascending length, in chunks with rows x longest x per_entry_bytes <= budget."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        cand = np.maximum(lengths[order[start:start + max_rows]], 1)  # ascending
        fits = np.arange(1, len(cand) + 1) * cand * per_entry_bytes <= _FOLD_BUDGET
        stop = start + max(1, int(fits.sum()))  # fits is a True prefix
        yield order[start:stop]
        start = stop
