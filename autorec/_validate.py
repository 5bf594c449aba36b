"""Checks of what is read from files, before any of it is used.

``torch.load(..., weights_only=True)`` and ``np.load(..., allow_pickle=False)`` stop code
execution, not memory corruption: a sparse matrix whose index arrays point past its ends
makes scipy and torch kernels read and write out of bounds (SIGSEGV, heap corruption). So
every array a model file, checkpoint or cache holds is checked here first: its type, dtype
and shape against what the loading code expects, and for CSR arrays the index bounds, a
monotone ``indptr`` and sorted, unique column indices in each row (canonical CSR).

Each check raises :class:`Invalid` with a message naming the value (``state['codes']``)
and what is wrong; the caller adds the file (``ModelFileError(f"{path}: {exc}")``).
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Invalid", "keys", "plain", "tensor", "array", "csr_arrays", "like_state_dict"]


class Invalid(ValueError):
    """A value read from a file is not what the loading code expects."""


def keys(value, what: str, required, optional=()) -> dict:
    """``value`` is a dict with every key of ``required``, and others only from ``optional``."""
    if not isinstance(value, dict):
        raise Invalid(f"{what} is a {type(value).__name__}, expected a dict")
    missing = [k for k in required if k not in value]
    unknown = [k for k in value if k not in required and k not in optional]
    if missing or unknown:
        parts = ([f"misses {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"has unknown {', '.join(map(repr, unknown))}"] if unknown else [])
        raise Invalid(f"{what} {' and '.join(parts)}")
    return value


_PLAIN = {
    "int": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "none": (lambda v: v is None, "None"),
}


def plain(value, what: str, *kinds: str, finite: bool = True):
    """``value`` is one of the plain ``kinds`` ("int", "float", "str", "bool", "none")."""
    if not any(_PLAIN[k][0](value) for k in kinds):
        expected = " or ".join(_PLAIN[k][1] for k in kinds)
        raise Invalid(f"{what} is {_show(value)}, expected {expected}")
    if finite and isinstance(value, float) and not np.isfinite(value):
        raise Invalid(f"{what} is {value!r}, expected a finite number")
    return value


def tensor(value, what: str, *, dtype=None, shape=None, finite: bool = False):
    """``value`` is a dense CPU tensor of ``dtype`` (one or a tuple) and ``shape``.

    ``shape`` is a tuple of ints, with None for any length along that axis. With
    ``finite``, floating tensors must hold no NaN or infinity.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        raise Invalid(f"{what} is {_show(value)}, expected a tensor")
    if value.layout != torch.strided or value.is_quantized or value.device.type != "cpu":
        raise Invalid(f"{what} is a {value.layout} tensor on {value.device}, expected a dense CPU tensor")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if dtype is not None and value.dtype not in dtypes:
        raise Invalid(f"{what} has dtype {_dtype_name(value.dtype)}, expected "
                      f"{' or '.join(_dtype_name(d) for d in dtypes)}")
    _check_shape(tuple(value.shape), shape, what)
    if finite and value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
        raise Invalid(f"{what} holds NaN or infinite values")
    return value


def array(value, what: str, *, kinds: str | None = None, dtype=None, shape=None,
          finite: bool = False) -> np.ndarray:
    """``value`` is a numpy array of one of the dtype ``kinds`` (e.g. ``"iu"``) or exactly
    ``dtype``, of ``shape`` (None: any length on that axis)."""
    if not isinstance(value, np.ndarray):
        raise Invalid(f"{what} is {_show(value)}, expected an array")
    if kinds is not None and value.dtype.kind not in kinds:
        raise Invalid(f"{what} has dtype {value.dtype}, expected a dtype of kind {kinds!r}")
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise Invalid(f"{what} has dtype {value.dtype}, expected {np.dtype(dtype)}")
    _check_shape(value.shape, shape, what)
    if finite and value.dtype.kind == "f" and value.size and not np.isfinite(value).all():
        raise Invalid(f"{what} holds NaN or infinite values")
    return value


def csr_arrays(indptr, indices, data, shape, what: str) -> None:
    """The arrays of a canonical CSR matrix of ``shape``: safe for scipy and torch kernels.

    ``indptr`` (n_rows + 1,) integer, starts at 0, never decreases, ends at nnz;
    ``indices`` (nnz,) integer in ``[0, n_cols)``, strictly increasing within each row
    (sorted, no duplicates); ``data`` (nnz,) finite floats.
    """
    n_rows, n_cols = _shape_pair(shape, f"{what} shape")
    indptr = array(indptr, f"{what} indptr", kinds="iu", shape=(n_rows + 1,))
    indices = array(indices, f"{what} indices", kinds="iu", shape=(None,))
    nnz = len(indices)
    array(data, f"{what} data", kinds="f", shape=(nnz,), finite=True)
    if nnz >= 2**63 or n_cols >= 2**63:
        raise Invalid(f"{what} is too large")
    ptr = indptr.astype(np.int64, copy=False)
    if ptr[0] != 0 or ptr[-1] != nnz:
        raise Invalid(f"{what} indptr runs from {int(ptr[0])} to {int(ptr[-1])}, expected 0 to "
                      f"{nnz} (the number of stored entries)")
    step = np.diff(ptr)
    if (step < 0).any():
        row = int(np.flatnonzero(step < 0)[0])
        raise Invalid(f"{what} indptr decreases at row {row} ({int(ptr[row])} -> {int(ptr[row + 1])})")
    if nnz:
        idx = indices.astype(np.int64, copy=False)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n_cols:
            bad = lo if lo < 0 else hi
            raise Invalid(f"{what} indices hold {bad}, outside 0..{n_cols - 1} (the number of "
                          "columns)")
        unsorted = np.diff(idx) <= 0  # (nnz - 1,) True where a row is not strictly increasing
        starts = ptr[1:-1]
        starts = starts[(starts > 0) & (starts < nnz)]
        unsorted[starts - 1] = False  # a new row may start lower
        if unsorted.any():
            pos = int(np.flatnonzero(unsorted)[0]) + 1
            row = int(np.searchsorted(ptr, pos, side="right")) - 1
            raise Invalid(f"{what} indices of row {row} are not sorted and unique "
                          f"({int(idx[pos - 1])} then {int(idx[pos])}): not canonical CSR")


def like_state_dict(loaded, expected: dict, what: str) -> dict:
    """``loaded`` has exactly the keys of the state dict ``expected``, each a tensor of the
    same shape and dtype (what ``load_state_dict`` needs, checked before it copies)."""
    keys(loaded, what, list(expected))
    for name, ref in expected.items():
        tensor(loaded[name], f"{what}[{name!r}]", dtype=ref.dtype, shape=tuple(ref.shape),
               finite=True)
    return loaded


# ------------------------------------------------------------------ helpers
def _check_shape(got: tuple, shape, what: str) -> None:
    if shape is None:
        return
    ok = len(got) == len(shape) and all(s is None or g == s for g, s in zip(got, shape))
    if not ok:
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise Invalid(f"{what} has shape {got}, expected {want}")


def _shape_pair(shape, what: str) -> tuple[int, int]:
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise Invalid(f"{what} is {_show(shape)}, expected two non-negative integers")
    return int(shape[0]), int(shape[1])


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _show(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, (dict, list, tuple)) else \
        f"a {type(value).__name__}"
