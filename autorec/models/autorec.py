"""I-AutoRec and U-AutoRec (Sedhain, Menon, Sanner, Xie, "AutoRec: Autoencoders Meet
Collaborative Filtering", WWW 2015).

One network reconstructs a partially observed rating vector ``r`` (an item's ratings over
users for I-AutoRec, a user's ratings over items for U-AutoRec)::

    h(r) = f(W g(V r + mu) + b)          g = sigmoid, f = identity by default

trained on the observed entries only (paper eq. 2)::

    min  sum_rows ||r - h(r)||^2_O  +  lambda/2 (||W||_F^2 + ||V||_F^2)

where ``||.||_O`` sums over observed ratings. With minibatches of ``B`` of the ``n_rows``
rows the regulariser is scaled by ``B / n_rows``, so one epoch sums to the paper's
objective. The optimiser is Adam by default; ``optimizer="rprop"`` / ``"lbfgs"`` is the
paper's full-batch optimisation (:class:`autorec.train.Trainer`). The defaults were tuned
on a validation split of ML-1M, see ``benchmarks/results/autorec_tuning.md``.

``hidden=(500, 250, 500)`` is the paper's deep I-AutoRec: ``g`` after every hidden layer,
the first layer sparse (``r V``) and the decoder evaluated at the observed entries as in
the shallow net; the middle layers are dense ``nn.Linear`` s on the codes, and their
weights join the L2 term.

Training cost scales with the number of observed ratings (``route="sparse"``): the
encoder and every backward product run through sparse kernels and the decoder is evaluated
at the observed entries only (:mod:`autorec.models._sparse_ops`). ``route="dense"`` is the
plain dense masked version, kept as the reference the tests compare against.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks
from .._validate import Invalid, plain, tensor
from ..exceptions import NotFittedForUser
from ..data import RatingMatrix
from ..losses import l2_penalty, masked_sse, observed_sse
from .biased_mf import damped_biases
from ._sparse_ops import Pattern, pair_dots, sddmm, spmm
from ..train import OPTIMIZERS
from .torch_base import TorchRecommender, _rating_range, csr_from_state

__all__ = ["IAutoRec", "UAutoRec", "AutoRecNet", "ROUTES", "resolve_route"]

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
}
#: training routes: "sparse" (sparse products, decoder by SDDMM at the observed entries),
#: "sparse-mm" (the same, but the decoder's forward as a dense product then a gather),
#: "dense" (the dense masked reference), "auto" (see :func:`resolve_route`)
ROUTES = ("auto", "sparse", "sparse-mm", "dense")
#: "auto" trains on the sparse route below this share of observed cells, dense above it.
#: Measured (fwd+bwd of one 256-row batch, hidden 500, 2 threads, rows of 3,706 / 6,040):
#: density 0.05: sparse 14 / 18 ms, sparse-mm 24 / 29, dense 57 / 77; 0.2: 51 / 64, 56 / 68,
#: 66 / 90; 0.3: all within 5%; 0.5: dense 53 / 98 against sparse 83 / 161.
SPARSE_MAX_DENSITY = 0.25
_ENCODE_CHUNK = 4096  # rows encoded at once when caching codes
_DAMPING = 5.0  # of the damped-mean biases of ``residual``


def resolve_route(route: str, density: float) -> str:
    """The training route that ``route`` stands for at this density of observed cells.

    ``"auto"``: ``"sparse"`` when ``density < SPARSE_MAX_DENSITY`` (every MovieLens set:
    ML-1M 4.5%, ML-10M 1.3%), else ``"dense"``. ``"sparse-mm"`` (dense decoder forward)
    is never faster than both by more than a few percent, so "auto" does not pick it.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route != "auto":
        return route
    return "sparse" if density < SPARSE_MAX_DENSITY else "dense"


