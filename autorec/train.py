"""The Trainer: the one training loop of every torch model.

A network (any ``nn.Module``) supplies ``loss(batch, step) -> scalar tensor``; the Trainer
owns everything else: seeded shuffling, batching of sparse rows, device placement, validation with early
stopping and best-state restore, NaN/inf detection, a progress bar, the per-epoch history,
and atomic checkpoints with exact resume.

All randomness of training (shuffling, dropout, negative sampling) comes from ONE
``torch.Generator`` handed to the network in each :class:`Batch`; its state is
checkpointed, so training 10 epochs in one go equals 5 + resume 5, bit for bit on CPU.

**Data parallelism.** Under ``torchrun`` (or with ``torch.distributed`` initialised) the
same loop runs on every rank (:mod:`autorec.distributed`): every rank draws the same
shuffled order from its copy of the one generator, takes every ``size``-th row of each
sorted global batch (rank ``r``: positions ``r, r + size, ...``; none when the batch has
fewer rows than ranks: a network's ``loss`` must accept an empty batch), and the network,
wrapped in ``DistributedDataParallel``, sums its gradients over the ranks. A network's loss is a
sum over its rows divided by global counts (``Batch.n_global``, ``Batch.nnz_global``),
plus once-per-batch terms scaled by ``Batch.share``; so the per-rank losses add up to the
loss of the global batch and the summed gradient is its single-process gradient. Random
numbers are drawn for the whole global batch on every rank and sliced
(``Batch.uniform_entries`` / ``uniform_rows`` / ``normal_rows``), so N ranks with global
batch B reproduce one process with batch B to float rounding, and the generators stay
equal (checked after every epoch). Rank 0 validates and writes checkpoints; the score is
broadcast, so every rank takes the same early-stopping decision.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from . import distributed
from ._checkpoint import load_checkpoint, save_checkpoint
from .exceptions import DistributedError, TrainingDiverged

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
    """One minibatch of training rows (under data parallelism: this rank's share of it).

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
        The source of all training randomness (CPU generator). Draw from it through
        :meth:`uniform_entries`, :meth:`uniform_rows` and :meth:`normal_rows`: they draw
        for the whole global batch and return this rank's part, so that every rank's
        generator stays in step and N ranks draw the numbers of one process.
    n_global : int
        Rows of the global batch (``B`` in a single process). Losses averaged over the
        batch divide their sum by it.
    nnz_global : int
        Observed entries of the global batch (``X.nnz`` in a single process).
    positions : numpy.ndarray of int64, shape (B,), or None
        Where this rank's rows sit in the sorted global batch; None: all of it.
    global_counts : numpy.ndarray of int64, shape (n_global,), or None
        Entries per row of the global batch (to find this rank's entries in a draw).
    """

    rows: torch.Tensor
    X: sp.csr_matrix
    n_rows: int
    device: torch.device
    generator: torch.Generator
    n_global: int = -1
    nnz_global: int = -1
    positions: np.ndarray | None = None
    global_counts: np.ndarray | None = None

    def __post_init__(self):
        if self.n_global < 0:
            self.n_global = self.X.shape[0]
        if self.nnz_global < 0:
            self.nnz_global = self.X.nnz

    @property
    def share(self) -> float:
        """This rank's share of the global batch's rows (1.0 in a single process): the
        factor of a term the loss adds once per batch (a regulariser of shared weights)."""
        return self.X.shape[0] / max(self.n_global, 1)

    def dense(self) -> torch.Tensor:
        """``X`` as a dense tensor on the device, shape (B, N)."""
        return torch.from_numpy(self.X.toarray()).to(self.device)

    def uniform_entries(self) -> torch.Tensor:
        """U(0, 1) numbers, one per entry of ``X`` in its CSR order, shape (nnz,), CPU."""
        u = torch.rand(self.nnz_global, generator=self.generator)  # (nnz_global,)
        if self.positions is None:
            return u
        counts = self.global_counts[self.positions]  # (B,) entries of each own row
        starts = (np.cumsum(self.global_counts) - self.global_counts)[self.positions]  # (B,)
        first = np.cumsum(counts) - counts  # (B,) where each own row starts in X.data
        return u[torch.from_numpy(np.repeat(starts - first, counts) + np.arange(counts.sum()))]

    def uniform_rows(self, *shape: int) -> torch.Tensor:
        """U(0, 1) numbers of shape (B, *shape), one block per row, CPU."""
        return self._own_rows(torch.rand((self.n_global, *shape), generator=self.generator))

    def normal_rows(self, *shape: int) -> torch.Tensor:
        """N(0, 1) numbers of shape (B, *shape), one block per row, CPU."""
        return self._own_rows(torch.randn((self.n_global, *shape), generator=self.generator))

    def _own_rows(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn if self.positions is None else drawn[torch.from_numpy(self.positions)]


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
    """``"auto"`` -> CUDA when available, else CPU; a clear error for missing CUDA.

    In a distributed job a CUDA device without an index is this rank's GPU,
    ``cuda:LOCAL_RANK``.
    """
    if device == "auto":
        return distributed.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available; use device='cpu' or 'auto'")
    return distributed.local_device(dev)


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

        Notes
        -----
        Under ``torchrun`` every rank calls ``fit`` with the same arguments and data; the
        ranks train one model together (see the module docstring) and all return the same
        weights and history. A rank that dies or hangs makes the others raise
        :class:`~autorec.exceptions.DistributedError`; ``checkpoint`` (on storage every
        rank sees) with ``resume=True`` continues the run.
        """
        if device is None:
            device = next(net.parameters()).device
        here = distributed.setup(device)  # joins the job's process group under torchrun
        changed = on_weights_changed or (lambda: None)
        identity = dict(identity or {})
        trainable = np.flatnonzero(np.diff(rows.indptr) > 0)  # (n_rows,)
        row_nnz = np.diff(rows.indptr)  # (n_rows,) entries per row
        metric = validation.metric if validation is not None else None
        optimizer = make_optimizer(self.optimizer, net, self.lr, self.weight_decay)
        full_batch = self.optimizer != "adam"
        gen = torch.Generator().manual_seed(self.seed)
        state = {"epoch": 0, "step": 0, "history": [], "best": None, "best_state": None, "bad_epochs": 0}
        if resume and checkpoint is not None and _checkpoint_found(checkpoint, here):
            state = self._load_checkpoint(checkpoint, net, optimizer, gen, identity)
            changed()
        step_loss = net.loss
        if here.distributed:
            if full_batch:
                raise ValueError(f"optimizer={self.optimizer!r} (full batch) does not run "
                                 "data-parallel yet; use optimizer='adam' under torchrun")
            _agree(here, _data_fingerprint(rows), "the training rows (shape, entries, values)")
            step_loss = _data_parallel(net, here)
        # NaN guard: `good` are weights a step has seen give a finite loss; the weights at
        # the end of an epoch are `unchecked` until the next step's loss is computed on them
        good = unchecked = copy.deepcopy(net.state_dict())
        good_epoch = unchecked_epoch = state["epoch"]
        bar = tqdm(range(state["epoch"], self.epochs), desc=self.desc,
                   disable=None if (self.progress and here.main) else True,  # None: a bar only on a terminal
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
                where = f"epoch {epoch + 1}, step {state['step']}"
                batch = _rank_batch(rows, idx, row_nnz, len(trainable), device, gen, here)
                loss = step_loss(batch, state["step"])
                with _collective(here, f"the loss and gradient all-reduce at {where}", checkpoint):
                    value = _GlobalLoss(loss, here)  # summed over the ranks while backward runs
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    value = value.wait()
                if not math.isfinite(value):
                    _diverged(net, good, good_epoch, changed, f"loss is {value} at {where}")
                good, good_epoch = unchecked, unchecked_epoch  # their loss was finite
                optimizer.step()
                state["step"] += 1
                total += value
                n_batches += 1
            if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
                _diverged(net, good, good_epoch, changed,
                          f"the weights hold NaN or infinite values after epoch {epoch + 1}")
            changed()
            if here.distributed:
                _agree(here, [_fingerprint(gen.get_state())],
                       "the random-number generators after an epoch (a network drew random "
                       "numbers of a rank-dependent size: draw through Batch.uniform_entries, "
                       "uniform_rows or normal_rows)", checkpoint)
            record = {"epoch": epoch + 1, "loss": total / max(n_batches, 1),
                      "seconds": time.perf_counter() - start}
            if validation is not None:
                net.eval()
                record[metric] = _validate(validation, here, epoch, checkpoint)
                self._early_stopping(state, record[metric], validation.lower_is_better, net)
            state["history"].append(record)
            state["epoch"] = epoch + 1
            unchecked, unchecked_epoch = copy.deepcopy(net.state_dict()), epoch + 1
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k not in ("epoch", "seconds")})
            if checkpoint is not None and here.main:
                self._save_checkpoint(checkpoint, state, net, optimizer, gen, identity)
            if self.patience is not None and state["bad_epochs"] >= self.patience:
                break
        bar.close()
        del step_loss  # a DistributedDataParallel wrapper (its hooks act only in its own steps)
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



# ------------------------------------------------------------ data parallelism
def _rank_batch(rows: sp.csr_matrix, idx: np.ndarray, row_nnz: np.ndarray, n_rows: int,
                device, gen: torch.Generator, here: distributed.World) -> Batch:
    """This rank's part of the global batch ``idx`` (sorted positions): all of it in a single
    process, else the rows at positions ``rank, rank + size, ...`` (still sorted)."""
    if not here.distributed:
        return Batch(torch.from_numpy(idx), rows[idx], n_rows, device, gen)
    positions = np.arange(here.rank, len(idx), here.size, dtype=np.int64)  # (B_r,)
    own = idx[positions]
    counts = row_nnz[idx]  # (B,) entries per row of the global batch
    return Batch(torch.from_numpy(own), rows[own], n_rows, device, gen, n_global=len(idx),
                 nnz_global=int(counts.sum()), positions=positions, global_counts=counts)


class _Loss(torch.nn.Module):
    """``net.loss`` as a forward pass, so that DistributedDataParallel sees each step.

    A rank without rows (a last batch smaller than the world) calls it too, with an empty
    batch: it draws the batch's random numbers like the others (so the generators stay
    equal) and reaches the same parameters (so DDP reduces the same ones); its loss is 0.
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: Batch, step: int) -> torch.Tensor:
        return self.net.loss(batch, step)


def _sum_gradients(process_group, bucket):
    """DDP communication hook: the SUM of the ranks' gradients (DDP's default averages).

    The per-rank losses add up to the global batch's loss, so the sum is its gradient.
    """
    work = torch.distributed.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def _data_parallel(net: torch.nn.Module, here: distributed.World):
    """``net.loss`` wrapped in DistributedDataParallel with summed gradients.

    DDP looks for the parameters a step leaves without gradient (a network that trains parts
    of itself in turns, or holds some fixed): those nobody used keep ``grad = None``, so Adam
    skips them as in one process. The search walks the step's autograd graph (tens of nodes
    here); a network sure to use every parameter in every step may set
    ``ddp_find_unused_parameters = False``.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    options = {"find_unused_parameters": bool(getattr(net, "ddp_find_unused_parameters", True)),
               "gradient_as_bucket_view": True}
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        options["forward_sync_buffers"] = False  # buffers never change in training
    else:  # torch before 2.13
        options["broadcast_buffers"] = False
    with _collective(here, "wrapping the network in DistributedDataParallel"):
        ddp = DDP(_Loss(net), **options)  # checks the ranks' parameter shapes, syncs rank 0's
    ddp.register_comm_hook(None, _sum_gradients)
    return ddp


