"""The Recommender protocol: one ``recommend``, one file format, sklearn habits.

Every model, autoencoders and baselines alike, subclasses :class:`BaseRecommender` and
supplies ``fit`` and ``score`` (and ``predict`` for rating models) plus ``_get_state`` /
``_set_state`` for saving. Filtering of seen items, top-k and tie handling live here once.

Users are addressed by position (``user_idx``) in the training matrix's ``users``. A user
whose training row was empty, or given as ``-1``, is *new*: models that can fold users in
score them from their history row ``X`` alone; the others raise :class:`NotFittedForUser`.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .._io import atomic_path
from .._validate import Invalid, keys, tensor
from .._version import __version__
from ..data import RatingMatrix
from ..exceptions import NotFittedError, NotFittedForUser
from ..ranking import SCORE_BUDGET_BYTES, _check_k
from . import _format
from ._format import read_model_file
from ._topk import topk_lowest_index_first

__all__ = ["BaseRecommender", "NotFittedError", "NotFittedForUser", "read_model_file",
           "SCORE_BUDGET_BYTES"]

FORMAT, FORMAT_VERSION = _format.FORMAT, _format.FORMAT_VERSION


class BaseRecommender:
    """Base class of all recommenders.

    Subclasses implement ``fit(train, valid=None)``, ``score(users, X)``, and for saving
    ``_get_state()``/``_set_state(state)``. ``__init__`` only stores its keyword arguments
    (``get_params``/``clone`` read them from the signature); fitted state ends with ``_``.
    """

    #: the model predicts explicit ratings (``predict``, RMSE)
    predicts_ratings: bool = False
    #: the model scores users unseen in training from their history row
    folds_in: bool = True
    #: constructor parameter -> check (see :mod:`autorec._checks`); merged along the MRO
    _param_rules: dict = {}

    # ------------------------------------------------------------ sklearn habits
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict:
        """Constructor arguments as a dict (plain values: saved in model files)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> BaseRecommender:
        """Set constructor arguments; unknown names raise with the list of valid ones."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {name!r}; valid: {', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def _check_params(self) -> None:
        """Check every constructor argument against the rules of the class and its bases."""
        rules = {}
        for klass in reversed(type(self).__mro__):
            rules.update(vars(klass).get("_param_rules", {}))
        for name in self._param_names():
            if name in rules:
                rules[name](name, getattr(self, name))

    def clone(self) -> BaseRecommender:
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --------------------------------------------------------------- fitting
    def fit(self, train: RatingMatrix, valid=None) -> BaseRecommender:  # pragma: no cover
        raise NotImplementedError

    def _init_fit(self, train: RatingMatrix) -> None:
        """Record the training vocabulary; call first in ``fit``."""
        if not isinstance(train, RatingMatrix):
            raise TypeError(f"fit expects a RatingMatrix, got {type(train).__name__}")
        if train.nnz == 0:
            raise ValueError("the training matrix has no ratings")
        self._check_params()
        self.users_ = train.users
        self.items_ = train.items
        self.known_users_ = np.diff(train.X.indptr) > 0  # (n_users,) rows seen in training

    def _check_fitted(self) -> None:
        if not hasattr(self, "items_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(train) first")

    @property
    def n_items_(self) -> int:
        return len(self.items_)

    @property
    def n_users_(self) -> int:
        return len(self.users_)

    # --------------------------------------------------------------- scoring
    def score(self, users: np.ndarray, X: sp.csr_matrix) -> torch.Tensor:  # pragma: no cover
        """Scores of all items for a batch of users.

        Parameters
        ----------
        users : numpy.ndarray of int64, shape (B,)
            ``user_idx`` positions in the training users; ``-1`` for a user not in it.
        X : scipy.sparse.csr_matrix, shape (B, n_items)
            Those users' history rows (what the model folds in for new users).

        Returns
        -------
        torch.Tensor, shape (B, n_items), float32
            Higher is better. A fresh tensor: ``recommend`` writes into it.
        """
        raise NotImplementedError

    def predict(self, user_idx, item_idx) -> np.ndarray:
        """Predicted ratings for (user, item) position pairs; rating models only."""
        raise TypeError(f"{type(self).__name__} ranks items and does not predict ratings")

    def _check_pairs(self, user_idx, item_idx) -> tuple[tuple, np.ndarray, np.ndarray]:
        """``(shape, u, i)``: flat int64 positions of ``predict``'s pairs, checked.

        ``user_idx`` may hold ``-1`` (a user not in training); anything else outside
        ``0..n_users-1`` or ``0..n_items-1`` is a ValueError naming the first bad value.
        """
        self._check_fitted()
        u, i = _positions(user_idx, "user_idx"), _positions(item_idx, "item_idx")
        if u.shape != i.shape:
            raise ValueError(f"user_idx has shape {u.shape} but item_idx has shape {i.shape}")
        shape, u, i = u.shape, u.reshape(-1), i.reshape(-1)
        for name, pos, low, n in (("user_idx", u, -1, self.n_users_), ("item_idx", i, 0, self.n_items_)):
            bad = (pos < low) | (pos >= n)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                extra = ", or -1 for a user not in training" if low < 0 else ""
                raise ValueError(f"{name} {int(pos[first])} (at position {first}) is out of range: "
                                 f"0..{n - 1}{extra}")
        return shape, u, i

    def _is_new(self, users: np.ndarray) -> np.ndarray:
        """Mask of users to fold in: ``-1`` or empty in training. Shape (B,)."""
        new = users < 0
        new[~new] = ~self.known_users_[users[~new]]
        return new

    def _check_users_X(self, users, X) -> tuple[np.ndarray, sp.csr_matrix]:
        self._check_fitted()
        X = sp.csr_matrix(X, dtype=np.float32)
        if users is None:
            users = np.full(X.shape[0], -1, dtype=np.int64)
        users = _positions(users, "users").reshape(-1)
        if X.shape != (len(users), self.n_items_):
            raise ValueError(
                f"X has shape {X.shape}; expected ({len(users)}, {self.n_items_}) "
                "= (number of users, number of training items)"
            )
        if len(users) and (users.max() >= self.n_users_ or users.min() < -1):
            bad = users.max() if users.max() >= self.n_users_ else users.min()
            raise ValueError(f"user_idx {bad} out of range: 0..{self.n_users_ - 1}, or -1 for a new user")
        return users, X

    def recommend(self, users, X, k: int = 10, exclude_seen: bool = True, batch_size: int | None = None):
        """Top-``k`` items for each user, the same path for every model.

        Parameters
        ----------
        users : array-like of int, shape (B,), or None
            ``user_idx`` positions (``-1`` or None: users unseen in training).
        X : scipy.sparse matrix, shape (B, n_items)
            The users' history rows; their items are excluded when ``exclude_seen``.
        k : int
            Number of items per user (capped at ``n_items``).
        exclude_seen : bool
            Never recommend items present in ``X``.
        batch_size : int, optional
            Users scored at once; by default as many as fit :data:`SCORE_BUDGET_BYTES`.

        Returns
        -------
        item_idx : numpy.ndarray of int64, shape (B, k)
            Best first; equal scores inside the list in ascending item index. ``-1`` pads
            users with fewer than ``k`` candidates.
        scores : numpy.ndarray of float32, shape (B, k)
            ``-inf`` where padded.
        """
        users, X = self._check_users_X(users, X)
        k = min(_check_k(k), self.n_items_)  # 2.5 and True are refused, not rounded
        if batch_size is None:
            batch_size = max(1, SCORE_BUDGET_BYTES // (4 * max(self.n_items_, 1)))
        out_idx = np.empty((len(users), k), dtype=np.int64)
        out_scores = np.empty((len(users), k), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(users), batch_size):
                stop = min(start + batch_size, len(users))
                scores = self.score(users[start:stop], X[start:stop]).float()  # (b, n_items), fresh
                if scores._base is not None:  # a view of model state: never write into it
                    scores = scores.clone()
                if exclude_seen:
                    seen = X[start:stop].tocoo()
                    flat = torch.from_numpy(seen.row.astype(np.int64) * self.n_items_ + seen.col)
                    scores.view(-1).index_fill_(0, flat.to(scores.device), -torch.inf)
                try:  # a NaN a user could be recommended is among the selected scores
                    top_scores, top_idx = topk_lowest_index_first(scores, k)  # (b, k) each, numpy
                except FloatingPointError:
                    raise FloatingPointError(f"{type(self).__name__}.score returned NaN scores") from None
                del scores  # free the block before the next one is scored
                top_idx[np.isneginf(top_scores)] = -1
                out_idx[start:stop] = top_idx
                out_scores[start:stop] = top_scores
        return out_idx, out_scores

    # ------------------------------------------------------------ persistence
    @classmethod
    def _from_payload(cls, payload: dict, device: str | None = None) -> BaseRecommender:
        """The fitted model a :func:`read_model_file` payload describes, every part checked
        against the others before use (:class:`~autorec._validate.Invalid` otherwise)."""
        version = payload["format_version"]
        params = _format.params_from_payload(cls, payload["params"])
        if device is not None and "device" in params:
            params["device"] = device
        model = cls(**params)
        try:
            model._check_params()
        except (TypeError, ValueError) as exc:
            raise Invalid(f"params: {exc}") from None
        model.users_ = _format.ids_from_payload(payload["users"], "users", version)
        model.items_ = _format.ids_from_payload(payload["items"], "items", version)
        known = tensor(payload["known_users"], "known_users", dtype=torch.bool,
                       shape=(len(model.users_),))
        model.known_users_ = known.numpy().copy()
        model._set_state(payload["state"])
        return model

    def _get_state(self) -> dict:  # pragma: no cover
        """Fitted state as tensors and plain values (no arbitrary objects)."""
        raise NotImplementedError

    def _set_state(self, state: dict) -> None:  # pragma: no cover
        """Restore ``_get_state``'s state, read from a file: check every entry first
        (:mod:`autorec._validate`), with ``users_``/``items_``/params already set."""
        raise NotImplementedError

    def save(self, path) -> Path:
        """Write the model to one file (atomic): class, params, ids, weights, version, digest.

        The file loads with ``torch.load(path, weights_only=True)``: no pickled objects.
        Raw ids keep their dtype (str, int64, uint64, float, bool, mixed); ``autorec.load``
        verifies the digest and the file's consistency.
        """
        self._check_fitted()
        payload = {
            "format": _format.FORMAT,
            "format_version": _format.FORMAT_VERSION,
            "autorec_version": __version__,
            "class": type(self).__name__,
            "params": self.get_params(),
            "users": _format.ids_to_payload(self.users_),
            "items": _format.ids_to_payload(self.items_),
            "known_users": torch.from_numpy(np.asarray(self.known_users_, dtype=bool).copy()),
            "state": self._get_state(),
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(_format.sign(payload), tmp)
        return path


def _positions(values, name: str) -> np.ndarray:
    """``values`` as int64 positions; floats and bools are refused, not truncated."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise TypeError(f"{name} must hold integer positions, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} {int(arr.max())} is out of range")
    return arr.astype(np.int64)


def _state_keys(state, required, optional=()) -> dict:
    """Shared by the models' ``_set_state``: ``state`` is a dict with exactly these keys."""
    return keys(state, "state", required, optional)