class AutoRecNet(nn.Module):
    """The AutoRec autoencoder over rows of length ``n``.

    Parameters are stored row-major for the sparse kernels: ``V`` (n, hidden[0]) is the
    encoder (``z = r @ V + mu``), ``W`` (n, hidden[-1]) the decoder (``out = h @ W.T + b``).
    ``hidden`` is an int (one hidden layer, the paper's AutoRec) or a tuple of layer sizes
    (deep AutoRec): the layers between the first and the last are ``layers``, dense
    ``nn.Linear`` s, each followed by ``g``.
    """

    def __init__(self, n: int, hidden, activation: str = "sigmoid",
                 output_activation: str = "identity", l2: float = 0.0, route: str = "sparse",
                 init_bias: float = 0.0, implicit: bool = False):
        super().__init__()
        self.g, self.f = ACTIVATIONS[activation], ACTIVATIONS[output_activation]
        self.l2, self.route, self.implicit = float(l2), route, bool(implicit)
        self.kernels = "bag"  # Pattern backend of the sparse products ("scipy": comparison)
        sizes = hidden_sizes(hidden)
        first, last = sizes[0], sizes[-1]
        bound_v, bound_w = 1.0 / np.sqrt(n), 1.0 / np.sqrt(last)  # nn.Linear's init
        self.V = nn.Parameter(torch.empty(n, first).uniform_(-bound_v, bound_v))
        self.mu = nn.Parameter(torch.zeros(first))
        self.W = nn.Parameter(torch.empty(n, last).uniform_(-bound_w, bound_w))
        self.b = nn.Parameter(torch.full((n,), float(init_bias)) if np.isscalar(init_bias)
                              else torch.as_tensor(init_bias, dtype=torch.float32).clone())
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))  # deep only

    def deep(self, h: torch.Tensor) -> torch.Tensor:
        """The middle layers on the first layer's codes (B, hidden[0]) -> (B, hidden[-1])."""
        for layer in self.layers:
            h = self.g(layer(h))
        return h

    def _middle_weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]

    # ---------------------------------------------------------------- pieces
    def encode(self, X: sp.csr_matrix, device=None) -> torch.Tensor:
        """Codes ``g(X V + mu)`` of sparse rows, shape (B, hidden); no gradient."""
        p = Pattern(X, device or self.V.device)
        with torch.no_grad():
            return self.deep(self.g(p.spmm(p.values, self.V.detach()).to(self.V.device) + self.mu))

    def forward_dense(self, Xd: torch.Tensor) -> torch.Tensor:
        """Dense reconstruction ``f(g(Xd V + mu) W^T + b)``, shape (B, n) (reference form)."""
        return self.f(self.deep(self.g(Xd @ self.V + self.mu)) @ self.W.T + self.b)

    def observed_outputs(self, p: Pattern, method: str = "sampled", sq_norms: bool = False):
        """Outputs at the pattern's entries (column-major order), shape (nnz,).

        With ``sq_norms`` also ``||W||^2 + ||V||^2``, whose gradient is folded into the
        sparse products' weight gradients (see :class:`~autorec.models._sparse_ops.SpMM`).
        """
        if not sq_norms:
            h = self.deep(self.g(spmm(p, p.values, self.V) + self.mu))  # (B, hidden[-1])
            return self.f(sddmm(p, h, self.W, method) + self.b[p.cols])
        z, v_sq = spmm(p, p.values, self.V, sq_norm=True)
        out, w_sq = sddmm(p, self.deep(self.g(z + self.mu)), self.W, method, sq_norm=True)
        sq = w_sq + v_sq
        if self.layers:
            sq = sq + l2_penalty(*self._middle_weights())
        return self.f(out + self.b[p.cols]), sq

    def penalty(self, n_batch_rows: int, n_rows: int) -> torch.Tensor:
        """``lambda/2 (||W||^2 + ||V||^2)`` scaled by the batch's share of the rows."""
        return self._l2_scale(n_batch_rows, n_rows) * l2_penalty(self.W, self.V, *self._middle_weights())

    def _l2_scale(self, n_batch_rows: int, n_rows: int) -> float:
        return 0.5 * self.l2 * (n_batch_rows / max(n_rows, 1))

    # ------------------------------------------------------------------ loss
    def loss(self, batch, step: int) -> torch.Tensor:
        """Paper eq. 2 on one minibatch: observed SSE + the scaled L2 penalty.

        With ``implicit`` the SSE runs over every cell, unobserved ones as 0 (the form
        AutoRec takes as a ranker on implicit feedback): sparse encoder, dense decoder.
        """
        B = batch.X.shape[0]
        if self.implicit:
            p = Pattern(batch.X, batch.device, self.kernels)
            h = self.deep(self.g(spmm(p, p.values, self.V) + self.mu))  # (B, hidden[-1])
            out = self.f(h @ self.W.T + self.b)  # (B, n)
            return ((out - batch.dense().to(out.device)) ** 2).sum() + self.penalty(B, batch.n_rows)
        if self.route == "dense":  # the reference: dense tensors, losses.masked_sse
            Xd = batch.dense()  # (B, n)
            mask = _observed_mask(batch.X).to(Xd.device)  # (B, n), 1 where observed
            return masked_sse(self.forward_dense(Xd), Xd, mask) + self.penalty(B, batch.n_rows)
        p = Pattern(batch.X, batch.device, self.kernels)
        method = "mm" if self.route == "sparse-mm" else "sampled"
        if self.l2 == 0:
            return observed_sse(self.observed_outputs(p, method), p.values)
        out, sq = self.observed_outputs(p, method, sq_norms=True)
        return observed_sse(out, p.values) + self._l2_scale(B, batch.n_rows) * sq


