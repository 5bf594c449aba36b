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

Kernels (measured on this project's 2-core CPU, ML-1M batches of 256 rows, hidden 500; see
``benchmarks/results/autorec_speed.md``):

- ``spmm``/``spmm_t``: ``torch.nn.functional.embedding_bag(mode="sum",
  per_sample_weights=...)`` -- a sparse-times-dense product in CSR form (each output row is
  a weighted sum of rows of the dense table), fbgemm-vectorised and multi-threaded on CPU,
  a CUDA kernel on GPU. 2-4x faster than scipy's CSR @ dense (2.0 vs 9.0 ms for ``S.T @ D``,
  3.5 vs 8.7 ms for ``S @ D``), itself 5-10x faster than torch's sparse CSR/COO matmul.
  ``backend="scipy"`` keeps scipy's loops for comparison.
- ``sddmm``: ``torch.sparse.sampled_addmm`` (one vectorised dot per entry; cuSPARSE SDDMM
  on GPU) on the transposed pattern, or ``method="mm"``: the dense product then a gather.

Entries are kept in column-major order: entry ``n`` sits at ``(rows[n], cols[n])`` sorted
by column, then row (``S.T @ D`` runs in that order, ``S @ D`` through a permutation).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Pattern", "SpMM", "SDDMM", "spmm", "sddmm", "pair_dots", "sparse_dense_matmul",
           "SparseLinear", "SDDMM_METHODS", "BACKENDS"]

#: ways to compute the SDDMM forward: "sampled" (one dot per observed entry) or "mm" (the
#: dense product ``A @ D.T`` then a gather: O(B N k) work, kept for dense batches)
SDDMM_METHODS = ("sampled", "mm")
#: kernels of the sparse x dense products: "bag" (embedding_bag, CPU and CUDA), "scipy" (CPU)
BACKENDS = ("bag", "scipy")


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
    backend : {"bag", "scipy"}
        Kernel of ``spmm``/``spmm_t`` (see the module notes); "scipy" runs on CPU only.

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

    def __init__(self, X, device="cpu", backend: str = "bag"):
        X = sp.csr_matrix(X)
        self.shape = B, N = X.shape
        self.device = torch.device(device)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "scipy" and self.device.type != "cpu":
            raise ValueError("the scipy backend runs on CPU only")
        self.backend = backend
        # CSR of the transpose (N, B) = CSC of X: column-major entries, sorted rows
        order = sp.csr_matrix((np.arange(X.nnz, dtype=np.int64), X.indices, X.indptr), shape=X.shape)
        T = order.T.tocsr()
        T.sort_indices()
        perm = T.data  # (nnz,) position in X.data of each column-major entry
        to_csr = np.empty_like(perm)
        to_csr[perm] = np.arange(len(perm))  # column-major position of each CSR entry
        self.nnz = int(T.nnz)
        self.density = self.nnz / max(B * N, 1)
        self._t_indptr = T.indptr.astype(np.int64)  # (N + 1,)
        self._t_indices = T.indices.astype(np.int64)  # (nnz,) rows
        self._csr_indptr = X.indptr.astype(np.int64)  # (B + 1,)
        self._csr_indices = X.indices.astype(np.int64)  # (nnz,) cols, row-major
        cols = np.repeat(np.arange(N, dtype=np.int64), np.diff(self._t_indptr))

        def dev(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self.rows, self.cols = dev(self._t_indices), dev(cols)
        self.values = dev(np.asarray(X.data, dtype=np.float32)[perm])
        self._t_indptr_t, self._t_offsets = dev(self._t_indptr), dev(self._t_indptr[:-1])
        self._csr_cols, self._csr_offsets = dev(self._csr_indices), dev(self._csr_indptr[:-1])
        self._to_csr = dev(to_csr)

    # ------------------------------------------------------------ raw products
    def spmm(self, vals: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """``S @ D`` with ``S`` the (B, N) matrix holding ``vals`` at the pattern. D: (N, k)."""
        B, N = self.shape
        if self.backend == "scipy":
            S = sp.csc_matrix((_np(vals, D.dtype), self._t_indices, self._t_indptr), shape=(B, N))
            return torch.from_numpy(np.ascontiguousarray(S @ _np(D)))
        if self.nnz == 0:
            return D.new_zeros(B, D.shape[1])
        return F.embedding_bag(self._csr_cols, D.contiguous(), self._csr_offsets, mode="sum",
                               per_sample_weights=vals.to(D.dtype)[self._to_csr])

    def spmm_t(self, vals: torch.Tensor, D: torch.Tensor, base: torch.Tensor | None = None,
               base_scale: float = 1.0) -> torch.Tensor:
        """``base_scale * base + S.T @ D``, D: (B, k) -> (N, k), a new tensor.

        ``base`` (N, k) carries the L2 gradient of a weight matrix, so the weight's
        gradient comes out of one product.
        """
        B, N = self.shape
        if self.backend == "scipy":
            St = sp.csr_matrix((_np(vals, D.dtype), self._t_indices, self._t_indptr), shape=(N, B))
            out = torch.from_numpy(np.ascontiguousarray(St @ _np(D)))
        elif self.nnz == 0:
            out = D.new_zeros(N, D.shape[1])
        else:
            out = F.embedding_bag(self.rows, D.contiguous(), self._t_offsets, mode="sum",
                                  per_sample_weights=vals.to(D.dtype))
        if base is not None:
            out.add_(base.detach(), alpha=base_scale)
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
    """A CPU numpy view (or copy, when cast) of a tensor, for the scipy backend."""
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


def sparse_dense_matmul(X: sp.csr_matrix, W: torch.Tensor) -> torch.Tensor:
    """``X @ W`` for a scipy CSR batch ``X`` (B, N) and a dense weight ``W`` (N, d); (B, d).

    Differentiable in ``W`` (autograd's own backward of ``embedding_bag``: a scatter of the
    B x d output gradient into the rows of ``W`` that the batch touches). The first layer of
    CDAE and Mult-DAE/VAE: O(nnz d) instead of the O(B N d) of densifying the batch.
    """
    B = X.shape[0]
    if X.nnz == 0:
        return W.new_zeros(B, W.shape[1]) + 0.0 * W.sum()  # keeps the graph to W
    dev = W.device
    cols = torch.from_numpy(X.indices.astype(np.int64)).to(dev)  # (nnz,)
    offsets = torch.from_numpy(X.indptr[:-1].astype(np.int64)).to(dev)  # (B,)
    vals = torch.from_numpy(np.asarray(X.data, dtype=np.float32)).to(dev, W.dtype)  # (nnz,)
    return F.embedding_bag(cols, W, offsets, mode="sum", per_sample_weights=vals)  # (B, d)


class SparseLinear(nn.Module):
    """``X @ weight + bias`` for a scipy CSR batch ``X`` (B, in_features); (B, out_features).

    ``weight`` is stored (in_features, out_features), contiguous, so ``embedding_bag``
    gathers whole rows: on the first layer of Mult-VAE (forward + weight gradient) that
    was 4x faster than the same product on ``nn.Linear``'s (out, in) weight seen
    transposed (11 vs 48 ms on ML-1M, 58 vs 250 ms at ML-20M size; measured before this
    class existed, noted in benchmarks/results/mult_speed.md).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, X: sp.csr_matrix) -> torch.Tensor:
        return sparse_dense_matmul(X, self.weight) + self.bias  # (B, out_features)


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
