"""Data parallelism on ``torch.distributed``: the process group, who is who, and the few
collectives the Trainer and the export need.

A process is part of a distributed job when ``torch.distributed`` is already initialised
(the caller did it), or when a launcher (``torchrun``, a Slurm script around it, Kubernetes'
PyTorchJob, TorchX) set ``WORLD_SIZE > 1`` and the ``env://`` rendezvous variables
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``). Then :func:`setup` initialises
the process group itself: ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per process,
``cuda:LOCAL_RANK``), with a timeout of ``$AUTOREC_DIST_TIMEOUT`` seconds (default 600) after
which a collective that waits on a hung rank fails instead of blocking forever. A rank that
dies closes its connections, so the others fail at their next collective at once.

Nothing here is specific to a model: :class:`~autorec.train.Trainer` and
:func:`~autorec.export.export_topk` call these functions, and they are no-ops in a single
process.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch

from .exceptions import DistributedError

__all__ = ["World", "world", "setup", "is_main", "local_device", "timeout_seconds",
           "all_sum", "as_comm_tensor", "broadcast_floats", "all_gather_int64",
           "collective", "DistributedError"]

#: seconds a collective waits for the other ranks before failing (``$AUTOREC_DIST_TIMEOUT``)
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class World:
    """The processes of a job: ``size`` ranks, this one is ``rank`` (``local_rank`` on its node)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"${name}={value!r} is not an integer") from None


def _initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world() -> World:
    """This process's place in the job: from the initialised process group, else from the
    launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), else one process."""
    if _initialised():
        return World(torch.distributed.get_world_size(), torch.distributed.get_rank(),
                     _env_int("LOCAL_RANK", 0))
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:  # RANK and LOCAL_RANK alone (set for other reasons) mean nothing here
        return World()
    rank = _env_int("RANK", 0)
    if not 0 <= rank < size:
        raise DistributedError(f"RANK={rank} is not in [0, WORLD_SIZE={size})")
    return World(size, rank, _env_int("LOCAL_RANK", 0))


def is_main() -> bool:
    """True in a single process and on rank 0 of a distributed job."""
    return world().main


def timeout_seconds() -> float:
    """The process-group timeout: ``$AUTOREC_DIST_TIMEOUT`` seconds, default 600."""
    value = os.environ.get("AUTOREC_DIST_TIMEOUT", "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"$AUTOREC_DIST_TIMEOUT={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise DistributedError(f"$AUTOREC_DIST_TIMEOUT must be > 0 seconds, got {value!r}")
    return seconds


def local_device(device: torch.device) -> torch.device:
    """``device`` for this rank: a CUDA device without an index becomes ``cuda:LOCAL_RANK``
    in a distributed job (one GPU per process); anything else is kept."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world().distributed:
        return torch.device("cuda", world().local_rank)
    return device


def setup(device=None) -> World:
    """Join the job's process group when this process is part of one; returns :func:`world`.

    Nothing happens in a single process or when the group is already initialised. Otherwise
    the group is initialised from the environment (``env://``): backend ``nccl`` when
    ``device`` is a CUDA device (which becomes the current device), else ``gloo``; timeout
    :func:`timeout_seconds`.
    """
    here = world()
    if not here.distributed or _initialised():
        return here
    if not torch.distributed.is_available():
        raise DistributedError(f"WORLD_SIZE={here.size} but this torch build has no torch.distributed")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={here.size} but {' and '.join(missing)} not set: start the job with "
            "torchrun (it sets the env:// rendezvous variables), or initialise torch.distributed "
            "yourself before training")
    device = torch.device(device) if device is not None else torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_device(device))
    try:
        torch.distributed.init_process_group(
            backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_seconds()))
    except Exception as exc:
        raise DistributedError(
            f"rank {here.rank} of {here.size} could not join the process group at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({backend}): {exc}"
        ) from exc
    return world()


# --------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    """Where collective tensors live: the current CUDA device for nccl, else CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


#: words of the messages gloo, nccl and the c10d store give when a peer is lost or hangs
_LOST_PEER = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe")


def _lost_peer(exc: BaseException) -> bool:
    dist_error = getattr(torch.distributed, "DistError", ())
    if dist_error and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return any(word in text for word in _LOST_PEER)


@contextlib.contextmanager
def collective(what: str):
    """Turn a failed collective (a rank died, hung past the timeout, or left) into one
    :class:`DistributedError` that says which rank saw it and while doing what; other
    errors pass unchanged."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as exc:  # gloo reports a lost peer as a plain RuntimeError
        if not _lost_peer(exc):
            raise
        here = world()
        raise DistributedError(
            f"rank {here.rank} of {here.size}: {what} failed, so another rank died, hung or "
            f"stopped early (its own log says why): {' '.join(str(exc).split())[:500]}"
        ) from exc


def as_comm_tensor(values) -> torch.Tensor:
    """A few floats as a float64 tensor where the backend's collectives want it."""
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1).to(_comm_device())


def all_sum(values) -> list[float]:
    """Element-wise sum over the ranks of a few floats (float64; one all-reduce)."""
    t = as_comm_tensor(values)
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


def broadcast_floats(values, src: int = 0) -> list[float]:
    """Rank ``src``'s floats on every rank (float64; the others pass placeholders of the
    same length)."""
    t = as_comm_tensor(values)
    torch.distributed.broadcast(t, src)
    return t.cpu().tolist()


def all_gather_int64(values) -> list[list[int]]:
    """Every rank's list of int64 values (the same length on every rank), in rank order."""
    t = torch.as_tensor(values, dtype=torch.int64).reshape(-1).to(_comm_device())
    out = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(out, t)
    return [o.cpu().tolist() for o in out]
