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

__all__ = ["Batch", "Trainer", "TrainingDiverged", "Validation", "resolve_device"]


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


class Trainer:
    """The one training loop: seeded minibatches of sparse rows, Adam, early stopping.

    Parameters
    ----------
    epochs, batch_size : int
        Passes over the trainable rows, and rows per step.
    lr, weight_decay : float
        Adam's learning rate and (coupled) weight decay.
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
                 desc: str = "train"):
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
        optimizer = make_adam(net, self.lr, self.weight_decay)
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
            for lo in range(0, len(order), self.batch_size):
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

