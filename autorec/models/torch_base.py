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

from .. import _checks, _validate, metrics
from ..data import RatingMatrix
from ..exceptions import NotFittedError
from ..protocols import EvalPart
from ..train import Trainer, Validation, resolve_device
from .base import BaseRecommender, _state_keys

__all__ = ["TorchRecommender", "csr_from_state"]

#: constructor parameters that do not change what a run computes (a checkpoint of a run
#: stopped early resumes under a larger ``epochs``)
_NOT_IDENTITY = ("epochs", "progress")


class TorchRecommender(BaseRecommender):
    """Base of the torch models; trained by the one :class:`~autorec.train.Trainer`.

    Subclasses define ``__init__`` with the shared hyperparameter names ``epochs,
    batch_size, lr, weight_decay, seed, device`` plus ``patience`` (early stopping,
    None = off), ``valid_metric`` ("auto", "rmse", "ndcg@K"), ``valid_size`` and
    ``progress``.

    **Automatic validation carve.** When ``fit`` gets no ``valid`` and ``valid_size > 0``,
    a seeded share of the training part is held out (rating models: a random
    ``valid_size`` of the ratings, :func:`autorec.split.holdout`; ranking models: of each
    user's items, :func:`autorec.split.per_user`), the network trains on the rest, and the
    epoch with the best validation score is kept (with ``patience``, training stops early).
    What scoring needs after fitting (AutoRec's codes, the users known) comes from the
    whole training part. ``valid_size=0`` switches it off; an explicit ``valid`` wins.
    """

    _param_rules = {
        "epochs": _checks.positive_int, "batch_size": _checks.positive_int,
        "lr": _checks.positive, "weight_decay": _checks.non_negative,
        "seed": _checks.non_negative_int, "patience": _checks.optional(_checks.positive_int),
        "valid_metric": _checks.metric_name, "device": _checks.device,
        "progress": _checks.boolean, "l2": _checks.non_negative,
        "hidden": _checks.positive_int, "dims": _checks.positive_ints,
        "dropout": _checks.probability, "valid_size": _checks.probability,
    }

    def fit(self, train: RatingMatrix, valid=None, *, checkpoint=None, resume: bool = False):
        """Train on ``train``.

        Parameters
        ----------
        train : RatingMatrix
        valid : RatingMatrix or EvalPart, optional
            Held-out ratings of the training users (RMSE for rating models, else NDCG@100
            with ``train`` as history), or an :class:`~autorec.protocols.EvalPart` (e.g.
            ``protocol.valid``: held-out users folded in from their history). Enables early
            stopping (``patience``) and restores the best epoch.
        checkpoint : str or Path, optional
            A checkpoint file written atomically after every epoch.
        resume : bool
            Continue an interrupted run from ``checkpoint`` (bit-exact on CPU).

        Returns
        -------
        self
        """
        self._init_fit(train)
        full = train
        if valid is None and getattr(self, "valid_size", 0.0) > 0:
            train, valid = self._carve(train)
        part = self._valid_part(train, valid)
        self.device_ = resolve_device(self.device)
        self._prepare(train)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))  # seeded initialisation, global RNG untouched
            self.network_ = self._build_network().to(self.device_)
        trainer = Trainer(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          weight_decay=self.weight_decay, seed=self.seed, patience=self.patience,
                          progress=self.progress, desc=type(self).__name__,
                          optimizer=getattr(self, "optimizer", "adam"))
        identity = {"class": type(self).__name__,
                    **{k: v for k, v in self.get_params().items() if k not in _NOT_IDENTITY}}
        self.history_ = trainer.fit(
            self.network_, self._training_rows(train), device=self.device_,
            validation=self._validation(part), on_weights_changed=self._on_weights_changed,
            checkpoint=checkpoint, resume=resume, identity=identity)
        self.best_epoch_ = trainer.best_epoch
        self._finish_fit(full)
        return self

    def _carve(self, train: RatingMatrix) -> tuple[RatingMatrix, RatingMatrix]:
        """The automatic validation carve of ``train`` (seeded by ``seed``), see the class."""
        import warnings

        from .. import split
        from ..exceptions import SplitWarning

        how = split.holdout if self.predicts_ratings else split.per_user
        with warnings.catch_warnings():  # users with one rating simply stay in training
            warnings.simplefilter("ignore", SplitWarning)
            return how(train, test_size=float(self.valid_size), seed=int(self.seed))

    # ----------------------------------------------------------- subclass API
    def _build_network(self) -> torch.nn.Module:  # pragma: no cover
        raise NotImplementedError

    def _training_rows(self, train: RatingMatrix) -> sp.csr_matrix:
        return train.X

    def _prepare(self, train: RatingMatrix) -> None:
        """Fitted statistics needed before the network is built (e.g. rating range)."""

    def _finish_fit(self, train: RatingMatrix) -> None:
        """Called once training is over with the whole training part (the carve included):
        keep what scoring needs, drop the training data."""

    def _on_weights_changed(self) -> None:
        """Drop caches that depend on the weights (called by the Trainer)."""

    def _extra_state(self) -> dict:
        """Fitted values other than the network's weights, for saving."""
        return {}

    #: entries of the saved state besides "network" (checked by ``_set_state``); the
    #: optional ones may be absent
    _extra_state_keys: tuple = ()
    _optional_state_keys: tuple = ()

    def _set_extra_state(self, state: dict) -> None:
        """Restore (and check) the entries of ``_extra_state``, before the network is built."""

    # ------------------------------------------------------------- validation
    @staticmethod
    def _valid_part(train: RatingMatrix, valid) -> EvalPart | None:
        if valid is None:
            return None
        if isinstance(valid, RatingMatrix):
            valid = EvalPart(train, valid)
        if not isinstance(valid, EvalPart):
            raise TypeError(
                f"valid must be a RatingMatrix of held-out ratings or an autorec.protocols.EvalPart "
                f"(e.g. protocol.valid), got {type(valid).__name__}"
            )
        for part in (valid.history, valid.target):
            if not part.items.equals(train.items):
                raise ValueError("valid must have the training items (use the matrices a split "
                                 "or protocol returns)")
        return valid

    def _validation(self, part: EvalPart | None) -> Validation | None:
        """The Trainer's per-epoch score on ``part``: RMSE or a ranking metric."""
        if part is None:
            return None
        metric = self.valid_metric
        if metric == "auto":
            metric = "rmse" if self.predicts_ratings and not part.fold_in else "ndcg@100"
        if metric in ("rmse", "mae"):
            if part.fold_in:
                raise ValueError(f"valid_metric={metric!r} needs held-out ratings of training "
                                 "users, not held-out users to fold in")
            score = getattr(metrics, metric)
            return Validation(metric, lambda: score(self, part.target), lower_is_better=True)
        name, _, k = metric.partition("@")
        ks = (int(k or 100),)
        return Validation(metric, lambda: float(metrics.evaluate(
            self, part.history, part.target, metrics=(name,), ks=ks)[metric]))

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict:
        return {"network": {k: v.detach().cpu() for k, v in self.network_.state_dict().items()},
                **self._extra_state()}

    def _set_state(self, state: dict) -> None:
        self.device_ = resolve_device(self.device)
        _state_keys(state, ("network", *self._extra_state_keys), self._optional_state_keys)
        self._set_extra_state(state)
        with torch.random.fork_rng(devices=[]):  # the global RNG is not the loader's to move
            with torch.device("meta"):  # shapes and dtypes only: nothing allocated yet
                expected = self._build_network().state_dict()
            _validate.like_state_dict(state["network"], expected, "state['network']")
            self.network_ = self._build_network()
        self.network_.load_state_dict(state["network"])
        self.network_.to(self.device_).eval()
        self._on_weights_changed()

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if not hasattr(self, "network_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(train) first")


