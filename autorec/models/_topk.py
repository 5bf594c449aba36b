"""Top-k of every row of a score block, best first, ties in ascending item index.

The one selection :meth:`autorec.models.base.BaseRecommender.recommend` uses. It finds the
``k + 1`` largest scores of each row (unordered), orders them by (score descending, item
ascending), and redoes exactly the rows where a tie straddles the cut (the k-th and
(k+1)-th scores are equal): every item above the tie value, then the lowest-index tied
ones. The result is a function of the scores alone, whatever order the selection kernel
returns equal values in.

On CPU the selection is numpy's ``argpartition`` (introselect) on blocks of rows in a few
threads (numpy releases the GIL while it partitions): on ML-10M-shaped blocks (2,095 x
10,677, k = 101) it took 0.074 s of CPU against 0.115 s for ``torch.topk``, which also sorts
what it selects (``benchmarks/results/export.md``). Elsewhere (CUDA) it is ``torch.topk``.
NaN counts as the largest value in both, so a NaN anywhere a row could be recommended
shows up among the selected scores; the caller checks them only.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["topk_lowest_index_first", "largest"]

_ROWS_PER_TASK = 256  # rows partitioned at once: keeps argpartition's (rows, N) int64 index small


def largest(scores: torch.Tensor, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest scores of each row and their columns, unordered; (b, m) each, numpy.

    ``scores`` (b, N) is not modified. ``m`` may equal N (every column).
    """
    b, n = scores.shape
    if scores.device.type != "cpu":
        vals, idx = torch.topk(scores, m, dim=1, sorted=False)  # (b, m)
        return vals.cpu().numpy(), idx.cpu().numpy()
    A = scores.detach().numpy()  # (b, N), shares memory
    if m >= n:
        return A.copy(), np.broadcast_to(np.arange(n, dtype=np.int64), (b, n)).copy()
    vals = np.empty((b, m), dtype=A.dtype)
    idx = np.empty((b, m), dtype=np.int64)

    def part(lo: int) -> None:
        block = A[lo:lo + _ROWS_PER_TASK]  # (r, N)
        cols = np.argpartition(block, n - m, axis=1)[:, n - m:]  # (r, m) the m largest
        idx[lo:lo + len(block)] = cols
        vals[lo:lo + len(block)] = np.take_along_axis(block, cols, axis=1)

    starts = range(0, b, _ROWS_PER_TASK)
    threads = min(torch.get_num_threads(), len(starts))
    if threads <= 1:
        for lo in starts:
            part(lo)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, starts))
    return vals, idx


def topk_lowest_index_first(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` scores and columns of each row of ``scores`` (b, N); (b, min(k, N)) each.

    Best first; equal scores in ascending column, also across the k-th cut. Raises
    ``FloatingPointError`` when a selected score is NaN.
    """
    n = scores.shape[1]
    k = min(k, n)
    vals, idx = largest(scores, min(k + 1, n))  # (b, m)
    if np.isnan(vals).any():
        raise FloatingPointError("NaN scores")
    order = np.lexsort((idx, -vals), axis=1)  # score descending, then column ascending
    vals, idx = np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1)
    if vals.shape[1] > k:
        straddle = np.flatnonzero(vals[:, k] == vals[:, k - 1])  # tie across the cut
        vals, idx = vals[:, :k].copy(), idx[:, :k].copy()
        if len(straddle):
            _redo_straddling(scores, straddle, vals, idx, k)
    return vals, idx


def _redo_straddling(scores: torch.Tensor, rows: np.ndarray, vals: np.ndarray, idx: np.ndarray,
                     k: int) -> None:
    """Rows whose k-th score ties with items beyond the selection: every item above the tie
    value, then the lowest-index tied ones, in (score, column) order. Writes in place."""
    sub = scores[torch.from_numpy(rows).to(scores.device)].cpu().numpy()  # (s, N)
    cut = vals[rows, k - 1][:, None]  # (s, 1)
    above, tied = sub > cut, sub == cut
    need = k - above.sum(axis=1, keepdims=True)  # (s, 1) tied items that fit
    take = above | (tied & (np.cumsum(tied, axis=1) <= need))  # exactly k per row
    cols = take.nonzero()[1].reshape(len(rows), k)  # (s, k) ascending column
    got = np.take_along_axis(sub, cols, 1)
    order = np.lexsort((cols, -got), axis=1)
    vals[rows], idx[rows] = np.take_along_axis(got, order, 1), np.take_along_axis(cols, order, 1)
