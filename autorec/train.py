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

from ._io import atomic_path
from .exceptions import ModelFileError, TrainingDiverged

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
        Show a progress bar (on a terminal only: none when stderr is a file or a pipe).
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
        last_good = copy.deepcopy(net.state_dict())
        bar = tqdm(range(state["epoch"], self.epochs), desc=self.desc,
                   disable=None if self.progress else True,  # None: a bar only on a terminal
                   initial=state["epoch"], total=self.epochs, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            net.train()
            order = trainable[torch.randperm(len(trainable), generator=gen).numpy()]  # (n_rows,)
            total, n_batches = 0.0, 0
            if full_batch:  # one step on the gradient of every row; the loop below is idle
                total, n_batches = self._full_batch_step(net, rows, trainable, device, gen, optimizer,
                                                         state, epoch, last_good, changed), 1
                state["step"] += 1
            for lo in range(0, 0 if full_batch else len(order), self.batch_size):
                idx = np.sort(order[lo:lo + self.batch_size])  # sorted rows slice faster
                batch = Batch(torch.from_numpy(idx), rows[idx], len(trainable), device, gen)
                loss = net.loss(batch, state["step"])
                if not torch.isfinite(loss):
                    net.load_state_dict(last_good)
                    changed()
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {state['step']}; "
                        "the model keeps the weights of the last good epoch. Lower lr or raise "
                        "the regularisation."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] += 1
                total += loss.item()
                n_batches += 1
            changed()
            record = {"epoch": epoch + 1, "loss": total / max(n_batches, 1),
                      "seconds": time.perf_counter() - start}
            if validation is not None:
                net.eval()
                record[metric] = float(validation.score())
                self._early_stopping(state, record[metric], validation.lower_is_better, net)
            state["history"].append(record)
            state["epoch"] = epoch + 1
            last_good = copy.deepcopy(net.state_dict())
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
                         last_good, changed) -> float:
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
                    net.load_state_dict(last_good)
                    changed()
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at epoch {epoch + 1} ({self.optimizer}); the model "
                        "keeps the weights of the last good epoch. Lower lr or raise the "
                        "regularisation.")
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
        payload = {
            "format": "autorec-checkpoint",
            "identity": identity,
            "network": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            **{k: state.get(k) for k in _RESUMED},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @staticmethod
    def _load_checkpoint(path, net, optimizer, gen, identity: dict) -> dict:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(f"{path}: not a readable checkpoint ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != "autorec-checkpoint":
            raise ModelFileError(f"{path}: not an autorec checkpoint")
        saved = payload.get("identity", {})
        if saved != identity:
            diff = {k: (saved.get(k), identity.get(k)) for k in set(saved) | set(identity)
                    if saved.get(k) != identity.get(k)}
            raise ModelFileError(f"{path}: checkpoint was written for another run (saved, now): {diff}")
        net.load_state_dict(payload["network"])
        optimizer.load_state_dict(payload["optimizer"])
        gen.set_state(payload["generator"])
        return {k: payload[k] for k in _RESUMED}


#: Trainer state carried by a checkpoint besides weights, optimizer and generator
_RESUMED = ("epoch", "step", "history", "best", "best_epoch", "best_state", "bad_epochs")
