"""Popularity: most-rated items first, the same list for every user."""
from __future__ import annotations

import numpy as np
import torch

from .._validate import Invalid, tensor
from ..data import RatingMatrix
from .base import BaseRecommender, _state_keys

__all__ = ["Popularity"]


class Popularity(BaseRecommender):
    """Most-rated items first: score = number of training ratings of the item.

    Every user, new or known, gets the same scores (seen items are still excluded by
    ``recommend``). The floor any personalised model must beat.
    """

    def __init__(self):
        pass

    def fit(self, train: RatingMatrix, valid=None) -> Popularity:
        self._init_fit(train)
        self.item_counts_ = torch.from_numpy(train.item_counts().astype(np.float32))  # (n_items,)
        return self

    def score(self, users, X) -> torch.Tensor:
        users, X = self._check_users_X(users, X)
        # a fresh (B, n_items) tensor: recommend() writes -inf into it in place
        return self.item_counts_.unsqueeze(0).repeat(len(users), 1)

    def _get_state(self) -> dict:
        return {"item_counts": self.item_counts_}

    def _set_state(self, state: dict) -> None:
        _state_keys(state, ("item_counts",))
        counts = tensor(state["item_counts"], "state['item_counts']", dtype=torch.float32,
                        shape=(self.n_items_,), finite=True)  # one count per item id
        if bool((counts < 0).any()):
            raise Invalid("state['item_counts'] holds negative counts")
        self.item_counts_ = counts
