"""ALS and BPR: matrix factorization fitted by the ``implicit`` library, scored by autorec.

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

from .base import BaseRecommender
from .data import RatingMatrix

__all__ = ["ALS", "BPR"]

_FOLD_BUDGET = 32 * 2**20  # bytes of per-chunk work arrays in the fold-in solvers


class _ImplicitMF(BaseRecommender):
    """Shared plumbing: validation, device, factors as tensors, scoring, state."""

    def _check_params(self) -> None:
        if int(self.factors) != self.factors or self.factors < 1:
            raise ValueError(f"factors must be a positive integer, got {self.factors!r}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
        if not self.regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization!r}")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

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
        dev = torch.device(self.device)
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

    def _set_state(self, state: dict) -> None:
        self._set_factors(state["user_factors"].numpy(), state["item_factors"].numpy())


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


class ALS(_ImplicitMF):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008), fitted by ``implicit``.

    Confidence ``c_ui = 1 + alpha·r_ui`` on observed entries, 1 elsewhere; preference 1 on
    observed entries. (``implicit`` itself takes ``alpha·r`` as the confidence; autorec
    hands it ``1 + alpha·r`` with implicit's ``alpha=1``.) Scores are ``x_u · y_i``.

    New users (``-1`` or empty in training) are folded in with the item factors ``Y``
    fixed, the exact one-user solve, batched with ``torch.linalg.solve`` in float64::

        x_u = (YᵀY + Yᵀ(C_u − I)Y + λI)⁻¹ Yᵀ C_u p(u)

    identical to ``implicit``'s ``recalculate_user``. An empty history gives ``x_u = 0``
    (all scores 0, as in ``implicit``).

    Parameters
    ----------
    factors, regularization, alpha, iterations : as in ``implicit`` (conjugate-gradient fit)
    seed : int
        ``implicit``'s ``random_state`` (factor initialisation); fits are reproducible.
    device : {"cpu", "cuda"}
        ``"cuda"``: fit with ``implicit``'s GPU model (needs its CUDA build) and score on
        the GPU.
    num_threads : int
        Threads of ``implicit``'s CPU fit; 0 = all cores (results do not depend on it).
    """

    def __init__(self, factors: int = 100, regularization: float = 0.01, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 0, device: str = "cpu", num_threads: int = 0):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.device = device
        self.num_threads = num_threads

    def fit(self, train: RatingMatrix, valid=None) -> ALS:
        self._init_fit(train)
        self._check_params()
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if train.X.data.min() < 0:
            raise ValueError("ALS needs non-negative ratings (confidence 1 + alpha·r)")
        kw = dict(factors=int(self.factors), regularization=float(self.regularization), alpha=1.0,
                  iterations=int(self.iterations), random_state=self.seed)
        with threadpool_limits(1, "blas"):  # also silences implicit's BLAS warning
            if self.device == "cpu":
                from implicit.cpu.als import AlternatingLeastSquares
                model = AlternatingLeastSquares(**kw, num_threads=int(self.num_threads))
            else:
                model = self._implicit_gpu().als.AlternatingLeastSquares(**kw)
        model = self._fit_implicit(model, self.confidence(train.X))
        self._set_factors(model.user_factors, model.item_factors)
        return self

    def confidence(self, X) -> sp.csr_matrix:
        """``C`` as ``implicit`` takes it: ``1 + alpha·r`` on the stored entries of ``X``."""
        C = sp.csr_matrix(X, dtype=np.float32, copy=True)
        C.data = (1.0 + self.alpha * C.data).astype(np.float32)
        return C

    def _prepare(self) -> None:
        Y = self.item_factors_.double()
        self._YtY = Y.T @ Y  # (f, f) float64

    def fold_in(self, X) -> torch.Tensor:
        """Exact ALS user factors for history rows ``X`` (B, n_items); (B, f) float32."""
        C = self.confidence(X)
        Y = self.item_factors_.double()  # (n_items, f)
        f = Y.shape[1]
        base = self._YtY + float(self.regularization) * torch.eye(f, dtype=Y.dtype, device=Y.device)
        out = torch.zeros((C.shape[0], f), dtype=torch.float64, device=Y.device)
        lengths = np.diff(C.indptr)
        for rows in _length_chunks(lengths, per_entry_bytes=16 * f, max_rows=max(1, _FOLD_BUDGET // (8 * f * f))):
            L = int(lengths[rows].max())
            if L == 0:
                continue  # empty histories: x = 0
            cols, c = _padded_rows(C, rows, L)  # (b, L)
            cols, c = cols.to(Y.device), c.to(Y.device)
            Yg = _rows(Y, cols)  # (b, L, f); padding has c = 0 and weight 0 below
            pad = torch.arange(L, device=Y.device)[None, :] >= torch.as_tensor(lengths[rows], device=Y.device)[:, None]
            w = (c.abs() - 1).masked_fill(pad, 0.0)  # c - 1 (implicit: |c| - 1 for c < 0)
            A = base + torch.bmm((Yg * w[..., None]).transpose(1, 2), Yg)  # (b, f, f)
            b = torch.bmm(c.clamp(min=0)[:, None, :], Yg)[:, 0]  # (b, f): Yᵀ C_u p(u)
            L_chol, info = torch.linalg.cholesky_ex(A)
            if int(info.max()) == 0:
                x = torch.cholesky_solve(b[..., None], L_chol)[..., 0]
            else:  # not positive definite (regularization 0, odd data): general solve
                x = torch.linalg.solve(A, b)
            out.index_copy_(0, _ix(rows, Y.device), x)
        return out.float()


class BPR(_ImplicitMF):
    """Bayesian Personalized Ranking (Rendle et al. 2009), fitted by ``implicit``.

    Every stored entry of the training matrix with a positive value is a positive item.
    ``implicit`` appends a bias column: user factors end with a constant 1 and item factors
    with the item bias, so ``score = x_u · y_i + b_i``; the tensors keep that layout
    (``factors + 1`` columns).

    **Fold-in of new users** (no closed form): stochastic gradient ascent on the same
    per-pair objective ``ln σ(x·(y_i − y_j) + b_i − b_j) − regularization/2·‖x‖²`` that
    implicit's SGD optimises for a user, item factors and biases fixed, from ``x = 0``:
    ``FOLD_STEPS`` steps, each averaging ``FOLD_PAIRS`` (positive, negative) pairs with step
    ``learning_rate·FOLD_PAIRS`` (i.e. ``FOLD_STEPS·FOLD_PAIRS`` of implicit's SGD updates).
    Positives are drawn uniformly from the user's history, negatives uniformly from all
    items (pairs whose "negative" is in the history are skipped). The random stream comes
    from ``seed`` and is the same for every user, so a user's folded-in vector depends only
    on their history, never on the batch they are scored in. An empty history gives
    ``x = 0`` (scores = item biases).

    Parameters
    ----------
    factors, learning_rate, regularization, iterations : as in ``implicit``
    seed : int
        ``implicit``'s ``random_state`` and the fold-in stream.
    device : {"cpu", "cuda"}
        ``"cuda"``: fit with ``implicit``'s GPU model (needs its CUDA build).
    num_threads : int
        Threads of ``implicit``'s CPU fit. Default 1: its multi-threaded SGD is lock-free
        (Hogwild), so with more threads fits are faster but not bit-reproducible.
    """

    FOLD_STEPS = 100
    FOLD_PAIRS = 32
    _extra_columns = 1
    _constant_user_columns = (-1,)

    def __init__(self, factors: int = 100, learning_rate: float = 0.01, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0, device: str = "cpu", num_threads: int = 1):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.device = device
        self.num_threads = num_threads

    def fit(self, train: RatingMatrix, valid=None) -> BPR:
        self._init_fit(train)
        self._check_params()
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        X = train.X.copy()
        X.data = (X.data > 0).astype(np.float32)
        X.eliminate_zeros()
        kw = dict(factors=int(self.factors), learning_rate=float(self.learning_rate),
                  regularization=float(self.regularization), iterations=int(self.iterations),
                  random_state=self.seed)
        if self.device == "cpu":
            from implicit.cpu.bpr import BayesianPersonalizedRanking
            model = BayesianPersonalizedRanking(**kw, num_threads=int(self.num_threads))
        else:
            model = self._implicit_gpu().bpr.BayesianPersonalizedRanking(**kw)
        model = self._fit_implicit(model, X)
        self._set_factors(model.user_factors, model.item_factors)
        return self

    def fold_in(self, X) -> torch.Tensor:
        """BPR user factors for history rows ``X`` by deterministic SGD; (B, f + 1) float32."""
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.data = (X.data > 0).astype(np.float32)
        X.eliminate_zeros()
        V = self.item_factors_  # (n_items, f + 1); last column: bias
        n, f1 = V.shape
        Y, bias = V[:, :-1], V[:, -1]
        K, lr, reg = self.FOLD_PAIRS, float(self.learning_rate) * self.FOLD_PAIRS, float(self.regularization)
        g = torch.Generator().manual_seed(int(self.seed))
        u_stream = torch.rand((self.FOLD_STEPS, K), generator=g).to(V.device)  # picks a positive
        j_stream = torch.randint(0, n, (self.FOLD_STEPS, K), generator=g).to(V.device)  # negatives
        out = torch.zeros((X.shape[0], f1), dtype=V.dtype, device=V.device)
        out[:, -1] = 1.0
        lengths = np.diff(X.indptr)
        T = self.FOLD_STEPS
        Yj = _rows(Y, j_stream)  # (T, K, f): the negatives, shared by all users
        j_flat = j_stream.reshape(1, T * K)
        max_rows = max(1, _FOLD_BUDGET // max(T * K * 24, K * f1 * 4 * 3))
        for rows in _length_chunks(lengths, per_entry_bytes=8, max_rows=max_rows):
            rows = rows[lengths[rows] > 0]  # empty histories keep x = 0
            if len(rows) == 0:
                continue
            b, L = len(rows), int(lengths[rows].max())
            cols, _ = _padded_rows(X, rows, L)  # (b, L), ascending per row
            cnt = torch.as_tensor(lengths[rows], device=V.device)  # (b,) >= 1
            cols = cols.to(V.device).masked_fill(  # pad past every item id, for searchsorted
                torch.arange(L, device=V.device)[None, :] >= cnt[:, None], n)
            # every step's pairs at once: positive ids, "negative not in history", bias gap
            pick = (u_stream.reshape(1, T * K) * cnt[:, None]).long().clamp(max=L - 1)
            pi = cols.gather(1, pick)  # (b, T*K)
            j = j_flat.expand(b, T * K).contiguous()
            hit = cols.gather(1, torch.searchsorted(cols, j).clamp(max=L - 1)) == j
            valid = (~hit).to(V.dtype)  # (b, T*K)
            gap = _rows(bias, pi) - _rows(bias, j_flat)  # (b, T*K)
            del pick, j, hit
            x = torch.zeros((b, f1 - 1), dtype=V.dtype, device=V.device)  # (b, f)
            for t in range(T):
                sl = slice(t * K, (t + 1) * K)
                D = _rows(Y, pi[:, sl]) - Yj[t]  # (b, K, f): y_i - y_j
                s = torch.bmm(D, x[:, :, None])[..., 0] + gap[:, sl]  # (b, K) score gaps
                z = torch.sigmoid(-s) * valid[:, sl]
                grad = torch.bmm(z[:, None, :], D)[:, 0]  # (b, f)
                x = x * (1 - lr * reg) + (lr / K) * grad
            out[:, :-1].index_copy_(0, _ix(rows, V.device), x)
        return out