def _collective(here: distributed.World, what: str, checkpoint=None):
    """A collective step; its failure names the checkpoint that resumes the run."""
    if not here.distributed:
        return contextlib.nullcontext()
    if checkpoint is not None:
        what += f" (the last checkpoint, {checkpoint}, resumes the run: fit again with resume=True)"
    return distributed.collective(what)


class _GlobalLoss:
    """The loss of the whole global batch: this rank's, summed over the ranks by an
    all-reduce started now and awaited by :meth:`wait` (it overlaps the backward pass)."""

    def __init__(self, loss: torch.Tensor, here: distributed.World):
        self.value = loss.item()
        self.work = None
        if here.distributed:
            self.sum = distributed.as_comm_tensor([self.value])
            self.work = torch.distributed.all_reduce(self.sum, async_op=True)

    def wait(self) -> float:
        if self.work is None:
            return self.value
        self.work.wait()
        return float(self.sum.item())


def _validate(validation: Validation, here: distributed.World, epoch: int, checkpoint) -> float:
    """The epoch's score: computed on rank 0 and broadcast, so every rank decides alike."""
    if not here.distributed:
        return float(validation.score())
    ok, score = 1.0, math.nan
    error = None
    if here.main:
        try:
            score = float(validation.score())
        except Exception as exc:  # tell the others before raising, so they do not wait
            ok, error = 0.0, exc
    with _collective(here, f"the validation broadcast after epoch {epoch + 1}", checkpoint):
        ok, score = distributed.broadcast_floats([ok, score])
    if error is not None:
        raise error
    if not ok:
        raise DistributedError(f"rank 0 failed to validate epoch {epoch + 1} (its log says why)")
    return score


