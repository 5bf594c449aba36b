"""Mult-DAE and Mult-VAE (Liang, Krishnan, Hoffman, Jebara. WWW 2018).

Both encode a user's L2-normalised click row, with dropout on the input, through tanh
layers and decode logits over all items, trained with the multinomial likelihood. Mult-VAE
adds a Gaussian bottleneck with a KL term whose weight β is annealed per minibatch step.
They share one network class; the flag ``variational`` is the only difference.

The first layer takes the sparse input (its product and gradient through sparse kernels);
the softmax over all items stays dense, as it must.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .. import _checks
from ..losses import gaussian_kl, kl_anneal, l2_penalty, multinomial_nll
from ..train import Batch
from ._sparse_ops import SparseLinear
from .torch_base import TorchRecommender

__all__ = ["MultDAE", "MultVAE"]


def _normalize_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty). Shape kept.

    scipy's product keeps each row's nonzero entries (their order inside the row reversed,
    a function of the row alone), so the dropout draws of a row, one per entry, land on the
    same entries whichever batch or rank the row is in.
    """
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())  # (B,)
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ X)


class _MultNetwork(nn.Module):
    """[I -> hidden... -> latent (-> hidden... -> I)] with tanh, Xavier init as in the paper."""

    def __init__(self, n_items: int, dims: tuple[int, ...], variational: bool, dropout_rate: float,
                 l2: float, anneal_steps: int, anneal_cap: float):
        super().__init__()
        *hidden, latent = dims
        enc = [n_items, *hidden, 2 * latent if variational else latent]
        dec = [latent, *reversed(hidden), n_items]
        # the first layer takes the sparse batch: SparseLinear, weight (n_items, d1)
        self.encoder = nn.ModuleList([SparseLinear(enc[0], enc[1])]
                                     + [nn.Linear(a, b) for a, b in zip(enc[1:-1], enc[2:])])
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))
        for layer in [*self.encoder, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)
        # Mult-DAE shares one layer between encoder and decoder when dims == (latent,)
        self.variational, self.latent = variational, latent
        self.dropout_rate, self.l2 = dropout_rate, l2
        self.anneal_steps, self.anneal_cap = anneal_steps, anneal_cap

    def encode(self, X: sp.csr_matrix, batch: Batch | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised sparse rows -> (mu, logvar) or (code, None); shapes (B, latent).

        With ``batch`` (training) the input entries get dropout drawn from its generator.
        """
        X = _normalize_rows(X)
        if batch is not None and self.dropout_rate > 0:  # input dropout, drawn from the trainer
            keep = batch.uniform_entries().numpy() >= self.dropout_rate  # (nnz,)
            X = sp.csr_matrix((X.data * keep / (1 - self.dropout_rate), X.indices, X.indptr), shape=X.shape)
        h = self.encoder[0](X)  # (B, d1)
        for layer in self.encoder[1:]:
            h = layer(torch.tanh(h))  # (B, d_next)
        if not self.variational:
            return h, None
        return h[:, : self.latent], h[:, self.latent:]  # (B, latent) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent) -> logits (B, n_items)."""
        h = z if self.variational else torch.tanh(z)
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = torch.tanh(h)
        return h

    def forward(self, X: sp.csr_matrix) -> torch.Tensor:
        mu, _ = self.encode(X)
        return self.decode(mu)  # (B, n_items)

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        """Multinomial NLL (+ β KL for Mult-VAE), means over the global batch, plus the L2
        term's share (see :class:`~autorec.train.Batch` for data parallelism)."""
        mu, logvar = self.encode(batch.X, batch)
        x, n = batch.X, batch.n_global  # (B, n_items) sparse clicks: the likelihood reads only their cells
        if self.variational:
            eps = batch.normal_rows(self.latent).to(mu.device)  # (B, latent)
            z = mu + eps * torch.exp(0.5 * logvar)  # (B, latent)
            beta = kl_anneal(step, self.anneal_steps, self.anneal_cap)
            return multinomial_nll(self.decode(z), x, n) + beta * gaussian_kl(mu, logvar, n)
        loss = multinomial_nll(self.decode(mu), x, n)
        if self.l2 > 0:
            weights = [layer.weight for layer in [*self.encoder, *self.decoder]]
            loss = loss + self.l2 * batch.share * l2_penalty(*weights)  # lam * sum ||W||^2 as in the paper's code
        return loss


class _MultBase(TorchRecommender):
    variational = False
    _param_rules = {"total_anneal_steps": _checks.non_negative_int, "anneal_cap": _checks.non_negative}

    def _training_rows(self, train) -> sp.csr_matrix:
        """The click rows without stored zeros (they add nothing to the likelihood, and the
        normalised rows the dropout draws are matched to have none)."""
        X = train.X
        if X.nnz and not X.data.all():
            X = X.copy()
            X.eliminate_zeros()
        return X

    def _build_network(self) -> nn.Module:
        return _MultNetwork(
            self.n_items_, tuple(self.dims), self.variational, self.dropout, self.l2,
            getattr(self, "total_anneal_steps", 0), getattr(self, "anneal_cap", 0.0),
        )

    def score(self, users, X) -> torch.Tensor:
        """Logits over all items from the history rows (every user folds in); (B, n_items)."""
        users, X = self._check_users_X(users, X)
        with torch.no_grad():
            return self.network_(X)


class MultDAE(_MultBase):
    """Mult-DAE: denoising autoencoder with multinomial likelihood (Liang et al. 2018).

    Parameters
    ----------
    dims : tuple of int
        Hidden sizes down to the code; the paper's [I-200-I] is ``(200,)``.
    dropout : float
        Input dropout rate (0.5).
    l2 : float
        Weight of ``sum ||W||^2`` (0.01 in the authors' code).
    epochs, batch_size, lr, weight_decay, seed, device
        Adam training (200 epochs, batches of 500 users, lr 1e-3).
    patience : int or None
        Early stopping on the validation metric; the best epoch is restored either way.
    valid_metric : str
        "auto" = NDCG@100.
    valid_size : float
        Share of each user's items carved out for validation when ``fit`` gets no
        ``valid`` (seeded; 0 = off); see :class:`~autorec.models.torch_base.TorchRecommender`.
    progress : bool
    """

    def __init__(self, dims=(200,), dropout=0.5, l2=0.01, epochs=200, batch_size=500, lr=1e-3,
                 weight_decay=0.0, patience=None, valid_metric="auto", valid_size=0.0, seed=0, device="auto", progress=True):
        self.dims = dims
        self.dropout = dropout
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


class MultVAE(_MultBase):
    """Mult-VAE^PR: variational autoencoder with multinomial likelihood (Liang et al. 2018).

    Parameters
    ----------
    dims : tuple of int
        Encoder sizes down to the latent; the paper's [I-600-200-600-I] is ``(600, 200)``.
    dropout : float
        Input dropout rate (0.5).
    total_anneal_steps, anneal_cap : int, float
        β = min(anneal_cap, step / total_anneal_steps) per minibatch step (200,000 and 0.2).
    l2 : float
        Weight of ``sum ||W||^2`` (0: the paper relies on the KL term and dropout).
    epochs, batch_size, lr, weight_decay, seed, device
        Adam training (200 epochs, batches of 500 users, lr 1e-3).
    patience, valid_metric, valid_size, progress
        As in :class:`MultDAE`.
    """

    variational = True

    def __init__(self, dims=(600, 200), dropout=0.5, total_anneal_steps=200_000, anneal_cap=0.2, l2=0.0,
                 epochs=200, batch_size=500, lr=1e-3, weight_decay=0.0, patience=None,
                 valid_metric="auto", valid_size=0.0, seed=0, device="auto", progress=True):
        self.dims = dims
        self.dropout = dropout
        self.total_anneal_steps = total_anneal_steps
        self.anneal_cap = anneal_cap
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
