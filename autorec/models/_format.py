"""The model file format: what ``model.save`` writes and how ``autorec.load`` checks it.

One ``torch.save`` file, loadable with ``torch.load(..., weights_only=True)`` (tensors and
plain values only, never a pickled object)::

    {"format": "autorec-model", "format_version": 3, "autorec_version": "...",
     "class": "IAutoRec", "params": {...}, "users": IDS, "items": IDS,
     "known_users": bool tensor (n_users,), "state": {...}, "digest": {"sha256": "..."}}

``IDS`` keeps raw ids exactly, with their dtype: ``{"dtype": "<i8", "name": ..., "bytes":
uint8 tensor}`` for fixed-width numpy dtypes (int64, uint64 beyond 2^63, float, bool,
datetime64: the raw bytes), else ``{"dtype": "str" | "object" | ..., "name": ...,
"values": [python scalars]}`` (strings, arbitrary-size ints, mixed types).

``digest`` is the sha256 of everything else (:mod:`autorec._digest`); a file whose digest
does not match is refused. Files written before format 3 (autorec 0.x files without a
digest) still load, without that check; every loaded file, with or without a digest, is
checked for consistency (:mod:`autorec._validate`: dtypes, shapes against its params and
ids, index bounds) before any of it is used.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd

from .._digest import DIGEST_KEY, digest
from .._validate import Invalid, keys, plain, tensor
from ..exceptions import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "read_model_file", "sign", "ids_to_payload",
           "ids_from_payload", "params_from_payload"]

FORMAT = "autorec-model"
#: 1: first; 2: models keep no training ratings (AutoRec stores its codes);
#: 3: a digest, and ids stored with their dtype
FORMAT_VERSION = 3
_TOP_KEYS = ("format", "format_version", "autorec_version", "class", "params", "users",
             "items", "known_users", "state")
_NUMPY_ID_KINDS = "biufcmM"  # bool, int, uint, float, complex, timedelta, datetime


def sign(payload: dict) -> dict:
    """``payload`` with its digest added (what :meth:`BaseRecommender.save` writes)."""
    return {**payload, DIGEST_KEY: {"sha256": digest(payload)}}


def read_model_file(path) -> dict:
    """The payload of a model file, its format and digest checked.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        Unreadable (truncated, damaged, not weights-only), another format, a newer format
        version, a digest that does not match, or missing or unknown top-level entries.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted, truncated, or not weights-only
        raise ModelFileError(f"{path}: not a readable autorec model file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an autorec model file")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: format_version is {version!r}, expected 1..{FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer autorec (format {version}; this "
                             f"autorec reads 1..{FORMAT_VERSION}): upgrade autorec")
    try:
        keys(payload, "the file", _TOP_KEYS, (DIGEST_KEY,) if version >= 3 else ())
        if version >= 3:
            verify(payload, "the file")
    except Invalid as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return payload


def verify(payload: dict, what: str) -> None:
    """Check the stored digest of ``payload``; :class:`Invalid` when absent or wrong."""
    stored = payload.get(DIGEST_KEY)
    if not isinstance(stored, dict) or not isinstance(stored.get("sha256"), str):
        raise Invalid(f"{what} has no digest (its 'digest' entry is {stored!r})")
    try:
        actual = digest(payload)
    except TypeError as exc:
        raise Invalid(f"{what} holds a value that is not a tensor or plain value ({exc})") from None
    if actual != stored["sha256"]:
        raise Invalid(f"{what} does not match its digest (stored sha256 {stored['sha256'][:16]}..., "
                      f"contents {actual[:16]}...): it was changed or damaged after it was "
                      "written. Use an intact copy, or train again")


def params_from_payload(cls, params) -> dict:
    """Constructor arguments of ``cls`` from a file: unknown names refused; names the file
    lacks (parameters added after it was written) take their defaults."""
    valid = cls._param_names()
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise Invalid(f"params is {type(params).__name__}, expected a dict of names")
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise Invalid(f"params has unknown {', '.join(map(repr, unknown))}: {cls.__name__} takes "
                      f"{', '.join(valid) or 'no parameters'}")
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                if p.name in valid}
    missing = [k for k in valid if k not in params and defaults[k] is inspect.Parameter.empty]
    if missing:
        raise Invalid(f"params misses {', '.join(map(repr, missing))}, which {cls.__name__} needs")
    return dict(params)


