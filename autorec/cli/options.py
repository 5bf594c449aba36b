"""Values of command-line options: parsing, checking, and the usage error they raise."""
from __future__ import annotations

import argparse
import difflib
import json

__all__ = ["UsageError", "parse_assignments", "parse_space", "typed_params", "separator", "column", "positive_int",
           "non_negative_int", "unknown_key"]


class UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""

def parse_assignments(items, option: str) -> dict:
    """``["hidden=300", "lr=1e-3", "dims=[600,200]"]`` -> dict; values parsed as JSON
    when they are JSON (numbers, true/false/null, lists), else kept as strings."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{option} expects key=value, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = {"None": None, "True": True, "False": False}.get(text, text)
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def typed_params(params: dict, defaults: dict, option: str = "--set") -> dict:
    """``--set`` values checked against the type of each parameter's default.

    An int where a float is expected becomes a float; a list becomes a tuple; a default of
    None accepts anything (the model's own rules check it). A value of another type is a
    :class:`UsageError` naming the parameter, the type expected and the value given.
    """
    out = {}
    for key, value in params.items():
        default = defaults.get(key)
        expected = _kind(default)
        if default is None or value is None or _kind(value) == expected:
            out[key] = value
        elif expected == "a number" and _kind(value) == "an integer":
            out[key] = float(value)
        else:
            raise UsageError(f"{option} {key}={_text(value)}: {key} takes {expected} "
                             f"(default {_text(default)}), not {_kind(value)}")
    return out


def _kind(value) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (tuple, list)):
        return "a list such as [600,200]"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _text(value) -> str:
    if isinstance(value, str):
        return repr(value)
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def parse_space(items, defaults: dict) -> dict:
    """``--space`` options -> a search space of :func:`autorec.tune`.

    ``KEY=[v1,v2,...]`` (a JSON list: these values; lists inside become tuples),
    ``KEY=v1,v2`` (the same without brackets), ``KEY=LOW..HIGH`` (a range: integers for a
    parameter whose default is an integer, else floats), ``KEY=LOW..HIGH:log`` (log scale).
    Values are type-checked against the parameter's default like ``--set``.
    """
    from ..tuning import Float, Int

    space = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise UsageError(f"--space expects KEY=[v1,v2,...] or KEY=LOW..HIGH[:log], got {item!r}")
        if key not in defaults:
            raise UsageError(unknown_key(key, list(defaults), "the model"))
        if ".." in text and not text.startswith("["):
            bounds, _, scale = text.partition(":")
            if scale not in ("", "log"):
                raise UsageError(f"--space {item}: the only scale is ':log', got {scale!r}")
            low, _, high = bounds.partition("..")
            try:
                low, high = json.loads(low), json.loads(high)
            except json.JSONDecodeError:
                raise UsageError(f"--space {item}: LOW..HIGH must be numbers") from None
            integer = isinstance(defaults[key], int) and not isinstance(defaults[key], bool)
            try:
                if integer and isinstance(low, int) and isinstance(high, int):
                    space[key] = Int(low, high, log=scale == "log")
                else:
                    space[key] = Float(float(low), float(high), log=scale == "log")
            except (ValueError, TypeError) as exc:
                raise UsageError(f"--space {item}: {exc}") from None
            continue
        try:
            values = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            values = [parse_assignments([f"{key}={v}"], "--space")[key] for v in text.split(",")]
        values = [tuple(v) if isinstance(v, list) else v for v in values]
        if not values:
            raise UsageError(f"--space {item}: no values")
        space[key] = [typed_params({key: v}, defaults, "--space")[key] for v in values]
    if not space:
        raise UsageError("give at least one --space KEY=VALUES")
    return space


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value

def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value

def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def unknown_key(key: str, valid: list, what: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown parameter {key!r} for {what}{hint}; valid: {', '.join(valid)}"

def separator(sep: str) -> str:
    sep = {"tab": "\t", "\\t": "\t", "space": " ", "whitespace": r"\s+"}.get(sep, sep)
    if not sep:
        raise UsageError("--sep must not be empty")
    return sep

def column(name):
    return None if name is None or name.lower() in ("", "none") else name


def device_name(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N (checked as every model checks it)."""
    from .._checks import device

    try:
        device("--device", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--device must be", "must be")) from None
    return text
