"""The Trainer: the one training loop of every torch model.

A network (any ``nn.Module``) supplies ``loss(batch, step) -> scalar tensor``; the Trainer
owns everything else: seeded shuffling, batching of sparse rows, device placement, validation with early
stopping and best-state restore, NaN/inf detection, a progress bar, the per-epoch history,
and atomic checkpoints with exact resume.

All randomness of training (shuffling, dropout, negative sampling) comes from ONE
``torch.Generator`` handed to the network in each :class:`Batch`; its state is
checkpointed, so training 10 epochs in one go equals 5 + resume 5, bit for bit on CPU.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._checkpoint import load_checkpoint, save_checkpoint
from .exceptions import TrainingDiverged

__all__ = ["Batch", "OPTIMIZERS", "Trainer", "TrainingDiverged", "Validation", "resolve_device"]

#: the Trainer's optimisers: "adam" (minibatches, the default), and the full-batch
#: "rprop" and "lbfgs" (one step per epoch on the gradient of all rows; Sedhain et al. 2015
#: trained AutoRec this way)
OPTIMIZERS = ("adam", "rprop", "lbfgs")
#: L-BFGS memory (pairs of past steps kept)
LBFGS_HISTORY = 20
#: most loss evaluations of one L-BFGS line search
LBFGS_MAX_LS = 20


@dataclass
class Batch:
    """One minibatch of training rows.

    Attributes
    ----------
    rows : torch.Tensor of int64, shape (B,)
        Positions of the rows in the training matrix (users; items for I-AutoRec), on CPU.
    X : scipy.sparse.csr_matrix, shape (B, N), float32
        Their observed entries.
    n_rows : int
        Number of trainable rows in the whole matrix (to scale per-batch regularisers).
    device : torch.device
    generator : torch.Generator
        The source of all training randomness (CPU generator).
    """

    rows: torch.Tensor
    X: sp.csr_matrix
    n_rows: int
    device: torch.device
    generator: torch.Generator

    def dense(self) -> torch.Tensor:
        """``X`` as a dense tensor on the device, shape (B, N)."""
        return torch.from_numpy(self.X.toarray()).to(self.device)


@dataclass(frozen=True)
class Validation:
    """How the Trainer scores an epoch: ``score()`` -> float, named ``metric``.

    ``score`` is called after each epoch with the network in eval mode; the epoch with the
    best value (lowest when ``lower_is_better``) is kept.
    """

    metric: str
    score: Callable[[], float]
    lower_is_better: bool = False


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a clear error for missing CUDA."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def _diverged(net, good: dict, good_epoch: int, changed, what: str):
    """Restore the last weights known to give a finite loss, and raise TrainingDiverged."""
    net.load_state_dict(good)
    changed()
    kept = f"the weights after epoch {good_epoch}" if good_epoch else "its initial weights"
    raise TrainingDiverged(f"{what}; the model keeps {kept}, the last whose loss was finite. "
                           "Lower lr or raise the regularisation.")


def make_adam(net: torch.nn.Module, lr: float, weight_decay: float):
    """Adam over ``net``'s parameters, fused (one kernel for all tensors) where torch has it.

    The fused step is ~3x (ML-1M AutoRec) to ~9x (ML-10M size) faster than the default
    single-tensor step on CPU (``benchmarks/results/autorec_speed.md``); at ML-10M size the
    unfused step cost more than the sparse forward and backward together.
    """
    params = list(net.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def make_optimizer(name: str, net: torch.nn.Module, lr: float, weight_decay: float):
    """The optimiser called ``name`` (one of :data:`OPTIMIZERS`) over ``net``'s parameters.

    ``"rprop"``: :class:`torch.optim.Rprop`, ``lr`` is the initial per-weight step.
    ``"lbfgs"``: :class:`torch.optim.LBFGS` with a strong-Wolfe line search, one iteration per
    ``step`` (its memory carries over between steps); ``lr`` scales the line search's first
    trial step (1.0 is the usual choice). Neither takes ``weight_decay``: put the L2 term in
    the loss (AutoRec's ``l2`` is).
    """
    if name == "adam":
        return make_adam(net, lr, weight_decay)
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if weight_decay:
        raise ValueError(f"optimizer={name!r} takes no weight_decay (got {weight_decay}); "
                         "regularise in the loss instead")
    params = list(net.parameters())
    if name == "rprop":
        return torch.optim.Rprop(params, lr=lr)
    # max_eval bounds the line search's evaluations (torch's default, 5/4 max_iter, would
    # leave one: a step that overshoots is then never shortened and L-BFGS stalls)
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=1 + LBFGS_MAX_LS,
                             history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe",
                             tolerance_grad=0.0, tolerance_change=0.0)


class Trainer:
    """The one training loop: seeded minibatches of sparse rows, Adam, early stopping.

    Parameters
    ----------
    epochs, batch_size : int
        Passes over the trainable rows, and rows per step. With a full-batch ``optimizer``
        an epoch is one step on the gradient of all rows, and ``batch_size`` only sets how
        many rows are put through the network at once (their gradients are summed).
    lr, weight_decay : float
        The optimiser's learning rate (see :func:`make_optimizer`) and Adam's (coupled)
        weight decay.
    optimizer : {"adam", "rprop", "lbfgs"}
        ``"adam"`` (default): shuffled minibatches. ``"rprop"`` / ``"lbfgs"``: full batch,
        deterministic (no shuffling), L-BFGS re-evaluating the loss in its line search.
    seed : int
        Seeds the one generator of all training randomness.
    patience : int, optional
        Stop after this many epochs without a better validation score (None: never).
    progress : bool
        Show a progress bar.
    desc : str
        Label of the progress bar.

    Examples
    --------
    Any ``nn.Module`` with ``loss(batch, step)`` trains, no recommender needed:

    >>> trainer = Trainer(epochs=5, batch_size=64, lr=1e-3)        # doctest: +SKIP
    >>> history = trainer.fit(net, rows)                            # doctest: +SKIP
    """

    def __init__(self, *, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                 seed: int = 0, patience: int | None = None, progress: bool = False,
                 desc: str = "train", optimizer: str = "adam"):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.optimizer = optimizer
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.seed, self.patience = int(seed), patience
        self.progress, self.desc = bool(progress), desc
        self.best_epoch: int | None = None

    # ---------------------------------------------------------------- public
    def fit(self, net: torch.nn.Module, rows: sp.csr_matrix, *, device=None,
            validation: Validation | None = None,
            on_weights_changed: Callable[[], None] | None = None,
            checkpoint=None, resume: bool = False, identity: dict | None = None) -> list[dict]:
        """Train ``net`` on the rows of ``rows``; returns the per-epoch history.

        Parameters
        ----------
        net : torch.nn.Module
            With ``loss(batch, step) -> scalar tensor``; already on ``device``.
        rows : scipy.sparse.csr_matrix, shape (n_rows, N)
            Training rows; empty rows are skipped.
        device : torch.device, optional
            Where batches go (``Batch.device``); the device of ``net``'s first parameter
            by default.
        validation : Validation, optional
            Scores every epoch; enables ``patience`` and restores the best epoch.
        on_weights_changed : callable, optional
            Called whenever the weights change outside a step (after each epoch, after a
            restore), e.g. to drop caches that depend on them.
        checkpoint : str or Path, optional
            Written atomically after every epoch.
        resume : bool
            Continue from ``checkpoint`` when it exists.
        identity : dict, optional
            Plain values that name the run (model class and parameters); a checkpoint
            written under another identity is refused.
        """
        if device is None:
            device = next(net.parameters()).device
        changed = on_weights_changed or (lambda: None)
        identity = dict(identity or {})
        trainable = np.flatnonzero(np.diff(rows.indptr) > 0)  # (n_rows,)
        metric = validation.metric if validation is not None else None
        optimizer = make_optimizer(self.optimizer, net, self.lr, self.weight_decay)
        full_batch = self.optimizer != "adam"
        gen = torch.Generator().manual_seed(self.seed)
        state = {"epoch": 0, "step": 0, "history": [], "best": None, "best_state": None, "bad_epochs": 0}
        if resume and checkpoint is not None and Path(checkpoint).exists():
            state = self._load_checkpoint(checkpoint, net, optimizer, gen, identity)
            changed()
        # NaN guard: `good` are weights a step has seen give a finite loss; the weights at
        # the end of an epoch are `unchecked` until the next step's loss is computed on them
        good = unchecked = copy.deepcopy(net.state_dict())
        good_epoch = unchecked_epoch = state["epoch"]
        bar = tqdm(range(state["epoch"], self.epochs), desc=self.desc, disable=not self.progress,
                   initial=state["epoch"], total=self.epochs, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            net.train()
            order = trainable[torch.randperm(len(trainable), generator=gen).numpy()]  # (n_rows,)
            total, n_batches = 0.0, 0
            if full_batch:  # one step on the gradient of every row; the loop below is idle
                total, n_batches = self._full_batch_step(net, rows, trainable, device, gen, optimizer,
                                                         state, epoch, good, good_epoch, changed), 1
                good, good_epoch = unchecked, unchecked_epoch  # the step's first loss was finite
                state["step"] += 1
            for lo in range(0, 0 if full_batch else len(order), self.batch_size):
                idx = np.sort(order[lo:lo + self.batch_size])  # sorted rows slice faster
                batch = Batch(torch.from_numpy(idx), rows[idx], len(trainable), device, gen)
                loss = net.loss(batch, state["step"])
                if not torch.isfinite(loss):
                    _diverged(net, good, good_epoch, changed,
                              f"loss is {loss.item()} at epoch {epoch + 1}, step {state['step']}")
                good, good_epoch = unchecked, unchecked_epoch  # their loss was finite
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] += 1
                total += loss.item()
                n_batches += 1
            if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
                _diverged(net, good, good_epoch, changed,
                          f"the weights hold NaN or infinite values after epoch {epoch + 1}")
            changed()
            record = {"epoch": epoch + 1, "loss": total / max(n_batches, 1),
                      "seconds": time.perf_counter() - start}
            if validation is not None:
                net.eval()
                record[metric] = float(validation.score())
                self._early_stopping(state, record[metric], validation.lower_is_better, net)
            state["history"].append(record)
            state["epoch"] = epoch + 1
            unchecked, unchecked_epoch = copy.deepcopy(net.state_dict()), epoch + 1
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k not in ("epoch", "seconds")})
            if checkpoint is not None:
                self._save_checkpoint(checkpoint, state, net, optimizer, gen, identity)
            if self.patience is not None and state["bad_epochs"] >= self.patience:
                break
        bar.close()
        if state["best_state"] is not None:
            net.load_state_dict(state["best_state"])
            changed()
        net.eval()
        self.best_epoch = state.get("best_epoch")
        return state["history"]

    # --------------------------------------------------------------- helpers
    def _full_batch_step(self, net, rows, trainable, device, gen, optimizer, state, epoch,
                         good, good_epoch, changed) -> float:
        """One Rprop / L-BFGS step on the full objective; returns its loss before the step.

        The closure sums the losses (and gradients) of ``batch_size``-row chunks in row
        order: each chunk's regulariser is scaled by its share of the rows, so the sum is
        the whole objective. L-BFGS calls it again in its line search.
        """
        chunks = [np.asarray(trainable[lo:lo + self.batch_size])
                  for lo in range(0, len(trainable), self.batch_size)]

        def closure():
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for idx in chunks:
                loss = net.loss(Batch(torch.from_numpy(idx), rows[idx], len(trainable), device, gen),
                                state["step"])
                if not torch.isfinite(loss):
                    _diverged(net, good, good_epoch, changed,
                              f"loss is {loss.item()} at epoch {epoch + 1} ({self.optimizer})")
                loss.backward()
                total += loss.item()
            return torch.tensor(total)

        return float(optimizer.step(closure))

    @staticmethod
    def _early_stopping(state: dict, value: float, lower_is_better: bool, net) -> None:
        best = state["best"]
        if math.isnan(value):
            improved = False
        elif best is None:
            improved = True
        else:
            improved = value < best if lower_is_better else value > best
        if improved:
            state["best"], state["bad_epochs"] = value, 0
            state["best_state"] = copy.deepcopy(net.state_dict())
            state["best_epoch"] = state["epoch"] + 1
        else:
            state["bad_epochs"] += 1

    def _save_checkpoint(self, path, state, net, optimizer, gen, identity: dict) -> None:
        save_checkpoint(path, state=state, net=net, optimizer=optimizer, gen=gen, identity=identity)

    @staticmethod
    def _load_checkpoint(path, net, optimizer, gen, identity: dict) -> dict:
        return load_checkpoint(path, net, optimizer, gen, identity)

