"""The Trainer's checkpoint file: written atomically with a digest, read back verified.

A checkpoint is one ``torch.save`` file of tensors and plain values::

    {"format": "autorec-checkpoint", "identity": {...}, "network": state_dict,
     "optimizer": Adam state_dict, "generator": uint8 tensor, "epoch": int, "step": int,
     "history": [...], "best": float | None, "best_epoch": int | None,
     "best_state": state_dict | None, "bad_epochs": int, "digest": {"sha256": "..."}}

Reading checks the digest (checkpoints written before digests existed have none and are
read without that check), then every entry against the network, optimizer and generator
it is loaded into (keys, shapes, dtypes) *before* anything is copied: a fused Adam step on
moment tensors of the wrong size would write out of bounds.
"""
from __future__ import annotations

import numbers
from pathlib import Path

from . import _validate
from ._digest import DIGEST_KEY, digest
from ._io import atomic_path
from ._validate import Invalid
from .exceptions import ModelFileError

__all__ = ["FORMAT", "RESUMED", "save_checkpoint", "load_checkpoint"]

FORMAT = "autorec-checkpoint"
#: Trainer state carried by a checkpoint besides weights, optimizer and generator
RESUMED = ("epoch", "step", "history", "best", "best_epoch", "best_state", "bad_epochs")


def save_checkpoint(path, *, state: dict, net, optimizer, gen, identity: dict) -> None:
    """Write the Trainer's state to ``path`` atomically, with its digest."""
    import torch

    payload = {
        "format": FORMAT,
        "identity": identity,
        "network": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": gen.get_state(),
        **{k: state.get(k) for k in RESUMED},
    }
    payload[DIGEST_KEY] = {"sha256": digest(payload)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path, net, optimizer, gen, identity: dict) -> dict:
    """Restore ``net``, ``optimizer`` and ``gen`` from ``path``; the Trainer's other state.

    Raises
    ------
    ModelFileError
        Unreadable, another format, a digest that does not match, written for another run
        (``identity``), or entries that do not fit the network and optimizer.
    """
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an autorec checkpoint")
    try:
        _validate.keys(payload, "the checkpoint", ("format", "identity", "network", "optimizer",
                                                   "generator", *RESUMED), (DIGEST_KEY,))
        if DIGEST_KEY in payload:
            stored = payload[DIGEST_KEY]
            if not isinstance(stored, dict) or stored.get("sha256") != digest(payload):
                raise Invalid("the checkpoint does not match its digest: it was changed or "
                              "damaged after it was written; delete it to train from the start")
    except (Invalid, TypeError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    saved = payload["identity"]
    if saved != identity:
        saved = saved if isinstance(saved, dict) else {}
        diff = {k: (saved.get(k), identity.get(k)) for k in set(saved) | set(identity)
                if saved.get(k) != identity.get(k)}
        raise ModelFileError(f"{path}: checkpoint was written for another run (saved, now): {diff}")
    try:
        _check(payload, net, optimizer, gen)
    except Invalid as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    net.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    gen.set_state(payload["generator"])
    return {k: payload[k] for k in RESUMED}


def _check(payload: dict, net, optimizer, gen) -> None:
    """Every entry of a checkpoint fits what it is loaded into (:class:`Invalid` if not)."""
    import torch

    expected = net.state_dict()
    _validate.like_state_dict(payload["network"], expected, "network")
    if payload["best_state"] is not None:
        _validate.like_state_dict(payload["best_state"], expected, "best_state")
    _validate.tensor(payload["generator"], "generator", dtype=torch.uint8,
                     shape=tuple(gen.get_state().shape))
    _check_optimizer(payload["optimizer"], optimizer)
    for key in ("epoch", "step", "bad_epochs"):
        if _validate.plain(payload[key], key, "int") < 0:
            raise Invalid(f"{key} is {payload[key]}, expected >= 0")
    _validate.plain(payload["best_epoch"], "best_epoch", "int", "none")
    _validate.plain(payload["best"], "best", "float", "none", finite=False)
    history = payload["history"]
    if not isinstance(history, list) or not all(
            isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, numbers.Real)
                                        for k, v in r.items()) for r in history):
        raise Invalid("history is not a list of {name: number} records")


def _check_optimizer(saved, optimizer) -> None:
    """Adam's saved state: the fresh optimizer's groups, and per parameter a scalar step
    and moments of the parameter's shape and dtype."""
    import torch

    fresh = optimizer.state_dict()
    _validate.keys(saved, "optimizer", ("state", "param_groups"))
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise Invalid(f"optimizer param_groups do not match the {len(fresh['param_groups'])} "
                      "group(s) of this network's optimizer")
    for n, (group, ref) in enumerate(zip(groups, fresh["param_groups"])):
        _validate.keys(group, f"optimizer param_groups[{n}]", list(ref))
        if group["params"] != ref["params"]:
            raise Invalid(f"optimizer param_groups[{n}] holds other parameters than this network's")
    params = [p for g in optimizer.param_groups for p in g["params"]]  # in state_dict order
    state = saved["state"]
    if not isinstance(state, dict):
        raise Invalid("optimizer state is not a dict")
    for index, entry in state.items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            raise Invalid(f"optimizer state has an entry for parameter {index!r}; the network "
                          f"has {len(params)}")
        p = params[index]
        if not isinstance(optimizer, torch.optim.Adam):  # Rprop / L-BFGS: plain values only
            _check_plain_state(entry, f"optimizer state[{index}]")
            continue
        _validate.keys(entry, f"optimizer state[{index}]", ("step", "exp_avg", "exp_avg_sq"),
                       ("max_exp_avg_sq",))
        _validate.tensor(entry["step"], f"optimizer state[{index}]['step']",
                         dtype=torch.float32, shape=(), finite=True)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[:3 if "max_exp_avg_sq" in entry else 2]:
            _validate.tensor(entry[key], f"optimizer state[{index}][{key!r}]", dtype=p.dtype,
                             shape=tuple(p.shape), finite=True)


def _check_plain_state(value, what: str) -> None:
    """A full-batch optimizer's state (Rprop, L-BFGS): dicts, lists, numbers and dense, finite
    CPU tensors only (their shapes are the optimizer's own; torch checks them on use)."""
    import torch

    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain_state(item, f"{what}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            _check_plain_state(item, f"{what}[{n}]")
    elif isinstance(value, torch.Tensor):
        _validate.tensor(value, what, finite=value.is_floating_point())
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        raise Invalid(f"{what} is a {type(value).__name__}, expected numbers or tensors")
