"""Sparse products for AutoRec training, as ``torch.autograd.Function`` s.

AutoRec's loss looks at the observed entries only, so one training step needs three
products whose cost scales with the number of observed ratings ``nnz`` of the batch, not
with ``rows x cols`` (``S`` is a (B, N) sparse matrix on the batch's observed pattern):

- ``spmm``    ``S @ D``    (B, N) x (N, k): the encoder ``X V``, and ``grad_h = S_grad W``;
- ``spmm_t``  ``S.T @ D``  (N, B) x (B, k): ``grad_V = X.T grad_z``, ``grad_W = S_grad.T h``;
- ``sddmm``   ``A[r_n] . D[c_n]`` for every observed (r_n, c_n): the decoder's outputs at the
  observed entries (a sampled dense-dense product).

:class:`SpMM` and :class:`SDDMM` wire them together: the backward of one is made of the
others, so no dense (B, N) array appears in the sparse routes.

Kernels (measured on this project's 2-core CPU, ML-1M batches, hidden 500; see
``benchmarks/results/autorec_speed.md``):

- CPU: scipy's C++ loops, run over the batch's entries in *column-major* (CSC) order. In
  that order each row of the (N, k) weight matrix is read once per batch while the (B, k)
  activations stay in cache: 2-3x faster than the row-major (CSR) loops. scipy releases
  the GIL, so a product is split into ``torch.get_num_threads()`` column ranges of equal
  nnz run on a thread pool. The SDDMM is ``torch.sparse.sampled_addmm`` (one vectorised
  dot per entry, torch's threads) on the transposed pattern.
- CUDA: torch sparse CSR tensors (cuSPARSE SpMM and SDDMM).

Entries are kept in one canonical order, column-major: entry ``n`` sits at
``(rows[n], cols[n])`` sorted by column, then row.
"""
from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["Pattern", "SpMM", "SDDMM", "spmm", "sddmm", "pair_dots", "SDDMM_METHODS"]

#: ways to compute the SDDMM forward: "sampled" (one dot per observed entry) or "mm" (the
#: dense product ``A @ D.T`` then a gather: O(B N k) work, kept for dense batches)
SDDMM_METHODS = ("sampled", "mm")
#: products with fewer stored entries run on one thread (splitting costs ~0.1 ms)
PARALLEL_MIN_NNZ = 20_000

try:  # Y += A @ X in place, the loop behind scipy's CSR @ dense (GIL released)
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a future scipy may move it; the public path remains
    _csr_matvecs = None

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < n:
            _pool = ThreadPoolExecutor(n, thread_name_prefix="autorec-spmm")
        return _pool


def _csr_tensor(indptr, indices, values, shape, device) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(indptr, indices, values, size=shape, device=device)


