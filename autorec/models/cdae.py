"""CDAE: Collaborative Denoising Auto-Encoder (Wu, DuBois, Zheng, Ester. WSDM 2016).

    z_u = h(Wᵀ ỹ_u + V_u + b),   ŷ_u = f(W'ᵀ z_u + b')

ỹ_u is the user's binary row with each observed item dropped with probability q (and the
rest scaled by 1/(1-q)); V_u is the per-user input node. Trained on the logistic loss (BCE,
f = sigmoid) or the squared loss (f = identity) over all items, or over the observed items
plus sampled negatives. New users are scored without their user node (V_u = 0).
"""
from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from .. import _checks
from ..losses import binary_cross_entropy, l2_penalty, masked_sse
from ..train import Batch
from ._sparse_ops import SparseLinear
from .torch_base import TorchRecommender

__all__ = ["CDAE"]

_ACTIVATIONS = {"sigmoid": torch.sigmoid, "identity": lambda x: x, "tanh": torch.tanh, "relu": torch.relu}


class _CDAENetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, hidden: int, corruption: float, activation: str,
                 loss: str, negative_samples: float | None, l2: float):
        super().__init__()
        self.encoder = SparseLinear(n_items, hidden)  # weight (n_items, hidden)
        self.user_node = nn.Embedding(n_users, hidden)
        self.decoder = nn.Linear(hidden, n_items)
        for w in (self.encoder.weight, self.decoder.weight, self.user_node.weight):
            nn.init.normal_(w, std=0.01)
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.bias)
        self.corruption, self.activation = corruption, _ACTIVATIONS[activation]
        self.loss_name, self.negative_samples, self.l2 = loss, negative_samples, l2

    def forward(self, X: sp.csr_matrix, users: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Output pre-activations (logits for BCE, ratings for squared loss); (B, n_items)."""
        node = self.user_node(users.clamp(min=0)) * (~new).unsqueeze(1)  # (B, hidden), 0 for new users
        z = self.activation(self.encoder(X) + node)  # (B, hidden)
        return self.decoder(z)  # (B, n_items)

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        """Mean over the (global) batch of the row losses, plus λ/2 (shared weights' share +
        the batch's user nodes); see :class:`~autorec.train.Batch` for data parallelism."""
        X, q = batch.X, self.corruption
        if q > 0:  # drop observed entries with probability q, rescale the rest
            keep = batch.uniform_entries().numpy() >= q  # (nnz,)
            X = sp.csr_matrix((X.data * keep / (1 - q), X.indices, X.indptr), shape=X.shape)
        users = batch.rows.to(batch.device)
        out = self.forward(X, users, torch.zeros(len(users), dtype=torch.bool, device=batch.device))
        y = (batch.dense() > 0).float()  # (B, n_items) clean targets
        weight = None
        if self.negative_samples is not None:
            n_pos = y.sum(dim=1, keepdim=True)  # (B, 1)
            rate = (self.negative_samples * n_pos / (y.shape[1] - n_pos).clamp(min=1)).clamp(max=1.0)
            sampled = batch.uniform_rows(y.shape[1]).to(y.device) < rate  # (B, n_items)
            weight = (sampled | (y > 0)).float()
        if self.loss_name == "bce":
            data = binary_cross_entropy(out, y, weight, n_rows=batch.n_global)
        else:
            data = masked_sse(out, y, weight if weight is not None else torch.ones_like(y)) / batch.n_global
        shared = l2_penalty(self.encoder.weight, self.decoder.weight) / batch.n_rows * batch.share
        own = l2_penalty(self.user_node(users)) / batch.n_global
        return data + 0.5 * self.l2 * (shared + own)


class CDAE(TorchRecommender):
    """Collaborative Denoising Auto-Encoder for top-N recommendation (Wu et al. 2016).

    Parameters
    ----------
    hidden : int
        Code size K (50 in the paper).
    corruption : float
        Dropout probability q of the input entries (0.2).
    activation : {"sigmoid", "identity", "tanh", "relu"}
        Hidden activation h.
    loss : {"bce", "squared"}
        Logistic loss with sigmoid output, or squared loss with identity output.
    negative_samples : float or None
        Sampled negatives per observed item in the loss; None uses every item.
    l2 : float
        λ of the L2 term λ/2 ||θ||².
    epochs, batch_size, lr, weight_decay, seed, device, patience, valid_metric, valid_size, progress
        Training, as for every torch model (Adam).
    """

    _param_rules = {
        "corruption": _checks.probability, "activation": _checks.one_of(*_ACTIVATIONS),
        "loss": _checks.one_of("bce", "squared"), "negative_samples": _checks.optional(_checks.positive),
    }

    def __init__(self, hidden=50, corruption=0.2, activation="sigmoid", loss="bce", negative_samples=None,
                 l2=0.01, epochs=100, batch_size=256, lr=1e-2, weight_decay=0.0, patience=None,
                 valid_metric="auto", valid_size=0.0, seed=0, device="auto", progress=True):
        self.hidden = hidden
        self.corruption = corruption
        self.activation = activation
        self.loss = loss
        self.negative_samples = negative_samples
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.valid_metric = valid_metric
        self.valid_size = valid_size
        self.seed = seed
        self.device = device
        self.progress = progress

    def _build_network(self) -> nn.Module:
        return _CDAENetwork(self.n_users_, self.n_items_, self.hidden, self.corruption, self.activation,
                            self.loss, self.negative_samples, self.l2)

    def score(self, users, X) -> torch.Tensor:
        """Output scores from the history rows; known users add their user node. (B, n_items)."""
        users, X = self._check_users_X(users, X)
        new = torch.from_numpy(self._is_new(users)).to(self.device_)
        with torch.no_grad():
            return self.network_(X, torch.from_numpy(users).to(self.device_), new)
