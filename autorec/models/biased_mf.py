"""BiasedMF: the biased matrix factorisation baseline of the AutoRec paper (Koren 2008).

    r̂_ui = μ + b_u + b_i + p_uᵀ q_i

trained on the observed ratings only with per-rating L2 (λ (||p_u||² + ||q_i||² + b_u² +
b_i²)), ``factors=0`` being the bias-only floor, by one of two solvers of the same objective:

- ``solver="als"``: alternating ridge regression (ALS-WR, Zhou et al. 2008). With the item
  side fixed, each user's ``[p_u; b_u]`` is the exact solution of a (factors+1)-dimensional
  ridge problem with penalty λ n_u (:func:`ridge_rows`, batched ``bmm`` + Cholesky); then
  the same for items. One sweep (users, then items) is one "epoch" in ``history_``.
- ``solver="adam"``: minibatches of users through the shared Trainer (checkpoints, resume).

The biases start from the damped means of the training ratings (Koren 2008, sec. 2.1,
by a few alternating ridge passes): Adam at the factors' learning rate moves biases by
~lr per step, too slowly to reach them in a few thousand steps (ML-1M bias-only from zero:
validation RMSE 0.927 after 80 epochs; from the damped means: 0.908 at epoch 1).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from .. import _checks
from .._validate import plain, tensor
from ..train import Batch, resolve_device
from .torch_base import TorchRecommender, _rating_range

__all__ = ["BiasedMF", "block_plan", "ridge_rows"]

_SOLVERS = ("als", "adam")


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
    solver : {"adam", "als"}
        ``"adam"``: minibatch Adam through the Trainer. ``"als"``: alternating exact ridge
        solves; ``epochs`` counts sweeps, ``batch_size``/``lr``/``weight_decay`` are unused,
        ``checkpoint``/``resume`` are refused (needs ``l2 > 0``).
    epochs, batch_size, lr, weight_decay, seed, device, patience, valid_metric, valid_size, progress
        Adam on batches of ``batch_size`` users, as for every torch model. Defaults chosen
        on a validation carve of ML-1M's training ratings (valid RMSE 0.8497 at epoch 49,
        flat to 60; see benchmarks/results/biasedmf_tuning.md). With a validation part,
        either solver keeps its best epoch (sweep) and stops after ``patience`` without one.

    Users or items unseen in training get μ plus whichever bias is known (no default
    rating); ``score`` folds new users in by ridge regression on the item factors.
    """

    predicts_ratings = True

    _param_rules = {"factors": _checks.non_negative_int}

    def __init__(self, factors=100, l2=0.07, solver="adam", epochs=50, batch_size=256, lr=1e-3,
                 weight_decay=0.0, patience=None, valid_metric="auto", valid_size=0.0, seed=0,
                 device="auto", progress=True):
        self.factors = factors
        self.l2 = l2
        self.solver = solver
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

    def _check_params(self) -> None:
        super()._check_params()
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if self.solver == "als" and not self.l2 > 0:
            raise ValueError(f"solver='als' needs l2 > 0 (every ridge solve must be regular), got l2={self.l2!r}")

    def fit(self, train, valid=None, *, checkpoint=None, resume: bool = False):
        """Train on ``train`` (see :meth:`TorchRecommender.fit`); ``solver`` picks how."""
        if self.solver != "als":
            return super().fit(train, valid, checkpoint=checkpoint, resume=resume)
        if checkpoint is not None or resume:
            raise ValueError("checkpoint/resume are for solver='adam'; an ALS sweep has no "
                             "optimizer state to resume (refit instead)")
        self._init_fit(train)
        full = train
        if valid is None and self.valid_size > 0:
            train, valid = self._carve(train)
        part = self._valid_part(train, valid)
        self.device_ = resolve_device(self.device)
        self._prepare(train)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))  # the same seeded initialisation as Adam's
            self.network_ = self._build_network().to(self.device_)
        self.history_, self.best_epoch_ = self._alternate(train.X, self._validation(part))
        self._bias_init = None
        self._finish_fit(full)
        return self

    def _alternate(self, X, validation) -> tuple[list[dict], int | None]:
        """``epochs`` ALS sweeps on ``X`` (users x items); the best sweep by ``validation``
        is kept. Returns the per-sweep history (epoch, loss, seconds, metric) and best epoch."""
        net, dev = self.network_, self.device_
        net.eval()
        by_user = _RatingRows.of(X, dev)
        by_item = _RatingRows.of(X.T.tocsr(), dev)
        history, best, best_state, best_epoch, bad = [], None, None, None, 0
        for epoch in range(1, int(self.epochs) + 1):
            start = time.perf_counter()
            with torch.no_grad():
                _als_side(by_user, net.user_factors, net.user_bias, net.item_factors, net.item_bias,
                          net.global_mean, self.l2)
                _als_side(by_item, net.item_factors, net.item_bias, net.user_factors, net.user_bias,
                          net.global_mean, self.l2)
                loss = float(_objective(net, by_user, self.l2))
            record = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start}
            self._on_weights_changed()
            if validation is not None:
                value = record[validation.metric] = float(validation.score())
                better = best is None or (value < best if validation.lower_is_better else value > best)
                if not math.isnan(value) and better:
                    best, best_epoch, bad = value, epoch, 0
                    best_state = {k: v.clone() for k, v in net.state_dict().items()}
                else:
                    bad += 1
            history.append(record)
            if self.progress:
                print(f"{type(self).__name__} (als) sweep {epoch}: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
            if self.patience is not None and bad >= self.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
            self._on_weights_changed()
        return history, best_epoch

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


class _RatingRows:
    """The ratings of a CSR matrix as tensors for :func:`ridge_rows`: ``indptr`` (numpy),
    ``rows``/``cols`` (nnz,) int64 and ``values`` (nnz,) float32 on ``device``."""

    def __init__(self, indptr, rows, cols, values):
        self.indptr, self.rows, self.cols, self.values = indptr, rows, cols, values
        self.plans: dict = {}

    def plan(self, d: int) -> list:
        if d not in self.plans:
            self.plans[d] = block_plan(self.indptr, d, 1 << 20, self.values.device)
        return self.plans[d]

    @classmethod
    def of(cls, X, device) -> "_RatingRows":
        indptr = np.asarray(X.indptr, dtype=np.int64)
        rows = np.repeat(np.arange(X.shape[0]), np.diff(indptr))
        return cls(indptr, torch.from_numpy(rows).to(device),
                   torch.from_numpy(X.indices.astype(np.int64)).to(device),
                   torch.from_numpy(X.data.astype(np.float32)).to(device))


def _als_side(side: _RatingRows, factors, bias, other_factors, other_bias, global_mean, l2: float):
    """One half-sweep, in place: ``[factors | bias]`` of every row of ``side`` given the
    other side's, by :func:`ridge_rows` on the features ``[q_j | 1]`` and the targets
    ``r - μ - b_j``."""
    f = factors.shape[1]
    Z = torch.cat([other_factors, torch.ones_like(other_bias).unsqueeze(1)], dim=1)  # (J, f+1)
    y = side.values - global_mean - other_bias[side.cols]  # (nnz,)
    W = ridge_rows(side.indptr, side.cols, y, Z, l2, plan=side.plan(f + 1))  # (rows, f+1)
    factors.copy_(W[:, :f])
    bias.copy_(W[:, f])


def _objective(net, side: _RatingRows, l2: float, chunk: int = 1 << 16) -> torch.Tensor:
    """The training loss Adam minimises, on all ratings: mean of err² + λ (||p||² + ||q||² + b²).

    The penalty is summed per row weighted by its count (no (nnz, f) temporaries) and the
    errors in chunks of ``chunk`` ratings, so the peak memory stays that of the weights.
    """
    n_users, n_items = net.user_bias.shape[0], net.item_bias.shape[0]
    user_count = torch.bincount(side.rows, minlength=n_users).to(net.user_bias.dtype)  # (U,)
    item_count = torch.bincount(side.cols, minlength=n_items).to(net.item_bias.dtype)  # (I,)
    reg = (user_count @ (net.user_factors.pow(2).sum(1) + net.user_bias.pow(2))
           + item_count @ (net.item_factors.pow(2).sum(1) + net.item_bias.pow(2)))
    sq = sum(float((net.predict(side.rows[lo:lo + chunk], side.cols[lo:lo + chunk])
                    - side.values[lo:lo + chunk]).pow(2).sum()) for lo in range(0, len(side.values), chunk))
    return (sq + l2 * reg) / len(side.values)


def ridge_rows(indptr: np.ndarray, cols: torch.Tensor, y: torch.Tensor, Z: torch.Tensor,
               l2: float, budget: int = 1 << 20, plan: list | None = None) -> torch.Tensor:
    """Per-row weighted ridge regression, batched: for every row ``r`` of a CSR pattern,

        x_r = argmin_x Σ_{j in row r} (z_jᵀ x − y_j)² + l2 · n_r · ||x||²
            = (Z_rᵀ Z_r + l2 n_r I)⁻¹ Z_rᵀ y_r

    Parameters
    ----------
    indptr : numpy array, (n_rows + 1,)
        CSR row pointers of the pattern.
    cols : torch.Tensor of int64, (nnz,)
        The column of each entry (a row of ``Z``).
    y : torch.Tensor, (nnz,)
        The target of each entry.
    Z : torch.Tensor, (n_cols, d)
        Features of the columns.
    l2 : float
        λ (> 0); rows without entries get x = 0.
    budget : int
        Most elements of one padded block (rows sorted by length, so padding stays small).
    plan : list, optional
        ``block_plan(indptr, d, budget, device)``, to reuse across calls on one pattern.

    Returns
    -------
    torch.Tensor, (n_rows, d)
    """
    d = Z.shape[1]
    if plan is None:
        plan = block_plan(indptr, d, budget, Z.device)
    out = torch.zeros(len(indptr) - 1, d, dtype=Z.dtype, device=Z.device)
    eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
    for block, slot, pos, entry, lens, width in plan:
        padded = torch.zeros(len(block), width, d, dtype=Z.dtype, device=Z.device)
        padded[slot, pos] = Z[cols[entry]]  # (b, width, d)
        target = torch.zeros(len(block), width, 1, dtype=Z.dtype, device=Z.device)
        target[slot, pos, 0] = y[entry]  # (b, width, 1)
        At = padded.transpose(1, 2)  # (b, d, width)
        A = torch.baddbmm((l2 * lens.to(Z.dtype)).view(-1, 1, 1) * eye, At, padded)  # (b, d, d)
        L, _ = torch.linalg.cholesky_ex(A)  # positive definite: λ n_r > 0
        out[block] = torch.cholesky_solve(At @ target, L).squeeze(2)  # (b, d)
    return out


def block_plan(indptr: np.ndarray, d: int, budget: int, device) -> list:
    """How :func:`ridge_rows` pads the rows of a CSR pattern: rows with entries, longest
    first, in blocks of at most ``budget`` padded elements. Each block: row positions (b,),
    slot and position in the padded block of each entry, the entry indices, row lengths (b,)
    and the block width."""
    counts = np.diff(indptr)  # (n_rows,)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    plan, lo = [], 0
    while lo < len(order):
        width = int(counts[order[lo]])  # the longest row of this block
        block = order[lo:lo + max(1, budget // (width * d))]  # (b,)
        lo += len(block)
        lens = counts[block]  # (b,)
        pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        entry = np.repeat(indptr[block], lens) + pos  # (entries,) into cols / y
        plan.append(tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in
                          (block, np.repeat(np.arange(len(block)), lens), pos, entry, lens)) + (width,))
    return plan


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