# ------------------------------------------------------------------- raw ids
def ids_to_payload(index: pd.Index) -> dict:
    """Raw ids, exactly and with their dtype, as tensors and plain values (weights-only)."""
    import torch

    name = index.name if isinstance(index.name, str) else None
    dtype = index.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in _NUMPY_ID_KINDS:
        raw = np.ascontiguousarray(index.to_numpy(dtype=dtype)).view(np.uint8).copy()
        return {"dtype": dtype.str, "name": name, "bytes": torch.from_numpy(raw)}
    values = [_plain_id(v) for v in index.tolist()]
    back = _index_of_values(values, str(dtype))
    if back is None or not (back.dtype == dtype and back.equals(index)):
        raise ValueError(f"ids of dtype {dtype} cannot be saved exactly; convert them first "
                         "(e.g. to str or a numpy integer dtype)")
    return {"dtype": str(dtype), "name": name, "values": values}


def ids_from_payload(ids, what: str, version: int) -> pd.Index:
    """The ids :func:`ids_to_payload` wrote (or formats 1-2 wrote: an int64 tensor or a
    list of str), checked: a known dtype, whole values, unique."""
    import torch

    if version < 3:  # formats 1-2: int64 tensor, else a list of str
        if isinstance(ids, torch.Tensor):
            index = pd.Index(tensor(ids, what, dtype=torch.int64, shape=(None,)).numpy().copy())
        elif isinstance(ids, list) and all(isinstance(v, str) for v in ids):
            index = pd.Index(ids, dtype=object)
        else:
            raise Invalid(f"{what} is {type(ids).__name__}, expected an int64 tensor or a list of str")
    else:
        keys(ids, what, ("dtype", "name"), ("bytes", "values"))
        plain(ids["dtype"], f"{what} dtype", "str")
        plain(ids["name"], f"{what} name", "str", "none")
        if ("bytes" in ids) == ("values" in ids):
            raise Invalid(f"{what} must hold either 'bytes' or 'values'")
        if "bytes" in ids:
            try:
                dtype = np.dtype(ids["dtype"])
            except TypeError:
                raise Invalid(f"{what} has the unknown dtype {ids['dtype']!r}") from None
            if dtype.kind not in _NUMPY_ID_KINDS:
                raise Invalid(f"{what} has dtype {dtype}, which is not stored as bytes")
            raw = tensor(ids["bytes"], f"{what} bytes", dtype=torch.uint8, shape=(None,)).numpy()
            if len(raw) % dtype.itemsize:
                raise Invalid(f"{what} holds {len(raw)} bytes, not a whole number of "
                              f"{dtype.itemsize}-byte {dtype} ids")
            index = pd.Index(raw.copy().view(dtype), name=ids["name"])
        else:
            values, dtype = ids["values"], ids["dtype"]
            if not isinstance(values, list) or not all(_is_plain_id(v) for v in values):
                raise Invalid(f"{what} values must be a list of str, int, float or bool")
            index = _index_of_values(values, dtype, ids["name"])
            if dtype in ("str", "string"):
                exact = all(isinstance(v, str) for v in values)
            else:  # the dtype must hold each value as it is (no silent conversion)
                exact = index is not None and all(
                    type(a) is type(b) and a == b for a, b in zip(map(_plain_id, index.tolist()), values))
            if index is None or not exact:
                raise Invalid(f"{what} values cannot be held exactly as dtype {dtype!r}")
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        raise Invalid(f"{what} holds the id {dup!r} more than once")
    return index


def _plain_id(value):
    """A python scalar for a list in a weights-only file (numpy scalars -> python)."""
    if isinstance(value, np.generic):
        value = value.item()
    if not _is_plain_id(value):
        raise ValueError(f"the id {value!r} ({type(value).__name__}) cannot be saved; ids "
                         "must be str, int, float or bool")
    return value


def _is_plain_id(value) -> bool:
    return isinstance(value, (str, int, float, bool))


def _index_of_values(values: list, dtype: str, name=None) -> pd.Index | None:
    try:
        return pd.Index(values, dtype=dtype, name=name)
    except (TypeError, ValueError):
        return None
