"""BiasedMF: the biased matrix factorisation baseline of the AutoRec paper (Koren 2008).

    r̂_ui = μ + b_u + b_i + p_uᵀ q_i

trained on the observed ratings only with per-rating L2 (λ (||p_u||² + ||q_i||² + b_u² +
b_i²)) by the shared Trainer, batching users. ``factors=0`` is the bias-only floor.

The biases start from the damped means of the training ratings (Koren 2008, sec. 2.1,
by a few alternating ridge passes): Adam at the factors' learning rate moves biases by
~lr per step, too slowly to reach them in a few thousand steps (ML-1M bias-only from zero:
validation RMSE 0.927 after 80 epochs; from the damped means: 0.908 at epoch 1).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import _checks
from .._validate import plain, tensor
from ..train import Batch
from .torch_base import TorchRecommender, _rating_range

__all__ = ["BiasedMF"]


class _BiasedMFNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, l2: float, global_mean: float):
        super().__init__()
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.user_factors = nn.Parameter(torch.randn(n_users, factors) * 0.01)
        self.item_factors = nn.Parameter(torch.randn(n_items, factors) * 0.01)
        self.l2 = l2

    def predict(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Ratings for position pairs; both (n,) -> (n,)."""
        dot = (self.user_factors[user_idx] * self.item_factors[item_idx]).sum(dim=1)  # (n,)
        return self.global_mean + self.user_bias[user_idx] + self.item_bias[item_idx] + dot

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        coo = batch.X.tocoo()
        user_idx = batch.rows[torch.from_numpy(coo.row).long()].to(batch.device)  # (nnz,)
        item_idx = torch.from_numpy(coo.col).long().to(batch.device)  # (nnz,)
        target = torch.from_numpy(coo.data).to(batch.device)  # (nnz,)
        err = self.predict(user_idx, item_idx) - target  # (nnz,)
        reg = (self.user_factors[user_idx].pow(2).sum(1) + self.item_factors[item_idx].pow(2).sum(1)
               + self.user_bias[user_idx].pow(2) + self.item_bias[item_idx].pow(2))  # (nnz,)
        return (err * err + self.l2 * reg).sum() / batch.nnz_global  # mean over the global batch's ratings