def _rating_range(value) -> tuple[float, float]:
    """A saved ``[min, max]`` of the training ratings, checked."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _validate.Invalid(f"rating_range is {value!r}, expected [min, max]")
    lo, hi = (float(_validate.plain(v, "rating_range", "float")) for v in value)
    if lo > hi:
        raise _validate.Invalid(f"rating_range is {value!r}: its min is above its max")
    return lo, hi


def csr_from_state(state: dict, shape: tuple[int, int], what: str = "state['train_X']") -> sp.csr_matrix:
    """The training ratings a format-1 model file stored (read when loading such a file),
    checked to be a canonical float32 CSR matrix of ``shape`` before scipy sees it."""
    _validate.keys(state, what, ("indptr", "indices", "data", "shape"))
    if list(state["shape"]) != list(shape):
        raise _validate.Invalid(f"{what} has shape {state['shape']!r}, expected {list(shape)} "
                                "(the file's users x items)")
    parts = {k: _validate.tensor(state[k], f"{what}[{k!r}]", shape=(None,)).numpy()
             for k in ("indptr", "indices", "data")}
    _validate.array(parts["data"], f"{what}['data']", dtype=np.float32)
    _validate.csr_arrays(parts["indptr"], parts["indices"], parts["data"], tuple(shape), what)
    X = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=tuple(shape))
    X.has_canonical_format = True
    return X
