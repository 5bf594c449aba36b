"""Kernelised I-AutoRec: AutoRec whose weight matrices are gated by a learned kernel.

"Kernelized synaptic weight matrices" (Muller, Martel, Indiveri, ICML 2018), the local
kernel of GLocal-K (Han, Kang, Cho, Park, CIKM 2021): every layer's weight is the
element-wise product of a free weight and a kernel of learned positions of its units::

    W_eff[i, j] = W[i, j] * K(u_i, v_j),      K(u, v) = max(0, 1 - ||u - v||^2)

with ``u_i`` (``kernel_dim`` numbers) per input unit and ``v_j`` per output unit. Units
that drift apart switch their connection off: the learned sparsity of "sparse FC". The
loss is AutoRec's observed SSE plus ``l2/2 (sum ||W||^2)`` on the free weights and
``lambda_s/2 (sum ||K||^2)`` on the kernels (GLocal-K's regularisers; their SSE is halved,
so their lambda_2 = 20 / 70 and lambda_s = 0.006 read as ``l2`` = 40 / 140 and
``lambda_s`` = 0.012 here). The positions start near 0 (normal, std 1e-3), so training
starts from the dense network.

The network is :class:`~autorec.models.autorec.AutoRecNet` with the encoder ``V`` and
decoder ``W`` replaced by their kernelised forms (the properties below), so the sparse
first layer, the decoder at the observed entries, the codes, ``predict`` / ``score`` and
save/load are AutoRec's. Each step builds the two (n, hidden) kernels densely: O(n hidden
kernel_dim) on top of AutoRec's O(nnz hidden).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from ..losses import l2_penalty, masked_sse, observed_sse
from ._sparse_ops import Pattern, sddmm, spmm
from .autorec import AutoRecNet, IAutoRec, _observed_mask

__all__ = ["KernelAutoRecNet", "KernelIAutoRec", "local_kernel"]

#: std of the initial unit positions (GLocal-K's)
POSITION_INIT_STD = 1e-3


def local_kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``max(0, 1 - ||u_i - v_j||^2)`` for positions u (n, d) and v (m, d); shape (n, m)."""
    sq = (u * u).sum(1, keepdim=True) + (v * v).sum(1)[None, :] - 2.0 * u @ v.T  # (n, m)
    return torch.clamp(1.0 - sq.clamp_min(0.0), min=0.0)