def _agree(here: distributed.World, values, what: str, checkpoint=None) -> None:
    """Raise on every rank unless every rank holds rank 0's ``values`` (a few floats)."""
    with _collective(here, f"comparing {what} across the ranks", checkpoint):
        theirs = distributed.broadcast_floats(values)
        differ = distributed.all_sum([float(list(map(float, values)) != theirs)])[0]
    if differ:
        raise DistributedError(f"{int(differ)} of {here.size} ranks differ from rank 0 in {what}; "
                               f"rank {here.rank} has {list(values)}, rank 0 {theirs}")


def _data_fingerprint(rows: sp.csr_matrix) -> list[float]:
    """A few exact numbers that differ when two ranks hold other training rows."""
    return [float(rows.shape[0]), float(rows.shape[1]), float(rows.nnz),
            float(np.asarray(rows.indices, dtype=np.float64).sum()),
            float(np.asarray(rows.data, dtype=np.float64).sum()), _fingerprint(rows.indptr)]


def _fingerprint(array) -> float:
    """48 bits of the SHA-256 of an array's bytes, as an exact float."""
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    return float(int.from_bytes(hashlib.sha256(np.ascontiguousarray(data).tobytes()).digest()[:6], "little"))


def _checkpoint_found(checkpoint, here: distributed.World) -> bool:
    """Whether to resume: rank 0 decides; a rank that cannot see rank 0's file says so."""
    found = Path(checkpoint).exists()
    if not here.distributed:
        return found
    with _collective(here, "agreeing on the checkpoint to resume"):
        main_found = bool(distributed.broadcast_floats([float(found)])[0])
        missing = distributed.all_sum([float(main_found and not found)])[0]
    if missing:
        raise DistributedError(
            f"{checkpoint} exists on rank 0 but {int(missing)} rank(s) cannot read it: put "
            "checkpoints on storage that every rank sees (a shared file system)")
    return main_found
