"""Values of command-line options: parsing, checking, and the usage error they raise."""
from __future__ import annotations

import argparse
import difflib
import json

__all__ = ["UsageError", "parse_assignments", "separator", "column", "positive_int",
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
