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
import pandas as pd
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

    def get_params(self, deep: bool = True) -> dict:
        """Constructor arguments as a dict (plain values: saved in model files).

        ``deep`` is accepted for scikit-learn's ``clone`` and search utilities; no model
        nests another, so it changes nothing.
        """
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
            raise TypeError(_wrap_hint(train))
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

    def recommend(self, users, X, k: int = 10, exclude_seen: bool = True, batch_size: int | None = None,
                  exclude=None):
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
        exclude : scipy.sparse matrix, shape (B, n_items), optional
            More items never to recommend, whatever ``exclude_seen`` says: e.g. every
            rating of the users when ``X`` holds only those the model reads (the ratings
            above a threshold).

        Returns
        -------
        item_idx : numpy.ndarray of int64, shape (B, k)
            Best first; equal scores inside the list in ascending item index. ``-1`` pads
            users with fewer than ``k`` candidates.
        scores : numpy.ndarray of float32, shape (B, k)
            ``-inf`` where padded.
        """
        users, X = self._check_users_X(users, X)
        if exclude is not None:
            exclude = sp.csr_matrix(exclude)
            if exclude.shape != X.shape:
                raise ValueError(f"exclude has shape {exclude.shape}; expected {X.shape} (like X)")
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
                blocks = ([X[start:stop]] if exclude_seen else []) + (
                    [exclude[start:stop]] if exclude is not None else [])
                for block in blocks:
                    seen = block.tocoo()
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

    # ---------------------------------------------------------- raw ids in and out
    def recommend_for(self, user_ids, history: RatingMatrix, k: int = 10, *, exclude_seen: bool = True,
                      exclude: RatingMatrix | None = None, batch_size: int | None = None) -> pd.DataFrame:
        """Top-``k`` items of users named by their raw ids, as a table of raw ids.

        Models keep no training ratings, so the users' history is passed in: it is what
        is excluded (``exclude_seen``) and what fold-in models read. Users the model was
        trained on are scored as those users; the others are new users, folded in from
        their row of ``history`` (models with ``folds_in = False`` raise
        :class:`NotFittedForUser`).

        Parameters
        ----------
        user_ids : array-like or None
            Raw user ids, each in ``history.users``; None: every user of ``history``.
        history : RatingMatrix
            The users' ratings, with the model's items (``history.items`` equal to
            ``model.items_``; re-express other data with ``R.align(items=model.items_)``).
            Typically the training matrix, or all the data for production top-k lists.
        k : int
            Items per user.
        exclude_seen : bool
            Never recommend an item of the user's ``history`` row.
        exclude : RatingMatrix, optional
            More ratings to exclude, same users and items as ``history`` (e.g. every rating
            of the users when ``history`` holds only the ones above a threshold).
        batch_size : int, optional
            Users scored at once (see :meth:`recommend`).

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``item`` (raw ids, as in ``history`` and ``items_``),
            ``rank`` (1 = best) and ``score``; users in the order given, best first.
            Users with fewer than ``k`` unseen items have fewer rows.

        Examples
        --------
        >>> model.recommend_for(["u1", "u7"], train, k=5)                  # doctest: +SKIP
        """
        self._check_fitted()
        self._check_history(history, "history")
        if exclude is not None:
            self._check_history(exclude, "exclude")
            if not exclude.users.equals(history.users):
                raise ValueError("exclude must have the users of history, in the same order")
        if user_ids is None:
            rows = np.arange(history.n_users, dtype=np.int64)
        else:
            rows = _lookup(history.users, user_ids, "user", "history.users")
        model_users = self.users_.get_indexer(history.users[rows]).astype(np.int64)  # -1: new
        idx, scores = self.recommend(model_users, history.X[rows], k=k, exclude_seen=exclude_seen,
                                     batch_size=batch_size,
                                     exclude=None if exclude is None else exclude.X[rows])
        return self._frame(idx, scores, history.users[rows])

    def recommend_new_user(self, item_ids, k: int = 10, *, ratings=None,
                           exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` for one person the model has never seen, from the raw ids they rated.

        The user is folded in (see the model's docstring for how); their items are
        excluded when ``exclude_seen``.

        Parameters
        ----------
        item_ids : array-like
            Raw ids of the items the person rated or clicked, each in ``model.items_``.
        k : int
        ratings : array-like of float, optional
            Their ratings, aligned with ``item_ids``; ones (clicks) when omitted. Rating
            models need them.
        exclude_seen : bool

        Returns
        -------
        pandas.DataFrame
            Columns ``item``, ``rank``, ``score``.

        Examples
        --------
        >>> vae.recommend_new_user([260, 1196, 1210], k=10)                 # doctest: +SKIP
        """
        self._check_fitted()
        cols = _lookup(self.items_, item_ids, "item", "the model's items (model.items_)")
        if ratings is None:
            if self.predicts_ratings:
                raise ValueError(f"{type(self).__name__} reads ratings: pass ratings= aligned with item_ids")
            values = np.ones(len(cols), np.float32)
        else:
            values = np.asarray(ratings, dtype=np.float32).reshape(-1)
            if values.shape != cols.shape:
                raise ValueError(f"ratings has {values.size} values for {cols.size} item ids")
            if not np.isfinite(values).all():
                raise ValueError("ratings must be finite numbers")
        X = sp.csr_matrix((values, (np.zeros(len(cols), np.int64), cols)), shape=(1, self.n_items_))
        idx, scores = self.recommend(np.array([-1]), X, k=k, exclude_seen=exclude_seen)
        return self._frame(idx, scores, None).drop(columns="user")

    def predict_for(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings for (user, item) pairs given by raw ids; rating models only.

        Parameters
        ----------
        user_ids, item_ids : array-like, same length (or scalars)
            Raw ids of users the model was trained on, and of its items.

        Returns
        -------
        numpy.ndarray of float64, shape (n,)
        """
        self._check_fitted()
        if not self.predicts_ratings:
            raise TypeError(f"{type(self).__name__} ranks items and does not predict ratings")
        users = _lookup(self.users_, np.atleast_1d(np.asarray(user_ids, dtype=object)), "user",
                        "the model's training users (a new user: recommend_new_user)", unique=False)
        items = _lookup(self.items_, np.atleast_1d(np.asarray(item_ids, dtype=object)), "item",
                        "the model's items", unique=False)
        if users.shape != items.shape:
            raise ValueError(f"{users.size} user ids but {items.size} item ids: give one pair per prediction")
        pred = self.predict(users, items)
        if hasattr(pred, "detach"):
            pred = pred.detach().cpu().numpy()
        return np.asarray(pred, dtype=np.float64).reshape(-1)

    def _check_history(self, R, name: str) -> None:
        if not isinstance(R, RatingMatrix):
            raise TypeError(f"{name} must be a RatingMatrix of the users' ratings, got {type(R).__name__}")
        if not R.items.equals(self.items_):
            raise ValueError(f"{name} has other items than the model; re-express it first: "
                             f"{name}.align(items=model.items_)")

    def _frame(self, idx: np.ndarray, scores: np.ndarray, users) -> pd.DataFrame:
        """(B, k) recommend() output -> long table of raw ids, padding dropped."""
        valid = idx >= 0  # (B, k)
        counts = valid.sum(axis=1)  # (B,)
        ranks = np.broadcast_to(np.arange(1, idx.shape[1] + 1, dtype=np.int64), idx.shape)
        user_col = users[np.repeat(np.arange(len(counts)), counts)] if users is not None else None
        return pd.DataFrame({"user": user_col, "item": self.items_[idx[valid]], "rank": ranks[valid],
                             "score": scores[valid]})

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


def _wrap_hint(train) -> str:
    """The TypeError of ``fit(<not a RatingMatrix>)``, saying how to wrap the data."""
    name = type(train).__name__
    if sp.issparse(train):
        how = "autorec.RatingMatrix.from_csr(X, users=..., items=...)  (rows are users)"
    elif isinstance(train, pd.DataFrame):
        how = 'autorec.RatingMatrix.from_frame(df, user="user", item="item", rating="rating")'
    elif isinstance(train, np.ndarray):
        how = "autorec.RatingMatrix.from_csr(scipy.sparse.csr_matrix(a))  (rows are users)"
    else:
        how = "autorec.RatingMatrix.from_frame(df, ...), .from_csr(X) or .from_csv(path)"
    return f"fit expects an autorec.RatingMatrix, got {name}; wrap it: {how}"


def _lookup(index: pd.Index, ids, what: str, where: str, unique: bool = True) -> np.ndarray:
    """Positions of raw ``ids`` in ``index``; unknown (or repeated) ids are named."""
    if isinstance(ids, (str, bytes)) or np.ndim(ids) == 0:
        raise TypeError(f"{what} ids must be a list of ids, got {ids!r}")
    ids = pd.Index(list(ids)) if not isinstance(ids, pd.Index) else ids
    pos = index.get_indexer(ids) if index.is_unique else np.full(len(ids), -1)
    missing = ids[pos < 0]
    if len(missing):
        shown = ", ".join(repr(x) for x in missing[:5]) + (" ..." if len(missing) > 5 else "")
        hint = ""
        if len(index) and pd.api.types.is_integer_dtype(index.dtype) and not pd.api.types.is_integer_dtype(ids.dtype):
            hint = " (these ids are integers: pass numbers, not text)"
        raise ValueError(f"{len(missing):,} {what} id(s) not in {where}: {shown}{hint}")
    if unique and not ids.is_unique:
        raise ValueError(f"{what} ids repeat: {', '.join(repr(x) for x in ids[ids.duplicated()][:5])}")
    return pos.astype(np.int64)


def _topk_lowest_index_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` per row, equal scores in ascending item index, also across the k-th cut.

    ``torch.topk(k + 1)`` shows where a tie straddles the cut (the k-th and (k+1)-th scores
    are equal); only those rows are redone exactly (every item above the tie value, then the
    lowest-index tied ones), and only rows with ties inside the list are reordered.
    """
    n_items = scores.shape[1]
    top_scores, top_idx = torch.topk(scores, min(k + 1, n_items), dim=1)  # (b, k[+1]), descending
    straddle = top_scores[:, k] == top_scores[:, k - 1] if k < n_items else None  # (b,)
    top_scores, top_idx = top_scores[:, :k].contiguous(), top_idx[:, :k].contiguous()
    if straddle is not None and straddle.any():
        sub = scores[straddle]  # (s, n_items)
        cut = top_scores[straddle][:, -1:]  # (s, 1)
        above, tied = sub > cut, sub == cut
        need = k - above.sum(dim=1, keepdim=True)  # (s, 1) tied items that fit
        take = above | (tied & (tied.cumsum(dim=1) <= need))  # exactly k per row
        idx = take.nonzero()[:, 1].view(-1, k)  # (s, k) ascending item index
        top_idx[straddle], top_scores[straddle] = idx, sub.gather(1, idx)
    ties = (top_scores[:, 1:] == top_scores[:, :-1]).any(dim=1)  # (b,)
    if straddle is not None:
        ties |= straddle  # rebuilt rows are in index order: sort them by score too
    if ties.any():  # index order first, then a stable sort by score: ties in index order
        s, i = top_scores[ties], top_idx[ties]
        by_idx = torch.argsort(i, dim=1)
        s, i = s.gather(1, by_idx), i.gather(1, by_idx)
        order = torch.sort(s, dim=1, descending=True, stable=True).indices
        top_scores[ties], top_idx[ties] = s.gather(1, order), i.gather(1, order)
    return top_scores, top_idx
