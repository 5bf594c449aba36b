"""The Trainer: the one training loop of every torch model.

A network supplies ``loss(batch, step) -> scalar tensor``; the Trainer owns everything
else: seeded shuffling, batching of sparse rows, device placement, validation with early
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

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._io import atomic_path

__all__ = ["Batch", "Trainer", "TrainingDiverged", "resolve_device"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the model keeps its last good state."""


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


class Trainer:
    """Runs the training loop for a :class:`~autorec.models.torch_model.TorchRecommender`.

    Parameters
    ----------
    model : TorchRecommender
        Supplies ``network_`` (with ``loss(batch, step)``) and the hyperparameters
        ``epochs, batch_size, lr, weight_decay, seed, patience, valid_metric, progress``.
    """

    def __init__(self, model):
        self.model = model

    # ---------------------------------------------------------------- public
    def fit(self, rows: sp.csr_matrix, valid=None, checkpoint=None, resume: bool = False) -> list[dict]:
        """Train on the rows of ``rows``; returns the history (also ``model.history_``).

        Parameters
        ----------
        rows : scipy.sparse.csr_matrix, shape (n_rows, N)
            Training rows; empty rows are skipped.
        valid : RatingMatrix or (RatingMatrix, RatingMatrix), optional
            Held-out ratings (RMSE / NDCG with training history) or (fold-in, held-out).
        checkpoint : str or Path, optional
            Written atomically after every epoch.
        resume : bool
            Continue from ``checkpoint`` when it exists.
        """
        m = self.model
        net, device = m.network_, m.device_
        trainable = np.flatnonzero(np.diff(rows.indptr) > 0)  # (n_rows,)
        metric = self._metric_name(valid)
        optimizer = make_adam(net, m.lr, m.weight_decay)
        gen = torch.Generator().manual_seed(int(m.seed))
        state = {"epoch": 0, "step": 0, "history": [], "best": None, "best_state": None, "bad_epochs": 0}
        if resume and checkpoint is not None and Path(checkpoint).exists():
            state = self._load_checkpoint(checkpoint, optimizer, gen)
        last_good = copy.deepcopy(net.state_dict())
        bar = tqdm(range(state["epoch"], m.epochs), desc=type(m).__name__, disable=not m.progress,
                   initial=state["epoch"], total=m.epochs, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            net.train()
            order = trainable[torch.randperm(len(trainable), generator=gen).numpy()]  # (n_rows,)
            total, n_batches = 0.0, 0
            for lo in range(0, len(order), m.batch_size):
                idx = np.sort(order[lo:lo + m.batch_size])  # sorted rows slice faster
                batch = Batch(torch.from_numpy(idx), rows[idx], len(trainable), device, gen)
                loss = net.loss(batch, state["step"])
                if not torch.isfinite(loss):
                    net.load_state_dict(last_good)
                    m._on_weights_changed()
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
            m._on_weights_changed()
            record = {"epoch": epoch + 1, "loss": total / max(n_batches, 1),
                      "seconds": time.perf_counter() - start}
            if metric is not None:
                net.eval()
                record[metric] = m._validation_score(valid, metric)
                self._early_stopping(state, record[metric], metric, net)
            state["history"].append(record)
            state["epoch"] = epoch + 1
            last_good = copy.deepcopy(net.state_dict())
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k not in ("epoch", "seconds")})
            if checkpoint is not None:
                self._save_checkpoint(checkpoint, state, optimizer, gen)
            if m.patience is not None and state["bad_epochs"] >= m.patience:
                break
        bar.close()
        if state["best_state"] is not None:
            net.load_state_dict(state["best_state"])
            m._on_weights_changed()
        net.eval()
        m.history_ = state["history"]
        m.best_epoch_ = state.get("best_epoch")
        return m.history_

    # --------------------------------------------------------------- helpers
    def _metric_name(self, valid) -> str | None:
        if valid is None:
            return None
        name = self.model.valid_metric
        if name == "auto":
            name = "rmse" if self.model.predicts_ratings and not isinstance(valid, tuple) else "ndcg@100"
        return name

    def _early_stopping(self, state: dict, value: float, metric: str, net) -> None:
        lower_is_better = metric in ("rmse", "mae")
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

    def _save_checkpoint(self, path, state, optimizer, gen) -> None:
        m = self.model
        payload = {
            "format": "autorec-checkpoint",
            "class": type(m).__name__,
            "params": {k: v for k, v in m.get_params().items() if k not in ("epochs", "progress")},
            "network": m.network_.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "epoch": state["epoch"],
            "step": state["step"],
            "history": state["history"],
            "best": state["best"],
            "best_epoch": state.get("best_epoch"),
            "best_state": state["best_state"],
            "bad_epochs": state["bad_epochs"],
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def _load_checkpoint(self, path, optimizer, gen) -> dict:
        m = self.model
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != "autorec-checkpoint" or payload["class"] != type(m).__name__:
            raise ValueError(f"{path}: not a checkpoint of a {type(m).__name__}")
        params = {k: v for k, v in m.get_params().items() if k not in ("epochs", "progress")}
        if payload["params"] != params:
            diff = {k: (payload["params"].get(k), v) for k, v in params.items() if payload["params"].get(k) != v}
            raise ValueError(f"{path}: checkpoint was written with other parameters (saved, now): {diff}")
        m.network_.load_state_dict(payload["network"])
        optimizer.load_state_dict(payload["optimizer"])
        gen.set_state(payload["generator"])
        m._on_weights_changed()
        return {k: payload[k] for k in ("epoch", "step", "history", "best", "best_epoch", "best_state", "bad_epochs")}
