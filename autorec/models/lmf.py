"""LMF: logistic matrix factorization (Johnson 2014), fitted by ``implicit``, scored by autorec.

Same plumbing as ALS/BPR (:mod:`autorec.models._implicit_base`): ``implicit`` fits the factors, autorec
keeps them as tensors. Users unseen in training are folded in by maximising the
expectation of the per-user objective that ``implicit``'s sampled updates climb
(see :class:`LMF`), with a fixed-curvature Newton (Böhning bound) iteration.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .._validate import Invalid, tensor
from ._implicit_base import _FOLD_BUDGET, _ImplicitMF, _ix, _length_chunks, _padded_rows, _rows
from ..data import RatingMatrix

__all__ = ["LMF"]


class LMF(_ImplicitMF):
    """Logistic Matrix Factorization (Johnson 2014), fitted by ``implicit``.

    ``p(u likes i) = σ(x_u · y_i + b_i + b_u)``. Stored entries of the training matrix
    are positives with confidence ``c_ui`` = their value (1 on binarized data, the usual
    input); ``implicit`` trains with per-user/per-item Adagrad, drawing negatives from the
    training entries, i.e. item ``j`` with probability ``π_j`` = its share of the entries.
    The tensors keep ``implicit``'s layout (``factors + 2`` columns): user factors
    ``[x_u, 1, b_u]``, item factors ``[y_i, b_i, 1]``; scores are
    ``user_factors @ item_factors.T``.

    **Fold-in of new users.** Item factors fixed, ``z = [x, b_u]`` maximises the
    expectation over the negative draws of the objective ``implicit``'s user update
    climbs::

        Σ_{i∈hist} c_i [s_i − log(1 + e^{s_i})] − m Σ_j π_j log(1 + e^{s_j})
            − regularization/2 · ‖z‖²,      s_j = x·y_j + b_j + b_u,

    with ``m = min(factors + 2, n_u·neg_prop)`` negatives per epoch (``implicit`` caps
    them at its factor-matrix width; like it, the "negatives" may be the user's own items).
    It is concave; since ``σ(1 − σ) ≤ 1/4`` its Hessian is bounded below by ``−H``,
    ``H = ¼(Σ c_i ỹ_i ỹ_iᵀ + m Σ_j π_j ỹ_j ỹ_jᵀ) + regularization·I`` (``ỹ = [y, 1]``),
    so from ``z = 0`` the steps ``z ← z + ω H⁻¹∇`` (one Cholesky of ``H`` per user) raise
    it by at least ``ω(1 − ω/2)·∇ᵀH⁻¹∇`` each: a majorize-minimize Newton iteration,
    over-relaxed with ``ω = FOLD_RELAX = 1.8`` (< 2 keeps the guarantee; about twice as
    fast as ω = 1 on ML-100K). A user stops once a step is below ``FOLD_TOL·(1 + ‖z‖)``,
    or after ``FOLD_STEPS`` steps, so their vector depends only on their history. On
    ML-100K the gradient then is ~1e-6 of its value at 0 (30 or 64 factors; 128 factors
    reach ~3e-4 in 200 steps). An empty history gives ``z = 0`` (scores = item biases, as
    ``implicit`` leaves users without training entries).

    Parameters
    ----------
    factors, learning_rate, regularization, iterations, neg_prop : as in ``implicit``
        (its defaults).
    seed : int
        ``implicit``'s ``random_state``.
    device : {"cpu", "cuda"}
        Where the factors live for scoring and fold-in. ``implicit`` has no GPU LMF:
        the fit always runs on the CPU, then the factors are moved.
    num_threads : int
        Threads of ``implicit``'s fit. Default 1: its multi-threaded updates are
        lock-free, so with more threads fits are faster but not bit-reproducible.
    """

    FOLD_STEPS = 200
    FOLD_TOL = 1e-6
    FOLD_RELAX = 1.8
    _extra_columns = 2
    _constant_user_columns = (-2,)

    def __init__(self, factors: int = 30, learning_rate: float = 1.0, regularization: float = 0.6,
                 iterations: int = 30, neg_prop: int = 30, seed: int = 0, device: str = "cpu",
                 num_threads: int = 1):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.neg_prop = neg_prop
        self.seed = seed
        self.device = device
        self.num_threads = num_threads

    def _check_params(self) -> None:
        super()._check_params()
        if self._device != "cpu" and not torch.cuda.is_available():
            raise RuntimeError(f"device={self.device!r} but torch sees no CUDA device")

    def fit(self, train: RatingMatrix, valid=None) -> LMF:
        self._init_fit(train)
        X = _confidences(train.X)
        from implicit.cpu.lmf import LogisticMatrixFactorization

        model = LogisticMatrixFactorization(
            factors=int(self.factors), learning_rate=float(self.learning_rate),
            regularization=float(self.regularization), iterations=int(self.iterations),
            neg_prop=int(self.neg_prop), random_state=self.seed, num_threads=int(self.num_threads))
        model = self._fit_implicit(model, X)
        self.item_popularity_ = _popularity(X)  # before _set_factors: _prepare reads it
        self._set_factors(model.user_factors, model.item_factors)
        return self

    @classmethod
    def from_factors(cls, user_factors, item_factors, users=None, items=None,
                     known_users=None, item_counts=None, **params):
        """A fitted model from factor matrices in ``implicit``'s LMF layout.

        Parameters
        ----------
        user_factors : array-like, shape (n_users, factors + 2)
            ``[x_u, 1, b_u]`` per row, e.g. ``implicit``'s ``model.user_factors``.
        item_factors : array-like, shape (n_items, factors + 2)
            ``[y_i, b_i, 1]`` per row.
        users, items, **params
            As in ``ALS.from_factors``.
        known_users : bool array, shape (n_users,), optional
            Default: users whose ``x_u`` or ``b_u`` is non-zero (``implicit`` leaves users
            without training entries at ``[0, 1, 0]``).
        item_counts : array-like, shape (n_items,), optional
            Training entries per item (the popularity negatives were drawn from); needed
            to fold in users, which raises without it.
        """
        model = super().from_factors(user_factors, item_factors, users, items, known_users, **params)
        if item_counts is not None:
            counts = np.asarray(item_counts, dtype=np.float64).reshape(-1)  # (n_items,)
            if counts.shape != (model.n_items_,) or counts.min() < 0 or counts.sum() <= 0:
                raise ValueError(f"item_counts must be {model.n_items_} non-negative counts, not all 0")
            model.item_popularity_ = torch.from_numpy(counts / counts.sum())
            model._prepare()
        return model

    def _prepare(self) -> None:
        V = self.item_factors_.double()  # (n_items, f + 2): [y, b_i, 1]
        self._y1 = torch.cat([V[:, :-2], V[:, -1:]], dim=1)  # (n_items, f + 1): [y, 1]
        self._item_bias = V[:, -2]  # (n_items,)
        pop = getattr(self, "item_popularity_", None)
        if pop is not None:
            self._pop = pop.to(V.device, torch.float64)  # (n_items,)
            self._G = (self._y1 * self._pop[:, None]).T @ self._y1  # (f + 1, f + 1): Σ π ỹỹᵀ

    def _get_state(self) -> dict:
        state = super()._get_state()
        pop = getattr(self, "item_popularity_", None)
        state["item_popularity"] = None if pop is None else pop.cpu()
        return state

    _extra_state_keys = ("item_popularity",)

    def _set_state(self, state: dict) -> None:
        pop = state.get("item_popularity") if isinstance(state, dict) else None
        if pop is not None:
            pop = tensor(pop, "state['item_popularity']", dtype=torch.float64,
                         shape=(self.n_items_,), finite=True)  # (n_items,) shares
            if bool((pop < 0).any()):
                raise Invalid("state['item_popularity'] holds negative shares")
            self.item_popularity_ = pop
        super()._set_state(state)

    def fold_in(self, X) -> torch.Tensor:
        """LMF user factors ``[x, 1, b_u]`` for history rows ``X`` (B, n_items); (B, f + 2) float32."""
        if not hasattr(self, "_G"):
            raise ValueError("LMF fold-in needs the items' training popularity: fit the model, "
                             "or pass item_counts to LMF.from_factors")
        X = _confidences(X)
        Y1, item_bias, pop = self._y1, self._item_bias, self._pop  # (n, f + 1), (n,), (n,)
        dev = Y1.device
        n, f1 = Y1.shape
        reg = float(self.regularization)
        eye = torch.eye(f1, dtype=torch.float64, device=dev)
        out = torch.zeros((X.shape[0], f1 + 1), dtype=torch.float64, device=dev)  # (B, f + 2)
        out[:, -2] = 1.0
        lengths = np.diff(X.indptr)
        n_neg = np.minimum(f1 + 1, lengths * int(self.neg_prop))  # (B,) m: implicit's cap
        max_rows = max(1, _FOLD_BUDGET // (8 * max(4 * n, 3 * f1 * f1)))
        for rows in _length_chunks(lengths, per_entry_bytes=8 * (f1 + 2), max_rows=max_rows):
            rows = rows[lengths[rows] > 0]  # empty histories keep z = 0
            if len(rows) == 0:
                continue
            cols, conf = _padded_rows(X, rows, int(lengths[rows].max()))  # (b, L); pad: c = 0
            cols, conf = cols.to(dev), conf.to(dev)
            Yg = _rows(Y1, cols)  # (b, L, f + 1)
            m = torch.as_tensor(n_neg[rows], dtype=torch.float64, device=dev)  # (b,)
            H = 0.25 * (torch.bmm((Yg * conf[..., None]).transpose(1, 2), Yg)
                        + m[:, None, None] * self._G) + reg * eye  # (b, f + 1, f + 1)
            del Yg
            chol = _cholesky_jittered(H)
            z = _mm_newton(chol, cols, conf, m[:, None] * pop, Y1, item_bias, reg,
                           self.FOLD_STEPS, self.FOLD_TOL, self.FOLD_RELAX)  # (b, f + 1)
            ones = torch.ones_like(z[:, :1])  # (b, 1)
            out.index_copy_(0, _ix(rows, dev), torch.cat([z[:, :-1], ones, z[:, -1:]], 1))  # [x, 1, b_u]
        return out.float()


def _mm_newton(chol, cols, conf, neg_weight, Y1, item_bias, reg, steps, tol, relax) -> torch.Tensor:
    """Fixed-curvature Newton ascent ``z ← z + relax·H⁻¹∇`` from 0 for a chunk of users.

    ``chol`` (b, f+1, f+1) Cholesky factors of ``H``; ``cols``/``conf`` (b, L) the padded
    histories; ``neg_weight`` (b, n) ``m·π``. A user stops when its step is below
    ``tol·(1 + ‖z‖)``; the chunk stops when all have.
    """
    b, f1 = chol.shape[0], chol.shape[1]
    z = torch.zeros((b, f1), dtype=torch.float64, device=Y1.device)  # (b, f + 1)
    active = torch.ones(b, dtype=torch.bool, device=Y1.device)  # (b,)
    for _ in range(steps):
        S = torch.addmm(item_bias, z, Y1.T)  # (b, n) scores
        W = neg_weight * torch.sigmoid(S)  # (b, n)
        W.neg_()
        W.scatter_add_(1, cols, conf * torch.sigmoid(-S.gather(1, cols)))  # + c_i (1 − σ(s_i))
        grad = W @ Y1 - reg * z  # (b, f + 1)
        step = torch.cholesky_solve(grad[..., None], chol)[..., 0]  # (b, f + 1)
        step.mul_(active[:, None])  # finished users stay put
        z.add_(step, alpha=relax)
        active &= step.norm(dim=1) > tol * (1 + z.norm(dim=1))
        if not active.any():
            break
    return z


def _cholesky_jittered(H: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of SPD ``H`` (b, k, k); a semidefinite one (regularization 0,
    few items) gets a tiny ridge, which keeps ``H`` an upper bound of the curvature."""
    chol, info = torch.linalg.cholesky_ex(H)
    if int(info.max()) > 0:
        scale = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp(min=1.0)  # (b,)
        eye = torch.eye(H.shape[1], dtype=H.dtype, device=H.device)
        chol = torch.linalg.cholesky(H + 1e-9 * scale[:, None, None] * eye)
    return chol


def _confidences(X) -> sp.csr_matrix:
    """``X`` as float32 CSR without stored zeros; negative values are refused."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.eliminate_zeros()
    if X.nnz and X.data.min() < 0:
        raise ValueError("LMF needs non-negative values (the confidence c_ui of each entry)")
    return X


def _popularity(X: sp.csr_matrix) -> torch.Tensor:
    """Each item's share of the stored entries (implicit's negative-sampling law); (n_items,)."""
    counts = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
    return torch.from_numpy(counts / counts.sum())
