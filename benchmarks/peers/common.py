"""What every runner of the peer benchmark shares; stdlib + numpy only, so that it imports
in each peer's own venv: the peak RSS, NDCG@k from top-k lists, a validation clock.
"""
from __future__ import annotations

import resource
import time

import numpy as np

__all__ = ["peak_rss_mb", "ndcg_at_k", "Clock"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ndcg_at_k(topk: dict, relevant: dict, k: int = 100) -> float:
    """Mean NDCG@k over the users of ``relevant`` (raw user id -> set of raw item ids) with
    binary gains; ``topk`` maps raw user id -> ranked raw item ids (history excluded). The
    ideal DCG is over min(k, |relevant|) hits; a user missing from ``topk`` scores 0."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))  # (k,)
    scores = []
    for user, items in relevant.items():
        ranked = list(topk.get(user, []))[:k]
        gains = np.fromiter((item in items for item in ranked), dtype=float, count=len(ranked))
        ideal = discount[:min(k, len(items))].sum()
        scores.append(float(gains @ discount[:len(ranked)]) / ideal)
    return float(np.mean(scores))


class Clock:
    """Wall seconds since ``start()`` at each validation, and the best of them."""

    def __init__(self, lower_is_better: bool = False):
        self.lower_is_better, self.t0, self.marks = lower_is_better, None, []

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def mark(self, value: float) -> None:
        self.marks.append((time.perf_counter() - self.t0, float(value)))

    def best(self) -> tuple[float | None, float | None, int | None]:
        """(seconds to the best validation, its value, its 1-based epoch)."""
        if not self.marks:
            return None, None, None
        pick = min if self.lower_is_better else max
        i = pick(range(len(self.marks)), key=lambda j: self.marks[j][1])
        return self.marks[i][0], self.marks[i][1], i + 1
