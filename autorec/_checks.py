"""Argument checks, written once: each rule takes ``(name, value)`` and raises a ValueError
(TypeError for a wrong type) that names the parameter, what it must be, and the value given.

Models declare their parameters' rules in a ``_param_rules`` dict (merged along the class
hierarchy by :meth:`autorec.models.base.BaseRecommender._check_params`), so every
constructor argument is checked before ``fit`` does any work.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np

Rule = Callable[[str, object], None]

__all__ = ["Rule", "positive_int", "non_negative_int", "positive", "non_negative", "probability",
           "unit_interval", "one_of", "optional", "positive_ints", "boolean", "integer", "text"]


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(name: str, value) -> None:
    """Any integer (not a bool, not a float such as ``2.0``)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")


def positive_int(name: str, value) -> None:
    """An integer >= 1."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def non_negative_int(name: str, value) -> None:
    """An integer >= 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _real(name: str, value, what: str, ok: Callable[[float], bool]) -> None:
    if not _is_real(value) or not math.isfinite(float(value)) or not ok(float(value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")


def positive(name: str, value) -> None:
    """A finite number > 0."""
    _real(name, value, "a finite number > 0", lambda v: v > 0)


def non_negative(name: str, value) -> None:
    """A finite number >= 0."""
    _real(name, value, "a finite number >= 0", lambda v: v >= 0)


def probability(name: str, value) -> None:
    """A rate in [0, 1) (dropout, corruption): 1 would drop everything."""
    _real(name, value, "a number in [0, 1)", lambda v: 0 <= v < 1)


def unit_interval(name: str, value) -> None:
    """A number in [0, 1]."""
    _real(name, value, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def boolean(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def text(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")


def one_of(*choices) -> Rule:
    """One of ``choices`` (compared with ==)."""
    def rule(name: str, value) -> None:
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return rule


def optional(inner: Rule) -> Rule:
    """None, or what ``inner`` accepts."""
    def rule(name: str, value) -> None:
        if value is not None:
            inner(name, value)
    return rule


def positive_ints(name: str, value) -> None:
    """A non-empty sequence of positive integers (layer sizes)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    for v in value:
        positive_int(f"each of {name}", v)


def device(name: str, value) -> None:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    ok = isinstance(value, str) and (value in ("auto", "cpu", "cuda")
                                     or (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise ValueError(f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")


def metric_name(name: str, value) -> None:
    """``"auto"``, ``"rmse"``, ``"mae"`` or a ranking metric at a cut-off (``"ndcg@100"``)."""
    from .ranking import PER_USER

    if isinstance(value, str):
        metric, _, k = value.partition("@")
        if value in ("auto", "rmse", "mae") or (metric in PER_USER and (not k or k.isdigit() and int(k) > 0)):
            return
    raise ValueError(f"{name} must be 'auto', 'rmse', 'mae' or one of {', '.join(PER_USER)} with "
                     f"an optional @K (e.g. 'ndcg@100'), got {value!r}")
