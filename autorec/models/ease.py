"""EASE: Steck (2019), "Embarrassingly Shallow Autoencoders for Sparse Data".

A closed-form item-item model, so it scores any user from a history row.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import lapack

from ..data import RatingMatrix
from .. import _checks
from .._validate import tensor
from .base import BaseRecommender, _state_keys

__all__ = ["EASE"]


class EASE(BaseRecommender):
    """EASE^R (Steck 2019): item-item weights with a zero diagonal, in closed form.

    ``B = I - P diag(1/diag(P))`` with ``P = (XᵀX + l2·I)⁻¹``, so ``B_ij = -P_ij / P_jj``
    and ``B_jj = 0``; ``score = X_history @ B``. Users need no training row: a new user is
    scored from the history row alone, exactly like a known one.

    The inverse is taken in float64 (Cholesky, in place: one ``n_items²`` float64 buffer at
    the peak) and ``B`` is stored in float32 (``4·n_items²`` bytes, also in saved files).
    ``X`` is used as given: for the Mult-VAE protocol pass binarized data
    (``R.binarize(4)``), as in the paper.

    Parameters
    ----------
    l2 : float
        L2 penalty λ on the weights (the paper uses 500 on ML-20M; > 0).
    """

    _param_rules = {"l2": _checks.positive}

    def __init__(self, l2: float = 500.0):
        self.l2 = l2

    def fit(self, train: RatingMatrix, valid=None) -> EASE:
        self._init_fit(train)
        if not np.isfinite(self.l2) or self.l2 <= 0:
            raise ValueError(f"EASE l2 must be a positive number, got {self.l2!r}")
        X = train.X.astype(np.float64)
        G = np.ascontiguousarray((X.T @ X).toarray())  # (n_items, n_items) Gram matrix
        G[np.diag_indices_from(G)] += self.l2
        P = _spd_inverse_inplace(G)  # same buffer as G
        P /= -np.diag(P)[None, :]  # B_ij = -P_ij / P_jj (column j)
        P[np.diag_indices_from(P)] = 0.0
        self.B_ = torch.from_numpy(P.astype(np.float32))  # (n_items, n_items)
        return self

    def score(self, users, X) -> torch.Tensor:
        users, X = self._check_users_X(users, X)
        return torch.from_numpy(np.asarray(X @ self.B_.numpy(), dtype=np.float32))  # (B, n_items)

    def _get_state(self) -> dict:
        return {"B": self.B_}

    def _set_state(self, state: dict) -> None:
        _state_keys(state, ("B",))
        n = self.n_items_
        self.B_ = tensor(state["B"], "state['B']", dtype=torch.float32, shape=(n, n),
                         finite=True).contiguous()  # (n_items, n_items)


def _spd_inverse_inplace(G: np.ndarray, block: int = 1024) -> np.ndarray:
    """Inverse of a symmetric positive definite float64 matrix, overwriting ``G``.

    LAPACK ``dpotrf`` + ``dpotri`` (about half the flops of an LU inverse) on the
    Fortran view ``G.T`` of the C-ordered ``G`` (the same matrix, being symmetric), then
    the missing triangle is mirrored block by block (no second ``n²`` buffer).
    """
    n = G.shape[0]
    A = G.T  # Fortran-contiguous view of the same memory
    c, info = lapack.dpotrf(A, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info={info}); increase l2")
    inv, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info={info}); increase l2")
    # inv (Fortran order) is valid on and above its diagonal: mirror it below
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        inv[i1:, i0:i1] = inv[i0:i1, i1:].T
        d = inv[i0:i1, i0:i1]
        d[np.tril_indices(i1 - i0, -1)] = d.T[np.tril_indices(i1 - i0, -1)]
    if not np.shares_memory(inv, G):  # LAPACK wrapper made a copy (unexpected layout)
        G[...] = inv
        return G
    return np.ascontiguousarray(inv.T) if not inv.T.flags.c_contiguous else inv.T