def hidden_sizes(hidden) -> tuple[int, ...]:
    """``hidden`` (an int or a sequence of layer sizes) as a tuple of ints."""
    return (int(hidden),) if isinstance(hidden, (int, np.integer)) else tuple(int(h) for h in hidden)


def _check_hidden(name: str, value) -> None:
    """A positive int, or a non-empty sequence of them (deep AutoRec)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        _checks.positive_int(name, value)
    else:
        _checks.positive_ints(name, value)


def _observed_mask(X: sp.csr_matrix) -> torch.Tensor:
    """Dense 0/1 mask of the stored entries (stored zeros are observed too)."""
    ones = sp.csr_matrix((np.ones(X.nnz, np.float32), X.indices, X.indptr), shape=X.shape)
    return torch.from_numpy(ones.toarray())


class _AutoRec(TorchRecommender):
    """What I- and U-AutoRec share; ``_item_based`` says which side the rows are."""

    _item_based: bool = False

    @property
    def predicts_ratings(self) -> bool:
        """True unless ``implicit``: then scores rank clicks (validation by NDCG@100, no RMSE)."""
        return not self.implicit

    def __init__(self, hidden=500, l2=300.0, activation="sigmoid", output_activation="identity",
                 epochs=60, batch_size=256, lr=3e-4, weight_decay=0.0, default_rating=3.0,
                 implicit=False, route="auto", optimizer="adam", residual=True, patience=None,
                 valid_metric="auto", valid_size=0.0, seed=0, device="auto", progress=True):
        self.hidden = hidden
        self.l2 = l2
        self.activation = activation
        self.output_activation = output_activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.default_rating = default_rating
        self.implicit = implicit
        self.route = route
        self.optimizer = optimizer
        self.residual = residual
        self.patience = patience
        self.valid_metric = valid_metric
        self.valid_size = valid_size
        self.seed = seed
        self.device = device
        self.progress = progress

    _param_rules = {
        "activation": _checks.one_of(*ACTIVATIONS), "output_activation": _checks.one_of(*ACTIVATIONS),
        "route": _checks.one_of(*ROUTES), "default_rating": _checks.positive,
        "implicit": _checks.boolean, "hidden": _check_hidden,
        "optimizer": _checks.one_of(*OPTIMIZERS), "residual": _checks.boolean,
    }

    # ------------------------------------------------------------- fitting
    def _prepare(self, train: RatingMatrix) -> None:
        data = train.X.data
        self.rating_range_ = (float(data.min()), float(data.max()))
        self.rating_mean_ = float(data.mean())
        self.known_items_ = np.bincount(train.X.indices, minlength=train.n_items) > 0  # (n_items,)
        if self._residual_on:
            self.user_bias_, self.item_bias_ = damped_biases(train.X, self.rating_mean_, _DAMPING)
        self._rows = rows = self._rows_of(self._inputs(train.X))  # while fitting: codes come from it
        self.route_ = resolve_route(self.route, rows.nnz / max(rows.shape[0] * rows.shape[1], 1))
        self._on_weights_changed()

    @property
    def _residual_on(self) -> bool:
        return bool(self.residual) and not self.implicit

    def _inputs(self, X: sp.csr_matrix, user_bias: np.ndarray | None = None) -> sp.csr_matrix:
        """What the network sees of the users x items ratings ``X``: with ``residual``,
        ``r - (mu + b_u + b_i)`` at the same entries (``user_bias``: of ``X``'s rows,
        default the fitted ``user_bias_``), else ``X`` itself."""
        if not self._residual_on:
            return X
        if user_bias is None:
            user_bias = self.user_bias_
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))  # (nnz,)
        base = self.rating_mean_ + user_bias[rows] + self.item_bias_[X.indices]  # (nnz,)
        return sp.csr_matrix(((X.data - base).astype(np.float32), X.indices, X.indptr), shape=X.shape)

    def _fold_user_bias(self, X: sp.csr_matrix) -> np.ndarray:
        """``b_u`` of each row of ``X`` given the fitted item biases (the last step of
        :func:`~autorec.models.biased_mf.damped_biases`), shape (B,) float32."""
        resid = X.data - self.rating_mean_ - self.item_bias_[X.indices]  # (nnz,)
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))  # (nnz,)
        total = np.bincount(rows, resid.astype(np.float64), X.shape[0])
        return (total / (np.diff(X.indptr) + _DAMPING)).astype(np.float32)

    def _baseline(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """``mu + b_u + b_i`` of position pairs (0 without ``residual``), float32."""
        if not self._residual_on:
            return np.zeros(len(u), np.float32)
        return (self.rating_mean_ + self.user_bias_[u] + self.item_bias_[i]).astype(np.float32)

    def _rows_of(self, X: sp.csr_matrix) -> sp.csr_matrix:
        """The training examples: items x users for I-AutoRec, users x items for U-AutoRec."""
        return X.T.tocsr() if self._item_based else X

    def _training_rows(self, train: RatingMatrix) -> sp.csr_matrix:
        return self._rows

    def _finish_fit(self, train: RatingMatrix) -> None:
        """Keep the codes of the whole training part's rows (what scoring needs), not the
        ratings: with a validation carve, the carved ratings are encoded too."""
        if self._residual_on and not self._item_based:  # the encoder's side: as score() folds it
            self.user_bias_ = self._fold_user_bias(train.X)
        self._rows, self._codes = self._rows_of(self._inputs(train.X)), None
        self._codes = self._codes_all()
        self._rows = None  # known_items_ stays the trained part's: their weights were fitted

    def _build_network(self) -> AutoRecNet:
        n = self.n_users_ if self._item_based else self.n_items_
        bias = 0.0 if self.implicit or self._residual_on else self.rating_mean_
        return AutoRecNet(n, self.hidden, self.activation, self.output_activation, self.l2,
                          self.route_, init_bias=bias,
                          implicit=self.implicit)

    def _on_weights_changed(self) -> None:
        if getattr(self, "_rows", None) is not None:  # fitting: codes follow the weights
            self._codes = None

    def _codes_all(self) -> torch.Tensor:
        """Codes of every training row (items for I-, users for U-AutoRec), shape
        (n_rows, hidden); encoded from the training rows while fitting, then kept."""
        if self._codes is None:
            net, rows = self.network_, self._rows
            self._codes = torch.cat([net.encode(rows[lo:lo + _ENCODE_CHUNK], self.device_)
                                     for lo in range(0, rows.shape[0], _ENCODE_CHUNK)])
        return self._codes

    # ------------------------------------------------------------ predicting
    def predict(self, user_idx, item_idx) -> np.ndarray:
        """Predicted ratings for (user, item) position pairs, clipped to the training range.

        Users or items without training ratings (or ``user_idx = -1``) get
        ``default_rating``. Returns numpy float32 of the pairs' shape.
        """
        shape, u, i = self._check_pairs(user_idx, item_idx)
        out = np.full(len(u), self._default_score, dtype=np.float32)
        ok = (u >= 0) & self.known_users_[np.maximum(u, 0)] & self.known_items_[i]  # (n,)
        if ok.any():
            net, codes = self.network_, self._codes_all()
            rows, cols = (i[ok], u[ok]) if self._item_based else (u[ok], i[ok])
            with torch.no_grad():
                dots = pair_dots(codes, net.W.detach(), rows, cols)
                vals = net.f(dots + net.b.detach()[torch.from_numpy(cols).to(dots.device)])
            out[ok] = vals.float().cpu().numpy() + self._baseline(u[ok], i[ok])
        if not self.implicit:
            np.clip(out, *self.rating_range_, out=out)
        return out.reshape(shape)

    def _bias_grid(self, user_bias: np.ndarray, device) -> torch.Tensor:
        """``mu + b_u + b_i`` for the given users' biases and every item, (B, n_items)."""
        ub = torch.from_numpy(np.ascontiguousarray(user_bias, np.float32)).to(device)
        ib = torch.from_numpy(self.item_bias_).to(device)
        return self.rating_mean_ + ub[:, None] + ib[None, :]

    @property
    def _default_score(self) -> float:
        """For users/items without training data: ``default_rating``, or 0 with ``implicit``."""
        return 0.0 if self.implicit else float(self.default_rating)

    def _finish_scores(self, S: torch.Tensor) -> torch.Tensor:
        """Items never rated in training score ``default_rating`` (as in ``predict``)."""
        unknown = torch.from_numpy(~self.known_items_).to(S.device)
        if unknown.any():
            S[:, unknown] = self._default_score
        return S.float()

    # ---------------------------------------------------------------- saving
    def _extra_state(self) -> dict:
        return {
            "rating_range": list(self.rating_range_),
            "rating_mean": self.rating_mean_,
            "known_items": torch.from_numpy(self.known_items_.copy()),
            "codes": self._codes_all().detach().cpu(),  # (n_rows, hidden)
            "route": self.route_,
            **({"user_bias": torch.from_numpy(self.user_bias_.copy()),
                "item_bias": torch.from_numpy(self.item_bias_.copy())} if self._residual_on else {}),
        }

    _extra_state_keys = ("rating_range", "rating_mean", "known_items", "route")
    _optional_state_keys = ("codes", "train_X", "user_bias", "item_bias")  # codes since format 2; train_X in format 1; biases with residual

    def _set_extra_state(self, state: dict) -> None:
        self.rating_range_ = _rating_range(state["rating_range"])
        self.rating_mean_ = float(plain(state["rating_mean"], "state['rating_mean']", "float"))
        self.known_items_ = tensor(state["known_items"], "state['known_items']", dtype=torch.bool,
                                   shape=(self.n_items_,)).numpy().copy()
        self.route_ = plain(state["route"], "state['route']", "str")
        if self.route_ not in ROUTES[1:]:
            raise Invalid(f"state['route'] is {self.route_!r}, expected one of {ROUTES[1:]}")
        if "user_bias" in state:
            self.user_bias_ = tensor(state["user_bias"], "state['user_bias']", shape=(self.n_users_,),
                                     finite=True).numpy().copy()
            self.item_bias_ = tensor(state["item_bias"], "state['item_bias']", shape=(self.n_items_,),
                                     finite=True).numpy().copy()
        else:  # files written before ``residual`` existed hold the plain model
            self.residual = False
        self._rows = None
        if ("codes" in state) == ("train_X" in state):
            raise Invalid("state must hold either 'codes' (format 2 and later) or 'train_X' (format 1)")
        if "codes" in state:
            n_rows = self.n_items_ if self._item_based else self.n_users_
            self._codes = tensor(state["codes"], "state['codes']", dtype=torch.float32,
                                 shape=(n_rows, hidden_sizes(self.hidden)[-1]), finite=True)  # (n_rows, hidden[-1])
        else:  # format 1 stored the training ratings: encode them once, keep only the codes
            X = csr_from_state(state["train_X"], (self.n_users_, self.n_items_))
            self._rows, self._codes = self._rows_of(self._inputs(X)), None

    def _set_state(self, state: dict) -> None:
        super()._set_state(state)
        self._codes = self._codes_all().to(self.device_)
        self._rows = None