class KernelAutoRecNet(AutoRecNet):
    """AutoRecNet with kernelised weights; ``V`` / ``W`` / middle layers read through kernels.

    Parameters (besides AutoRecNet's): ``kernel_dim`` (size of each unit's position),
    ``lambda_s`` (weight of the kernels' squared norm).
    """

    def __init__(self, n: int, hidden, kernel_dim: int = 5, lambda_s: float = 0.0, **kw):
        super().__init__(n, hidden, **kw)
        self.lambda_s = float(lambda_s)
        # the free weights keep their init; V and W become properties over them
        self.V_free = self._parameters.pop("V")
        self.W_free = self._parameters.pop("W")
        sizes = [self.V_free.shape[1]] + [layer.out_features for layer in self.layers]

        def positions(m: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(m, kernel_dim) * POSITION_INIT_STD)

        self.pos_in = positions(n)  # (n, d): the rows' entries (input and output units)
        self.pos_hidden = nn.ParameterList(positions(m) for m in sizes)  # one per hidden layer
        self.pos_out = positions(n)  # (n, d)

    # the kernelised weights (what AutoRecNet's code reads)
    def kernel_matrices(self) -> list[torch.Tensor]:
        """Kernels of the encoder (n, h0), the middle layers (h_{k+1}, h_k), the decoder (n, h_-1)."""
        hid = list(self.pos_hidden)
        out = [local_kernel(self.pos_in, hid[0])]
        out += [local_kernel(hid[k + 1], hid[k]) for k in range(len(self.layers))]
        return out + [local_kernel(self.pos_out, hid[-1])]

    @property
    def V(self) -> torch.Tensor:  # (n, hidden[0])
        return self.V_free * local_kernel(self.pos_in, self.pos_hidden[0])

    @property
    def W(self) -> torch.Tensor:  # (n, hidden[-1])
        return self.W_free * local_kernel(self.pos_out, self.pos_hidden[-1])

    def deep(self, h: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            K = local_kernel(self.pos_hidden[k + 1], self.pos_hidden[k])  # (out, in)
            h = self.g(nn.functional.linear(h, layer.weight * K, layer.bias))
        return h

    def loss(self, batch, step: int) -> torch.Tensor:
        """Observed SSE + the scaled L2 of the free weights and of the kernels."""
        B = batch.X.shape[0]
        if self.route == "dense":
            Xd = batch.dense()  # (B, n)
            mask = _observed_mask(batch.X).to(Xd.device)
            sse = masked_sse(self.forward_dense(Xd), Xd, mask)
        else:
            p = Pattern(batch.X, batch.device, self.kernels)  # kernels: AutoRecNet's backend name
            h = self.deep(self.g(spmm(p, p.values, self.V) + self.mu))  # (B, hidden[-1])
            out = self.f(sddmm(p, h, self.W, "mm" if self.route == "sparse-mm" else "sampled")
                         + self.b[p.cols])  # (nnz,)
            sse = observed_sse(out, p.values)
        share = B / max(batch.n_rows, 1)
        free = l2_penalty(self.V_free, self.W_free, *self._middle_weights())
        reg = 0.5 * self.l2 * share * free
        if self.lambda_s:
            reg = reg + 0.5 * self.lambda_s * share * l2_penalty(*self.kernel_matrices())
        return sse + reg


class KernelIAutoRec(IAutoRec):
    """Item-based AutoRec with kernelised weights (sparse FC; GLocal-K's local kernel).

    Parameters
    ----------
    hidden : int or tuple of int
        Hidden layer sizes (GLocal-K: ``(500, 500)``).
    l2 : float
        lambda of ``lambda/2 sum ||W||^2`` over the free weights.
    kernel_dim : int
        Size of each unit's learned position (GLocal-K: 5).
    lambda_s : float
        Weight of ``lambda_s/2 sum ||K||^2`` over the kernels (the sparsity pressure).
    Others as :class:`~autorec.models.autorec.IAutoRec` (``implicit`` is not supported).
    """

    def __init__(self, hidden=(500, 500), l2=140.0, kernel_dim=5, lambda_s=0.012,
                 activation="sigmoid", output_activation="identity", epochs=60, batch_size=256,
                 lr=1e-3, weight_decay=0.0, default_rating=3.0, implicit=False, route="auto",
                 optimizer="adam", residual=False, patience=None, valid_metric="auto",
                 valid_size=0.0, seed=0, device="auto", progress=True):
        super().__init__(hidden, l2, activation, output_activation, epochs, batch_size, lr,
                         weight_decay, default_rating, implicit, route, optimizer, residual,
                         patience, valid_metric, valid_size, seed, device, progress)
        self.kernel_dim = kernel_dim
        self.lambda_s = lambda_s

    _param_rules = {"kernel_dim": _checks.positive_int, "lambda_s": _checks.non_negative,
                    "implicit": lambda name, v: _no_implicit(name, v)}

    def _build_network(self) -> KernelAutoRecNet:
        bias = 0.0 if self._residual_on else self.rating_mean_
        return KernelAutoRecNet(self.n_users_, self.hidden, int(self.kernel_dim), self.lambda_s,
                                activation=self.activation, output_activation=self.output_activation,
                                l2=self.l2, route=self.route_, init_bias=bias)


def _no_implicit(name: str, value) -> None:
    if value is not False:
        raise ValueError(f"{name}: KernelIAutoRec predicts ratings only; got implicit={value!r}")
