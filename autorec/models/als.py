"""ALS: implicit-feedback matrix factorization (Hu, Koren & Volinsky 2008) over ``implicit``."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from ..data import RatingMatrix
from ._implicit_base import _FOLD_BUDGET, _ImplicitMF, _ix, _length_chunks, _padded_rows, _rows

__all__ = ["ALS"]


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
        if train.X.data.min() < 0:
            raise ValueError("ALS needs non-negative ratings (confidence 1 + alpha·r)")
        kw = dict(factors=int(self.factors), regularization=float(self.regularization), alpha=1.0,
                  iterations=int(self.iterations), random_state=self.seed)
        with threadpool_limits(1, "blas"):  # also silences implicit's BLAS warning
            if self._device == "cpu":
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