class IAutoRec(_AutoRec):
    """Item-based AutoRec: each item's vector of ratings over users is reconstructed.

    The paper's best model (ML-1M RMSE 0.831). Training rows are items; a prediction for
    (u, i) is output ``u`` of item ``i``'s reconstruction. It has no parameters for users
    unseen in training (``folds_in = False``): :meth:`score` raises
    :class:`~autorec.exceptions.NotFittedForUser` for them and :meth:`predict` returns
    ``default_rating``.

    Parameters
    ----------
    hidden : int or tuple of int
        Code size k (paper: 500), or the hidden layer sizes of a deep AutoRec (the
        paper's deep I-AutoRec: ``(500, 250, 500)``).
    l2 : float
        lambda of the paper's ``lambda/2 (||W||^2 + ||V||^2)`` (per epoch; per batch it is
        scaled by the batch's share of the rows).
    activation, output_activation : {"sigmoid", "identity", "relu", "tanh", "elu"}
        g and f (paper: sigmoid, identity).
    epochs, batch_size, lr, weight_decay : Adam training (batch_size counts items).
    optimizer : {"adam", "rprop", "lbfgs"}
        ``"adam"``: minibatches (default). ``"rprop"`` / ``"lbfgs"``: the paper's full-batch
        optimisation, one step per epoch on the whole objective (``lr``: Rprop's initial
        step, e.g. 0.01; L-BFGS's first trial step, e.g. 1.0); see
        :class:`autorec.train.Trainer`.
    residual : bool
        Learn the residual over the bias-only fit ``mu + b_u + b_i`` (damped means of the
        training ratings, :func:`~autorec.models.biased_mf.damped_biases`): the network
        sees ``r - mu - b_u - b_i`` and its output is added to them, so a heavily
        regularised net falls back to the bias floor. False (I-AutoRec's default): the
        paper's plain AutoRec; True is U-AutoRec's default (see
        ``benchmarks/results/rating_defaults.md``). Ignored with ``implicit``.
    default_rating : float
        Prediction for users or items without training ratings (paper: 3).
    implicit : bool
        Rank on implicit feedback: the loss covers every cell, unobserved ones as 0 (dense
        decoder, O(rows x n x hidden) per epoch), predictions are not clipped and unknown
        users/items score 0. False (the paper): observed ratings only.
    route : {"auto", "sparse", "sparse-mm", "dense"}
        How the loss is computed; all give the same loss and gradients. ``"auto"``:
        ``"sparse"`` (cost O(nnz x hidden)) below 25% observed cells, else ``"dense"``
        (the dense masked reference); see :func:`resolve_route`.
    patience, valid_metric : early stopping on ``fit(train, valid)`` (RMSE by default).
    valid_size : float
        Share of the training ratings carved out for validation when ``fit`` gets no
        ``valid`` (seeded; 0 = off); see :class:`~autorec.models.torch_base.TorchRecommender`.
    seed, device, progress : initialisation / shuffling seed, "auto"/"cpu"/"cuda", bar.
    """

    folds_in = False
    _item_based = True

    def __init__(self, hidden=500, l2=300.0, activation="sigmoid", output_activation="identity",
                 epochs=60, batch_size=256, lr=3e-4, weight_decay=0.0, default_rating=3.0,
                 implicit=False, route="auto", optimizer="adam", residual=False, patience=None,
                 valid_metric="auto", valid_size=0.0, seed=0, device="auto", progress=True):
        super().__init__(hidden, l2, activation, output_activation, epochs, batch_size, lr,
                         weight_decay, default_rating, implicit, route, optimizer, residual,
                         patience, valid_metric, valid_size, seed, device, progress)

    def score(self, users, X) -> torch.Tensor:
        """Reconstructed ratings of all items for known users, (B, n_items) float32.

        ``X`` is not used: I-AutoRec encodes items, not users. Raises
        :class:`~autorec.exceptions.NotFittedForUser` for users unseen in training.
        """
        users, X = self._check_users_X(users, X)
        new = self._is_new(users)
        if new.any():
            raise NotFittedForUser(
                f"IAutoRec cannot score {int(new.sum())} user(s) without training ratings "
                f"(first at batch position {int(np.flatnonzero(new)[0])}): item-based AutoRec "
                "has no parameters for them. Retrain with their ratings, or use UAutoRec, "
                "which folds new users in from their history rows."
            )
        net, codes = self.network_, self._codes_all()
        u = torch.from_numpy(users).to(self.device_)
        with torch.no_grad():
            S = net.f(torch.addmm(net.b[u].unsqueeze(1), net.W[u], codes.T))  # (B, n_items)
            if self._residual_on:  # + mu + b_u + b_i
                S += self._bias_grid(self.user_bias_[users], S.device)
        return self._finish_scores(S)


