"""BPR: Bayesian personalised ranking matrix factorization (Rendle et al. 2009) over ``implicit``."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..data import RatingMatrix
from ._implicit_base import _FOLD_BUDGET, _ImplicitMF, _ix, _length_chunks, _padded_rows, _rows

__all__ = ["BPR"]


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
        X = train.X.copy()
        X.data = (X.data > 0).astype(np.float32)
        X.eliminate_zeros()
        kw = dict(factors=int(self.factors), learning_rate=float(self.learning_rate),
                  regularization=float(self.regularization), iterations=int(self.iterations),
                  random_state=self.seed)
        if self._device == "cpu":
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