class BiasedMF(TorchRecommender):
    """Biased matrix factorisation for explicit ratings (Koren, Bell, Volinsky 2009).

    Parameters
    ----------
    factors : int
        Latent dimension; 0 gives the bias-only model (μ + b_u + b_i).
    l2 : float
        Per-rating λ on factors and biases.
    epochs, batch_size, lr, weight_decay, seed, device, patience, valid_metric, valid_size, progress
        Adam on batches of ``batch_size`` users, as for every torch model. Defaults chosen
        on a validation carve of ML-1M's training ratings (valid RMSE 0.8497 at epoch 49,
        flat to 60; see benchmarks/results/biasedmf_tuning.md).

    Users or items unseen in training get μ plus whichever bias is known (no default
    rating); ``score`` folds new users in by ridge regression on the item factors.
    """

    predicts_ratings = True

    _param_rules = {"factors": _checks.non_negative_int}

    def __init__(self, factors=100, l2=0.07, epochs=50, batch_size=256, lr=1e-3, weight_decay=0.0,
                 patience=None, valid_metric="auto", valid_size=0.0, seed=0, device="auto", progress=True):
        self.factors = factors
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

    def _prepare(self, train) -> None:
        data = train.X.data
        self.global_mean_ = float(data.mean())
        self.rating_range_ = (float(data.min()), float(data.max()))
        self.known_items_ = np.bincount(train.X.indices, minlength=train.n_items) > 0
        self._bias_init = damped_biases(train.X, self.global_mean_)

    def _build_network(self) -> nn.Module:
        net = _BiasedMFNetwork(self.n_users_, self.n_items_, self.factors, self.l2, self.global_mean_)
        if getattr(self, "_bias_init", None) is not None:  # a fit (a load restores its own)
            user_bias, item_bias = self._bias_init
            with torch.no_grad():
                net.user_bias.copy_(torch.from_numpy(user_bias))
                net.item_bias.copy_(torch.from_numpy(item_bias))
        return net

    def _extra_state(self) -> dict:
        return {"global_mean": self.global_mean_, "rating_range": list(self.rating_range_),
                "known_items": torch.from_numpy(self.known_items_.copy())}

    _extra_state_keys = ("global_mean", "rating_range", "known_items")

    def _set_extra_state(self, state: dict) -> None:
        self.global_mean_ = float(plain(state["global_mean"], "state['global_mean']", "float"))
        self.rating_range_ = _rating_range(state["rating_range"])
        self.known_items_ = tensor(state["known_items"], "state['known_items']", dtype=torch.bool,
                                   shape=(self.n_items_,)).numpy().copy()

    def predict(self, user_idx, item_idx) -> np.ndarray:
        """Ratings for (user_idx, item_idx) pairs, clipped to the training range; (n,)."""
        shape, u, i = self._check_pairs(user_idx, item_idx)
        known_u = (u >= 0) & self.known_users_[np.maximum(u, 0)]  # -1: a user not in training
        known_i = self.known_items_[i]
        net = self.network_
        with torch.no_grad():
            uu = torch.from_numpy(np.maximum(u, 0)).to(self.device_)
            ii = torch.from_numpy(i).to(self.device_)
            dot = (net.user_factors[uu] * net.item_factors[ii]).sum(1).cpu().numpy()
            bu = net.user_bias[uu].cpu().numpy()
            bi = net.item_bias[ii].cpu().numpy()
        pred = self.global_mean_ + bu * known_u + bi * known_i + dot * (known_u & known_i)
        return np.clip(pred, *self.rating_range_).astype(np.float32).reshape(shape)

    def score(self, users, X) -> torch.Tensor:
        """Predicted ratings of all items (B, n_items); new users get μ + b_i + a folded-in
        ridge solution p_u for their history (b_u = mean residual)."""
        users, X = self._check_users_X(users, X)
        net, dev = self.network_, self.device_
        new = self._is_new(users)
        with torch.no_grad():
            Q = net.item_factors * torch.from_numpy(self.known_items_).to(dev).unsqueeze(1)  # (I, f)
            bi = net.item_bias * torch.from_numpy(self.known_items_).to(dev)  # (I,)
            uu = torch.from_numpy(np.where(new, 0, users)).to(dev)
            P = net.user_factors[uu]  # (B, f)
            bu = net.user_bias[uu]  # (B,)
            if new.any():
                P_new, bu_new = self._fold_in(X[new], Q, bi)
                mask = torch.from_numpy(new).to(dev)
                P[mask], bu[mask] = P_new, bu_new
            return self.global_mean_ + bu.unsqueeze(1) + bi.unsqueeze(0) + P @ Q.T  # (B, I)

    def _fold_in(self, X, Q: torch.Tensor, bi: torch.Tensor):
        """Ridge regression of each new user's residuals on the fixed item factors.

        b_u = Σ resid / (n_u + λ), then p_u = (Q_uᵀQ_u + λ n_u I)⁻¹ Q_uᵀ (resid - b_u),
        batched: each user's rated item factors padded into (b, max_len, f) for ``bmm``.
        """
        dev, f = Q.device, Q.shape[1]
        counts = np.diff(X.indptr)  # (b,)
        pos = np.arange(X.nnz) - np.repeat(X.indptr[:-1], counts)  # position inside the row
        rows = torch.from_numpy(np.repeat(np.arange(X.shape[0]), counts)).to(dev)
        cols = torch.from_numpy(X.indices.astype(np.int64)).to(dev)
        resid = torch.from_numpy(X.data).to(dev) - self.global_mean_ - bi[cols]  # (nnz,)
        n = torch.from_numpy(counts).to(dev).float()  # (b,)
        bu = torch.zeros(X.shape[0], device=dev).index_add_(0, rows, resid) / (n + self.l2)
        resid = resid - bu[rows]
        padded = torch.zeros(X.shape[0], max(int(counts.max(initial=0)), 1), f, device=dev)
        padded[rows, torch.from_numpy(pos).to(dev)] = Q[cols]  # (b, max_len, f)
        A = padded.transpose(1, 2) @ padded  # (b, f, f)
        A += self.l2 * n.clamp(min=1).view(-1, 1, 1) * torch.eye(f, device=dev)
        rhs = torch.zeros(X.shape[0], f, device=dev).index_add_(0, rows, Q[cols] * resid.unsqueeze(1))
        return torch.linalg.solve(A, rhs), bu  # (b, f), (b,)


def damped_biases(X, global_mean: float, damping: float = 5.0, passes: int = 10):
    """User and item biases of ``r ≈ μ + b_u + b_i`` by alternating damped means.

    ``b_i = Σ_u (r_ui − μ − b_u) / (n_i + damping)``, then the same for ``b_u``, ``passes``
    times (ridge regression of the bias-only model by block coordinate descent). Users or
    items without ratings get 0. Returns float32 arrays (n_users,), (n_items,).
    """
    coo = X.tocoo()
    n_users, n_items = X.shape
    user_count = np.bincount(coo.row, minlength=n_users) + damping  # (n_users,)
    item_count = np.bincount(coo.col, minlength=n_items) + damping  # (n_items,)
    resid = coo.data.astype(np.float64) - global_mean  # (nnz,)
    user_bias = np.zeros(n_users)
    for _ in range(passes):
        item_bias = np.bincount(coo.col, resid - user_bias[coo.row], n_items) / item_count
        user_bias = np.bincount(coo.row, resid - item_bias[coo.col], n_users) / user_count
    return user_bias.astype(np.float32), item_bias.astype(np.float32)