class UAutoRec(_AutoRec):
    """User-based AutoRec: each user's vector of ratings over items is reconstructed.

    Paper ML-1M RMSE 0.874. Folds in users unseen in training from their history rows
    (``score(users, X)`` encodes ``X``); :meth:`predict` encodes the training rows of known
    users and gives ``default_rating`` to users or items without training ratings.
    Parameters as :class:`IAutoRec` (``batch_size`` counts users).

    **Defaults that hold across sizes** (unlike I-AutoRec's, which are the paper's model):
    ``residual=True`` (the net learns the residual over ``mu + b_u + b_i``), ``l2=100``,
    ``lr=1e-3``, and the automatic validation carve ``valid_size=0.1`` with
    ``patience=10`` (up to ``epochs=200``; the best epoch is kept). The paper's plain
    U-AutoRec with the ML-1M-tuned Adam settings (``residual=False, l2=500, lr=3e-4,
    epochs=50, valid_size=0``) fell below the bias-only floor on ML-100K (0.969 vs 0.933);
    these defaults give 0.902 there (``benchmarks/results/rating_defaults.md``).
    """

    folds_in = True
    _item_based = False

    def __init__(self, hidden=500, l2=100.0, activation="sigmoid", output_activation="identity",
                 epochs=200, batch_size=256, lr=1e-3, weight_decay=0.0, default_rating=3.0,
                 implicit=False, route="auto", optimizer="adam", residual=True, patience=10,
                 valid_metric="auto", valid_size=0.1, seed=0, device="auto", progress=True):
        super().__init__(hidden, l2, activation, output_activation, epochs, batch_size, lr,
                         weight_decay, default_rating, implicit, route, optimizer, residual,
                         patience, valid_metric, valid_size, seed, device, progress)

    def score(self, users, X) -> torch.Tensor:
        """Reconstruction of the history rows ``X``, (B, n_items) float32 (folds users in)."""
        users, X = self._check_users_X(users, X)
        net = self.network_
        user_bias = self._fold_user_bias(X) if self._residual_on else None  # (B,)
        with torch.no_grad():
            h = net.encode(self._inputs(X, user_bias), self.device_)  # (B, hidden[-1])
            S = net.f(torch.addmm(net.b, h, net.W.T))  # (B, n_items)
            if self._residual_on:  # + mu + b_u + b_i
                S += self._bias_grid(user_bias, S.device)
        return self._finish_scores(S)