class Pattern:
    """The observed entries of a (B, N) batch, and the products over them.

    Parameters
    ----------
    X : scipy.sparse matrix, shape (B, N)
        The batch; every stored entry is observed (stored zeros too).
    device : torch.device or str
    backend : {"auto", "scipy", "torch"}
        ``"auto"``: scipy on CPU, torch sparse tensors (cuSPARSE) on CUDA. ``"torch"`` on
        CPU runs the CUDA code path on CPU (used by the tests).

    Attributes
    ----------
    shape : (int, int)
    nnz : int
    rows, cols : torch.Tensor of int64, shape (nnz,), on ``device``
        Position of each entry, column-major order.
    values : torch.Tensor of float32, shape (nnz,), on ``device``
        The stored values in that order (the ratings).
    density : float
    """

    def __init__(self, X, device="cpu", backend: str = "auto"):
        X = sp.csr_matrix(X)
        self.shape = B, N = X.shape
        self.device = torch.device(device)
        if backend == "auto":
            backend = "scipy" if self.device.type == "cpu" else "torch"
        if backend not in ("scipy", "torch"):
            raise ValueError(f"backend must be 'auto', 'scipy' or 'torch', got {backend!r}")
        if backend == "scipy" and self.device.type != "cpu":
            raise ValueError("the scipy backend runs on CPU only")
        self.backend = backend
        # CSR of the transpose (N, B) = CSC of X: column-major entries, sorted rows
        order = sp.csr_matrix((np.arange(X.nnz, dtype=np.int64), X.indices, X.indptr), shape=X.shape)
        T = order.T.tocsr()
        T.sort_indices()
        self._perm = T.data  # (nnz,) position in X.data of each column-major entry
        self._t_indptr = T.indptr.astype(np.int64)  # (N + 1,)
        self._t_indices = T.indices.astype(np.int64)  # (nnz,) rows
        self.nnz = int(T.nnz)
        self.density = self.nnz / max(B * N, 1)
        cols = np.repeat(np.arange(N, dtype=np.int64), np.diff(self._t_indptr))
        self._values_np = np.asarray(X.data, dtype=np.float32)[self._perm]
        self.rows = torch.from_numpy(self._t_indices).to(self.device)
        self.cols = torch.from_numpy(cols).to(self.device)
        self.values = torch.from_numpy(self._values_np).to(self.device)
        self._t_indptr_t = torch.from_numpy(self._t_indptr).to(self.device)
        if backend == "torch":
            # row-major copies for S @ D; column-major for S.T @ D and the SDDMM
            self._csr_indptr = torch.from_numpy(X.indptr.astype(np.int64)).to(self.device)
            self._csr_indices = torch.from_numpy(X.indices.astype(np.int64)).to(self.device)
            inv = np.empty_like(self._perm)
            inv[self._perm] = np.arange(self.nnz)
            self._to_csr = torch.from_numpy(inv).to(self.device)  # csr values = vals[_to_csr]

    # ------------------------------------------------------------ raw products
    def _run(self, part, min_nnz: int = PARALLEL_MIN_NNZ) -> list:
        """``part(c0, c1)`` over column ranges of equal nnz, on the thread pool."""
        N = self.shape[1]
        n = torch.get_num_threads() if self.nnz >= min_nnz and N * 64 >= PARALLEL_MIN_NNZ else 1
        if n <= 1 or N < 2:
            return [part(0, N)]
        cuts = np.searchsorted(self._t_indptr, np.arange(1, n) * (self.nnz / n))
        bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, N), [N]]))
        ranges = list(zip(bounds[:-1], bounds[1:]))
        return list(_executor(n).map(lambda r: part(*r), ranges))

    def spmm(self, vals: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """``S @ D`` with ``S`` the (B, N) matrix holding ``vals`` at the pattern. D: (N, k)."""
        B, N = self.shape
        if self.backend == "scipy":
            v, Dn = _np(vals, D.dtype), _np(D)

            def part(c0, c1):  # columns c0:c1 of S times rows c0:c1 of D, (B, k)
                lo, hi = self._t_indptr[c0], self._t_indptr[c1]
                S = sp.csc_matrix((v[lo:hi], self._t_indices[lo:hi], self._t_indptr[c0:c1 + 1] - lo),
                                  shape=(B, c1 - c0))
                return S @ Dn[c0:c1]

            parts = self._run(part)
            out = parts[0]
            for other in parts[1:]:
                out += other
            return torch.from_numpy(np.ascontiguousarray(out))
        S = _csr_tensor(self._csr_indptr, self._csr_indices, vals.to(D.dtype)[self._to_csr], (B, N), D.device)
        return torch.sparse.mm(S, D.contiguous())

    def spmm_t(self, vals: torch.Tensor, D: torch.Tensor, base: torch.Tensor | None = None,
               base_scale: float = 1.0) -> torch.Tensor:
        """``base_scale * base + S.T @ D``, D: (B, k) -> (N, k), a new tensor.

        ``base`` (N, k) carries the L2 gradient of a weight matrix, so the weight-sized
        gradient is written once; each worker thread writes its own row block.
        """
        B, N = self.shape
        k = D.shape[1]
        if self.backend == "torch":
            St = _csr_tensor(self._t_indptr_t, self.rows, vals.to(D.dtype), (N, B), D.device)
            if base is None:
                return torch.sparse.mm(St, D.contiguous())
            return torch.sparse.addmm(base.detach(), St, D.contiguous(), beta=base_scale)
        out = torch.empty(N, k, dtype=D.dtype)
        v, Dn, Y = _np(vals, D.dtype), np.ascontiguousarray(_np(D)), out.numpy()
        base_np = None if base is None else np.ascontiguousarray(_np(base, D.dtype))

        def part(c0, c1):  # Y[c0:c1] = base_scale * base[c0:c1] + rows c0:c1 of S.T @ D
            if base_np is None:
                Y[c0:c1] = 0.0
            else:
                np.multiply(base_np[c0:c1], base_scale, out=Y[c0:c1])
            lo, hi = self._t_indptr[c0], self._t_indptr[c1]
            indptr = self._t_indptr[c0:c1 + 1] - lo
            if _csr_matvecs is not None:  # accumulates in place
                _csr_matvecs(c1 - c0, B, k, indptr, self._t_indices[lo:hi], v[lo:hi], Dn.ravel(), Y[c0:c1].ravel())
            else:  # public API: one more (c1 - c0, k) temporary
                Y[c0:c1] += sp.csr_matrix((v[lo:hi], self._t_indices[lo:hi], indptr), shape=(c1 - c0, B)) @ Dn

        self._run(part, min_nnz=0 if base is not None else PARALLEL_MIN_NNZ)
        return out

    def sddmm(self, A: torch.Tensor, D: torch.Tensor, method: str = "sampled") -> torch.Tensor:
        """``A[rows[n]] . D[cols[n]]`` for every entry; A: (B, k), D: (N, k) -> (nnz,)."""
        B, N = self.shape
        if method == "mm":
            return (A @ D.T).reshape(-1)[self.rows * N + self.cols]
        if method != "sampled":
            raise ValueError(f"method must be one of {SDDMM_METHODS}, got {method!r}")
        if self.nnz == 0:
            return A.new_zeros(0)
        mask = _csr_tensor(self._t_indptr_t, self.rows, A.new_ones(self.nnz), (N, B), A.device)
        # row c of the transposed pattern dots D[c] (read once) with the cached rows of A
        return torch.sparse.sampled_addmm(mask, D.contiguous(), A.contiguous().T, beta=0.0).values()


def _np(t: torch.Tensor, dtype=None) -> np.ndarray:
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    return t.cpu().numpy()


class SpMM(torch.autograd.Function):
    """``out = S @ D`` with ``S`` holding ``vals`` at the pattern; differentiable in both.

    Backward: ``grad_D = S.T @ grad_out`` (spmm_t) and ``grad_vals = sddmm(grad_out, D)``.
    With ``sq_norm=True`` it also returns ``||D||_F^2``, whose gradient ``2 D`` is folded
    into ``grad_D`` (one weight-sized write instead of three).
    """

    @staticmethod
    def forward(ctx, vals, D, pattern, sq_norm=False):
        ctx.pattern = pattern
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(vals, D)
        out = pattern.spmm(vals, D)
        return (out, _sq_norm(D)) if sq_norm else out

    @staticmethod
    def backward(ctx, grad_out, grad_sq=None):
        vals, D = ctx.saved_tensors
        p = ctx.pattern
        grad_vals = grad_D = None
        if ctx.needs_input_grad[0] and grad_out is not None:
            grad_vals = p.sddmm(grad_out, D)
        if ctx.needs_input_grad[1]:
            grad_D = _weight_grad(p, vals, grad_out, D, grad_sq)
        return grad_vals, grad_D, None, None


class SDDMM(torch.autograd.Function):
    """``out[n] = A[rows[n]] . D[cols[n]]``: the decoder at the observed entries only.

    Backward, with ``S`` the sparse matrix of ``grad_out`` at the pattern:
    ``grad_A = S @ D`` (spmm) and ``grad_D = S.T @ A`` (spmm_t); unobserved entries get
    no gradient because they are never formed. ``sq_norm=True`` as in :class:`SpMM`.
    """

    @staticmethod
    def forward(ctx, A, D, pattern, method="sampled", sq_norm=False):
        ctx.pattern = pattern
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(A, D)
        out = pattern.sddmm(A, D, method)
        return (out, _sq_norm(D)) if sq_norm else out

    @staticmethod
    def backward(ctx, grad_out, grad_sq=None):
        A, D = ctx.saved_tensors
        p = ctx.pattern
        grad_A = grad_D = None
        if ctx.needs_input_grad[0] and grad_out is not None:
            grad_A = p.spmm(grad_out, D)
        if ctx.needs_input_grad[1]:
            grad_D = _weight_grad(p, grad_out, A, D, grad_sq)
        return grad_A, grad_D, None, None, None


def _sq_norm(D: torch.Tensor) -> torch.Tensor:
    flat = D.reshape(-1)
    return torch.dot(flat, flat)


def _weight_grad(p: Pattern, s_vals, dense, D, grad_sq):
    """``2 grad_sq D + S.T @ dense`` with ``S`` holding ``s_vals``; either term may be absent."""
    if s_vals is None or dense is None:
        return None if grad_sq is None else D.detach() * (2.0 * grad_sq)
    if grad_sq is None:
        return p.spmm_t(s_vals, dense)
    return p.spmm_t(s_vals, dense, base=D, base_scale=2.0 * float(grad_sq))


def spmm(pattern: Pattern, vals: torch.Tensor, D: torch.Tensor, sq_norm: bool = False):
    """Differentiable ``S @ D`` (and ``||D||^2`` with ``sq_norm``); see :class:`SpMM`."""
    return SpMM.apply(vals, D, pattern, sq_norm)


def sddmm(pattern: Pattern, A: torch.Tensor, D: torch.Tensor, method: str = "sampled", sq_norm: bool = False):
    """Differentiable sampled product (and ``||D||^2``); see :class:`SDDMM`."""
    return SDDMM.apply(A, D, pattern, method, sq_norm)


def pair_dots(A: torch.Tensor, D: torch.Tensor, ia: np.ndarray, id_: np.ndarray,
              chunk: int = 1 << 20) -> torch.Tensor:
    """``A[ia[n]] . D[id_[n]]`` for arbitrary (possibly repeated) pairs, no gradient.

    The pairs are sorted into a CSR pattern over A's rows and computed by the sampled
    kernel, ``chunk`` pairs at a time; the result follows the input order. Shape (n,).
    """
    ia = np.asarray(ia, dtype=np.int64)
    id_ = np.asarray(id_, dtype=np.int64)
    out = torch.empty(len(ia), dtype=A.dtype, device=A.device)
    Dt = D.contiguous().T
    for lo in range(0, len(ia), chunk):
        a, d = ia[lo:lo + chunk], id_[lo:lo + chunk]
        order = np.lexsort((d, a))  # by row of A, then row of D
        indptr = np.zeros(A.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(a, minlength=A.shape[0]), out=indptr[1:])
        mask = _csr_tensor(torch.from_numpy(indptr).to(A.device), torch.from_numpy(d[order]).to(A.device),
                           A.new_ones(len(a)), (A.shape[0], D.shape[0]), A.device)
        vals = torch.sparse.sampled_addmm(mask, A.contiguous(), Dt, beta=0.0).values()
        out[lo + torch.from_numpy(order).to(A.device)] = vals
    return out
