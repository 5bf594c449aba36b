"""TorchRecommender: what every torch model shares (fit through the Trainer, state, device).

A subclass supplies:

- ``_build_network()`` -> ``nn.Module`` with ``loss(batch, step)``, sized from
  ``self.n_users_``/``self.n_items_`` (set before it is called, also when loading);
- ``_training_rows(train)`` -> the CSR matrix whose rows are the training examples
  (users by default; items for I-AutoRec);
- ``score(users, X)``; rating models also ``predict``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..base import BaseRecommender
from ..data import RatingMatrix
from ..train import Trainer, resolve_device

__all__ = ["TorchRecommender", "csr_to_state", "csr_from_state", "csr_to_torch"]


class TorchRecommender(BaseRecommender):
    """Base of the torch models; trained by the one :class:`~autorec.train.Trainer`.

    Subclasses define ``__init__`` with the shared hyperparameter names ``epochs,
    batch_size, lr, weight_decay, seed, device`` plus ``patience`` (early stopping,
    None = off), ``valid_metric`` ("auto", "rmse", "ndcg@K") and ``progress``.
    """

    def fit(self, train: RatingMatrix, valid=None, *, checkpoint=None, resume: bool = False):
        """Train on ``train``.

        Parameters
        ----------
        train : RatingMatrix
        valid : RatingMatrix or (RatingMatrix, RatingMatrix), optional
            Held-out ratings of the same users (RMSE for rating models, else NDCG@100 with
            ``train`` as history), or a ``(fold_in, held_out)`` pair of held-out users.
            Enables early stopping (``patience``) and restores the best epoch.
        checkpoint : str or Path, optional
            A checkpoint file written atomically after every epoch.
        resume : bool
            Continue an interrupted run from ``checkpoint`` (bit-exact on CPU).

        Returns
        -------
        self
        """
        self._init_fit(train)
        self._check_valid(train, valid)
        self.device_ = resolve_device(self.device)
        self._prepare(train)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))  # seeded initialisation, global RNG untouched
            self.network_ = self._build_network().to(self.device_)
        self._train_history = train
        Trainer(self).fit(self._training_rows(train), valid, checkpoint=checkpoint, resume=resume)
        return self

    # ----------------------------------------------------------- subclass API
    def _build_network(self) -> torch.nn.Module:  # pragma: no cover
        raise NotImplementedError

    def _training_rows(self, train: RatingMatrix) -> sp.csr_matrix:
        return train.X

    def _prepare(self, train: RatingMatrix) -> None:
        """Fitted statistics needed before the network is built (e.g. rating range)."""

    def _on_weights_changed(self) -> None:
        """Drop caches that depend on the weights (called by the Trainer)."""

    def _extra_state(self) -> dict:
        """Fitted values other than the network's weights, for saving."""
        return {}

    def _set_extra_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------- validation
    def _check_valid(self, train: RatingMatrix, valid) -> None:
        parts = valid if isinstance(valid, tuple) else (valid,) if valid is not None else ()
        for part in parts:
            if not isinstance(part, RatingMatrix) or not part.items.equals(train.items):
                raise ValueError("valid must be RatingMatrix objects with the training items "
                                 "(use the matrices a split or protocol returns)")

    def _validation_score(self, valid, metric: str) -> float:
        from .. import metrics

        if metric in ("rmse", "mae"):
            if isinstance(valid, tuple):
                raise ValueError(f"valid_metric={metric!r} needs held-out ratings, not a fold-in pair")
            return getattr(metrics, metric)(self, valid)
        name, _, k = metric.partition("@")
        history, target = valid if isinstance(valid, tuple) else (self._train_history, valid)
        result = metrics.evaluate(self, history, target, metrics=(name,), ks=(int(k or 100),))
        return float(result[metric])

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict:
        return {"network": {k: v.detach().cpu() for k, v in self.network_.state_dict().items()},
                **self._extra_state()}

    def _set_state(self, state: dict) -> None:
        self.device_ = resolve_device(self.device)
        self._set_extra_state(state)
        self.network_ = self._build_network()
        self.network_.load_state_dict(state["network"])
        self.network_.to(self.device_).eval()
        self._on_weights_changed()

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if not hasattr(self, "network_"):
            from ..base import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(train) first")


def csr_to_state(X: sp.csr_matrix) -> dict:
    """A CSR matrix as tensors (weights-only loadable)."""
    return {
        "indptr": torch.from_numpy(X.indptr.astype(np.int64)),
        "indices": torch.from_numpy(X.indices.astype(np.int64)),
        "data": torch.from_numpy(X.data.astype(np.float32)),
        "shape": list(X.shape),
    }


def csr_from_state(state: dict) -> sp.csr_matrix:
    return sp.csr_matrix(
        (state["data"].numpy(), state["indices"].numpy(), state["indptr"].numpy()),
        shape=tuple(state["shape"]),
    )


def csr_to_torch(X: sp.csr_matrix, device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on ``device``."""
    return torch.sparse_csr_tensor(
        torch.from_numpy(X.indptr.astype(np.int64)),
        torch.from_numpy(X.indices.astype(np.int64)),
        torch.from_numpy(X.data.astype(np.float32)),
        size=X.shape,
    ).to(device)
