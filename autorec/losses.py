"""Loss functions: pure functions of tensors, each with its formula and source.

Conventions: ``B`` is the batch of rows (users, or items for I-AutoRec), ``N`` the
length of a row (items, or users). Reductions are stated per function. A "mean over the
batch" divides the sum over the rows by ``n_rows`` when given: under data parallelism a
rank holds part of the batch and passes the global batch's row count
(:attr:`autorec.train.Batch.n_global`), so that the ranks' losses add up to the global one.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

__all__ = [
    "masked_sse", "observed_sse", "l2_penalty", "multinomial_nll", "gaussian_kl",
    "binary_cross_entropy", "kl_anneal",
]


def masked_sse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors over observed entries only (dense reference form).

    ``sum_{(r, c) in O} (target[r, c] - pred[r, c])^2`` with O the entries where ``mask``
    is nonzero: the data term of AutoRec (Sedhain et al. 2015, eq. 2). Unobserved entries
    contribute nothing, so their gradient is exactly zero.

    Parameters
    ----------
    pred, target, mask : torch.Tensor, shape (B, N)

    Returns
    -------
    torch.Tensor, scalar (a sum, not a mean)
    """
    diff = (pred - target) * mask  # (B, N), zero where unobserved
    return (diff * diff).sum()


def observed_sse(pred_observed: torch.Tensor, target_observed: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors given only the predictions at the observed entries.

    The sparse form of :func:`masked_sse`: both arguments have shape (nnz,).
    """
    diff = pred_observed - target_observed  # (nnz,)
    return (diff * diff).sum()


def l2_penalty(*weights: torch.Tensor) -> torch.Tensor:
    """``sum_W ||W||_F^2`` over the given tensors (AutoRec's regulariser without λ/2)."""
    return sum((w * w).sum() for w in weights)


def multinomial_nll(logits: torch.Tensor, x: torch.Tensor, n_rows: int | None = None) -> torch.Tensor:
    """Multinomial negative log-likelihood, mean over the batch.

    ``-1/B sum_u sum_i x_ui log softmax(logits_u)_i`` (Liang et al. 2018, eq. 2).

    Parameters
    ----------
    logits : torch.Tensor, shape (B, N)
    x : torch.Tensor or scipy.sparse matrix, shape (B, N)
        Click counts (binary in MovieLens protocols). A sparse ``x`` reads the
        log-probabilities at its stored cells only (no dense (B, N) product).
    n_rows : int, optional
        The ``B`` to divide by (default: the rows given).
    """
    log_probs = F.log_softmax(logits, dim=1)  # (B, N)
    if sp.issparse(x):
        coo = x.tocoo()
        rows = torch.from_numpy(coo.row.astype(np.int64)).to(logits.device)  # (nnz,)
        cols = torch.from_numpy(coo.col.astype(np.int64)).to(logits.device)  # (nnz,)
        clicks = torch.from_numpy(coo.data).to(logits.device, logits.dtype)  # (nnz,)
        return -(log_probs[rows, cols] * clicks).sum() / (x.shape[0] if n_rows is None else n_rows)
    return -(log_probs * x).sum(dim=1).sum() / (x.shape[0] if n_rows is None else n_rows)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, n_rows: int | None = None) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), mean over the batch.

    ``1/B sum_u 1/2 sum_d (exp(logvar) + mu^2 - 1 - logvar)`` (Kingma & Welling 2014).

    Parameters
    ----------
    mu, logvar : torch.Tensor, shape (B, D)
    n_rows : int, optional
        The ``B`` to divide by (default: the rows given).
    """
    per_row = (logvar.exp() + mu * mu - 1.0 - logvar).sum(dim=1)  # (B,)
    return 0.5 * (per_row.sum() / (len(per_row) if n_rows is None else n_rows))


def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                         n_rows: int | None = None) -> torch.Tensor:
    """Binary cross-entropy on logits, summed over a row, mean over the batch.

    ``-1/B sum_u sum_i w_ui [y_ui log s(z_ui) + (1 - y_ui) log(1 - s(z_ui))]``; with
    ``weight`` a 0/1 mask it covers the observed items plus sampled negatives (CDAE,
    Wu et al. 2016, eq. 4).

    Parameters
    ----------
    logits, target : torch.Tensor, shape (B, N)
    weight : torch.Tensor, shape (B, N), optional
    n_rows : int, optional
        The ``B`` to divide by (default: the rows given).
    """
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")  # (B, N)
    return loss.sum(dim=1).sum() / (loss.shape[0] if n_rows is None else n_rows)


def kl_anneal(step: int, total_anneal_steps: int = 200_000, anneal_cap: float = 0.2) -> float:
    """KL weight β after ``step`` minibatch updates: ``min(cap, step / total_steps)``.

    The linear schedule of Mult-VAE (Liang et al. 2018, sec. 2.2.2), a pure function of
    the global step so that resumed training follows the same schedule.
    """
    if total_anneal_steps <= 0:
        return float(anneal_cap)
    return float(min(anneal_cap, step / total_anneal_steps))
